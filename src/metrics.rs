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

use metrics::{counter, gauge, histogram};
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
    tracing::info!(%listen, "metrics endpoint up");
    Ok(())
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
        counter!("swarm_cloud_bytes_sent_total").increment(c.bytes_sent);
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
    pub pipeline: Arc<Pipeline>,
    /// The queue between intake and router (its free room is read). Weak,
    /// so the router still sees the queue close when the intake stops.
    pub intake: mpsc::WeakSender<crate::stages::Accepted>,
    pub journal_healthy: watch::Receiver<bool>,
    pub journal_on: bool,
}

/// Samples the gauges every [`SAMPLE_EVERY`] until `stop`.
pub async fn sample(state: State, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(intake) = state.intake.upgrade() {
            gauge!("swarm_intake_queue").set((intake.max_capacity() - intake.capacity()) as f64);
        }
        for m in &state.models {
            let name = m.info.name.clone();
            gauge!("swarm_model_queue", "model" => name.clone()).set(m.queued() as f64);
            gauge!("swarm_model_busy", "model" => name.clone()).set(m.health().active() as f64);
            if let Some(t) = m.health().typical_job() {
                gauge!("swarm_model_job_seconds", "model" => name).set(t.as_secs_f64());
            }
        }
        let journal = match (state.journal_on, *state.journal_healthy.borrow()) {
            (false, _) => -1.0,
            (true, healthy) => healthy as u8 as f64,
        };
        gauge!("swarm_journal_healthy").set(journal);
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
