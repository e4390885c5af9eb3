//! systemd integration: the sd_notify protocol seen from a socket the test
//! listens on, and the shipped unit file checked by systemd's own tools.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Reads notify datagrams until `want` has been seen or `within` has passed.
fn read_until(sock: &UnixDatagram, want: &str, within: Duration, seen: &mut Vec<String>) {
    let end = Instant::now() + within;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        sock.set_read_timeout(Some(
            end.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            let hit = msg.lines().any(|l| l == want);
            seen.push(msg);
            if hit {
                return;
            }
        }
    }
    panic!("no {want} within {within:?}; seen {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ready_watchdog_and_stopping_are_sent_in_order() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&socket_path).unwrap();
    let config_path = dir.path().join("swarm.toml");
    std::fs::write(
        &config_path,
        toml::to_string(&service_config(&broker, "notify")).unwrap(),
    )
    .unwrap();
    // systemd sets WATCHDOG_PID to the service's pid; exec keeps the shell's.
    let mut child = Command::new("sh")
        .args(["-c", "WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\""])
        .arg(BIN)
        .arg(&config_path)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        read_until(&sock, "READY=1", Duration::from_secs(60), &mut seen);
        read_until(&sock, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
        Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        read_until(&sock, "STOPPING=1", Duration::from_secs(10), &mut seen);
        assert!(child.wait().unwrap().success());
        seen
    })
    .await
    .unwrap();
    let first = |what: &str| {
        seen.iter()
            .position(|m| m.lines().any(|l| l == what))
            .unwrap()
    };
    assert!(
        first("READY=1") < first("WATCHDOG=1") && first("WATCHDOG=1") < first("STOPPING=1"),
        "{seen:?}"
    );
    assert!(
        seen[first("READY=1")].contains("STATUS=answering with smollm2"),
        "{seen:?}"
    );
}

/// The shipped unit with its binary path pointed at the binary under test,
/// and the drop-ins an image installs beside it (credentials.conf always,
/// metrics.conf with metrics on) in its `.d` folder.
fn unit_under_test(drop_ins: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let systemd = repo_root().join("systemd");
    let unit = std::fs::read_to_string(systemd.join("swarm-llm.service")).unwrap();
    let path = dir.path().join("swarm-llm.service");
    std::fs::write(&path, unit.replace("/usr/bin/swarm-llm", BIN)).unwrap();
    let d = dir.path().join("swarm-llm.service.d");
    std::fs::create_dir(&d).unwrap();
    for name in drop_ins {
        let from = [
            systemd.join("swarm-llm.service.d").join(name),
            systemd.join(name),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("no drop-in {name}"));
        std::fs::copy(from, d.join(name)).unwrap();
    }
    (dir, path)
}

/// systemd's major version: ImportCredential= came in 254.
fn systemd_version() -> u32 {
    let out = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("systemd-analyze --version")
}

/// `systemd-analyze` with the unit's folder as the unit path, so that the
/// drop-ins in its `.d` folder are read as systemd reads them.
fn analyze(unit: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .env(
            "SYSTEMD_UNIT_PATH",
            format!("{}:", unit.parent().unwrap().display()),
        )
        .output()
        .expect("systemd-analyze")
}

#[test]
fn the_unit_and_its_drop_ins_pass_systemd_analyze_verify() {
    let (_dir, unit) = unit_under_test(&["credentials.conf", "metrics.conf", "jetson-gpu.conf"]);
    let out = analyze(&unit, &["verify", "--man=no"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Every line is a finding, except the one systemds before 254 print for
    // the key they do not know yet (credentials.conf says what to use there).
    let knows_import = systemd_version() >= 254;
    let findings: Vec<&str> = stderr
        .lines()
        .filter(|l| knows_import || !l.contains("Unknown key 'ImportCredential'"))
        .collect();
    assert!(out.status.success() && findings.is_empty(), "{stderr}");
    assert!(
        stderr.contains("credentials.conf") || knows_import,
        "the drop-ins were not read:\n{stderr}"
    );
}

#[test]
fn the_unit_exposure_is_at_most_2_with_metrics_on() {
    let (_dir, unit) = unit_under_test(&["credentials.conf", "metrics.conf"]);
    let out = analyze(&unit, &["security", "--offline=true"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let level: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for swarm-llm.service:")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(level <= 2.0, "exposure {level}:\n{text}");
}

/// Whether the unit's SocketBindAllow=/SocketBindDeny= lines, in the order
/// systemd reads them (the unit, then its drop-ins), let the service bind
/// `tcp:port`: an allow rule that matches wins, then a deny rule that
/// matches refuses, and with neither the bind is allowed (systemd.resource-control(5)).
fn bind_allowed(lines: &[String], port: u16) -> bool {
    let matches = |rule: &str| {
        let rule = rule.trim();
        rule == "any" || rule == format!("tcp:{port}") || rule == port.to_string()
    };
    let rules = |key: &str| -> Vec<&str> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(key))
            .flat_map(|v| v.split_whitespace())
            .collect()
    };
    if rules("SocketBindAllow=").into_iter().any(matches) {
        return true;
    }
    !rules("SocketBindDeny=").into_iter().any(matches)
}

#[test]
fn the_metrics_drop_in_lets_the_endpoint_listen_and_nothing_else() {
    let read = |p: &str| {
        std::fs::read_to_string(repo_root().join(p))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let unit = read("systemd/swarm-llm.service");
    let with_metrics: Vec<String> = unit
        .iter()
        .cloned()
        .chain(read("systemd/metrics.conf"))
        .collect();
    // The port of the documented example, which metrics.conf is written for
    // (the Yocto recipe substitutes SWARM_LLM_METRICS_PORT for it).
    let docs = std::fs::read_to_string(repo_root().join("docs/operations.md")).unwrap();
    assert!(docs.contains("listen = \"127.0.0.1:9464\""));
    assert!(
        !bind_allowed(&unit, 9464),
        "the unit alone lets nothing listen"
    );
    assert!(
        bind_allowed(&with_metrics, 9464),
        "metrics.conf allows the endpoint"
    );
    assert!(!bind_allowed(&with_metrics, 1883), "and nothing else");
    let recipe = std::fs::read_to_string(
        repo_root().join("yocto/meta-swarm-llm/recipes-ai/swarm-llm/swarm-llm_0.1.0.bb"),
    )
    .unwrap();
    assert!(
        recipe.contains("s/tcp:9464/tcp:${SWARM_LLM_METRICS_PORT}/"),
        "the recipe writes metrics.conf for its port"
    );
}
