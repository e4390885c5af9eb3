//! Operators' metrics: a Prometheus scrape endpoint, off by default
//! (`metrics.listen = "127.0.0.1:9464"`), served by the
//! `metrics-exporter-prometheus` crate.
//!
//! Counters come from the replies themselves, at the two places replies are
//! made (the intake's refusals, the router's answers), so every reply is
//! counted once; gauges come from a sampler of the service's state every
//! [`SAMPLE_EVERY`]. Without an endpoint, no recorder is installed and the
//! `metrics` macros cost next to nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::PrometheusBuilder;
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

/// Counts one reply: its route and outcome, its error code, its latency by
/// route, tokens, the cloud's share, the swarm's votes.
pub fn record_reply(reply: &Reply) {
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
            gauge!("swarm_model_busy", "model" => name.clone())
                .set(m.health().is_busy() as u8 as f64);
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
