//! Test harness: a real mosquitto broker on a free port, the real service
//! binary with the real SmolLM2 model, and a small MQTT client.
#![allow(dead_code)] // each test file uses its own part of the harness

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swarm_llm::config::{Config, ModelConfig, MqttProtocol};
use swarm_llm::mqtt::{self, Client, ConnectSettings, Event, PublishProps};
use swarm_llm::protocol::Inbound;
use tokio::sync::mpsc;

pub const BIN: &str = env!("CARGO_BIN_EXE_swarm-llm");

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A model file by its fetch-script name (smollm2, gemma3, qwen05, qwen15),
/// located through the script so the cache folder has one definition.
pub fn model_path(name: &str) -> PathBuf {
    let out = Command::new(repo_root().join("scripts/fetch-models"))
        .args(["--only", name, "--list"])
        .output()
        .expect("run scripts/fetch-models");
    let line = String::from_utf8_lossy(&out.stdout);
    let path = PathBuf::from(
        line.split_whitespace()
            .nth(1)
            .expect("fetch-models --list prints NAME PATH"),
    );
    assert!(
        path.is_file(),
        "model {name} missing at {}: run scripts/fetch-models --only {name}",
        path.display()
    );
    path
}

/// The small model the tests run on.
pub fn test_model() -> PathBuf {
    model_path("smollm2")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_for_port(port: u16, within: Duration) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < within,
            "nothing listens on port {port} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A mosquitto broker of our own, killed on drop.
pub struct Broker {
    pub port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_with("")
    }

    /// A broker with more mosquitto.conf lines (another listener, TLS, ...)
    /// after its plain loopback listener on `port`.
    pub fn start_with(extra_conf: &str) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("extra.conf"), extra_conf).unwrap();
        let port = free_port();
        let child = Self::spawn(dir.path(), port);
        Broker { port, child, dir }
    }

    /// Stops the broker the way an operator would (SIGTERM: it saves its
    /// persistent sessions) and starts it again on the same port.
    pub fn restart(&mut self) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        self.child.wait().unwrap();
        self.child = Self::spawn(self.dir.path(), self.port);
    }

    // `user root`: started as root, mosquitto would switch to its own user and
    // then fail to save its persistent sessions in this root-owned folder.
    fn spawn(dir: &Path, port: u16) -> Child {
        let conf = dir.join("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\nuser root\npersistence true\npersistence_location {}/\nlog_dest file {}\n{}",
                dir.display(),
                dir.join("mosquitto.log").display(),
                std::fs::read_to_string(dir.join("extra.conf")).unwrap_or_default()
            ),
        )
        .unwrap();
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed (scripts/setup-system)");
        wait_for_port(port, Duration::from_secs(10));
        child
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The broker's log: connections, disconnections and why.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("mosquitto.log")
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A config for the service under test: the broker, the test model, quick reconnects.
pub fn service_config(broker: &Broker, node: &str) -> Config {
    let mut c = Config::example();
    c.node = node.into();
    c.mqtt.port = broker.port;
    c.mqtt.reconnect_min_ms = 100;
    c.mqtt.reconnect_max_ms = 1000;
    c.cloud = None;
    // One thread per model: the tests of a file run in parallel on a 2-core
    // machine, and llama.cpp's OpenMP threads spin when oversubscribed.
    c.models = vec![ModelConfig {
        path: test_model(),
        max_tokens: 48,
        threads: 1,
        ..c.models[0].clone()
    }];
    c
}

/// The service binary, killed on drop.
pub struct Service {
    pub node: String,
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Service {
    /// Starts the binary and waits for its retained "online" status, which it
    /// publishes only once its subscription is granted.
    pub async fn start(broker: &Broker, config: &Config) -> Service {
        Self::start_command(broker, config, &[BIN]).await
    }

    /// Starts `command... run --config FILE`, where the command is the binary
    /// or a wrapper and the binary (`unshare ... BIN`, `qemu-aarch64 ... BIN`).
    /// A journal left at the example's system folder goes to the test's own.
    pub async fn start_command(broker: &Broker, config: &Config, command: &[&str]) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config.clone();
        if let Some(j) = config.journal.as_mut() {
            if j.dir == Config::example().journal.unwrap().dir {
                j.dir = dir.path().join("state");
            }
        }
        let text = toml::to_string(&config).unwrap();
        Self::start_text(
            broker,
            dir,
            &config.node,
            &config.status_topic(),
            &text,
            command,
        )
        .await
    }

    /// Starts `command... run --config FILE` with the config as TOML text
    /// written into `dir` (e.g. another build's config, which this build's
    /// `Config` may not read), and waits for `node`'s "online" on `status_topic`.
    pub async fn start_text(
        broker: &Broker,
        dir: tempfile::TempDir,
        node: &str,
        status_topic: &str,
        text: &str,
        command: &[&str],
    ) -> Service {
        let path = dir.path().join("swarm.toml");
        std::fs::write(&path, text).unwrap();
        let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
        let mut status = TestClient::connect(broker, MqttProtocol::V5).await;
        status.subscribe(status_topic).await;
        let (program, args) = command.split_first().expect("a program to run");
        let child = Command::new(program)
            .args(args)
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "info,swarm_llm=debug,llama-cpp-2=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let service = Service {
            node: node.to_string(),
            child,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m = status
                .next_message(deadline.saturating_duration_since(Instant::now()))
                .await
                .unwrap_or_else(|| panic!("service never said online; log:\n{}", service.log()));
            if serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["state"] == "online"
            {
                return service;
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("service.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL, as a crash or the OOM killer would: no drain, nothing flushed.
    pub fn kill_9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain MQTT client for tests, on the library's transport.
pub struct TestClient {
    pub client: Client,
    events: mpsc::Receiver<Event>,
    poller: tokio::task::JoinHandle<()>,
}

impl TestClient {
    pub async fn connect(broker: &Broker, protocol: MqttProtocol) -> TestClient {
        Self::open(
            broker,
            protocol,
            format!("test-{:x}", rand_u64()),
            true,
            None,
        )
        .await
    }

    /// An MQTT 5 client that logs in as `user`.
    pub async fn login(broker: &Broker, user: &str, password: &str) -> TestClient {
        let credentials = Some((user.to_string(), password.to_string()));
        Self::open(
            broker,
            MqttProtocol::V5,
            format!("test-{user}"),
            true,
            credentials,
        )
        .await
    }

    /// A client whose session (subscriptions, queued QoS 1 messages) the
    /// broker keeps across disconnects and restarts; it reconnects by itself.
    pub async fn persistent(broker: &Broker, client_id: &str) -> TestClient {
        Self::open(broker, MqttProtocol::V5, client_id.to_string(), false, None).await
    }

    async fn open(
        broker: &Broker,
        protocol: MqttProtocol,
        client_id: String,
        clean_session: bool,
        credentials: Option<(String, String)>,
    ) -> TestClient {
        let settings = ConnectSettings {
            host: "127.0.0.1".into(),
            port: broker.port,
            protocol,
            client_id,
            clean_session,
            keep_alive: Duration::from_secs(30),
            session_expiry_s: 3600,
            max_packet_bytes: 8 * 1024 * 1024,
            credentials,
            tls: None,
            last_will: None,
            receive_maximum: None,
        };
        let (client, mut loop_) = mqtt::connect(&settings, false);
        let (tx, events) = mpsc::channel(256);
        let poller = tokio::spawn(async move {
            loop {
                match loop_.poll().await {
                    Ok(e) => {
                        if tx.send(e).await.is_err() {
                            break;
                        }
                    }
                    // Connection lost: rumqttc reconnects on the next poll.
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        let mut c = TestClient {
            client,
            events,
            poller,
        };
        c.wait_for(|e| matches!(e, Event::Connected { .. })).await;
        c
    }

    /// An MQTT 5 client subscribed to every default reply topic.
    pub async fn replies(broker: &Broker) -> TestClient {
        let mut c = TestClient::connect(broker, MqttProtocol::V5).await;
        c.subscribe("swarm/reply/#").await;
        c
    }

    async fn wait_for(&mut self, want: impl Fn(&Event) -> bool) {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let e = self.events.recv().await.expect("connection closed");
                if want(&e) {
                    return;
                }
            }
        })
        .await
        .expect("timed out waiting for an MQTT event");
    }

    pub async fn subscribe(&mut self, filter: &str) {
        self.client.try_subscribe(filter).unwrap();
        self.wait_for(|e| matches!(e, Event::Subscribed { granted: true }))
            .await;
    }

    /// Publishes a JSON request (no MQTT 5 properties).
    pub async fn publish_json(&self, topic: &str, request: &serde_json::Value) {
        self.publish(
            topic,
            request.to_string().as_bytes(),
            PublishProps::default(),
        )
        .await;
    }

    pub async fn publish(&self, topic: &str, payload: &[u8], props: PublishProps) {
        self.client
            .publish(topic, payload.to_vec(), false, props)
            .await
            .unwrap();
    }

    pub async fn next_message(&mut self, within: Duration) -> Option<Inbound> {
        tokio::time::timeout(within, async {
            loop {
                match self.events.recv().await? {
                    Event::Message(m, _) => return Some(m),
                    _ => continue,
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Publishes a plain-text question on `swarm/query/line1` and waits for
    /// the next reply (the client must be subscribed to where it goes).
    pub async fn ask_text(&mut self, question: &str, within: Duration) -> serde_json::Value {
        self.publish(
            "swarm/query/line1",
            question.as_bytes(),
            PublishProps::default(),
        )
        .await;
        self.reply(within).await
    }

    /// What a scrape should count: one question answered and one malformed
    /// request refused (both checked).
    pub async fn one_answer_and_one_refusal(&mut self, within: Duration) {
        let reply = self
            .ask_text("What colour is an emergency stop button", within)
            .await;
        assert!(reply["error"].is_null(), "{reply}");
        self.publish(
            "swarm/query/line1",
            b"{\"question\": ",
            PublishProps::default(),
        )
        .await;
        let bad = self.reply(within).await;
        assert_eq!(bad["error"]["code"], "malformed_json", "{bad}");
    }

    /// The next message, parsed as a reply.
    pub async fn reply(&mut self, within: Duration) -> serde_json::Value {
        let m = self.next_message(within).await.expect("no reply in time");
        serde_json::from_slice(&m.payload).unwrap()
    }
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish()
}

/// Whether an answer names Canberra.
pub fn says_canberra(reply: &serde_json::Value) -> bool {
    reply["answer"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase()
        .contains("canberra")
}

/// llama.cpp's OpenAI-compatible server with the cloud stand-in model
/// (Qwen2.5-Coder-1.5B), on a free loopback port; killed on drop.
pub struct CloudStandIn {
    pub url: String,
    child: Child,
}

impl CloudStandIn {
    pub async fn start() -> CloudStandIn {
        Self::start_on(None).await
    }

    /// The stand-in on these CPUs alone (`taskset -c`, one thread a CPU),
    /// as a cloud with cores of its own would be; all of them when None.
    pub async fn start_on(cpus: Option<&str>) -> CloudStandIn {
        // reqwest (its health check here) takes the process's TLS provider.
        swarm_llm::tls::install_provider();
        let out = Command::new(repo_root().join("scripts/build-llama-tools"))
            .output()
            .expect("run scripts/build-llama-tools");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bin = PathBuf::from(
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .lines()
                .last()
                .unwrap(),
        )
        .join("llama-server");
        let port = free_port();
        let (mut command, threads) = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(bin);
                (c, cpus.split(',').count().to_string())
            }
            None => (Command::new(bin), "2".to_string()),
        };
        let child = command
            .arg("-m")
            .arg(model_path("qwen15"))
            .args([
                "--alias",
                "qwen15",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
            ])
            .args(["-t", &threads, "-c", "2048", "-np", "1", "--no-webui"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start llama-server");
        let server = CloudStandIn {
            url: format!("http://127.0.0.1:{port}/v1"),
            child,
        };
        // Ready when /health answers 200 (503 while the model loads).
        let health = format!("http://127.0.0.1:{port}/health");
        let started = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&health).await {
                if r.status().is_success() {
                    return server;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "llama-server did not become healthy"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for CloudStandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A setting from the environment, or its default (benchmarks' knobs).
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process, in KiB.
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// `n` of the dev workload's non-safety questions, repeated as needed.
pub fn dev_questions(n: usize) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("../shared/workload/dev.jsonl"))
        .expect("../shared/workload/dev.jsonl");
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["category"] != "safety")
        .map(|v| v["prompt"].as_str().unwrap().to_string())
        .cycle()
        .take(n)
        .collect()
}

/// A learned router that sends multiple-choice questions to the cloud and
/// keeps the others (its score reads only `offers_options`), with a cut of 0.5.
pub fn choice_minded_router() -> swarm_llm::route::learned::LearnedRouter {
    use swarm_llm::route::learned::{LearnedRouter, CLASSES, FEATURES};
    let d = FEATURES.len();
    let offers = FEATURES
        .iter()
        .position(|f| *f == "offers_options")
        .unwrap();
    let mut helps = vec![0.0; d];
    helps[offers] = 10.0;
    LearnedRouter {
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        cloud_at: 0.5,
        vote_at: 0.5,
        model: swarm_llm::route::softmax::Softmax {
            classes: CLASSES.iter().map(|c| c.to_string()).collect(),
            mean: vec![0.0; d],
            scale: vec![1.0; d],
            weights: vec![vec![0.0; d], helps],
            bias: vec![0.0, -5.0],
        },
    }
}

/// config/swarm.toml as shipped, its models read from this machine's model
/// folder (the benchmarks run the board's own swarm).
pub fn shipped_config() -> Config {
    let text = std::fs::read_to_string(repo_root().join("config/swarm.toml")).unwrap();
    let mut config = Config::parse(&text).expect("config/swarm.toml parses");
    for m in &mut config.models {
        m.path = model_path(&m.name);
    }
    config
}
