//! One image, many boards: two services started from the same installed
//! files (one config and one site drop-in, no per-board edit), each in its
//! own UTS and mount namespace with its own hostname and machine-id, as two
//! boards flashed from one image would be. They share one question stream
//! through a share group for two minutes, with the real binary, mosquitto
//! and SmolLM2. Needs root for the namespaces (CI runs as root).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use swarm_llm::config::{drop_in_dir, Config};
use swarm_llm::mqtt::PublishProps;

/// How long the stream runs, and the gap between two questions.
const STREAM: Duration = Duration::from_secs(120);
const GAP: Duration = Duration::from_millis(1500);

/// A board: the installed binary and config run in namespaces of its own.
struct Board {
    hostname: String,
    child: Child,
    log: std::path::PathBuf,
    _state: tempfile::TempDir,
}

impl Board {
    fn start(hostname: &str, machine_id: &str, config: &Path) -> Board {
        let state = tempfile::tempdir().unwrap();
        let id_file = state.path().join("machine-id");
        std::fs::write(&id_file, format!("{machine_id}\n")).unwrap();
        let log = state.path().join("service.log");
        // What differs between two boards is theirs, not the image's: the
        // hostname, /etc/machine-id and the state folder systemd gives.
        let script = r#"hostname "$1" && mount --bind "$2" /etc/machine-id && exec "$3" run"#;
        let child = Command::new("unshare")
            .args(["--uts", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", script, "sh", hostname])
            .arg(&id_file)
            .arg(BIN)
            .env("SWARM_LLM_CONFIG", config)
            .env("STATE_DIRECTORY", state.path().join("state"))
            .env("RUST_LOG", "info,swarm_llm=debug,llama-cpp-2=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("unshare (util-linux)");
        Board {
            hostname: hostname.into(),
            child,
            log,
            _state: state,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Notes a reply: which board answered which question (none with an error).
fn record(answers: &mut BTreeMap<String, Vec<String>>, m: &swarm_llm::protocol::Inbound) {
    let r: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert!(r["error"].is_null(), "{r}");
    answers
        .entry(r["id"].as_str().unwrap().into())
        .or_default()
        .push(r["node"].as_str().unwrap().into());
}

async fn wait_online(status: &mut TestClient, boards: &[Board]) {
    let mut online = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    while online.len() < boards.len() {
        let Some(m) = status
            .next_message(deadline.saturating_duration_since(Instant::now()))
            .await
        else {
            let logs: Vec<_> = boards.iter().map(|b| b.log()).collect();
            panic!("online: {online:?}; logs:\n{}", logs.join("\n----\n"));
        };
        let s: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if s["state"] == "online" {
            online.insert(s["node"].as_str().unwrap().to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_boards_from_one_image_keep_their_own_names_and_share_the_stream() {
    let broker = Broker::start();
    // The installed files: the image's config, which names no board, and
    // the site's drop-in (the broker and the share group).
    let etc = tempfile::tempdir().unwrap();
    let config_path = etc.path().join("swarm.toml");
    let mut image = service_config(&broker, "unused");
    image.node = Config::example().node;
    image.mqtt.host = "127.0.0.1".into();
    image.mqtt.port = 1883;
    image.models[0].max_tokens = 16;
    std::fs::write(&config_path, toml::to_string(&image).unwrap()).unwrap();
    let site = drop_in_dir(&config_path).join("10-site.toml");
    std::fs::create_dir(site.parent().unwrap()).unwrap();
    std::fs::write(
        &site,
        format!("[mqtt]\nport = {}\nshare_group = \"line3\"\n", broker.port),
    )
    .unwrap();

    let mut status = TestClient::connect(&broker, swarm_llm::config::MqttProtocol::V5).await;
    status.subscribe("swarm/status/+").await;
    let boards = vec![
        Board::start("press-a", "0123456789abcdef0123456789abcdef", &config_path),
        Board::start("press-b", "fedcba9876543210fedcba9876543210", &config_path),
    ];
    wait_online(&mut status, &boards).await;

    let mut replies = TestClient::replies(&broker).await;
    let asker = TestClient::connect(&broker, swarm_llm::config::MqttProtocol::V5).await;
    let start = Instant::now();
    let mut asked = 0;
    let mut answers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    while start.elapsed() < STREAM {
        let ask = format!(r#"{{"id":"q{asked}","question":"What is {asked} plus 2"}}"#);
        asker
            .publish(
                "swarm/query/line3/plc",
                ask.as_bytes(),
                PublishProps::default(),
            )
            .await;
        asked += 1;
        let next = Instant::now() + GAP;
        while let Some(m) = replies
            .next_message(next.saturating_duration_since(Instant::now()))
            .await
        {
            record(&mut answers, &m);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while answers.len() < asked && Instant::now() < deadline {
        if let Some(m) = replies.next_message(Duration::from_secs(5)).await {
            record(&mut answers, &m);
        }
    }
    // Stragglers: a question answered twice would show here.
    while let Some(m) = replies.next_message(Duration::from_secs(2)).await {
        record(&mut answers, &m);
    }

    // Every question answered, once.
    assert_eq!(answers.len(), asked, "asked {asked}");
    let twice: Vec<_> = answers.iter().filter(|(_, b)| b.len() > 1).collect();
    assert!(twice.is_empty(), "answered more than once: {twice:?}");
    let mut by_board: BTreeMap<&str, usize> = BTreeMap::new();
    for b in answers.values() {
        *by_board.entry(b[0].as_str()).or_default() += 1;
    }
    eprintln!("{asked} questions; answers by board: {by_board:?}");
    for b in &boards {
        assert!(
            by_board.get(b.hostname.as_str()).copied().unwrap_or(0) > 0,
            "{} answered nothing: {by_board:?}",
            b.hostname
        );
    }

    // Both stayed connected: each client id connected once, and no board
    // lost its link (a duplicate id would throw the other off in a loop).
    let broker_log = std::fs::read_to_string(broker.log_path()).unwrap_or_default();
    let connects: Vec<&str> = broker_log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(" as swarm-llm-"))
        .collect();
    assert_eq!(connects.len(), 2, "{}", connects.join("\n"));
    assert!(!broker_log.contains("already connected"), "{broker_log}");
    for b in &boards {
        let log = b.log();
        assert!(
            log.matches("connected to the MQTT broker").count() == 1
                && !log.contains("connection lost"),
            "{}:\n{log}",
            b.hostname
        );
        assert!(
            connects
                .iter()
                .any(|l| l.contains(&format!("as swarm-llm-{}-", b.hostname))),
            "{} has no client id of its own: {connects:?}",
            b.hostname
        );
    }

    // `swarm-llm status` right after the stream: two boards, each with its
    // replies counted (the status is republished after replies, not only
    // every status_interval_s).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let url = broker.url();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["status", "--json", "--broker", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success());
    let listed: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut seen: Vec<(String, u64)> = listed
        .iter()
        .map(|s| {
            (
                s["node"].as_str().unwrap().to_string(),
                s["counters"]["replies"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    seen.sort();
    let want: Vec<(String, u64)> = by_board
        .iter()
        .map(|(n, c)| (n.to_string(), *c as u64))
        .collect();
    assert_eq!(seen, want, "status against the replies seen");
}
