//! Questions per second under load, side by side with what a user would run
//! instead: the same dev questions to one model (Qwen2.5-0.5B, always
//! local) through swarm-llm over MQTT and through llama.cpp's own
//! `llama-server` over HTTP, with the same GGUF file, threads, KV cache type,
//! system prompt, answer budget and greedy decoding, with 1, 4 and 8 askers
//! in flight. Each asker sends its next question when its answer is back.
//! Both run with one slot and with four (the service's `parallel`,
//! llama-server's `--parallel`), each slot with the model's context size.
//!
//! Run it with `scripts/bench-throughput` (which fetches the model and builds
//! llama-server), or directly: `SWARM_LLM_LLAMA_SERVER=path/to/llama-server
//! cargo bench --bench throughput`. Settings: SWARM_LLM_BENCH_THREADS
//! (default 2), SWARM_LLM_BENCH_QUESTIONS (default 32).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use swarm_llm::config::{Config, KvCache, ModelConfig, MqttProtocol};
use swarm_llm::mqtt::PublishProps;

const ASKERS: [usize; 3] = [1, 4, 8];
const MAX_TOKENS: u32 = 64;

/// One answered question: seconds from asking to the answer, its tokens
/// and the route that answered it.
struct Answered {
    seconds: f64,
    tokens: u64,
    route: String,
}

struct Run {
    questions_per_s: f64,
    tokens_per_s: f64,
    p50: f64,
    p95: f64,
    /// Per route: questions, p50 and p95 seconds.
    routes: Vec<(String, usize, f64, f64)>,
}

/// The `p` quantile of some latencies.
fn quantile(seconds: &[f64], p: f64) -> f64 {
    let mut s = seconds.to_vec();
    s.sort_by(f64::total_cmp);
    s[((s.len() - 1) as f64 * p).round() as usize]
}

fn summarise(answers: Vec<Answered>, wall: Duration) -> Run {
    let tokens: u64 = answers.iter().map(|a| a.tokens).sum();
    let s: Vec<f64> = answers.iter().map(|a| a.seconds).collect();
    let mut routes: Vec<String> = answers.iter().map(|a| a.route.clone()).collect();
    routes.sort();
    routes.dedup();
    let routes = routes
        .into_iter()
        .map(|route| {
            let s: Vec<f64> = answers
                .iter()
                .filter(|a| a.route == route)
                .map(|a| a.seconds)
                .collect();
            let (p50, p95) = (quantile(&s, 0.5), quantile(&s, 0.95));
            (route, s.len(), p50, p95)
        })
        .collect();
    Run {
        questions_per_s: s.len() as f64 / wall.as_secs_f64(),
        tokens_per_s: tokens as f64 / wall.as_secs_f64(),
        p50: quantile(&s, 0.5),
        p95: quantile(&s, 0.95),
        routes,
    }
}

/// Splits the questions among `askers` that each ask their share one by one.
async fn ask_all<F, Fut>(questions: &[String], askers: usize, ask: F) -> (Vec<Answered>, Duration)
where
    F: Fn(usize, String) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Answered> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for a in 0..askers {
        let mine: Vec<String> = questions.iter().skip(a).step_by(askers).cloned().collect();
        let ask = ask.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for q in mine {
                out.push(ask(a, q).await);
            }
            out
        }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    (answers, started.elapsed())
}

/// Through the service, its model decoding up to `parallel` questions
/// together (continuous batching) in a context of `parallel` times the
/// model's cells, as llama-server's slots get below.
async fn through_service(
    broker: &Broker,
    models: &[ModelConfig],
    questions: &[String],
    parallel: u32,
    askers: usize,
    edit: impl FnOnce(&mut Config),
) -> Run {
    let mut config = service_config(broker, &format!("tp-{parallel}-{askers}"));
    config.models = models
        .iter()
        .map(|m| ModelConfig {
            parallel,
            context_size: m.context_size * parallel,
            ..m.clone()
        })
        .collect();
    edit(&mut config);
    let _service = Service::start(broker, &config).await;
    let mut clients = Vec::new();
    for a in 0..askers {
        let mut c = TestClient::connect(broker, MqttProtocol::V5).await;
        c.subscribe(&format!("bench/tp/{a}")).await;
        clients.push(Arc::new(tokio::sync::Mutex::new(c)));
    }
    // Warm-up: the first touch of the weights.
    ask_service(&clients[0], 0, &questions[0]).await;
    let (answers, wall) = ask_all(questions, askers, move |a, q| {
        let c = clients[a].clone();
        async move { ask_service(&c, a, &q).await }
    })
    .await;
    summarise(answers, wall)
}

async fn ask_service(
    client: &tokio::sync::Mutex<TestClient>,
    asker: usize,
    question: &str,
) -> Answered {
    let mut c = client.lock().await;
    let payload =
        serde_json::to_vec(&serde_json::json!({ "question": question, "max_tokens": MAX_TOKENS }))
            .unwrap();
    let props = PublishProps {
        response_topic: Some(format!("bench/tp/{asker}")),
        correlation_data: None,
    };
    let sent = Instant::now();
    c.publish("swarm/query/bench", &payload, props).await;
    let r = c.reply(Duration::from_secs(600)).await;
    assert!(r["error"].is_null(), "{r}");
    Answered {
        seconds: sent.elapsed().as_secs_f64(),
        tokens: r["tokens"].as_u64().unwrap(),
        route: r["route"].as_str().unwrap_or_default().to_string(),
    }
}

struct LlamaServer(Child);

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn through_llama_server(
    bin: &str,
    model: &ModelConfig,
    system: &str,
    questions: &[String],
    parallel: usize,
    askers: usize,
) -> Run {
    let port = free_port();
    let kv = match model.kv_cache {
        KvCache::F16 => "f16",
        KvCache::Q8_0 => "q8_0",
    };
    let _server = LlamaServer(
        Command::new(bin)
            .arg("-m")
            .arg(&model.path)
            .args([
                "-t",
                &model.threads.to_string(),
                "-tb",
                &model.threads.to_string(),
            ])
            .args(["-c", &(model.context_size as usize * parallel).to_string()])
            .args(["--parallel", &parallel.to_string(), "-ctk", kv, "-ctv", kv])
            .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server"),
    );
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !http
        .get(format!("{base}/health"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < deadline, "llama-server did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ask = {
        let (http, base, system) = (http.clone(), base.clone(), system.to_string());
        move |_: usize, q: String| {
            let (http, base, system) = (http.clone(), base.clone(), system.clone());
            async move {
                let body = serde_json::json!({
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": q},
                    ],
                    "max_tokens": MAX_TOKENS,
                    "temperature": 0.0,
                });
                let sent = Instant::now();
                let r: serde_json::Value = http
                    .post(format!("{base}/v1/chat/completions"))
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                Answered {
                    seconds: sent.elapsed().as_secs_f64(),
                    tokens: r["usage"]["completion_tokens"].as_u64().expect("usage"),
                    route: "local".into(),
                }
            }
        }
    };
    ask(0, questions[0].clone()).await; // warm-up
    let (answers, wall) = ask_all(questions, askers, ask).await;
    summarise(answers, wall)
}

fn row(label: &str, askers: usize, r: &Run, reference: Option<&Run>) {
    let ratio = reference.map_or(String::new(), |b| {
        format!("{:.2}", r.questions_per_s / b.questions_per_s)
    });
    println!(
        "{label:<28} {askers:>6} {:>8.2} {:>8.1} {:>7.2} {:>7.2} {ratio:>6}",
        r.questions_per_s, r.tokens_per_s, r.p50, r.p95
    );
}

#[tokio::main]
async fn main() {
    let server_bin = std::env::var("SWARM_LLM_LLAMA_SERVER")
        .expect("set SWARM_LLM_LLAMA_SERVER to llama-server (scripts/bench-throughput does it)");
    let threads: u32 = env_or("SWARM_LLM_BENCH_THREADS", 2);
    let n: usize = env_or("SWARM_LLM_BENCH_QUESTIONS", 32);
    let questions = dev_questions(n);
    let base = Config::example();
    let model = ModelConfig {
        name: "qwen05".into(),
        path: model_path("qwen05"),
        threads,
        max_tokens: MAX_TOKENS,
        ..base.models[0].clone()
    };
    let system = base.inference.system_prompt.clone();
    let broker = Broker::start();
    println!(
        "{n} dev questions, Qwen2.5-0.5B, {threads} threads, KV cache {:?}, at most {MAX_TOKENS} tokens, greedy",
        model.kv_cache
    );
    println!("ratio: swarm-llm questions/s over llama-server's with as many slots\n");
    println!(
        "{:<28} {:>6} {:>8} {:>8} {:>7} {:>7} {:>6}",
        "server", "askers", "q/s", "tok/s", "p50 s", "p95 s", "ratio"
    );
    for askers in ASKERS {
        let one = std::slice::from_ref(&model);
        let ours1 = through_service(&broker, one, &questions, 1, askers, |_| {}).await;
        let ours4 = through_service(&broker, one, &questions, 4, askers, |_| {}).await;
        let p1 = through_llama_server(&server_bin, &model, &system, &questions, 1, askers).await;
        let p4 = through_llama_server(&server_bin, &model, &system, &questions, 4, askers).await;
        row("swarm-llm parallel = 1", askers, &ours1, Some(&p1));
        row("swarm-llm parallel = 4", askers, &ours4, Some(&p4));
        row("llama-server --parallel 1", askers, &p1, None);
        row("llama-server --parallel 4", askers, &p4, None);
    }
    swarm(&broker, &questions).await;
}

/// The full swarm of config/swarm.toml (three small models, its router,
/// the cloud stand-in) under 8 askers, each model with one slot and with
/// four: questions/s and latency per route.
async fn swarm(broker: &Broker, questions: &[String]) {
    let text = std::fs::read_to_string(repo_root().join("config/swarm.toml")).unwrap();
    let file = Config::parse(&text).expect("config/swarm.toml parses");
    let models: Vec<ModelConfig> = file
        .models
        .iter()
        .map(|m| ModelConfig {
            path: model_path(&m.name),
            ..m.clone()
        })
        .collect();
    let cloud = CloudStandIn::start().await;
    let askers = 8;
    println!(
        "\nThe swarm of config/swarm.toml, cloud stand-in on the same cores, {askers} askers:\n"
    );
    println!(
        "{:<24} {:>8} {:>7} {:>7}   per route: questions, p50 / p95 s",
        "models", "q/s", "p50 s", "p95 s"
    );
    for parallel in [1, 4] {
        let run = through_service(broker, &models, questions, parallel, askers, |c| {
            c.inference = file.inference.clone();
            c.policy = file.policy.clone();
            c.routing = file.routing.clone();
            c.cloud = file
                .cloud
                .clone()
                .map(|cloud_config| swarm_llm::cloud::CloudConfig {
                    url: cloud.url.clone(),
                    ..cloud_config
                });
        })
        .await;
        let routes: Vec<String> = run
            .routes
            .iter()
            .map(|(route, n, p50, p95)| format!("{route} {n}, {p50:.2} / {p95:.2}"))
            .collect();
        println!(
            "{:<24} {:>8.2} {:>7.2} {:>7.2}   {}",
            format!("parallel = {parallel}"),
            run.questions_per_s,
            run.p50,
            run.p95,
            routes.join("; ")
        );
    }
}
