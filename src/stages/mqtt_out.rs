//! MQTT out: the one QoS 1 publisher (vote requests to peer boards go at QoS 0,
//! see [`crate::peers`], so no PUBACK is theirs). It sends each reply and waits for the broker's
//! PUBACK before the next (stop-and-wait: replies come at inference speed, and
//! one outstanding publish makes every PUBACK unambiguous), then marks the
//! question done in the journal. A reply whose PUBACK never came stays owed in
//! the journal and is sent again after a restart: one reply too many is
//! possible, none too few. It also publishes the retained status: online when
//! mqtt_in reports the subscription, degraded while the journal cannot write,
//! again after replies went out (at most once per [`STATUS_DEBOUNCE`], so
//! `swarm-llm status` after a burst shows it) and every `status_every` with
//! fresh counters and load, and offline with the DISCONNECT once every other
//! stage has finished.

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{LinkEvent, Outgoing};
use crate::journal::Journal;
use crate::mqtt::{Client, PublishProps};

/// The least time between two statuses published because replies went out:
/// a burst of answers costs the broker one retained message a second.
pub const STATUS_DEBOUNCE: std::time::Duration = std::time::Duration::from_secs(1);

/// The retained status payloads.
pub struct StatusPayloads {
    /// The online status, built at each publish so that it carries the
    /// counters and load of the moment; the argument is whether the journal
    /// writes (when it does not, answers flow without durability).
    pub online: Box<dyn Fn(bool) -> Vec<u8> + Send>,
    pub offline: Vec<u8>,
    /// How often the online status is published again.
    pub every: std::time::Duration,
}

pub struct MqttOut {
    pub client: Client,
    pub replies: mpsc::Receiver<Outgoing>,
    /// PUBACKs, session losses and subscriptions, from mqtt_in.
    pub link: mpsc::UnboundedReceiver<LinkEvent>,
    pub journal: Option<Journal>,
    /// True while the journal writes; false shows in the status.
    pub journal_healthy: watch::Receiver<bool>,
    pub status_topic: String,
    pub status: StatusPayloads,
    /// Stop waiting for PUBACKs: the stop timeout is near. What is not
    /// acknowledged stays owed in the journal.
    pub give_up: CancellationToken,
    /// Cancelled when done, so mqtt_in stops polling.
    pub done: CancellationToken,
}

/// Whether a publish was acknowledged.
#[derive(PartialEq)]
enum Delivered {
    Yes,
    /// Acknowledged with a refusal (MQTT 5), e.g. by the broker's ACL:
    /// sending it again would be refused again.
    Refused,
    No,
}

impl MqttOut {
    pub async fn run(mut self) {
        let mut online = false;
        let mut announce = false;
        // Replies went out since the last status: its counters are stale.
        let mut stale = false;
        let mut last_status = tokio::time::Instant::now();
        let mut link_open = true;
        let mut refresh = tokio::time::interval_at(
            tokio::time::Instant::now() + self.status.every,
            self.status.every,
        );
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if announce {
                announce = false;
                stale = false;
                last_status = tokio::time::Instant::now();
                self.publish_status(online).await;
            }
            // Runs until every sender (intake, router, answer tasks) is gone:
            // that is the drain, so no accepted question's reply is dropped.
            tokio::select! {
                out = self.replies.recv() => match out {
                    Some(out) => {
                        let Outgoing { to, payload, seq } = out;
                        let props = PublishProps { response_topic: None, correlation_data: to.correlation_data };
                        match self.publish(&to.topic, payload, false, props, &mut announce).await {
                            // Refused: done too, or every restart would send it again.
                            Delivered::Yes | Delivered::Refused => {
                                if let (Some(journal), Some(seq)) = (&self.journal, seq) {
                                    journal.done(seq);
                                }
                                stale = true;
                            }
                            Delivered::No => tracing::warn!(topic = %to.topic, "reply not acknowledged by the broker: it stays in the journal and is sent again after a restart"),
                        }
                    }
                    None => break,
                },
                event = self.link.recv(), if link_open => match event {
                    Some(LinkEvent::Subscribed) => { online = true; announce = true; }
                    Some(LinkEvent::Acked { .. } | LinkEvent::SessionLost) => {}
                    None => link_open = false,
                },
                Ok(()) = self.journal_healthy.changed(), if online => announce = true,
                _ = refresh.tick(), if online => announce = true,
                _ = tokio::time::sleep_until(last_status + STATUS_DEBOUNCE), if online && stale => announce = true,
            }
        }
        self.publish(
            &self.status_topic.clone(),
            self.status.offline.clone(),
            true,
            PublishProps::default(),
            &mut false,
        )
        .await;
        let _ = self.client.disconnect().await;
        self.done.cancel();
        tracing::debug!("mqtt_out stopped");
    }

    async fn publish_status(&mut self, online: bool) {
        if !online {
            return;
        }
        let payload = (self.status.online)(*self.journal_healthy.borrow_and_update());
        let topic = self.status_topic.clone();
        self.publish(&topic, payload, true, PublishProps::default(), &mut false)
            .await;
    }

    /// Publishes at QoS 1 and waits for the PUBACK, publishing again if the
    /// broker lost our session (and with it the message) meanwhile.
    async fn publish(
        &mut self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
        props: PublishProps,
        announce: &mut bool,
    ) -> Delivered {
        // Link events from before this publish say nothing about it.
        while let Ok(e) = self.link.try_recv() {
            *announce |= e == LinkEvent::Subscribed;
        }
        loop {
            if let Err(e) = self
                .client
                .publish(topic, payload.clone(), retain, props.clone())
                .await
            {
                tracing::error!(%topic, error = %e, "cannot publish");
                return Delivered::No;
            }
            loop {
                tokio::select! {
                    event = self.link.recv() => match event {
                        Some(LinkEvent::Acked { refused: None }) => return Delivered::Yes,
                        Some(LinkEvent::Acked { refused: Some(why) }) => {
                            tracing::error!(%topic, reason = %why, "THE BROKER REFUSED A MESSAGE (check its ACL for this topic); it is dropped");
                            return Delivered::Refused;
                        }
                        Some(LinkEvent::SessionLost) => {
                            tracing::warn!(%topic, "the broker lost our session: publishing again");
                            break;
                        }
                        Some(LinkEvent::Subscribed) => *announce = true,
                        None => return Delivered::No,
                    },
                    _ = self.give_up.cancelled() => return Delivered::No,
                }
            }
        }
    }
}
