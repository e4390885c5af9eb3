//! The service end to end: a real mosquitto, the real binary, the real
//! SmolLM2 model. Each test has its own broker and service.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use swarm_llm::config::MqttProtocol;
use swarm_llm::mqtt::PublishProps;

const QUESTION: &str = "What is the capital city of Australia";
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn v5_request_is_answered_on_its_response_topic_with_correlation_data() {
    let broker = Broker::start();
    let _service = Service::start(&broker, &service_config(&broker, "v5")).await;
    let mut client = TestClient::connect(&broker, MqttProtocol::V5).await;
    client.subscribe("gw/v5/answers").await;
    let correlation = vec![0xde, 0xad, 0x00, 0xbe, 0xef];
    let props = PublishProps {
        response_topic: Some("gw/v5/answers".into()),
        correlation_data: Some(correlation.clone()),
    };
    client
        .publish(
            "swarm/query/line1",
            br#"{"question":"What is the capital city of Australia"}"#,
            props,
        )
        .await;

    let m = client.next_message(WAIT).await.expect("a reply");
    assert_eq!(m.topic, "gw/v5/answers");
    assert_eq!(m.correlation_data, Some(correlation));
    let reply: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert!(says_canberra(&reply), "{reply}");
    assert!(reply["error"].is_null());
    assert_eq!(reply["route"], "local");
    assert_eq!(reply["model"], "smollm2");
    assert!(reply["tokens"].as_u64().unwrap() > 0);
    assert!(reply["latency_ms"].as_f64().unwrap() > 0.0);
    let signals = &reply["signals"];
    let p = signals["uncertainty"]["min_prob"].as_f64().unwrap();
    assert!(p > 0.0 && p <= 1.0, "{signals}");
    assert!(signals["uncertainty"]["mean_entropy"].as_f64().unwrap() >= 0.0);
    assert!((0.0..=1.0).contains(&signals["confidence"].as_f64().unwrap()));
    assert_eq!(signals["safety"]["flagged"], false);
}

/// Each model thread keeps the cells of the prompt's shared head between
/// questions and reads only what is new (the prompt cache). With greedy
/// decoding, a question read after others must get the very answer and
/// token statistics it got when the cache was cold.
#[tokio::test(flavor = "multi_thread")]
async fn an_answer_read_with_a_warm_prompt_cache_equals_the_cold_one() {
    let broker = Broker::start();
    let _service = Service::start(&broker, &service_config(&broker, "cache")).await;
    let mut client = TestClient::replies(&broker).await;
    let cold = client.ask_text(QUESTION, WAIT).await;
    let other = client
        .ask_text("How many volts does a car battery give", WAIT)
        .await;
    let warm = client.ask_text(QUESTION, WAIT).await;
    assert!(
        cold["error"].is_null() && other["error"].is_null(),
        "{cold} {other}"
    );
    assert_eq!(cold["answer"], warm["answer"]);
    assert_eq!(cold["tokens"], warm["tokens"]);
    assert_eq!(
        cold["signals"]["uncertainty"],
        warm["signals"]["uncertainty"]
    );
    assert_eq!(cold["signals"]["confidence"], warm["signals"]["confidence"]);
}

/// Publishes each question as JSON with its own id (after `round`: the
/// service answers an id once), all at once, and returns the replies by id.
async fn ask_together(
    client: &mut TestClient,
    round: &str,
    questions: &[(&str, serde_json::Value)],
) -> std::collections::HashMap<String, serde_json::Value> {
    for (id, extra) in questions {
        let mut request = extra.clone();
        request["id"] = format!("{round}/{id}").into();
        client.publish_json("swarm/query/line1", &request).await;
    }
    let mut replies = std::collections::HashMap::new();
    while replies.len() < questions.len() {
        let reply = client.reply(WAIT).await;
        let id = reply["id"].as_str().unwrap();
        let id = id
            .strip_prefix(&format!("{round}/"))
            .unwrap_or(id)
            .to_string();
        replies.insert(id, reply);
    }
    replies
}

/// Continuous batching: with `parallel = 4`, questions asked together are
/// decoded together, as sequences of one context. With greedy decoding each
/// gets the answer and the token statistics it gets alone; the statistics
/// to rounding: a sequence's attention runs over cells its neighbours'
/// interleave with, so sums run in another order and the q8_0 cache may
/// round a state the other way (seen: 0.012 on a mean entropy of 2.36).
/// The together round comes first: its multiple-choice question is the
/// first, so it waits for the model's letter bias, read beside the others.
#[tokio::test(flavor = "multi_thread")]
async fn questions_decoded_together_get_the_answers_they_get_alone() {
    let broker = Broker::start();
    let mut config = service_config(&broker, "batch");
    config.models[0].parallel = 4;
    let service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;
    let questions: Vec<(&str, serde_json::Value)> = [
        ("q0", QUESTION),
        ("q1", "How many volts does a car battery give"),
        ("q2", "What does PLC stand for"),
        (
            "q3",
            "Which unit measures electrical resistance?\nA. Volt\nB. Ampere\nC. Ohm\nD. Watt",
        ),
    ]
    .into_iter()
    .map(|(id, q)| (id, serde_json::json!({ "question": q })))
    .collect();
    let together = ask_together(&mut client, "together", &questions).await;
    let mut alone = std::collections::HashMap::new();
    for q in &questions {
        alone.extend(ask_together(&mut client, "alone", std::slice::from_ref(q)).await);
    }
    assert!(
        together["q3"]["signals"]["options"].is_array(),
        "{}",
        together["q3"]
    );
    for (id, a) in &alone {
        let t = &together[id];
        assert!(a["error"].is_null() && t["error"].is_null(), "{a} {t}");
        assert_eq!(a["answer"], t["answer"], "{id}");
        assert_eq!(a["tokens"], t["tokens"], "{id}");
        let close = |x: &serde_json::Value, y: &serde_json::Value| {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 0.02 * x.abs().max(1.0)
        };
        let (ua, ut) = (&a["signals"]["uncertainty"], &t["signals"]["uncertainty"]);
        for (key, value) in ua.as_object().unwrap() {
            if value.is_number() {
                assert!(close(value, &ut[key]), "{id} {key}: {ua} {ut}");
            }
        }
        assert!(close(
            &a["signals"]["confidence"],
            &t["signals"]["confidence"]
        ));
    }
    // They were decoded together: questions started beside others.
    let log = service.log();
    assert!(
        (2..=4).any(|n| log.contains(&format!("in_flight={n}"))),
        "{log}"
    );
}

/// A question out of time leaves the batch at once and frees its slot; the
/// one decoded beside it is answered, and so is the next.
#[tokio::test(flavor = "multi_thread")]
async fn a_question_out_of_time_leaves_the_batch_and_the_others_go_on() {
    let broker = Broker::start();
    let mut config = service_config(&broker, "batch-expiry");
    config.models[0].parallel = 2;
    let service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;
    let story = "Write a long story about a pump that fails on the night shift";
    let replies = ask_together(
        &mut client,
        "first",
        &[
            (
                "late",
                serde_json::json!({ "question": story, "deadline_ms": 400 }),
            ),
            ("ok", serde_json::json!({ "question": QUESTION })),
        ],
    )
    .await;
    assert_eq!(
        replies["late"]["error"]["code"], "deadline_exceeded",
        "{}",
        replies["late"]
    );
    assert!(says_canberra(&replies["ok"]), "{}", replies["ok"]);
    let next = ask_together(
        &mut client,
        "then",
        &[("next", serde_json::json!({ "question": QUESTION }))],
    )
    .await;
    assert!(
        says_canberra(&next["next"]),
        "{}\n{}",
        next["next"],
        service.log()
    );
}

/// A question whose prompt and answer do not fit in the cells left beside
/// the one in flight waits for it rather than failing; alone it fits.
#[tokio::test(flavor = "multi_thread")]
async fn a_question_too_long_for_the_free_cells_waits_for_them() {
    let broker = Broker::start();
    let mut config = service_config(&broker, "batch-wait");
    config.models[0].parallel = 2;
    // 256 cells: the long question's prompt (about 190 tokens) and answer
    // (48) fit alone, not beside a short one (about 70 and 48).
    config.models[0].context_size = 256;
    let _service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;
    let long = format!(
        "{} Given all that, what is the capital city of Australia",
        "The plant runs three shifts, each with its own supervisor, and the \
         conveyor on line two is serviced every Tuesday by the day shift."
            .repeat(4)
    );
    let replies = ask_together(
        &mut client,
        "both",
        &[
            ("short", serde_json::json!({ "question": QUESTION })),
            ("long", serde_json::json!({ "question": long })),
        ],
    )
    .await;
    for (id, reply) in &replies {
        assert!(reply["error"].is_null(), "{id}: {reply}");
    }
    // The premise: each fits alone, the two do not fit together.
    let cells = |id: &str| replies[id]["prompt_tokens"].as_u64().unwrap() + 48;
    assert!(cells("long") <= 256 && cells("long") + cells("short") > 256);
}

#[tokio::test(flavor = "multi_thread")]
async fn v311_request_is_answered_on_reply_to_with_its_id() {
    let broker = Broker::start();
    let _service = Service::start(&broker, &service_config(&broker, "v311")).await;
    let mut client = TestClient::connect(&broker, MqttProtocol::V311).await;
    client.subscribe("gw/v311/answers").await;
    let payload = br#"{"id":"plc7-42","question":"What is the capital city of Australia","reply_to":"gw/v311/answers"}"#;
    client
        .publish("swarm/query/plc7", payload, PublishProps::default())
        .await;
    let reply = client.reply(WAIT).await;
    assert_eq!(reply["id"], "plc7-42");
    assert!(says_canberra(&reply), "{reply}");
    assert!(reply["error"].is_null());
}

#[tokio::test(flavor = "multi_thread")]
async fn service_speaking_mqtt_311_answers_too() {
    let broker = Broker::start();
    let mut config = service_config(&broker, "old-broker");
    config.mqtt.protocol = MqttProtocol::V311;
    let _service = Service::start(&broker, &config).await;
    let mut client = TestClient::connect(&broker, MqttProtocol::V311).await;
    client.subscribe("swarm/reply/#").await;
    client
        .publish(
            "swarm/query/gw9",
            QUESTION.as_bytes(),
            PublishProps::default(),
        )
        .await;
    let m = client.next_message(WAIT).await.expect("a reply");
    assert_eq!(
        m.topic, "swarm/reply/gw9",
        "plain text goes to the default reply topic"
    );
    let reply: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert!(says_canberra(&reply), "{reply}");
}

/// mosquitto_sub started first, then mosquitto_pub; returns the one reply.
fn outside_client(port: u16, reply_topic: &str, pub_args: &[&str]) -> serde_json::Value {
    let port = port.to_string();
    let sub = Command::new("mosquitto_sub")
        .args([
            "-p",
            &port,
            "-t",
            reply_topic,
            "-C",
            "1",
            "-W",
            "60",
            "-q",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("mosquitto_sub is installed");
    // mosquitto_sub has no "subscribed" signal; retain is off, so give it time to subscribe.
    std::thread::sleep(Duration::from_millis(500));
    let status = Command::new("mosquitto_pub")
        .args(["-p", &port, "-q", "1"])
        .args(pub_args)
        .status()
        .unwrap();
    assert!(status.success());
    let out = sub.wait_with_output().unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&out.stdout)))
}

#[tokio::test(flavor = "multi_thread")]
async fn mosquitto_pub_and_sub_as_outside_clients() {
    let broker = Broker::start();
    let _service = Service::start(&broker, &service_config(&broker, "outside")).await;
    let p = broker.port;
    tokio::task::spawn_blocking(move || {
        // Plain text, MQTT 3.1.1: the reply goes to the default topic.
        let r = outside_client(p, "swarm/reply/line4", &["-t", "swarm/query/line4", "-m", QUESTION]);
        assert!(says_canberra(&r), "{r}");
        // JSON with reply_to, MQTT 3.1.1.
        let payload = r#"{"id":"ms-1","question":"What is the capital city of Australia","reply_to":"plant/answers/ms"}"#;
        let r = outside_client(p, "plant/answers/ms", &["-t", "swarm/query/x", "-m", payload]);
        assert_eq!(r["id"], "ms-1");
        assert!(says_canberra(&r), "{r}");
        // MQTT 5 with Response Topic and Correlation Data properties.
        let r = outside_client(
            p,
            "plant/answers/v5",
            &["-V", "mqttv5", "-t", "swarm/query/y", "-m", QUESTION,
              "-D", "publish", "response-topic", "plant/answers/v5", "-D", "publish", "correlation-data", "corr-1"],
        );
        assert!(says_canberra(&r), "{r}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_error_replies_and_the_service_keeps_answering() {
    let broker = Broker::start();
    let mut config = service_config(&broker, "bad-inputs");
    // A small context so that a question within the byte limit overflows it.
    config.models[0].context_size = 256;
    let service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;

    let long_question = format!(
        r#"{{"question":"{}"}}"#,
        "why does the pump trip ".repeat(60)
    );
    let oversize = vec![b'a'; 1_200_000];
    let bad: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "malformed JSON",
            br#"{"question": "x", "#.to_vec(),
            "malformed_json",
        ),
        (
            "unknown field",
            br#"{"question":"x","colour":"red"}"#.to_vec(),
            "invalid_request",
        ),
        (
            "duplicate key",
            br#"{"question":"x","question":"y"}"#.to_vec(),
            "invalid_request",
        ),
        (
            "empty question",
            br#"{"question":"   "}"#.to_vec(),
            "empty_question",
        ),
        ("empty payload", b"".to_vec(), "empty_question"),
        ("oversize payload (1.2 MB)", oversize, "payload_too_large"),
        ("oversize question", vec![b'q'; 5000], "question_too_long"),
        (
            "non-UTF-8 bytes",
            b"caf\xc3\x28 \xff".to_vec(),
            "invalid_utf8",
        ),
        (
            "control characters",
            b"stop\x1b[2J the line".to_vec(),
            "invalid_request",
        ),
        (
            "wildcard reply topic",
            br#"{"question":"x","reply_to":"a/#"}"#.to_vec(),
            "invalid_reply_topic",
        ),
        (
            "reply topic inside the request filter",
            br#"{"question":"x","reply_to":"swarm/query/z"}"#.to_vec(),
            "invalid_reply_topic",
        ),
        (
            "longer than the context",
            long_question.into_bytes(),
            "context_overflow",
        ),
    ];
    for (i, (what, payload, code)) in bad.into_iter().enumerate() {
        let topic = format!("swarm/query/bad{i}");
        client
            .publish(&topic, &payload, PublishProps::default())
            .await;
        let m = client
            .next_message(WAIT)
            .await
            .unwrap_or_else(|| panic!("{what}: no reply"));
        assert_eq!(m.topic, format!("swarm/reply/bad{i}"), "{what}");
        let reply: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(reply["error"]["code"], code, "{what}: {reply}");
        assert!(
            !reply["error"]["message"].as_str().unwrap().is_empty(),
            "{what}"
        );
        assert!(reply["answer"].is_null(), "{what}");

        client
            .publish(
                &format!("swarm/query/good{i}"),
                QUESTION.as_bytes(),
                PublishProps::default(),
            )
            .await;
        let reply = client.reply(WAIT).await;
        assert!(says_canberra(&reply), "after {what}: {reply}");
    }
    let log = service.log();
    assert!(
        log.matches("rejected a request").count() >= 11,
        "each rejection is logged:\n{log}"
    );
    assert!(
        log.contains("not answered") && log.contains("ContextOverflow"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_answers_the_question_in_flight_then_says_offline() {
    let broker = Broker::start();
    let mut config = service_config(&broker, "drain");
    // This test is about draining, not the drain timeout: room for a slow machine.
    config.limits.drain_timeout_ms = 120_000;
    let mut service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;
    client
        .publish(
            "swarm/query/drain",
            QUESTION.as_bytes(),
            PublishProps::default(),
        )
        .await;
    // Signal only once the question is accepted: before that, shutdown rightly
    // leaves it unacknowledged at the broker for the next start.
    let started = std::time::Instant::now();
    while !service.log().contains("accepted") {
        assert!(
            started.elapsed() < WAIT,
            "never accepted:\n{}",
            service.log()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = tokio::task::spawn_blocking(move || {
        let s = service.terminate();
        (s, service)
    });
    let reply = client.reply(WAIT).await;
    assert!(says_canberra(&reply), "{reply}");
    let (status, service) = status.await.unwrap();
    assert!(status.success(), "exit {status:?}\n{}", service.log());

    let mut watcher = TestClient::connect(&broker, MqttProtocol::V5).await;
    watcher.subscribe("swarm/status/drain").await;
    let m = watcher
        .next_message(Duration::from_secs(5))
        .await
        .expect("retained status");
    let s: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(s["state"], "offline");
}

#[tokio::test(flavor = "multi_thread")]
async fn ask_command_prints_the_reply_for_both_protocols() {
    let broker = Broker::start();
    let _service = Service::start(&broker, &service_config(&broker, "ask")).await;
    let url = broker.url();
    tokio::task::spawn_blocking(move || {
        for mqtt in ["5", "3.1.1"] {
            let out = Command::new(BIN)
                .args(["ask", "--broker", &url, "--mqtt", mqtt, QUESTION])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{mqtt}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(says_canberra(&reply), "{reply}");
        }
        // A reply with an error exits 3, so scripts can tell.
        let out = Command::new(BIN)
            .args(["ask", "--broker", &url, "   "])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn ask_times_out_with_its_own_exit_code_when_nobody_answers() {
    let broker = Broker::start();
    let out = Command::new(BIN)
        .args(["ask", "--broker", &broker.url(), "--timeout", "1", QUESTION])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_in_the_middle_of_a_burst_loses_no_question() {
    let mut broker = Broker::start();
    let service = Service::start(&broker, &service_config(&broker, "restart")).await;
    let mut client = TestClient::persistent(&broker, "restart-test-client").await;
    client.subscribe("gw/restart/answers").await;
    let ask = |i: usize| {
        format!(
            r#"{{"id":"q{i}","question":"What is the capital city of Australia","reply_to":"gw/restart/answers"}}"#
        )
    };
    for i in 0..20 {
        if i == 10 {
            broker.restart();
        }
        client
            .publish(
                "swarm/query/burst",
                ask(i).as_bytes(),
                PublishProps::default(),
            )
            .await;
    }
    let mut answered = std::collections::BTreeMap::<String, usize>::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while answered.len() < 20 {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(m) = client.next_message(left).await else {
            panic!(
                "only {} of 20 answered: {answered:?}\n{}",
                answered.len(),
                service.log()
            );
        };
        let reply: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert!(reply["error"].is_null() && says_canberra(&reply), "{reply}");
        *answered
            .entry(reply["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_question_past_its_deadline_gets_an_expiry_reply() {
    let broker = Broker::start();
    let _service = Service::start(&broker, &service_config(&broker, "expiry")).await;
    let mut client = TestClient::replies(&broker).await;
    client.publish("swarm/query/late", br#"{"id":"late-1","question":"What is the capital city of Australia","deadline_ms":1}"#, PublishProps::default()).await;
    let reply = client.reply(WAIT).await;
    assert_eq!(reply["id"], "late-1");
    assert_eq!(reply["error"]["code"], "deadline_exceeded", "{reply}");
    assert!(reply["answer"].is_null());
    // The service goes on answering.
    client
        .publish(
            "swarm/query/late",
            QUESTION.as_bytes(),
            PublishProps::default(),
        )
        .await;
    assert!(says_canberra(&client.reply(WAIT).await));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_asker_over_its_rate_is_told_to_wait_and_others_are_not() {
    let broker = Broker::start();
    let mut config = service_config(&broker, "rate");
    config.limits.rate_per_minute = Some(6);
    config.limits.rate_burst = 2;
    let _service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;
    for _ in 0..3 {
        client
            .publish(
                "swarm/query/chatty",
                QUESTION.as_bytes(),
                PublishProps::default(),
            )
            .await;
    }
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = client.reply(WAIT).await;
        codes.push(r["error"]["code"].as_str().unwrap_or("ok").to_string());
        if r["error"]["code"] == "rate_limited" {
            let wait = r["error"]["retry_after_ms"].as_u64().unwrap();
            assert!(wait > 1000 && wait <= 10_001, "{r}");
        }
    }
    codes.sort();
    assert_eq!(codes, vec!["ok", "ok", "rate_limited"]);
    client
        .publish(
            "swarm/query/quiet",
            QUESTION.as_bytes(),
            PublishProps::default(),
        )
        .await;
    assert!(
        says_canberra(&client.reply(WAIT).await),
        "another asker is not limited"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_question_that_leaves_no_room_for_its_answer_is_refused_not_truncated() {
    let broker = Broker::start();
    let mut config = service_config(&broker, "room");
    config.models[0].context_size = 256; // answers up to 48 tokens (service_config)
    let _service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;
    // About 229 prompt tokens with SmolLM2's template: it fits the context
    // alone, but not with room for a 48-token answer.
    let question = format!("Why does the pump trip{}", " pump".repeat(180));
    client
        .publish(
            "swarm/query/room",
            question.as_bytes(),
            PublishProps::default(),
        )
        .await;
    let reply = client.reply(WAIT).await;
    assert_eq!(reply["error"]["code"], "context_overflow", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the answer may take 48 more"),
        "{reply}"
    );
    // Asking for a short answer leaves room.
    let short = serde_json::json!({ "question": question, "max_tokens": 8 }).to_string();
    client
        .publish(
            "swarm/query/room",
            short.as_bytes(),
            PublishProps::default(),
        )
        .await;
    let reply = client.reply(WAIT).await;
    assert!(reply["error"].is_null(), "{reply}");
    assert!(reply["tokens"].as_u64().unwrap() <= 8);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reply_the_brokers_acl_refuses_is_logged_and_the_service_keeps_answering() {
    let acl = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        acl.path(),
        "topic readwrite swarm/#\ntopic readwrite test/#\n",
    )
    .unwrap();
    let broker = Broker::start_with(&format!("acl_file {}\n", acl.path().display()));
    let service = Service::start(&broker, &service_config(&broker, "acl")).await;
    let mut client = TestClient::connect(&broker, MqttProtocol::V5).await;
    client.subscribe("test/answers").await;
    for reply_to in ["forbidden/answers", "test/answers"] {
        let request = serde_json::json!({"question": QUESTION, "reply_to": reply_to});
        client.publish_json("swarm/query/line1", &request).await;
    }
    let reply = client.reply(WAIT).await;
    assert!(says_canberra(&reply), "{reply}");
    // The two questions are answered concurrently, so the refused reply may
    // be published after the other one arrived.
    let started = std::time::Instant::now();
    let log = loop {
        let log = service.log();
        if log.contains("THE BROKER REFUSED A MESSAGE") || started.elapsed() > WAIT {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        log.contains("THE BROKER REFUSED A MESSAGE")
            && log.contains("topic=forbidden/answers")
            && log.contains("NotAuthorized"),
        "{log}"
    );
}

/// The environment of a running process, one `NAME=value` per entry.
fn environment(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|&b| b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

/// The service restarts itself, as the same process, with libgomp's waits
/// set for several models' OpenMP teams (see inference::restart_with_openmp_waits),
/// and keeps a policy that an operator set.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_runs_with_openmp_waits_set_unless_the_operator_set_them() {
    let broker = Broker::start();
    let config = service_config(&broker, "omp");
    let service = Service::start(&broker, &config).await;
    let env = environment(service.pid());
    assert!(env.iter().any(|v| v == "OMP_WAIT_POLICY=ACTIVE"), "{env:?}");
    assert!(env.iter().any(|v| v == "GOMP_SPINCOUNT=300000"), "{env:?}");

    let own = service_config(&broker, "omp-own");
    let service =
        Service::start_command(&broker, &own, &["env", "OMP_WAIT_POLICY=PASSIVE", BIN]).await;
    let env = environment(service.pid());
    assert!(
        env.iter().any(|v| v == "OMP_WAIT_POLICY=PASSIVE"),
        "{env:?}"
    );
    assert!(
        !env.iter().any(|v| v.starts_with("GOMP_SPINCOUNT=")),
        "{env:?}"
    );
}
