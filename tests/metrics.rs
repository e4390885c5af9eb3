//! The Prometheus endpoint, scraped during a run of the real binary against
//! mosquitto and a real small model, and read with a Prometheus exposition
//! parser.

mod common;

use std::time::Duration;

use common::*;
use swarm_llm::config::MetricsConfig;

const WAIT: Duration = Duration::from_secs(120);

async fn scrape_text(port: u16) -> String {
    swarm_llm::tls::install_provider();
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn scrape(port: u16) -> prometheus_parse::Scrape {
    let text = scrape_text(port).await;
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus text ({e}):\n{text}"))
}

/// The sum of a counter's samples whose labels include `labels`.
fn total(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .filter(|x| x.metric == name)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_counters_move_while_the_service_answers() {
    let broker = Broker::start();
    let port = free_port();
    let mut config = service_config(&broker, "metered");
    config.metrics = Some(MetricsConfig {
        listen: format!("127.0.0.1:{port}"),
    });
    let _service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;

    client.one_answer_and_one_refusal(WAIT).await;

    // The gauges are sampled every 2 s.
    tokio::time::sleep(swarm_llm::metrics::SAMPLE_EVERY + Duration::from_millis(500)).await;
    let s = scrape(port).await;
    assert!(
        total(&s, "swarm_questions_total", &[("outcome", "answered")])
            + total(&s, "swarm_questions_total", &[("outcome", "degraded")])
            >= 1.0
    );
    assert_eq!(
        total(&s, "swarm_errors_total", &[("code", "malformed_json")]),
        1.0
    );
    let latency = s
        .samples
        .iter()
        .find(|x| x.metric == "swarm_latency_seconds" && x.labels.get("route") == Some("local"))
        .expect("a latency histogram for the local route");
    match &latency.value {
        prometheus_parse::Value::Histogram(buckets) => {
            assert!(buckets.iter().any(|b| b.count >= 1.0), "{buckets:?}")
        }
        other => panic!("not a histogram: {other:?}"),
    }
    assert!(total(&s, "swarm_generated_tokens_total", &[]) > 0.0);
    let model = config.models[0].name.as_str();
    assert!(s
        .samples
        .iter()
        .any(|x| x.metric == "swarm_model_busy" && x.labels.get("model") == Some(model)));
    // The test service journals to its own folder, and the journal is well.
    assert_eq!(total(&s, "swarm_journal_enabled", &[]), 1.0);
    assert_eq!(total(&s, "swarm_journal_healthy", &[]), 1.0);
    assert_eq!(
        total(&s, "swarm_intake_queue_capacity", &[]),
        config.limits.intake_queue as f64
    );
    let build = s
        .samples
        .iter()
        .find(|x| x.metric == "swarm_build_info")
        .expect("build info");
    assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(build.labels.get("models"), Some(model));
    assert!(total(&s, "process_resident_memory_bytes", &[]) > 50e6);
    assert!(total(&s, "process_open_fds", &[]) > 0.0);

    // Every metric says what it is: a HELP line for each TYPE line.
    let text = scrape_text(port).await;
    let help: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let without: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| !help.contains(name))
        .collect();
    assert!(without.is_empty(), "no HELP for {without:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_that_cannot_listen_leaves_the_service_answering() {
    let broker = Broker::start();
    // The port is taken, as a bind the unit's SocketBindDeny refuses would be.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut config = service_config(&broker, "unmetered");
    config.metrics = Some(MetricsConfig {
        listen: taken.local_addr().unwrap().to_string(),
    });
    let service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;
    let reply = client
        .ask_text("What colour is an emergency stop button", WAIT)
        .await;
    assert!(reply["error"].is_null(), "{reply}");
    let log = service.log();
    assert!(
        log.contains("cannot start the metrics endpoint")
            && log.contains("answering without metrics"),
        "{log}"
    );
}
