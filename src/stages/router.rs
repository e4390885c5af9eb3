//! Router: answers each accepted question, at most `max_in_flight` at once.
//!
//! Each question is answered in its own task (tracked, so shutdown can wait
//! for them). On shutdown the router keeps answering what was already accepted
//! until the drain timeout; then generation is cancelled and the remaining
//! askers are told `shutting_down` rather than left without a reply.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Accepted, Outgoing};
use crate::inference::{Generation, InferenceError, ModelHandle};
use crate::protocol::{millis, ErrorCode, Reply, ReplyError, Route, Timing, TokenSignals};

pub struct Router {
    pub node: String,
    /// The model that answers locally.
    pub model: ModelHandle,
    pub requests: mpsc::Receiver<Accepted>,
    pub to_out: mpsc::Sender<Outgoing>,
    pub max_in_flight: usize,
    pub drain_timeout: Duration,
    pub shutdown: CancellationToken,
}

impl Router {
    pub async fn run(mut self) {
        let tasks = TaskTracker::new();
        let slots = Arc::new(Semaphore::new(self.max_in_flight));
        // Cancelled when the drain time is up: generation stops between tokens.
        let abort = CancellationToken::new();
        let mut draining = false;
        loop {
            let accepted = tokio::select! {
                a = self.requests.recv() => match a { Some(a) => a, None => break },
                _ = self.shutdown.cancelled(), if !draining => {
                    draining = true;
                    let (abort, timeout) = (abort.clone(), self.drain_timeout);
                    tokio::spawn(async move {
                        tokio::time::sleep(timeout).await;
                        abort.cancel();
                    });
                    continue;
                }
            };
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let span = tracing::info_span!("query", id = %accepted.request.id);
            let (model, node, to_out, abort) = (
                self.model.clone(),
                self.node.clone(),
                self.to_out.clone(),
                abort.clone(),
            );
            tasks.spawn(
                async move {
                    let to = accepted.request.reply.clone();
                    let reply = answer(accepted, &model, &node, abort).await;
                    let _ = to_out
                        .send(Outgoing {
                            to,
                            payload: reply.to_json(),
                        })
                        .await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        tasks.close();
        tasks.wait().await;
        tracing::debug!("router stopped");
    }
}

async fn answer(
    accepted: Accepted,
    model: &ModelHandle,
    node: &str,
    abort: CancellationToken,
) -> Reply {
    let Accepted { request, received } = accepted;
    let deadline = received + Duration::from_millis(request.deadline_ms);
    let result = if abort.is_cancelled() {
        Err(InferenceError::Cancelled)
    } else {
        let generation = model.generate(request.question, request.max_tokens, deadline, abort);
        match tokio::time::timeout_at(deadline.into(), generation).await {
            Ok(r) => r,
            // Still queued behind other questions when time ran out.
            Err(_) => Err(InferenceError::DeadlineExceeded { generated: 0 }),
        }
    };
    let latency = received.elapsed();
    let latency_ms = millis(latency);
    match result {
        Ok(g) => {
            tracing::info!(route = "local", model = %g.model, latency_ms, tokens = g.generated_tokens(), "answered");
            local_reply(request.id, node, g, latency)
        }
        Err(e) => {
            let code = match &e {
                InferenceError::ContextOverflow { .. } => ErrorCode::ContextOverflow,
                InferenceError::DeadlineExceeded { .. } => ErrorCode::DeadlineExceeded,
                InferenceError::Cancelled => ErrorCode::ShuttingDown,
                _ => ErrorCode::InferenceFailed,
            };
            tracing::warn!(code = ?code, error = %e, latency_ms, "not answered");
            Reply::failure(
                Some(request.id),
                node,
                ReplyError::new(code, e.to_string()),
                latency_ms,
            )
        }
    }
}

fn local_reply(id: String, node: &str, g: Generation, latency: Duration) -> Reply {
    let inference = g.time_to_first_token + g.decode_time;
    Reply {
        timing: Some(Timing {
            queue_ms: millis(latency.saturating_sub(inference)),
            prompt_ms: millis(g.time_to_first_token),
            decode_ms: millis(g.decode_time),
        }),
        id: Some(id),
        signals: Some(TokenSignals::from_tokens(
            &g.token_probs,
            &g.token_entropies,
        )),
        tokens: g.generated_tokens() as u32,
        finish: Some(g.finish.as_str().to_string()),
        answer: Some(g.text),
        route: Some(Route::Local),
        model: Some(g.model),
        latency_ms: millis(latency),
        node: node.to_string(),
        error: None,
    }
}
