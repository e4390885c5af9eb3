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

/// The shipped unit with its binary path pointed at the binary under test.
fn unit_under_test() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let unit = std::fs::read_to_string(repo_root().join("systemd/swarm-llm.service")).unwrap();
    let path = dir.path().join("swarm-llm.service");
    std::fs::write(&path, unit.replace("/usr/bin/swarm-llm", BIN)).unwrap();
    (dir, path)
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let (_dir, unit) = unit_under_test();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("swarm-llm.service:"),
        "{stderr}"
    );
}

#[test]
fn the_unit_exposure_is_at_most_2() {
    let (_dir, unit) = unit_under_test();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze");
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
