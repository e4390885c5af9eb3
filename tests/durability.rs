//! Durability with the real binary, mosquitto and SmolLM2: the question
//! journal across a `kill -9`, and a full disk under the journal.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use swarm_llm::config::{JournalConfig, MqttProtocol};
use swarm_llm::mqtt::PublishProps;

const QUESTION: &str = "What is the capital city of Australia";

/// Collects replies on the client's subscription until `want` distinct ids
/// have answered, then `linger` more, counting each id.
async fn collect(
    client: &mut TestClient,
    counts: &mut BTreeMap<String, usize>,
    want: usize,
    linger: Duration,
    log: impl Fn() -> String,
) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut enough_at: Option<Instant> = None;
    loop {
        if counts.len() >= want && enough_at.is_none() {
            enough_at = Some(Instant::now());
        }
        let until = match enough_at {
            Some(t) => t + linger,
            None => deadline,
        };
        let Some(m) = client
            .next_message(until.saturating_duration_since(Instant::now()))
            .await
        else {
            assert!(
                enough_at.is_some(),
                "only {} of {want} answered: {counts:?}\n{}",
                counts.len(),
                log()
            );
            return;
        };
        let reply: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert!(reply["error"].is_null(), "{reply}");
        *counts
            .entry(reply["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_burst_of_50_then_a_restart_answers_every_question_and_repeats_at_most_the_one_in_flight(
) {
    let broker = Broker::start();
    let state = tempfile::tempdir().unwrap();
    let mut config = service_config(&broker, "kill9");
    // Small enough that the burst also compacts the journal.
    config.journal = Some(JournalConfig {
        dir: state.path().to_path_buf(),
        max_bytes: 64 << 10,
    });
    config.limits.intake_queue = 64;
    config.limits.max_deadline_ms = 600_000;
    config.limits.default_deadline_ms = 600_000;
    let mut service = Service::start(&broker, &config).await;
    let mut client = TestClient::persistent(&broker, "kill9-asker").await;
    client.subscribe("gw/kill9/answers").await;
    for i in 0..50 {
        let ask =
            format!(r#"{{"id":"k{i}","question":"{QUESTION}","reply_to":"gw/kill9/answers"}}"#);
        client
            .publish("swarm/query/kill9", ask.as_bytes(), PublishProps::default())
            .await;
    }
    let mut counts = BTreeMap::new();
    collect(&mut client, &mut counts, 5, Duration::ZERO, || {
        service.log()
    })
    .await;
    service.kill_9();
    let before = counts.len();
    let answered_before: Vec<String> = counts.keys().cloned().collect();
    assert!(before < 50, "the burst was over before the kill");

    let service = Service::start(&broker, &config).await;
    collect(&mut client, &mut counts, 50, Duration::from_secs(3), || {
        service.log()
    })
    .await;
    // The at-least-once window (docs/fleet.md): a reply
    // published just before the kill, whose acknowledgement was not yet
    // recorded, is owed again after the restart. At most that one question,
    // answered before the kill, comes twice; no other does.
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.len() <= 1 && twice.iter().all(|(id, _)| answered_before.contains(id)),
        "answered more than once: {twice:?}"
    );
    assert_eq!(counts.len(), 50, "{counts:?}");
    let log = service.log();
    assert!(
        log.contains("answering the questions the last run did not finish"),
        "{log}"
    );
    eprintln!(
        "{before} answered before the kill, the other {} after",
        50 - before
    );
}

/// Asks once and waits for the answer, then for the retained status to say
/// the journal is `want`.
async fn ask_then_status(client: &mut TestClient, status: &mut TestClient, want: &str) {
    client
        .publish(
            "swarm/query/disk",
            QUESTION.as_bytes(),
            PublishProps::default(),
        )
        .await;
    let reply = client.reply(Duration::from_secs(60)).await;
    assert!(says_canberra(&reply), "answers flow: {reply}");
    loop {
        let m = status.next_message(Duration::from_secs(10)).await;
        let m = m.unwrap_or_else(|| panic!("no status saying the journal is {want}"));
        let s: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        if s["journal"] == want {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_under_the_journal_degrades_loudly_and_answers_still_flow() {
    let broker = Broker::start();
    let outside = tempfile::tempdir().unwrap();
    let state = outside.path().join("state");
    let trigger = outside.path().join("free-the-disk");
    std::fs::create_dir(&state).unwrap();
    let mut config = service_config(&broker, "diskfull");
    config.journal = Some(JournalConfig {
        dir: state.clone(),
        max_bytes: 64 << 10,
    });
    // A real full file system: a 16 KiB tmpfs, filled up, mounted over the
    // state folder in a user and mount namespace of the service's own (no
    // root needed). The filler goes once the test creates the trigger file.
    let script = r#"mount -t tmpfs -o size=16k tmpfs "$0" || exit 99
head -c 1M /dev/zero > "$0/filler" 2>/dev/null
(while [ ! -e "$1" ]; do sleep 0.1; done; rm -f "$0/filler") &
shift; exec "$@""#;
    let (state_arg, trigger_arg) = (state.to_str().unwrap(), trigger.to_str().unwrap());
    let command = [
        "unshare",
        "-Urm",
        "sh",
        "-c",
        script,
        state_arg,
        trigger_arg,
        BIN,
    ];
    let service = Service::start_command(&broker, &config, &command).await;
    let mut status = TestClient::connect(&broker, MqttProtocol::V5).await;
    status.subscribe(&config.status_topic()).await;
    let mut client = TestClient::replies(&broker).await;
    ask_then_status(&mut client, &mut status, "failing").await;
    let log = service.log();
    assert!(log.contains("JOURNAL WRITE FAILED"), "{log}");

    std::fs::write(&trigger, b"").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ask_then_status(&mut client, &mut status, "ok").await;
    assert!(service.log().contains("journal writable again"));
}
