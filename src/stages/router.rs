//! Router: answers each accepted question through the [`Pipeline`], at most
//! `max_in_flight` at once.
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
use crate::pipeline::Pipeline;

pub struct Router {
    pub pipeline: Arc<Pipeline>,
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
        // Armed by its own task, so it holds however the intake's closing and
        // the shutdown race (a select here could see the closed intake first,
        // never arm it, and wait out a silent peer's whole timeout).
        let abort = CancellationToken::new();
        let drain_limit = {
            let (abort, timeout, shutdown) =
                (abort.clone(), self.drain_timeout, self.shutdown.clone());
            tokio::spawn(async move {
                shutdown.cancelled().await;
                tokio::time::sleep(timeout).await;
                abort.cancel();
            })
        };
        while let Some(accepted) = self.requests.recv().await {
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let span = tracing::info_span!("query", id = %accepted.request.id);
            let (pipeline, to_out, abort) =
                (self.pipeline.clone(), self.to_out.clone(), abort.clone());
            tasks.spawn(
                async move {
                    let Accepted {
                        request,
                        received,
                        seq,
                    } = accepted;
                    let reply = pipeline.answer(&request, received, &abort).await;
                    crate::metrics::record_reply(&reply);
                    let _ = to_out
                        .send(Outgoing {
                            to: request.reply,
                            payload: reply.to_json(),
                            seq,
                        })
                        .await;
                    drop(permit);
                }
                .instrument(span),
            );
        }
        tasks.close();
        tasks.wait().await;
        drain_limit.abort();
        tracing::debug!("router stopped");
    }
}
