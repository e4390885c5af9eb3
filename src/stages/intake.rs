//! Intake: decodes each message, admits it to the router's queue or answers it
//! at once (an error, or `busy` when the queue is full), then acknowledges it.
//!
//! The PUBACK goes out only after the message has a home (queued for an
//! answer, or its error reply queued), so a crash before that point leaves it
//! with the broker for redelivery.

use rand::SeedableRng;
use std::time::Instant;

use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Accepted, Outgoing};
use crate::mqtt::{AckToken, Client};
use crate::protocol::{self, DecodeRules, ErrorCode, Inbound, Reply, ReplyError};
use crate::ratelimit::RateLimiter;

/// Suggested wait before retrying after a `busy` reply.
const BUSY_RETRY_AFTER_MS: u64 = 2_000;

pub struct Intake {
    pub client: Client,
    pub rules: DecodeRules,
    pub node: String,
    pub from_mqtt: mpsc::Receiver<(Inbound, AckToken)>,
    pub to_router: mpsc::Sender<Accepted>,
    pub to_out: mpsc::Sender<Outgoing>,
    /// Stop admitting: shutdown has begun.
    pub stop: CancellationToken,
    /// Per-asker rate limit, when configured.
    pub rate_limit: Option<RateLimiter>,
}

impl Intake {
    /// Some(wait) when `topic` is over its rate.
    fn limited(&mut self, topic: &str, now: Instant) -> Option<std::time::Duration> {
        self.rate_limit.as_mut()?.check(topic, now).err()
    }

    pub async fn run(mut self) {
        let mut rng = rand::rngs::StdRng::from_os_rng();
        loop {
            let (inbound, ack) = tokio::select! {
                m = self.from_mqtt.recv() => match m { Some(m) => m, None => break },
                _ = self.stop.cancelled() => break,
            };
            let received = Instant::now();
            let fallback_id = format!("q-{:016x}", rng.random::<u64>());
            let immediate = match protocol::decode(&inbound, &self.rules, &fallback_id) {
                Ok(request) => {
                    if let Some(wait) = self.limited(&request.topic, received) {
                        tracing::warn!(id = %request.id, topic = %request.topic, "over its rate: replied rate_limited");
                        let mut error = ReplyError::new(
                            ErrorCode::RateLimited,
                            "too many questions from this topic; retry later",
                        );
                        error.retry_after_ms = Some(wait.as_millis() as u64 + 1);
                        let latency = protocol::millis(received.elapsed());
                        Some((
                            request.reply,
                            Reply::failure(Some(request.id), &self.node, error, latency),
                        ))
                    } else {
                        tracing::debug!(id = %request.id, topic = %request.topic, "accepted");
                        match self.to_router.try_send(Accepted { request, received }) {
                            Ok(()) => None,
                            Err(mpsc::error::TrySendError::Full(a)) => {
                                tracing::warn!(id = %a.request.id, "queue full: replied busy");
                                let mut error = ReplyError::new(
                                    ErrorCode::Busy,
                                    "the service is at capacity; retry later",
                                );
                                error.retry_after_ms = Some(BUSY_RETRY_AFTER_MS);
                                Some((
                                    a.request.reply,
                                    Reply::failure(
                                        Some(a.request.id),
                                        &self.node,
                                        error,
                                        protocol::millis(received.elapsed()),
                                    ),
                                ))
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => break,
                        }
                    }
                }
                Err(rej) => {
                    tracing::warn!(
                        id = rej.id.as_deref().unwrap_or("-"),
                        topic = %inbound.topic,
                        code = ?rej.error.code,
                        reason = %rej.error.message,
                        "rejected a request"
                    );
                    let latency = protocol::millis(received.elapsed());
                    Some((
                        rej.reply,
                        Reply::failure(rej.id, &self.node, rej.error, latency),
                    ))
                }
            };
            if let Some((to, reply)) = immediate {
                if self
                    .to_out
                    .send(Outgoing {
                        to,
                        payload: reply.to_json(),
                    })
                    .await
                    .is_err()
                {
                    break;
                }
            }
            if let Err(e) = self.client.ack(&ack).await {
                tracing::warn!(error = %e, "cannot acknowledge a message");
            }
        }
        tracing::debug!("intake stopped");
    }
}
