//! MQTT in: polls the connection and hands received messages to intake (and
//! peer boards' votes to [`Peers`]), and what happens to our publishes
//! (PUBACKs, a lost session) to mqtt_out.
//!
//! This task is the only one that drives the rumqttc event loop, so it never
//! awaits anything that needs the loop to make progress (publishes, acks):
//! subscribing uses the non-blocking `try_` call. On
//! every ConnAck it subscribes again (the broker may have lost the session),
//! and after an error it waits a jittered backoff before reconnecting.

use std::sync::Arc;

use rand::SeedableRng;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::LinkEvent;
use crate::mqtt::{AckToken, Backoff, Client, Event, EventLoop, Qos};
use crate::peers::Peers;
use crate::protocol::Inbound;

pub struct MqttIn {
    pub client: Client,
    pub events: EventLoop,
    /// The request filter, in its share group when the board has one.
    pub subscription: String,
    /// Where votes asked of peer boards arrive, when there are peers.
    pub peers: Option<Arc<Peers>>,
    pub backoff: Backoff,
    /// PUBACKs, session losses and subscriptions, for mqtt_out.
    pub link: mpsc::UnboundedSender<LinkEvent>,
    /// Raw messages for intake.
    pub to_intake: mpsc::Sender<(Inbound, AckToken)>,
    /// True while the request subscription is granted (readiness for systemd).
    pub subscribed: watch::Sender<bool>,
    /// Stop taking new messages (they stay unacknowledged at the broker and are
    /// delivered again after a restart).
    pub stop_intake: CancellationToken,
    /// mqtt_out has queued its last reply and the DISCONNECT: flush them, then stop.
    pub stop: CancellationToken,
}

impl MqttIn {
    pub async fn run(mut self) {
        let mut rng = rand::rngs::StdRng::from_os_rng();
        loop {
            let event = self.events.poll().await;
            match event {
                Ok(Event::Connected { session_present }) => {
                    self.backoff.reset();
                    tracing::info!(session_present, "connected to the MQTT broker");
                    if !session_present {
                        let _ = self.link.send(LinkEvent::SessionLost);
                    }
                    // One SUBSCRIBE, so one SUBACK says we are online. Votes
                    // come at QoS 0: a lost one only costs the asker its wait.
                    let mut filters = vec![(self.subscription.as_str(), Qos::AtLeastOnce)];
                    if let Some(p) = &self.peers {
                        filters.push((p.vote_topic(), Qos::AtMostOnce));
                    }
                    if let Err(e) = self.client.try_subscribe_many(&filters) {
                        tracing::error!(error = %e, "cannot queue the subscription");
                    }
                }
                Ok(Event::Subscribed { granted: true }) => {
                    tracing::info!(filter = %self.subscription, "subscribed; answering questions");
                    let _ = self.link.send(LinkEvent::Subscribed);
                    self.subscribed.send_replace(true);
                }
                Ok(Event::Subscribed { granted: false }) => {
                    tracing::error!(filter = %self.subscription, "the broker refused the subscription (check its ACL)");
                }
                Ok(Event::Message(inbound, ack)) => {
                    let votes = self
                        .peers
                        .as_ref()
                        .filter(|p| p.vote_topic() == inbound.topic);
                    if let Some(p) = votes {
                        p.deliver(&inbound.payload); // QoS 0: nothing to acknowledge
                        continue;
                    }
                    if self.stop_intake.is_cancelled() {
                        tracing::debug!(topic = %inbound.topic, "shutting down: left for redelivery");
                        continue;
                    }
                    // Never wait here: intake's acks need this loop to be polled.
                    // The channel is larger than the broker's in-flight window
                    // (Receive Maximum), so only a QoS 0 flood can fill it; an
                    // unacknowledged QoS 1 message is delivered again later.
                    match self.to_intake.try_send((inbound, ack)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full((m, _))) => {
                            tracing::warn!(topic = %m.topic, "intake channel full: message left unacknowledged")
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => break,
                    }
                }
                Ok(Event::PublishAcked { refused }) => {
                    let _ = self.link.send(LinkEvent::Acked { refused });
                }
                Ok(Event::Disconnected) => break,
                Ok(Event::Other) => {}
                Err(e) if self.stop.is_cancelled() => {
                    tracing::warn!(error = %e, "MQTT connection lost while flushing the last replies");
                    break;
                }
                Err(e) => {
                    self.subscribed.send_replace(false);
                    let delay = self.backoff.next_delay(&mut rng);
                    tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "MQTT connection lost");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.cancelled() => break,
                    }
                }
            }
        }
        tracing::debug!("mqtt_in stopped");
    }
}
