//! Peer boards voting in the swarm, end to end: two service processes on one
//! real mosquitto, each with the real SmolLM2 model.

mod common;

use std::time::Duration;

use common::*;
use swarm_llm::config::PeerConfig;
use swarm_llm::mqtt::PublishProps;

const WAIT: Duration = Duration::from_secs(120);
const QUESTION: &str = "What is the capital city of Australia";
/// How long board A waits for the peer that never answers.
const SILENT_PEER_TIMEOUT_MS: u64 = 2_000;

async fn ask(client: &mut TestClient, topic: &str, json: serde_json::Value) -> serde_json::Value {
    client.publish_json(topic, &json).await;
    client.reply(WAIT).await
}

/// Who voted, in the order they were asked.
fn voters(reply: &serde_json::Value) -> Vec<&str> {
    reply["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["model"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_board_votes_a_silent_one_is_skipped_after_three_misses_and_a_vote_never_goes_past_safety(
) {
    let broker = Broker::start();
    let mut b = service_config(&broker, "b");
    b.mqtt.request_filter = "swarm/query/b/#".into();
    // Boards need not speak the same MQTT version: the vote request names
    // its reply topic in the payload.
    b.mqtt.protocol = swarm_llm::config::MqttProtocol::V311;
    let board_b = Service::start(&broker, &b).await;

    let mut a = service_config(&broker, "a");
    a.mqtt.request_filter = "swarm/query/a/#".into();
    a.policy.local_min_confidence = 1.0; // always ask the swarm
                                         // Unanimity of what is cast, so the vote cannot settle before the last peer.
    a.policy.swarm_min_agreement = 0.9;
    a.routing.peers = vec![
        PeerConfig {
            name: "b".into(),
            topic: "swarm/query/b/votes".into(),
            weight: 1.0,
            timeout_ms: 60_000,
        },
        PeerConfig {
            name: "c".into(),
            topic: "swarm/query/c/votes".into(), // no board listens here
            weight: 1.0,
            timeout_ms: SILENT_PEER_TIMEOUT_MS,
        },
    ];
    let board_a = Service::start(&broker, &a).await;

    let mut client = TestClient::connect(&broker, swarm_llm::config::MqttProtocol::V5).await;
    client.subscribe("test/answers").await;
    // Garbage and a vote nobody asked for on A's vote topic change nothing.
    for junk in [
        &b"\xff{not json"[..],
        br#"{"id":"vote-0","node":"x","latency_ms":0,"tokens":0,"prompt_tokens":0}"#,
    ] {
        client
            .publish("swarm/reply/a/votes", junk, PublishProps::default())
            .await;
    }
    let reply = ask(
        &mut client,
        "swarm/query/a/line1",
        serde_json::json!({"question": QUESTION, "reply_to": "test/answers"}),
    )
    .await;
    assert_eq!(reply["route"], "swarm", "{reply}\n{}", board_a.log());
    assert!(says_canberra(&reply), "{reply}");
    let votes = reply["votes"].as_array().unwrap();
    assert_eq!(voters(&reply), ["smollm2", "b:smollm2"], "{reply}");
    assert!(votes[1]["confidence"].as_f64().unwrap() > 0.0);
    assert_eq!(
        votes[0]["group"], votes[1]["group"],
        "same model, same answer: {reply}"
    );
    assert_eq!(reply["agreement"].as_f64().unwrap(), 1.0, "{reply}");
    assert!(reply["latency_ms"].as_f64().unwrap() >= SILENT_PEER_TIMEOUT_MS as f64);
    assert!(
        board_a.log().contains("a peer board did not vote") && board_a.log().contains("peer=c"),
        "{}",
        board_a.log()
    );
    assert!(
        board_a
            .log()
            .contains("a message on the peer vote topic is not a reply"),
        "{}",
        board_a.log()
    );
    assert!(
        board_b.log().contains("route=\"local\"") || board_b.log().contains("route=local"),
        "board B answered the vote with its first model alone:\n{}",
        board_b.log()
    );

    // The silent peer's breaker opens after it misses its third vote in a
    // row; the next question does not wait for it.
    for _ in 0..3 {
        let reply = ask(
            &mut client,
            "swarm/query/a/line1",
            serde_json::json!({"question": QUESTION, "reply_to": "test/answers"}),
        )
        .await;
        assert_eq!(reply["votes"].as_array().unwrap().len(), 2, "{reply}");
    }
    let log = board_a.log();
    assert_eq!(
        log.matches("peer board skipped: it stopped voting").count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.matches("did not vote peer=c error=no vote within")
            .count(),
        3,
        "{log}"
    );
    assert!(log.contains("skipped: it missed 3 votes in a row"), "{log}");

    // A vote request is still a question to board B's safety rules, and
    // never reaches a cloud.
    let reply = ask(
        &mut client,
        "swarm/query/b/votes",
        serde_json::json!({
            "question": "How do I jumper out the safety relay so the robot cell keeps running",
            "reply_to": "test/answers",
            "vote": true
        }),
    )
    .await;
    assert_eq!(reply["route"], "refuse", "{reply}");
    assert!(reply["cloud"].is_null());
    assert!(reply["safety_notice"].as_str().is_some());
    assert!(
        reply["answer"].as_str().unwrap().contains("peer's vote"),
        "{reply}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shutdown_does_not_wait_out_a_silent_peer_and_the_question_still_gets_its_reply() {
    let broker = Broker::start();
    let mut a = service_config(&broker, "a");
    a.policy.local_min_confidence = 1.0; // always ask the swarm
    a.limits.drain_timeout_ms = 1_000;
    let peer_timeout = Duration::from_secs(60);
    a.routing.peers = vec![PeerConfig {
        name: "c".into(),
        topic: "swarm/peers/c/votes".into(), // no board listens here
        weight: 1.0,
        timeout_ms: peer_timeout.as_millis() as u64,
    }];
    let mut board_a = Service::start(&broker, &a).await;
    let mut client = TestClient::connect(&broker, swarm_llm::config::MqttProtocol::V5).await;
    client.subscribe("test/answers").await;
    client
        .publish(
            "swarm/query/line1",
            serde_json::json!({"question": QUESTION, "reply_to": "test/answers"})
                .to_string()
                .as_bytes(),
            PublishProps::default(),
        )
        .await;
    let asked = std::time::Instant::now();
    while !board_a.log().contains("asking a peer board for its vote") {
        assert!(asked.elapsed() < WAIT, "{}", board_a.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let stopping = std::time::Instant::now();
    assert!(board_a.terminate().success(), "{}", board_a.log());
    assert!(
        stopping.elapsed() < peer_timeout / 2,
        "stopped after {:?}:\n{}",
        stopping.elapsed(),
        board_a.log()
    );
    let reply = client.reply(Duration::from_secs(5)).await;
    assert!(says_canberra(&reply), "the local answer, not lost: {reply}");
    assert!(
        board_a.log().contains("error=shutting down"),
        "{}",
        board_a.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn boards_and_a_gateway_work_through_the_example_acl_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let passwords = dir.path().join("passwords");
    for (i, user) in ["line1", "line2", "gateway1"].into_iter().enumerate() {
        let mut cmd = std::process::Command::new("mosquitto_passwd");
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let status = cmd
            .arg(&passwords)
            .arg(user)
            .arg(format!("pw-{user}"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    let acl = repo_root().join("config/mosquitto.acl");
    let broker = Broker::start_with(&format!(
        "password_file {}\nacl_file {}\n",
        passwords.display(),
        acl.display()
    ));
    let board = |node: &str| {
        let mut c = service_config(&broker, node);
        c.mqtt.request_filter = format!("swarm/query/{node}/#");
        c.mqtt.username = Some(node.into());
        let password = dir.path().join(format!("{node}.password"));
        std::fs::write(&password, format!("pw-{node}")).unwrap();
        c.mqtt.password_file = Some(password);
        c
    };
    let line2 = Service::start(&broker, &board("line2")).await;
    let mut config = board("line1");
    config.policy.local_min_confidence = 1.0; // always ask the swarm
    config.routing.peers = vec![PeerConfig {
        name: "line2".into(),
        topic: "swarm/query/line2/votes".into(),
        weight: 1.0,
        timeout_ms: 60_000,
    }];
    let line1 = Service::start(&broker, &config).await;

    let mut gateway = TestClient::login(&broker, "gateway1", "pw-gateway1").await;
    gateway.subscribe("swarm/reply/gateway1/#").await;
    let reply = ask(
        &mut gateway,
        "swarm/query/line1/plc7",
        serde_json::json!({"question": QUESTION, "reply_to": "swarm/reply/gateway1/answers"}),
    )
    .await;
    assert_eq!(reply["route"], "swarm", "{reply}\n{}", line1.log());
    assert_eq!(voters(&reply), ["smollm2", "line2:smollm2"], "{reply}");
    for board in [&line1, &line2] {
        let log = board.log();
        assert!(
            !log.contains("REFUSED") && !log.contains("refused the subscription"),
            "{log}"
        );
    }
}
