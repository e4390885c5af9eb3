//! A burst at eight times one board's pace, every question with a 10 s
//! deadline, through the swarm of config/swarm.toml with load-aware routing
//! (`routing.load_aware`, the default) and without, side by side: deadline
//! misses, p50 / p95 latency and routes. Before each burst, the same
//! questions one at a time (light load): their routes with and without,
//! which should be the same. The board runs on the first core; the cloud
//! stand-in and a peer board (voting, one model) on the second, so that the
//! cloud is capacity of its own as a real one is.
//!
//! One board's pace is measured, not assumed: the mean latency of the light
//! load's questions without load-aware routing; the burst sends 8 questions
//! in that time, for SWARM_LLM_BENCH_BURST_S seconds (default 20). Run it with
//! `scripts/bench-burst`, or `cargo bench --bench burst` once the models are
//! fetched.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use swarm_llm::config::{Config, ModelConfig, MqttProtocol, PeerConfig};
use swarm_llm::measuring::stats::percentile;
use swarm_llm::mqtt::PublishProps;

const DEADLINE_MS: u64 = 10_000;
const LIGHT: usize = 12;

/// What came back for one question.
struct Outcome {
    seconds: f64,
    route: String,
    missed: bool,
}

/// The board of config/swarm.toml, asking `cloud_url` and voting with the peer.
fn swarm_config(broker: &Broker, node: &str, cloud_url: &str, load_aware: bool) -> Config {
    let file = shipped_config();
    let mut config = service_config(broker, node);
    config.models = file.models.clone();
    config.inference = file.inference.clone();
    config.policy = file.policy.clone();
    config.safety = file.safety.clone();
    config.routing = file.routing.clone();
    config.routing.load_aware = load_aware;
    config.routing.peers = vec![PeerConfig {
        name: "peer".into(),
        topic: "swarm/query/peer/votes".into(),
        weight: 1.0,
        timeout_ms: 5_000,
    }];
    config.mqtt.request_filter = format!("bench/{node}/#");
    // One core: every model thread gets one.
    for m in &mut config.models {
        m.threads = 1;
        m.parallel = 1;
    }
    // The whole burst reaches the router as it arrives, so that each
    // question is weighed with its deadline still ahead of it.
    config.limits.max_in_flight = 64;
    config.cloud = Some(swarm_llm::cloud::CloudConfig {
        url: cloud_url.into(),
        model: "qwen15".into(),
        ..file.cloud.clone().unwrap_or_default()
    });
    config
}

/// Asks `questions` on the board's topic, each with the deadline: one
/// every `gap`, or with no gap, each once the last is answered; gathers
/// every reply.
async fn ask(
    broker: &Broker,
    node: &str,
    questions: &[String],
    gap: Option<Duration>,
    tag: &str,
) -> Vec<Outcome> {
    let mut client = TestClient::connect(broker, MqttProtocol::V5).await;
    let reply_topic = format!("bench/reply/{node}/{tag}");
    client.subscribe(&reply_topic).await;
    let mut sent = BTreeMap::new();
    let mut replies = Vec::new();
    let start = Instant::now();
    for (i, q) in questions.iter().enumerate() {
        match gap {
            // Keep reading replies while waiting for the next question's time.
            Some(gap) => {
                let at = start + gap * i as u32;
                while Instant::now() < at {
                    let wait = at.saturating_duration_since(Instant::now());
                    if let Some(m) = client.next_message(wait).await {
                        replies.push((Instant::now(), m.payload));
                    }
                }
            }
            None if i > 0 => {
                let m = client.next_message(Duration::from_secs(120)).await;
                replies.push((Instant::now(), m.expect("an answer").payload));
            }
            None => {}
        }
        let id = format!("{tag}-{i}");
        let body = serde_json::json!({"id": id, "question": q, "deadline_ms": DEADLINE_MS});
        let props = PublishProps {
            response_topic: Some(reply_topic.clone()),
            correlation_data: None,
        };
        sent.insert(id, Instant::now());
        let payload = serde_json::to_vec(&body).unwrap();
        client
            .publish(&format!("bench/{node}/q"), &payload, props)
            .await;
    }
    while replies.len() < questions.len() {
        let m = client
            .next_message(Duration::from_secs(120))
            .await
            .expect("every question is answered or refused");
        replies.push((Instant::now(), m.payload));
    }
    replies
        .into_iter()
        .map(|(at, payload)| {
            let r: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            let asked = sent[r["id"].as_str().unwrap()];
            let seconds = at.duration_since(asked).as_secs_f64();
            Outcome {
                seconds,
                route: r["route"].as_str().unwrap_or("error").to_string(),
                missed: !r["error"].is_null() || seconds * 1000.0 > DEADLINE_MS as f64,
            }
        })
        .collect()
}

fn routes(outcomes: &[Outcome]) -> String {
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes {
        *by.entry(&o.route).or_default() += 1;
    }
    by.iter()
        .map(|(r, n)| format!("{r} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row(label: &str, outcomes: &[Outcome]) {
    let mut seconds: Vec<f64> = outcomes.iter().map(|o| o.seconds).collect();
    seconds.sort_by(f64::total_cmp);
    let at = |q| percentile(&seconds, q).unwrap_or(f64::NAN);
    let missed = outcomes.iter().filter(|o| o.missed).count();
    println!(
        "| {label} | {} | {missed} ({:.0}%) | {:.1} | {:.1} | {} |",
        outcomes.len(),
        100.0 * missed as f64 / outcomes.len() as f64,
        at(0.5),
        at(0.95),
        routes(outcomes)
    );
}

#[tokio::main]
async fn main() {
    let burst_s: u64 = env_or("SWARM_LLM_BENCH_BURST_S", 20);
    let broker = Broker::start();
    // The board on the first core, the cloud and the peer board on the
    // second: a cloud that shares the board's cores is no spare capacity.
    let cloud = CloudStandIn::start_on(Some("1")).await;
    let mut peer = service_config(&broker, "peer");
    peer.models[0] = ModelConfig {
        name: "qwen05".into(),
        path: model_path("qwen05"),
        threads: 1,
        ..peer.models[0].clone()
    };
    let _peer = Service::start_command(&broker, &peer, &["taskset", "-c", "1", BIN]).await;

    let light = dev_questions(LIGHT);
    let mut light_routes = Vec::new();
    let mut bursts = Vec::new();
    let mut gap = None;
    for load_aware in [false, true] {
        let node = format!("burst-{load_aware}");
        let config = swarm_config(&broker, &node, &cloud.url, load_aware);
        let service = Service::start_command(&broker, &config, &["taskset", "-c", "0", BIN]).await;
        let calm = ask(&broker, &node, &light, None, "light").await;
        let pace = calm.iter().map(|o| o.seconds).sum::<f64>() / calm.len() as f64;
        let gap = *gap.get_or_insert(Duration::from_secs_f64(pace / 8.0));
        let n = (burst_s as f64 / gap.as_secs_f64()).ceil() as usize;
        let burst = ask(&broker, &node, &dev_questions(n), Some(gap), "burst").await;
        light_routes.push(calm);
        bursts.push((load_aware, burst));
        drop(service);
    }
    let gap = gap.expect("measured");
    println!(
        "A burst of {} questions, one every {:.2} s (8x the board's pace of {:.2} s a question measured under light load), each with a {} s deadline; config/swarm.toml's swarm on core 0 (one thread a model), the cloud stand-in and a peer board on core 1.\n",
        bursts[0].1.len(),
        gap.as_secs_f64(),
        8.0 * gap.as_secs_f64(),
        DEADLINE_MS / 1000
    );
    println!("| routing | questions | deadline missed | p50 s | p95 s | routes |");
    println!("|---|---|---|---|---|---|");
    for (load_aware, burst) in &bursts {
        let label = if *load_aware {
            "load-aware"
        } else {
            "without load-awareness"
        };
        row(label, burst);
    }
    let same = light_routes[0]
        .iter()
        .zip(&light_routes[1])
        .filter(|(a, b)| a.route == b.route)
        .count();
    println!(
        "\nLight load, {LIGHT} questions one at a time: the same route with and without for {same} of {LIGHT} ({} / {}).",
        routes(&light_routes[0]),
        routes(&light_routes[1])
    );
}
