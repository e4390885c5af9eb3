//! A bridged deployment as it ships: two real mosquitto brokers joined by
//! `config/mosquitto-bridge.conf` (a line broker with the board, a plant
//! broker with the asker), the real binary and a real small model. The
//! board's retained status, with its counters, reaches the plant broker.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The shipped bridge file, pointed at the plant broker under test.
fn bridge_conf(plant: &Broker) -> String {
    let text = std::fs::read_to_string(repo_root().join("config/mosquitto-bridge.conf")).unwrap();
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("address ") {
                format!("address 127.0.0.1:{}", plant.port)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert!(lines.iter().any(|l| l.starts_with("address 127.0.0.1:")));
    lines.join("\n") + "\n"
}

/// `swarm-llm status --json` on `broker`, parsed.
fn status(broker: &Broker) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args([
            "status",
            "--json",
            "--wait",
            "0.5",
            "--broker",
            &broker.url(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_question_on_the_plant_broker_is_answered_by_a_board_on_the_line_broker() {
    let plant = Broker::start();
    let line = Broker::start_with(&bridge_conf(&plant));
    let mut config = service_config(&line, "line3-board1");
    config.mqtt.status_interval_s = 1;
    let _service = Service::start(&line, &config).await;

    // The board's retained status reaches the plant broker through the bridge.
    let started = Instant::now();
    let listed = loop {
        let boards = status(&plant);
        if let Some(b) = boards.iter().find(|b| b["node"] == "line3-board1") {
            break b.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the board never showed on the plant broker: {boards:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(listed["state"], "online", "{listed}");
    assert_eq!(listed["models"][0], config.models[0].name, "{listed}");

    // A question published on the plant broker comes down, its reply goes up.
    let mut asker = TestClient::replies(&plant).await;
    let reply = asker
        .ask_text(
            "What is the capital city of Australia",
            Duration::from_secs(120),
        )
        .await;
    assert!(reply["error"].is_null(), "{reply}");
    assert_eq!(reply["node"], "line3-board1", "{reply}");
    assert!(
        reply["answer"].as_str().is_some_and(|a| !a.is_empty()),
        "{reply}"
    );

    // The status is published again with the board's counters, so a plant
    // that reads only MQTT sees the answer counted, through the bridge too.
    let started = Instant::now();
    loop {
        let boards = status(&plant);
        let board = boards.iter().find(|b| b["node"] == "line3-board1").unwrap();
        let counters = &board["counters"];
        if counters["replies"].as_u64() >= Some(1) {
            let route = reply["route"].as_str().unwrap();
            assert_eq!(counters["routes"][route], 1, "{board}");
            assert!(counters["last_reply_unix_s"].as_u64().is_some(), "{board}");
            assert_eq!(board["load"], 0, "{board}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the counters never showed on the plant broker: {board}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}
