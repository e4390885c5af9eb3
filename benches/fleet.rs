//! Questions per second for 1, 2 and 3 boards sharing one question stream
//! (`mqtt.share_group`): each board a real service process with SmolLM2 on
//! one thread, all on one mosquitto, a burst of dev questions published at
//! once by three askers. On one machine the boards share its cores, so this
//! measures how the stream spreads and what the sharing costs, not a plant
//! of separate boards (docs/fleet.md, does that
//! arithmetic).
//!
//! `cargo bench --bench fleet`; SWARM_LLM_BENCH_QUESTIONS (default 60).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;

const ASKERS: usize = 3;
const BOARDS: [usize; 3] = [1, 2, 3];

/// One run: questions/s over the burst, the service's latency percentiles
/// (receipt to reply, queueing included), replies per board.
struct Run {
    questions_per_s: f64,
    p50_s: f64,
    p95_s: f64,
    by_board: BTreeMap<String, usize>,
}

async fn run(boards: usize, questions: &[String]) -> Run {
    let broker = Broker::start();
    let mut services = Vec::new();
    for b in 0..boards {
        let mut config = service_config(&broker, &format!("board-{b}"));
        config.mqtt.share_group = Some("line".into());
        config.limits.intake_queue = questions.len();
        config.limits.max_deadline_ms = 600_000;
        config.limits.default_deadline_ms = 600_000;
        services.push(Service::start(&broker, &config).await);
    }
    let mut replies = TestClient::persistent(&broker, "bench-replies").await;
    replies.subscribe("gw/bench/#").await;
    let mut askers = Vec::new();
    for a in 0..ASKERS {
        askers.push(TestClient::persistent(&broker, &format!("bench-asker-{a}")).await);
    }

    let started = Instant::now();
    for (i, q) in questions.iter().enumerate() {
        let a = i % ASKERS;
        let ask = serde_json::json!({"id": format!("q{i}"), "question": q, "reply_to": format!("gw/bench/{a}")});
        askers[a]
            .publish_json(&format!("swarm/query/line/asker{a}"), &ask)
            .await;
    }
    let mut latencies = Vec::new();
    let mut by_board = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < questions.len() {
        let m = replies
            .next_message(Duration::from_secs(600))
            .await
            .expect("every question answered within 10 minutes");
        let reply: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert!(reply["error"].is_null(), "{reply}");
        if seen.insert(reply["id"].as_str().unwrap().to_string()) {
            latencies.push(reply["latency_ms"].as_f64().unwrap() / 1000.0);
            *by_board
                .entry(reply["node"].as_str().unwrap().to_string())
                .or_insert(0) += 1;
        }
    }
    let wall = started.elapsed();
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Run {
        questions_per_s: questions.len() as f64 / wall.as_secs_f64(),
        p50_s: q(0.5),
        p95_s: q(0.95),
        by_board,
    }
}

#[tokio::main]
async fn main() {
    let n: usize = env_or("SWARM_LLM_BENCH_QUESTIONS", 60);
    let questions = dev_questions(n);
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!(
        "{n} dev questions in one burst from {ASKERS} askers, SmolLM2, one thread a board, {cores} cores\n"
    );
    println!(
        "{:>6} {:>8} {:>9} {:>8} {:>8}  replies by board",
        "boards", "q/s", "vs 1", "p50 s", "p95 s"
    );
    let mut one = None;
    for boards in BOARDS {
        let r = run(boards, &questions).await;
        let base = *one.get_or_insert(r.questions_per_s);
        println!(
            "{boards:>6} {:>8.2} {:>8.2}x {:>8.2} {:>8.2}  {:?}",
            r.questions_per_s,
            r.questions_per_s / base,
            r.p50_s,
            r.p95_s,
            r.by_board
        );
    }
}
