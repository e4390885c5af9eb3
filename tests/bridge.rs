//! A bridged deployment as it ships: two real mosquitto brokers joined by
//! `config/mosquitto-bridge.conf` (a line broker with the board, a plant
//! broker with the asker), the real binary and a real small model.

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
    let config = service_config(&line, "line3-board1");
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
}
