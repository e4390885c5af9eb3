//! Bounded soak on loopback: questions at a steady rate through mosquitto for
//! a few minutes, sampling the service's resident memory and open file
//! descriptors, which should stay flat. Prints a row per sample and a summary.
//!
//! `cargo bench --bench soak`; settings: SWARM_LLM_SOAK_SECONDS (default 180),
//! SWARM_LLM_SOAK_RATE (questions per second, default 2).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use swarm_llm::mqtt::PublishProps;

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

#[tokio::main]
async fn main() {
    let seconds: u64 = env_or("SWARM_LLM_SOAK_SECONDS", 180);
    let rate: f64 = env_or("SWARM_LLM_SOAK_RATE", 2.0);
    let broker = Broker::start();
    let service = Service::start(&broker, &service_config(&broker, "soak")).await;
    let pid = service.pid();
    let mut client = TestClient::replies(&broker).await;
    let questions = [
        "What is the capital city of Australia",
        "How many bits are in a byte",
        "What does PLC stand for",
        "{\"question\": \"malformed",
    ];
    let started = Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate);
    let (mut sent, mut answered, mut errors) = (0u64, 0u64, 0u64);
    let mut samples = Vec::new();
    let mut next_sample = started;
    println!(
        "{:>6} {:>8} {:>9} {:>9} {:>5}",
        "s", "sent", "replies", "RSS MiB", "fds"
    );
    while started.elapsed() < Duration::from_secs(seconds) {
        let q = questions[(sent % questions.len() as u64) as usize];
        client
            .publish("swarm/query/soak", q.as_bytes(), PublishProps::default())
            .await;
        sent += 1;
        let tick = Instant::now() + period;
        while let Some(m) = client
            .next_message(tick.saturating_duration_since(Instant::now()))
            .await
        {
            let r: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            answered += 1;
            errors += (!r["error"].is_null()) as u64;
        }
        if Instant::now() >= next_sample {
            let s = (started.elapsed().as_secs(), rss_kib(pid), open_fds(pid));
            println!(
                "{:>6} {:>8} {:>9} {:>9.1} {:>5}",
                s.0,
                sent,
                answered,
                s.1 as f64 / 1024.0,
                s.2
            );
            samples.push(s);
            next_sample += Duration::from_secs(10);
        }
    }
    while let Some(m) = client.next_message(Duration::from_secs(10)).await {
        let r: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        answered += 1;
        errors += (!r["error"].is_null()) as u64;
    }
    // Skip the first minute: allocator pools and the page cache settle.
    let settled: Vec<_> = samples.iter().filter(|s| s.0 >= 60).collect();
    let (min, max) = settled
        .iter()
        .fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s.1), hi.max(s.1)));
    let fds: Vec<usize> = samples.iter().map(|s| s.2).collect();
    println!(
        "\n{sent} questions in {seconds} s ({rate}/s, a quarter malformed), {answered} replies ({errors} error replies)\n\
         RSS after the first minute: {:.1} to {:.1} MiB (spread {:.1} MiB); open fds {} to {}",
        min as f64 / 1024.0,
        max as f64 / 1024.0,
        (max - min) as f64 / 1024.0,
        fds.iter().min().unwrap(),
        fds.iter().max().unwrap()
    );
}
