//! Intake: decodes each message, takes it (journal, then the router's queue)
//! or answers it at once (an error, or `busy` when the queue is full), then
//! acknowledges it to the broker.
//!
//! The PUBACK goes out only after the message has a home: written to the
//! journal and queued for an answer, or its error reply queued. A crash
//! before that point leaves it with the broker for redelivery; a redelivery
//! of a message already taken is recognised by the journal and only
//! acknowledged. Before taking new messages, intake answers what the journal
//! says the last run still owed.

use rand::SeedableRng;
use std::time::{Instant, SystemTime};

use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Accepted, Outgoing};
use crate::journal::{self, Admission, Entry, Journal};
use crate::mqtt::{AckToken, Client};
use crate::protocol::{self, DecodeRules, ErrorCode, Inbound, Reply, ReplyError, Request};
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
    pub journal: Option<Journal>,
    /// Questions the last run took but did not finish answering.
    pub owed: Vec<Entry>,
}

/// What becomes of one message.
enum Outcome {
    /// Queued for an answer.
    Taken,
    /// Already taken before (a redelivery): nothing more to do.
    Duplicate,
    /// Answered at once with this reply.
    Reply(Outgoing),
}

impl Intake {
    /// Some(wait) when `topic` is over its rate.
    fn limited(&mut self, topic: &str, now: Instant) -> Option<std::time::Duration> {
        self.rate_limit.as_mut()?.check(topic, now).err()
    }

    /// An error reply to a request that was not taken (so not in the journal).
    fn failure(&self, request: Request, error: ReplyError, received: Instant) -> Outcome {
        let latency = protocol::millis(received.elapsed());
        let reply = Reply::failure(Some(request.id), &self.node, error, latency);
        crate::metrics::record_reply(&reply);
        Outcome::Reply(Outgoing {
            to: request.reply,
            payload: reply.to_json(),
            seq: None,
        })
    }

    /// Answers (or tells of their expiry) the questions the last run owed.
    async fn replay_owed(&mut self) -> Result<(), ()> {
        let owed = std::mem::take(&mut self.owed);
        if !owed.is_empty() {
            tracing::info!(
                count = owed.len(),
                "answering the questions the last run did not finish"
            );
        }
        let now = SystemTime::now();
        for entry in owed {
            let seq = Some(entry.seq);
            match entry.request(now) {
                Some(request) => {
                    tracing::info!(id = %request.id, "taken again from the journal");
                    let accepted = Accepted {
                        request,
                        received: Instant::now(),
                        seq,
                    };
                    self.to_router.send(accepted).await.map_err(|_| ())?;
                }
                None => {
                    tracing::warn!(id = %entry.id, "expired while the service was down: replied deadline_exceeded");
                    let error = ReplyError::new(
                        ErrorCode::DeadlineExceeded,
                        "the deadline passed while the service was restarting",
                    );
                    let reply = Reply::failure(Some(entry.id.clone()), &self.node, error, 0.0);
                    crate::metrics::record_reply(&reply);
                    let out = Outgoing {
                        to: entry.reply_address(),
                        payload: reply.to_json(),
                        seq,
                    };
                    self.to_out.send(out).await.map_err(|_| ())?;
                }
            }
        }
        Ok(())
    }

    /// Takes a decoded request: rate limit, room in the queue, journal.
    async fn take(
        &mut self,
        request: Request,
        id_given: bool,
        received: Instant,
    ) -> Result<Outcome, ()> {
        if let Some(wait) = self.limited(&request.topic, received) {
            tracing::warn!(id = %request.id, topic = %request.topic, "over its rate: replied rate_limited");
            let mut error = ReplyError::new(
                ErrorCode::RateLimited,
                "too many questions from this topic; retry later",
            );
            error.retry_after_ms = Some(wait.as_millis() as u64 + 1);
            return Ok(self.failure(request, error, received));
        }
        // Room first, so a question is never journaled and then refused.
        let permit = match self.to_router.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => {
                tracing::warn!(id = %request.id, "queue full: replied busy");
                let mut error =
                    ReplyError::new(ErrorCode::Busy, "the service is at capacity; retry later");
                error.retry_after_ms = Some(BUSY_RETRY_AFTER_MS);
                return Ok(self.failure(request, error, received));
            }
            Err(mpsc::error::TrySendError::Closed(())) => return Err(()),
        };
        let seq = match &self.journal {
            // A peer's vote is wanted for seconds: after a restart its asker
            // has moved on, so there is nothing to keep.
            _ if request.vote => None,
            None => None,
            Some(j) => match j
                .admit(&request, journal::dedup_key(&request, id_given))
                .await
            {
                Admission::New { seq } => Some(seq),
                Admission::Unjournaled => None,
                Admission::Duplicate { pending } => {
                    tracing::info!(id = %request.id, pending, "redelivery of a question already taken: answered once");
                    return Ok(Outcome::Duplicate);
                }
            },
        };
        tracing::debug!(id = %request.id, topic = %request.topic, ?seq, "accepted");
        permit.send(Accepted {
            request,
            received,
            seq,
        });
        Ok(Outcome::Taken)
    }

    pub async fn run(mut self) {
        let mut rng = rand::rngs::StdRng::from_os_rng();
        if self.replay_owed().await.is_err() {
            return;
        }
        loop {
            let (inbound, ack) = tokio::select! {
                m = self.from_mqtt.recv() => match m { Some(m) => m, None => break },
                _ = self.stop.cancelled() => break,
            };
            let received = Instant::now();
            let fallback_id = format!("q-{:016x}", rng.random::<u64>());
            let outcome = match protocol::decode(&inbound, &self.rules, &fallback_id) {
                Ok(request) => {
                    let id_given = request.id != fallback_id;
                    match self.take(request, id_given, received).await {
                        Ok(outcome) => outcome,
                        Err(()) => break,
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
                    let reply = Reply::failure(rej.id, &self.node, rej.error, latency);
                    crate::metrics::record_reply(&reply);
                    Outcome::Reply(Outgoing {
                        to: rej.reply,
                        payload: reply.to_json(),
                        seq: None,
                    })
                }
            };
            match outcome {
                Outcome::Taken | Outcome::Duplicate => {}
                Outcome::Reply(out) => {
                    if self.to_out.send(out).await.is_err() {
                        break;
                    }
                }
            }
            if let Err(e) = self.client.ack(&ack).await {
                tracing::warn!(error = %e, "cannot acknowledge a message");
            }
        }
        tracing::debug!("intake stopped");
    }
}
