//! systemd integration: readiness, stopping and the watchdog (sd_notify).
//!
//! READY=1 is sent once every model is loaded and the broker has granted the
//! request subscription; STOPPING=1 when the drain begins. WATCHDOG=1 is sent
//! every half `WatchdogSec`, but only while every model thread is either idle
//! or has made progress (a token, a prompt) within that half: a thread hung
//! inside llama.cpp stops the pings, and systemd restarts the service.
//! Without `NOTIFY_SOCKET` (not under systemd) every call is a no-op.
//!
//! Secrets come as credentials ([`credential`]): the unit's
//! `ImportCredential=swarm-llm.*` passes those of the system's credential
//! store into `$CREDENTIALS_DIRECTORY`.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::inference::ModelHandle;

/// The credential `swarm-llm.<name>` systemd passed in, trimmed; None
/// outside systemd, without it, or when it is empty.
pub fn credential(name: &str) -> Option<String> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let path = std::path::Path::new(&dir).join(format!("swarm-llm.{name}"));
    let value = std::fs::read_to_string(path).ok()?;
    Some(value.trim().to_string()).filter(|v| !v.is_empty())
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

pub fn ready(models: &[ModelHandle]) {
    let names: Vec<&str> = models.iter().map(|m| m.info.name.as_str()).collect();
    let status = format!("answering with {}", names.join(", "));
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining accepted questions"),
    ]);
}

/// The watchdog period systemd asked for (`WatchdogSec`), if any.
pub fn watchdog_period() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec).then(|| Duration::from_micros(usec))
}

/// The first model thread that is busy and has made no progress for `limit`.
pub fn stalled(models: &[ModelHandle], limit: Duration) -> Option<&str> {
    models
        .iter()
        .find(|m| m.health().stalled_for(limit))
        .map(|m| m.info.name.as_str())
}

/// Pings the watchdog every half period while the models make progress.
pub async fn watchdog(models: Vec<ModelHandle>, period: Duration, shutdown: CancellationToken) {
    let every = period / 2;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.cancelled() => return,
        }
        match stalled(&models, every) {
            None => send(&[NotifyState::Watchdog]),
            Some(name) => tracing::error!(
                model = name,
                stalled_ms = every.as_millis() as u64,
                "a model thread makes no progress; withholding the watchdog ping"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inference::WorkerHealth;

    #[test]
    fn a_busy_worker_without_progress_is_stalled_an_idle_one_never() {
        let h = WorkerHealth::default();
        assert!(!h.stalled_for(Duration::ZERO), "idle");
        h.start_job();
        assert!(!h.stalled_for(Duration::from_secs(5)), "just started");
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            h.stalled_for(Duration::from_millis(10)),
            "no progress for 30 ms"
        );
        h.progress();
        assert!(
            !h.stalled_for(Duration::from_millis(10)),
            "a token was made"
        );
        // Under batching: a second question starts, the first ends; the
        // one still in flight keeps the worker busy, and stalls it.
        h.start_job();
        h.finish_job(Duration::from_millis(30));
        std::thread::sleep(Duration::from_millis(30));
        assert!(
            h.stalled_for(Duration::from_millis(10)),
            "one question still in flight, no progress"
        );
        h.finish_job(Duration::from_millis(60));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!h.stalled_for(Duration::from_millis(10)), "idle again");
    }
}
