//! Questions per second under load, side by side with what a user would run
//! instead: the same dev questions to one model (Qwen2.5-0.5B, always
//! local) through swarm-llm over MQTT and through llama.cpp's own
//! `llama-server` over HTTP, with the same GGUF file, threads, KV cache type,
//! system prompt, answer budget and greedy decoding, with 1, 4 and 8 askers
//! in flight. Each asker sends its next question when its answer is back.
//! Both run with one slot and with four (the service's `parallel`,
//! llama-server's `--parallel`), each slot with the model's context size.
//! All four servers stay up and take turns, round after round, so that the
//! machine's drift over the minutes of a run falls on every side of a
//! ratio; a ratio is the median of the rounds'.
//!
//! Then the full swarm of config/swarm.toml with its cloud stand-in, per
//! route, and beside it, where given, another build of swarm-llm with its own
//! config (a release before a change): SWARM_LLM_BENCH_BASELINE=path/to/swarm-llm
//! and SWARM_LLM_BENCH_BASELINE_CONFIG=its/config/swarm.toml.
//!
//! Run it with `scripts/bench-throughput` (which fetches the models and builds
//! llama-server), or directly: `SWARM_LLM_LLAMA_SERVER=path/to/llama-server
//! cargo bench --bench throughput`. Settings: SWARM_LLM_BENCH_THREADS
//! (default 2), SWARM_LLM_BENCH_QUESTIONS (default 32), SWARM_LLM_BENCH_ROUNDS
//! (default 3).

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use swarm_llm::config::{Config, ModelConfig, MqttProtocol};
use swarm_llm::measuring::stats::percentile;
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

/// The `p` quantile of some latencies, interpolated between the two nearest
/// ranks (the median of two rounds' ratios is their mean, not the better one).
fn quantile(seconds: &[f64], p: f64) -> f64 {
    let mut s = seconds.to_vec();
    s.sort_by(f64::total_cmp);
    percentile(&s, p).expect("at least one value")
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

/// A swarm-llm service under test with its askers' connections.
struct ServiceUnderTest {
    _service: Service,
    clients: Vec<Arc<tokio::sync::Mutex<TestClient>>>,
    /// Where its questions go (inside its own request filter, so that the
    /// services of one run, on one broker, never take each other's).
    topic: String,
    node: String,
}

impl ServiceUnderTest {
    /// The service of `config`, with as many reply connections as the most
    /// askers, warmed with one question (the first touch of the weights).
    async fn start(broker: &Broker, mut config: Config, questions: &[String]) -> Self {
        config.mqtt.request_filter = format!("bench/{}/#", config.node);
        let service = Service::start(broker, &config).await;
        Self::connect(broker, service, &config.node, questions).await
    }

    async fn connect(broker: &Broker, service: Service, node: &str, questions: &[String]) -> Self {
        let mut clients = Vec::new();
        for a in 0..ASKERS[ASKERS.len() - 1] {
            let mut c = TestClient::connect(broker, MqttProtocol::V5).await;
            c.subscribe(&reply_topic(node, a)).await;
            clients.push(Arc::new(tokio::sync::Mutex::new(c)));
        }
        let s = Self {
            _service: service,
            clients,
            topic: format!("bench/{node}/q"),
            node: node.to_string(),
        };
        s.ask(0, &questions[0]).await;
        s
    }

    async fn run(&self, questions: &[String], askers: usize) -> (Vec<Answered>, Duration) {
        let (clients, topic, node) = (self.clients.clone(), self.topic.clone(), self.node.clone());
        ask_all(questions, askers, move |a, q| {
            let (c, topic, reply) = (clients[a].clone(), topic.clone(), reply_topic(&node, a));
            async move { ask_service(&c, &topic, reply, &q).await }
        })
        .await
    }

    async fn ask(&self, asker: usize, question: &str) -> Answered {
        let reply = reply_topic(&self.node, asker);
        ask_service(&self.clients[asker], &self.topic, reply, question).await
    }
}

/// Where a service's answers to one asker come back.
fn reply_topic(node: &str, asker: usize) -> String {
    format!("bench/reply/{node}/{asker}")
}

async fn ask_service(
    client: &tokio::sync::Mutex<TestClient>,
    topic: &str,
    reply_topic: String,
    question: &str,
) -> Answered {
    let mut c = client.lock().await;
    let payload =
        serde_json::to_vec(&serde_json::json!({ "question": question, "max_tokens": MAX_TOKENS }))
            .unwrap();
    let props = PublishProps {
        response_topic: Some(reply_topic),
        correlation_data: None,
    };
    let sent = Instant::now();
    c.publish(topic, &payload, props).await;
    let r = c.reply(Duration::from_secs(600)).await;
    assert!(r["error"].is_null(), "{r}");
    Answered {
        seconds: sent.elapsed().as_secs_f64(),
        tokens: r["tokens"].as_u64().unwrap(),
        route: r["route"].as_str().unwrap_or_default().to_string(),
    }
}

/// One model alone, always local, with `parallel` slots, as llama-server's
/// slots get below.
fn one_model_config(broker: &Broker, model: &ModelConfig, parallel: u32) -> Config {
    let mut config = service_config(broker, &format!("tp-{parallel}"));
    config.models = vec![with_slots(model, parallel)];
    config
}

/// `model` with `parallel` slots of its cells each.
fn with_slots(model: &ModelConfig, parallel: u32) -> ModelConfig {
    ModelConfig {
        parallel,
        context_size: model.context_size * parallel,
        ..model.clone()
    }
}

struct LlamaServer(Child);

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// llama.cpp's own server on the same model, asked over its
/// OpenAI-compatible chat endpoint.
struct LlamaServerUnderTest {
    _server: LlamaServer,
    http: reqwest::Client,
    base: String,
    system: String,
}

impl LlamaServerUnderTest {
    async fn start(
        bin: &str,
        model: &ModelConfig,
        system: &str,
        parallel: usize,
        questions: &[String],
    ) -> Self {
        let port = free_port();
        let kv = model.kv_cache.as_str();
        let server = LlamaServer(
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
        swarm_llm::tls::install_provider();
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
        let s = Self {
            _server: server,
            http,
            base,
            system: system.to_string(),
        };
        ask_llama_server(&s.http, &s.base, &s.system, &questions[0]).await; // warm-up
        s
    }

    async fn run(&self, questions: &[String], askers: usize) -> (Vec<Answered>, Duration) {
        let (http, base, system) = (self.http.clone(), self.base.clone(), self.system.clone());
        ask_all(questions, askers, move |_, q| {
            let (http, base, system) = (http.clone(), base.clone(), system.clone());
            async move { ask_llama_server(&http, &base, &system, &q).await }
        })
        .await
    }
}

async fn ask_llama_server(
    http: &reqwest::Client,
    base: &str,
    system: &str,
    question: &str,
) -> Answered {
    let body = serde_json::json!({
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
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

/// The median of some numbers.
fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// One server's rounds at one number of askers.
#[derive(Default)]
struct Rounds {
    answers: Vec<Answered>,
    wall: Duration,
    questions_per_s: Vec<f64>,
}

impl Rounds {
    fn add(&mut self, (answers, wall): (Vec<Answered>, Duration)) {
        self.questions_per_s
            .push(answers.len() as f64 / wall.as_secs_f64());
        self.answers.extend(answers);
        self.wall += wall;
    }
}

/// A line of the table: questions/s and tokens/s over all rounds, p50 and
/// p95 over all answers, and against `reference` the median and range of
/// the rounds' ratios.
fn row(label: &str, askers: usize, r: Rounds, reference: Option<&Rounds>) {
    let ratios: Vec<f64> = reference.map_or_else(Vec::new, |b| {
        r.questions_per_s
            .iter()
            .zip(&b.questions_per_s)
            .map(|(ours, theirs)| ours / theirs)
            .collect()
    });
    let ratio = if ratios.is_empty() {
        String::new()
    } else {
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(0.0, f64::max);
        format!("{:.2} ({lo:.2}-{hi:.2})", median(&ratios))
    };
    let s = summarise(r.answers, r.wall);
    println!(
        "{label:<28} {askers:>6} {:>8.2} {:>8.1} {:>7.2} {:>7.2}  {ratio}",
        s.questions_per_s, s.tokens_per_s, s.p50, s.p95
    );
}

#[tokio::main]
async fn main() {
    let server_bin = std::env::var("SWARM_LLM_LLAMA_SERVER")
        .expect("set SWARM_LLM_LLAMA_SERVER to llama-server (scripts/bench-throughput does it)");
    let threads: u32 = env_or("SWARM_LLM_BENCH_THREADS", 2);
    let n: usize = env_or("SWARM_LLM_BENCH_QUESTIONS", 32);
    let rounds: usize = env_or("SWARM_LLM_BENCH_ROUNDS", 3);
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
        "{n} dev questions, Qwen2.5-0.5B, {threads} threads, KV cache {:?}, at most {MAX_TOKENS} tokens, greedy, {rounds} rounds",
        model.kv_cache
    );
    println!("ratio: swarm-llm questions/s over llama-server's with as many slots, median of the rounds (range)\n");
    println!(
        "{:<28} {:>6} {:>8} {:>8} {:>7} {:>7}  ratio",
        "server", "askers", "q/s", "tok/s", "p50 s", "p95 s"
    );
    let ours = [
        ServiceUnderTest::start(&broker, one_model_config(&broker, &model, 1), &questions).await,
        ServiceUnderTest::start(&broker, one_model_config(&broker, &model, 4), &questions).await,
    ];
    let theirs = [
        LlamaServerUnderTest::start(&server_bin, &model, &system, 1, &questions).await,
        LlamaServerUnderTest::start(&server_bin, &model, &system, 4, &questions).await,
    ];
    for askers in ASKERS {
        let mut ours_rounds: [Rounds; 2] = Default::default();
        let mut theirs_rounds: [Rounds; 2] = Default::default();
        for _ in 0..rounds {
            for slots in 0..2 {
                ours_rounds[slots].add(ours[slots].run(&questions, askers).await);
                theirs_rounds[slots].add(theirs[slots].run(&questions, askers).await);
            }
        }
        let [o1, o4] = ours_rounds;
        let [t1, t4] = theirs_rounds;
        row("swarm-llm parallel = 1", askers, o1, Some(&t1));
        row("swarm-llm parallel = 4", askers, o4, Some(&t4));
        row("llama-server --parallel 1", askers, t1, None);
        row("llama-server --parallel 4", askers, t4, None);
    }
    drop(ours);
    drop(theirs);
    swarm(&broker, &questions).await;
}

/// The full swarm of config/swarm.toml (three small models, its router,
/// the cloud stand-in) under 8 askers, each model with one slot and with
/// four, and the baseline build where given: questions/s and latency per route.
async fn swarm(broker: &Broker, questions: &[String]) {
    let file = shipped_config();
    let models = file.models.clone();
    let cloud = CloudStandIn::start().await;
    let askers = ASKERS[ASKERS.len() - 1];
    println!(
        "\nThe swarm of config/swarm.toml, cloud stand-in on the same cores, {askers} askers:\n"
    );
    println!(
        "{:<24} {:>8} {:>7} {:>7}   per route: questions, p50 / p95 s",
        "models", "q/s", "p50 s", "p95 s"
    );
    let print = |label: &str, (answers, wall): (Vec<Answered>, Duration)| {
        let run = summarise(answers, wall);
        let routes: Vec<String> = run
            .routes
            .iter()
            .map(|(route, n, p50, p95)| format!("{route} {n}, {p50:.2} / {p95:.2}"))
            .collect();
        println!(
            "{label:<24} {:>8.2} {:>7.2} {:>7.2}   {}",
            run.questions_per_s,
            run.p50,
            run.p95,
            routes.join("; ")
        );
    };
    if let Some(baseline) = baseline_service(broker, &cloud.url, questions).await {
        print("baseline build", baseline.run(questions, askers).await);
    }
    for parallel in [1, 4] {
        let mut config = service_config(broker, &format!("tp-swarm-{parallel}"));
        config.models = models.iter().map(|m| with_slots(m, parallel)).collect();
        config.inference = file.inference.clone();
        config.policy = file.policy.clone();
        config.routing = file.routing.clone();
        // The board config names no cloud (a site's drop-in adds it): the
        // swarm here always asks this run's stand-in.
        config.cloud = Some(swarm_llm::cloud::CloudConfig {
            url: cloud.url.clone(),
            model: "qwen15".into(),
            ..file.cloud.clone().unwrap_or_default()
        });
        let service = ServiceUnderTest::start(broker, config, questions).await;
        print(
            &format!("parallel = {parallel}"),
            service.run(questions, askers).await,
        );
    }
}

/// Another build of swarm-llm with its own config, where
/// SWARM_LLM_BENCH_BASELINE and SWARM_LLM_BENCH_BASELINE_CONFIG name them:
/// the config is read as plain TOML (this build's `Config` may not read an
/// older one) and pointed at this run's broker, cloud stand-in and models.
async fn baseline_service(
    broker: &Broker,
    cloud_url: &str,
    questions: &[String],
) -> Option<ServiceUnderTest> {
    let bin = std::env::var("SWARM_LLM_BENCH_BASELINE").ok()?;
    let path = std::env::var("SWARM_LLM_BENCH_BASELINE_CONFIG")
        .expect("SWARM_LLM_BENCH_BASELINE_CONFIG: the baseline build's config file");
    let text = std::fs::read_to_string(&path).expect("read the baseline config");
    let models = model_path("qwen05")
        .parent()
        .expect("a model folder")
        .display()
        .to_string();
    // The config names its models through ${SWARM_LLM_MODELS}.
    let text = text.replace("${SWARM_LLM_MODELS}", &models);
    let mut config: toml::Table = toml::from_str(&text).expect("the baseline config is TOML");
    let dir = tempfile::tempdir().unwrap();
    let node = "tp-baseline";
    let set = |table: &mut toml::Table, section: &str, key: &str, value: toml::Value| {
        table
            .entry(section)
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .expect("a config section is a table")
            .insert(key.into(), value);
    };
    config.insert("node".into(), node.into());
    set(&mut config, "mqtt", "host", "127.0.0.1".into());
    set(&mut config, "mqtt", "port", i64::from(broker.port).into());
    set(
        &mut config,
        "mqtt",
        "request_filter",
        format!("bench/{node}/#").into(),
    );
    set(&mut config, "cloud", "url", cloud_url.into());
    let state = dir.path().join("state").display().to_string();
    set(&mut config, "journal", "dir", state.into());
    let prefix = config["mqtt"]
        .get("status_topic_prefix")
        .and_then(|p| p.as_str())
        .unwrap_or("swarm/status")
        .to_string();
    let service = Service::start_text(
        broker,
        dir,
        node,
        &format!("{prefix}/{node}"),
        &toml::to_string(&config).unwrap(),
        &[&bin],
    )
    .await;
    Some(ServiceUnderTest::connect(broker, service, node, questions).await)
}
