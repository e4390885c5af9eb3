//! Operators' metrics: a Prometheus scrape endpoint, off by default
//! (`metrics.listen = "127.0.0.1:9464"`), served by the
//! `metrics-exporter-prometheus` crate.
//!
//! Counters come from the replies themselves, at the two places replies are
//! made (the intake's refusals, the router's answers), so every reply is
//! counted once; gauges come from a sampler of the service's state every
//! [`SAMPLE_EVERY`]. Without an endpoint, no recorder is installed and the
//! `metrics` macros cost next to nothing.
//!
//! A summary of the same counters ([`Counters`]) is kept whether or not the
//! endpoint is on, for the retained status: a plant that reads only MQTT
//! sees them too (`swarm-llm status`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::inference::ModelHandle;
use crate::pipeline::Pipeline;
use crate::protocol::Reply;

/// How often the gauges are sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Histogram buckets for latencies, in seconds: a local answer takes tenths,
/// a vote or the cloud seconds, a queue under load tens.
const LATENCY_BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0,
];

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot start the metrics endpoint on {listen}: {message}")]
    Install { listen: SocketAddr, message: String },
}

/// Starts the endpoint; it answers every path with the exposition text.
pub fn install(listen: SocketAddr) -> Result<(), MetricsError> {
    let fail = |e: &dyn std::fmt::Display| MetricsError::Install {
        listen,
        message: e.to_string(),
    };
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets(&LATENCY_BUCKETS)
        .map_err(|e| fail(&e))?
        .install()
        .map_err(|e| fail(&e))?;
    describe();
    // Counters that may not move for hours exist from the start at 0, so a
    // rate() or an alert over them has a series to read.
    counter!("swarm_cloud_calls_total").absolute(0);
    counter!("swarm_cloud_sent_bytes_total").absolute(0);
    for kind in ["prompt", "completion"] {
        counter!("swarm_cloud_tokens_total", "kind" => kind).absolute(0);
    }
    for voter in ["local", "peer"] {
        counter!("swarm_votes_total", "voter" => voter).absolute(0);
    }
    tracing::info!(%listen, "metrics endpoint up");
    Ok(())
}

/// HELP text and units for every metric (docs/operations.md lists them).
fn describe() {
    describe_counter!(
        "swarm_questions_total",
        "Replies sent, by route (local, swarm, cloud, refuse, none) and outcome (answered, degraded, error)."
    );
    describe_counter!("swarm_errors_total", "Error replies, by error code.");
    describe_histogram!(
        "swarm_latency_seconds",
        Unit::Seconds,
        "Time from a question's receipt to its reply, by route."
    );
    describe_counter!(
        "swarm_generated_tokens_total",
        "Tokens of the answers given, by model."
    );
    describe_counter!(
        "swarm_cloud_calls_total",
        "Questions answered by the cloud."
    );
    describe_counter!(
        "swarm_cloud_tokens_total",
        "Tokens the cloud was sent (kind=prompt) and sent back (kind=completion)."
    );
    describe_counter!(
        "swarm_cloud_sent_bytes_total",
        Unit::Bytes,
        "Request bytes sent to the cloud."
    );
    describe_counter!(
        "swarm_votes_total",
        "Ballots cast in swarm votes, by voter (local model or peer board)."
    );
    describe_gauge!(
        "swarm_intake_queue",
        "Accepted questions waiting for the router."
    );
    describe_gauge!(
        "swarm_intake_queue_capacity",
        "Room of the intake queue (limits.intake_queue); when full, questions are refused with busy."
    );
    describe_gauge!(
        "swarm_model_queue",
        "Jobs waiting for a model thread, by model."
    );
    describe_gauge!(
        "swarm_model_queue_capacity",
        "Room of a model thread's queue (models[].queue_depth), by model."
    );
    describe_gauge!(
        "swarm_model_busy",
        "Questions a model thread decodes now, by model (up to its parallel)."
    );
    describe_gauge!(
        "swarm_model_job_seconds",
        Unit::Seconds,
        "A model thread's typical job time, by model."
    );
    describe_gauge!(
        "swarm_journal_enabled",
        "1 when a question journal is configured, else 0."
    );
    describe_gauge!(
        "swarm_journal_healthy",
        "1 while the question journal writes, 0 while it fails (0 too without a journal: see swarm_journal_enabled)."
    );
    describe_gauge!(
        "swarm_cloud_available",
        "1 when the cloud may be asked, 0 while its breaker is open or the hourly budget is spent."
    );
    describe_gauge!(
        "swarm_cloud_calls_per_hour_limit",
        "The hourly cloud budget (cloud.calls_per_hour)."
    );
    describe_gauge!(
        "swarm_cloud_share_target",
        "The share of questions the cloud should answer (routing.cloud_share)."
    );
    describe_gauge!(
        "swarm_cloud_share_target_now",
        "The share aimed at now: the target, lower while the hourly budget's pace holds it back."
    );
    describe_gauge!(
        "swarm_cloud_share_recent",
        "The share of the last questions the cloud could take that it answered (the controller's window)."
    );
    describe_gauge!(
        "swarm_cloud_cut",
        "The learned router's cut in force: a score at or above it goes to the cloud."
    );
    describe_gauge!(
        "swarm_build_info",
        "Always 1; its labels name the version, the commit and the configured models."
    );
}

/// The replies a board has sent since it started, as its retained status
/// reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub replies: u64,
    /// Replies by route (`local`, `swarm`, `cloud`, `refuse`); error replies
    /// have none.
    #[serde(default)]
    pub routes: BTreeMap<String, u64>,
    #[serde(default)]
    pub errors: u64,
    #[serde(default)]
    pub cloud_calls: u64,
    /// Prompt and completion tokens the cloud was sent and sent back.
    #[serde(default)]
    pub cloud_tokens: u64,
    /// When the last reply went out, in Unix seconds.
    #[serde(default)]
    pub last_reply_unix_s: Option<u64>,
}

impl Counters {
    /// Counts one reply sent at `now_unix_s`.
    pub fn count(&mut self, reply: &Reply, now_unix_s: u64) {
        self.replies += 1;
        if let Some(route) = reply.route {
            *self.routes.entry(route.as_str().to_string()).or_default() += 1;
        }
        self.errors += reply.error.is_some() as u64;
        if let Some(c) = &reply.cloud {
            self.cloud_calls += 1;
            self.cloud_tokens += c.prompt_tokens + c.completion_tokens;
        }
        self.last_reply_unix_s = Some(now_unix_s);
    }
}

/// This process's counters: one service a process.
static COUNTERS: Mutex<Counters> = Mutex::new(Counters {
    replies: 0,
    routes: BTreeMap::new(),
    errors: 0,
    cloud_calls: 0,
    cloud_tokens: 0,
    last_reply_unix_s: None,
});

/// A copy of the counters so far.
pub fn counters() -> Counters {
    COUNTERS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Counts one reply: its route and outcome, its error code, its latency by
/// route, tokens, the cloud's share, the swarm's votes.
pub fn record_reply(reply: &Reply) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    COUNTERS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .count(reply, now);
    let route = reply.route.map_or("none", |r| r.as_str());
    let outcome = match (&reply.error, &reply.degraded) {
        (Some(_), _) => "error",
        (None, Some(_)) => "degraded",
        (None, None) => "answered",
    };
    counter!("swarm_questions_total", "route" => route, "outcome" => outcome).increment(1);
    if let Some(e) = &reply.error {
        let code = serde_json::to_value(e.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        counter!("swarm_errors_total", "code" => code).increment(1);
    }
    histogram!("swarm_latency_seconds", "route" => route).record(reply.latency_ms / 1000.0);
    if let Some(model) = &reply.model {
        counter!("swarm_generated_tokens_total", "model" => model.clone())
            .increment(reply.tokens as u64);
    }
    if let Some(c) = &reply.cloud {
        counter!("swarm_cloud_calls_total").increment(1);
        counter!("swarm_cloud_tokens_total", "kind" => "prompt").increment(c.prompt_tokens);
        counter!("swarm_cloud_tokens_total", "kind" => "completion").increment(c.completion_tokens);
        counter!("swarm_cloud_sent_bytes_total").increment(c.bytes_sent);
    }
    for vote in reply.votes.iter().flatten() {
        let voter = if vote.model.contains(':') {
            "peer"
        } else {
            "local"
        };
        counter!("swarm_votes_total", "voter" => voter).increment(1);
    }
}

/// What the sampler reads.
pub struct State {
    pub models: Vec<ModelHandle>,
    /// Room of each model's queue, in the order of `models`.
    pub model_queue_depths: Vec<usize>,
    pub pipeline: Arc<Pipeline>,
    /// The queue between intake and router (its free room is read). Weak,
    /// so the router still sees the queue close when the intake stops.
    pub intake: mpsc::WeakSender<crate::stages::Accepted>,
    pub journal_healthy: watch::Receiver<bool>,
    pub journal_on: bool,
}

/// Samples the gauges every [`SAMPLE_EVERY`] until `stop`, with the
/// process's own (memory, CPU, open files: `metrics-process`).
pub async fn sample(state: State, stop: CancellationToken) {
    let process = metrics_process::Collector::default();
    process.describe();
    let models: Vec<&str> = state.models.iter().map(|m| m.info.name.as_str()).collect();
    gauge!(
        "swarm_build_info",
        "version" => env!("CARGO_PKG_VERSION"),
        "commit" => env!("SWARM_LLM_COMMIT"),
        "models" => models.join(",")
    )
    .set(1.0);
    gauge!("swarm_journal_enabled").set(state.journal_on as u8 as f64);
    if let Some(cloud) = state.pipeline.cloud() {
        gauge!("swarm_cloud_calls_per_hour_limit").set(cloud.calls_per_hour() as f64);
    }
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        process.collect();
        if let Some(intake) = state.intake.upgrade() {
            gauge!("swarm_intake_queue").set((intake.max_capacity() - intake.capacity()) as f64);
            gauge!("swarm_intake_queue_capacity").set(intake.max_capacity() as f64);
        }
        if let Some(share) = state.pipeline.cloud_share() {
            let s = share.status();
            gauge!("swarm_cloud_share_target").set(f64::from(s.target));
            gauge!("swarm_cloud_share_target_now").set(f64::from(s.target_now));
            if let Some(recent) = s.recent {
                gauge!("swarm_cloud_share_recent").set(f64::from(recent));
            }
            gauge!("swarm_cloud_cut").set(f64::from(s.cut));
        }
        for (m, depth) in state.models.iter().zip(&state.model_queue_depths) {
            let name = m.info.name.clone();
            gauge!("swarm_model_queue", "model" => name.clone()).set(m.queued() as f64);
            gauge!("swarm_model_queue_capacity", "model" => name.clone()).set(*depth as f64);
            gauge!("swarm_model_busy", "model" => name.clone()).set(m.health().active() as f64);
            if let Some(t) = m.health().typical_job() {
                gauge!("swarm_model_job_seconds", "model" => name).set(t.as_secs_f64());
            }
        }
        let healthy = state.journal_on && *state.journal_healthy.borrow();
        gauge!("swarm_journal_healthy").set(healthy as u8 as f64);
        if let Some(cloud) = state.pipeline.cloud() {
            gauge!("swarm_cloud_available").set(cloud.available().is_ok() as u8 as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CloudUsage, ErrorCode, ReplyError};
    use crate::route::policy::Route;

    #[test]
    fn counters_count_routes_errors_and_the_cloud() {
        let mut c = Counters::default();
        let local = Reply {
            route: Some(Route::Local),
            ..Reply::empty(Some("1".into()), "b")
        };
        let cloud = Reply {
            route: Some(Route::Cloud),
            cloud: Some(CloudUsage {
                prompt_tokens: 30,
                completion_tokens: 12,
                bytes_sent: 500,
                attempts: 1,
            }),
            ..Reply::empty(Some("2".into()), "b")
        };
        let error = Reply::failure(
            None,
            "b",
            ReplyError::new(ErrorCode::MalformedJson, "x"),
            0.1,
        );
        c.count(&local, 100);
        c.count(&local, 101);
        c.count(&cloud, 102);
        c.count(&error, 103);
        assert_eq!(c.replies, 4);
        assert_eq!(c.routes["local"], 2);
        assert_eq!(c.routes["cloud"], 1);
        assert!(!c.routes.contains_key("swarm"));
        assert_eq!((c.errors, c.cloud_calls, c.cloud_tokens), (1, 1, 42));
        assert_eq!(c.last_reply_unix_s, Some(103));
        // Older boards' statuses and newer readers: every field defaults.
        let read: Counters = serde_json::from_str(r#"{"replies": 3}"#).unwrap();
        assert_eq!(read.replies, 3);
    }
}
