//! The operator's view as shipped: a real Prometheus (Debian's `prometheus`)
//! scrapes a running board (the real binary, mosquitto, SmolLM2); every
//! query of the Grafana dashboard and every alert expression runs against
//! it, and each metric they name is in the scrape. Then `promtool check
//! rules` and `promtool test rules` on the alerts and their cases.

mod common;

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use swarm_llm::config::MetricsConfig;

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: swarm-llm\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
            .spawn()
            .expect("prometheus is installed (scripts/setup-system)");
        wait_for_port(port, Duration::from_secs(30));
        Prometheus {
            child,
            port,
            _dir: dir,
        }
    }

    /// Waits until Prometheus answers queries: it listens before its
    /// storage is open, and answers 503 until then.
    async fn wait_ready(&self) {
        let url = format!("http://127.0.0.1:{}/-/ready", self.port);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "Prometheus never became ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs an instant query; panics with Prometheus's error if it does not parse.
    async fn query(&self, expr: &str) -> serde_json::Value {
        let encoded: String = expr
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let url = format!(
            "http://127.0.0.1:{}/api/v1/query?query={encoded}",
            self.port
        );
        let body = reqwest::get(url).await.unwrap().text().await.unwrap();
        let reply: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{expr}: not JSON ({e}): {body}"));
        assert_eq!(reply["status"], "success", "{expr}: {reply}");
        reply["data"]["result"].clone()
    }

    /// The metric names Prometheus holds.
    async fn names(&self) -> BTreeSet<String> {
        let url = format!(
            "http://127.0.0.1:{}/api/v1/label/__name__/values",
            self.port
        );
        let reply: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        reply["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The metric names an expression reads: words that name a metric of ours,
/// the process's, or `up` (functions, labels and keywords are not).
fn metrics_named(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut word = String::new();
    let mut in_quotes = false;
    for c in expr.chars().chain([' ']) {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        if !in_quotes && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("swarm_") || word.starts_with("process_") || word == "up" {
            out.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    out
}

/// Every `expr` of the dashboard, as Grafana would send it: its variables
/// replaced by what they are for all boards.
fn dashboard_queries() -> Vec<String> {
    let text =
        std::fs::read_to_string(repo_root().join("monitoring/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            out.push(
                expr.replace("$instance", ".*")
                    .replace("$__rate_interval", "1m"),
            );
        }
    }
    assert!(out.len() >= 14, "{} queries", out.len());
    out
}

fn alert_expressions() -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("monitoring/alerts.yml")).unwrap();
    // The rules file's `expr:` values, one line or a `|` block each.
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest == "|" {
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                if next.trim_start().starts_with("for:") {
                    break;
                }
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            out.push(block);
        } else {
            out.push(rest.to_string());
        }
    }
    assert_eq!(out.len(), 7, "{out:?}");
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_a_board_and_the_dashboard_and_alerts_read_its_metrics() {
    swarm_llm::tls::install_provider();
    let broker = Broker::start();
    let cloud = CloudStandIn::start().await;
    let metrics_port = free_port();
    let mut config = service_config(&broker, "watched");
    config.metrics = Some(MetricsConfig {
        listen: format!("127.0.0.1:{metrics_port}"),
    });
    config.cloud = Some(swarm_llm::cloud::CloudConfig {
        url: cloud.url.clone(),
        model: "qwen15".into(),
        ..Default::default()
    });
    // The dashboard draws the share held against its target.
    config.policy.learned = Some(choice_minded_router());
    config.routing.cloud_share = Some(0.25);
    let _service = Service::start(&broker, &config).await;
    let mut client = TestClient::replies(&broker).await;
    client
        .one_answer_and_one_refusal(Duration::from_secs(120))
        .await;

    let prometheus = Prometheus::start(metrics_port);
    prometheus.wait_ready().await;
    // Up, and scraped after the replies and a gauge sample.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = prometheus.query("up{job=\"swarm-llm\"} == 1").await;
        let counted = prometheus.query("swarm_questions_total").await;
        let sampled = prometheus.query("swarm_intake_queue_capacity").await;
        if !up.as_array().unwrap().is_empty()
            && !counted.as_array().unwrap().is_empty()
            && !sampled.as_array().unwrap().is_empty()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the board"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let have = prometheus.names().await;

    let mut missing = Vec::new();
    for expr in dashboard_queries().iter().chain(&alert_expressions()) {
        prometheus.query(expr).await;
        for name in metrics_named(expr) {
            if !have.contains(&name) {
                missing.push(format!("{name} (in {expr})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in the scrape: {missing:#?}\nscraped: {have:?}"
    );
    // A query that should have data does.
    let build = prometheus.query("swarm_build_info{instance=~\".*\"}").await;
    assert_eq!(build[0]["metric"]["models"], config.models[0].name);
}

#[test]
fn the_alert_rules_pass_promtool_and_their_cases() {
    let dir = repo_root().join("monitoring");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool is installed (Debian's prometheus, scripts/setup-system)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn metric_names_are_read_from_expressions() {
    let names = metrics_named(
        "sum by (route) (rate(swarm_questions_total{route=\"cloud\", instance=~\"a_b\"}[1m])) / up",
    );
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(names, ["swarm_questions_total", "up"]);
}
