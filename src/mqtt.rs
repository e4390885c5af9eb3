//! MQTT transport: one face over rumqttc's MQTT 5 and 3.1.1 clients.
//!
//! The service and the `ask` client both speak either protocol; this module
//! maps both to [`Event`]s carrying a protocol-free [`Inbound`] message, and
//! offers publish/subscribe/ack that take MQTT 5 properties where the protocol
//! has them. It knows nothing of questions or answers.
//!
//! Rules kept here (rumqttc's known traps): the event loop's caller must never
//! await a publish while polling (use the `try_` calls there); after an error
//! `poll` reconnects at once, so the caller sleeps [`Backoff`] first; the
//! incoming packet limit is raised from rumqttc's 10 KiB default so that an
//! oversize question is answered with an error rather than breaking the link.

use std::time::Duration;

use rand::Rng;
use rumqttc::v5;

use crate::config::{MqttConfig, MqttProtocol};
use crate::protocol::Inbound;

#[derive(Debug, thiserror::Error)]
pub enum MqttError {
    #[error("MQTT connection: {0}")]
    Connection(String),
    #[error("MQTT client request: {0}")]
    Client(String),
    #[error("cannot read {what} {path}: {source}")]
    File {
        what: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Everything needed to open a connection.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    pub host: String,
    pub port: u16,
    pub protocol: MqttProtocol,
    pub client_id: String,
    /// false: a persistent session the broker keeps while we are away.
    pub clean_session: bool,
    pub keep_alive: Duration,
    pub session_expiry_s: u32,
    pub max_packet_bytes: u32,
    pub credentials: Option<(String, String)>,
    pub tls: Option<TlsFiles>,
    /// Retained last will: (topic, payload).
    pub last_will: Option<(String, Vec<u8>)>,
    /// How many unacknowledged QoS 1 messages the broker may send us at once (MQTT 5).
    pub receive_maximum: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: Vec<u8>,
    pub client_auth: Option<(Vec<u8>, Vec<u8>)>,
}

impl ConnectSettings {
    /// Settings for the service from its config: persistent session, manual
    /// acknowledgement, and the password from its file or the environment.
    pub fn from_config(m: &MqttConfig, client_id: String) -> Result<Self, MqttError> {
        let read = |what: &'static str, path: &std::path::Path| {
            std::fs::read(path).map_err(|source| MqttError::File {
                what,
                path: path.to_owned(),
                source,
            })
        };
        let password = match &m.password_file {
            Some(p) => Some(
                String::from_utf8_lossy(&read("MQTT password file", p)?)
                    .trim_end()
                    .to_string(),
            ),
            None => crate::systemd::credential(crate::config::MQTT_PASSWORD_CREDENTIAL)
                .or_else(|| std::env::var(crate::config::MQTT_PASSWORD_ENV).ok()),
        };
        let credentials = m
            .username
            .clone()
            .map(|u| (u, password.unwrap_or_default()));
        let tls = match &m.tls {
            None => None,
            Some(t) => Some(TlsFiles {
                ca: read("CA file", &t.ca_file)?,
                client_auth: match (&t.client_cert_file, &t.client_key_file) {
                    (Some(c), Some(k)) => {
                        Some((read("client certificate", c)?, read("client key", k)?))
                    }
                    _ => None,
                },
            }),
        };
        Ok(Self {
            host: m.host.clone(),
            port: m.port,
            protocol: m.protocol,
            client_id,
            clean_session: false,
            keep_alive: Duration::from_secs(m.keep_alive_s),
            session_expiry_s: m.session_expiry_s,
            max_packet_bytes: m.max_packet_bytes,
            credentials,
            tls,
            last_will: None,
            receive_maximum: None,
        })
    }
}

/// A received QoS 1 message that still needs its PUBACK.
pub enum AckToken {
    V5(v5::mqttbytes::v5::Publish),
    V4(rumqttc::Publish),
}

// One event per poll, moved once: boxing the message would only add an
// allocation per message.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// Connected (again). `session_present`: the broker kept our session.
    Connected {
        session_present: bool,
    },
    /// The broker acknowledged a subscription; `granted` is false when it refused it.
    Subscribed {
        granted: bool,
    },
    Message(Inbound, AckToken),
    /// The broker acknowledged one of our QoS 1 publishes. `refused`: why
    /// it did not take it (MQTT 5 only; a 3.1.1 broker acknowledges a
    /// publish its ACL drops as if it had taken it).
    PublishAcked {
        refused: Option<String>,
    },
    /// Our DISCONNECT went out: the connection is closed on purpose.
    Disconnected,
    /// Anything else (pings, acks of our publishes, ...).
    Other,
}

#[derive(Clone)]
pub enum Client {
    V5(v5::AsyncClient),
    V4(rumqttc::AsyncClient),
}

pub enum EventLoop {
    V5(Box<v5::EventLoop>),
    V4(Box<rumqttc::EventLoop>),
}

/// Delivery guarantee of a subscription or publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    AtMostOnce,
    AtLeastOnce,
}

impl Qos {
    fn v5(self) -> v5::mqttbytes::QoS {
        match self {
            Qos::AtMostOnce => v5::mqttbytes::QoS::AtMostOnce,
            Qos::AtLeastOnce => v5::mqttbytes::QoS::AtLeastOnce,
        }
    }

    fn v4(self) -> rumqttc::QoS {
        match self {
            Qos::AtMostOnce => rumqttc::QoS::AtMostOnce,
            Qos::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        }
    }
}

/// Extra MQTT 5 properties for a publish; ignored on 3.1.1.
#[derive(Debug, Clone, Default)]
pub struct PublishProps {
    pub response_topic: Option<String>,
    pub correlation_data: Option<Vec<u8>>,
}

/// Creates the client and its event loop; nothing connects until the loop is polled.
pub fn connect(s: &ConnectSettings, manual_acks: bool) -> (Client, EventLoop) {
    // Our own requests (publishes, acks) waiting for the event loop.
    const REQUEST_CAPACITY: usize = 256;
    match s.protocol {
        MqttProtocol::V5 => {
            let mut o = v5::MqttOptions::new(&s.client_id, &s.host, s.port);
            o.set_keep_alive(s.keep_alive)
                .set_clean_start(s.clean_session)
                .set_manual_acks(manual_acks)
                .set_max_packet_size(Some(s.max_packet_bytes));
            if !s.clean_session {
                o.set_session_expiry_interval(Some(s.session_expiry_s));
            }
            o.set_receive_maximum(s.receive_maximum);
            o.set_network_options(network_options());
            if let Some((u, p)) = &s.credentials {
                o.set_credentials(u, p);
            }
            if let Some(tls) = &s.tls {
                o.set_transport(transport(tls));
            }
            if let Some((topic, payload)) = &s.last_will {
                o.set_last_will(v5::mqttbytes::v5::LastWill::new(
                    topic,
                    payload.clone(),
                    v5::mqttbytes::QoS::AtLeastOnce,
                    true,
                    None,
                ));
            }
            let (c, l) = v5::AsyncClient::new(o, REQUEST_CAPACITY);
            (Client::V5(c), EventLoop::V5(Box::new(l)))
        }
        MqttProtocol::V311 => {
            let mut o = rumqttc::MqttOptions::new(&s.client_id, &s.host, s.port);
            o.set_keep_alive(s.keep_alive)
                .set_clean_session(s.clean_session)
                .set_manual_acks(manual_acks)
                .set_max_packet_size(s.max_packet_bytes as usize, s.max_packet_bytes as usize);
            if let Some((u, p)) = &s.credentials {
                o.set_credentials(u, p);
            }
            if let Some(tls) = &s.tls {
                o.set_transport(transport(tls));
            }
            if let Some((topic, payload)) = &s.last_will {
                o.set_last_will(rumqttc::LastWill::new(
                    topic,
                    payload.clone(),
                    rumqttc::QoS::AtLeastOnce,
                    true,
                ));
            }
            let (c, mut l) = rumqttc::AsyncClient::new(o, REQUEST_CAPACITY);
            l.set_network_options(network_options());
            (Client::V4(c), EventLoop::V4(Box::new(l)))
        }
    }
}

/// TCP_NODELAY: a PUBACK followed at once by a reply is two small writes, and
/// with Nagle's algorithm the second waits for the broker's delayed ACK
/// (about 40 ms on Linux) before it leaves.
fn network_options() -> rumqttc::NetworkOptions {
    let mut n = rumqttc::NetworkOptions::new();
    n.set_tcp_nodelay(true);
    n
}

fn transport(tls: &TlsFiles) -> rumqttc::Transport {
    crate::tls::install_provider();
    rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Simple {
        ca: tls.ca.clone(),
        alpn: None,
        client_auth: tls.client_auth.clone(),
    })
}

fn client_err(e: impl std::fmt::Display) -> MqttError {
    MqttError::Client(e.to_string())
}

impl Client {
    /// QoS 1 publish; waits for room in the client's request queue, so it must
    /// not be called from the task that polls the event loop.
    pub async fn publish(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
        props: PublishProps,
    ) -> Result<(), MqttError> {
        match self {
            Client::V5(c) => {
                let p = v5::mqttbytes::v5::PublishProperties {
                    response_topic: props.response_topic,
                    correlation_data: props.correlation_data.map(Into::into),
                    ..Default::default()
                };
                c.publish_with_properties(
                    topic,
                    v5::mqttbytes::QoS::AtLeastOnce,
                    retain,
                    payload,
                    p,
                )
                .await
                .map_err(client_err)
            }
            Client::V4(c) => c
                .publish(topic, rumqttc::QoS::AtLeastOnce, retain, payload)
                .await
                .map_err(client_err),
        }
    }

    /// QoS 0 publish: no PUBACK comes back, so it never disturbs mqtt_out's
    /// stop-and-wait on its own publishes. For messages whose loss only costs
    /// a wait (a vote request to a peer).
    pub async fn publish_at_most_once(
        &self,
        topic: &str,
        payload: Vec<u8>,
    ) -> Result<(), MqttError> {
        match self {
            Client::V5(c) => c
                .publish(topic, Qos::AtMostOnce.v5(), false, payload)
                .await
                .map_err(client_err),
            Client::V4(c) => c
                .publish(topic, Qos::AtMostOnce.v4(), false, payload)
                .await
                .map_err(client_err),
        }
    }

    /// Non-blocking QoS 1 subscribe, for use inside the polling task.
    pub fn try_subscribe(&self, filter: &str) -> Result<(), MqttError> {
        self.try_subscribe_many(&[(filter, Qos::AtLeastOnce)])
    }

    /// Non-blocking subscribe to several filters in one SUBSCRIBE, so one
    /// SUBACK answers for all of them.
    pub fn try_subscribe_many(&self, filters: &[(&str, Qos)]) -> Result<(), MqttError> {
        match self {
            Client::V5(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| v5::mqttbytes::v5::Filter::new(*f, q.v5())),
                )
                .map_err(client_err),
            Client::V4(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.to_string(), q.v4())),
                )
                .map_err(client_err),
        }
    }

    /// Sends the PUBACK for a message we have taken responsibility for.
    pub async fn ack(&self, token: &AckToken) -> Result<(), MqttError> {
        match (self, token) {
            (Client::V5(c), AckToken::V5(p)) => c.ack(p).await.map_err(client_err),
            (Client::V4(c), AckToken::V4(p)) => c.ack(p).await.map_err(client_err),
            _ => unreachable!("an ack token always comes from the client's own protocol"),
        }
    }

    pub async fn disconnect(&self) -> Result<(), MqttError> {
        match self {
            Client::V5(c) => c.disconnect().await.map_err(client_err),
            Client::V4(c) => c.disconnect().await.map_err(client_err),
        }
    }
}

impl EventLoop {
    pub async fn poll(&mut self) -> Result<Event, MqttError> {
        use v5::mqttbytes::v5::Packet as P5;
        match self {
            EventLoop::V5(l) => match l
                .poll()
                .await
                .map_err(|e| MqttError::Connection(e.to_string()))?
            {
                v5::Event::Incoming(P5::ConnAck(ack)) => Ok(Event::Connected {
                    session_present: ack.session_present,
                }),
                v5::Event::Incoming(P5::SubAck(ack)) => Ok(Event::Subscribed {
                    granted: ack
                        .return_codes
                        .iter()
                        .all(|c| matches!(c, v5::mqttbytes::v5::SubscribeReasonCode::Success(_))),
                }),
                v5::Event::Incoming(P5::Publish(p)) => {
                    let props = p.properties.clone().unwrap_or_default();
                    let inbound = Inbound {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        response_topic: props.response_topic,
                        correlation_data: props.correlation_data.map(|b| b.to_vec()),
                        message_expiry_s: props.message_expiry_interval,
                    };
                    Ok(Event::Message(inbound, AckToken::V5(p)))
                }
                v5::Event::Incoming(P5::PubAck(ack)) => Ok(Event::PublishAcked {
                    refused: puback_refusal(ack),
                }),
                v5::Event::Outgoing(rumqttc::Outgoing::Disconnect) => Ok(Event::Disconnected),
                _ => Ok(Event::Other),
            },
            EventLoop::V4(l) => match l
                .poll()
                .await
                .map_err(|e| MqttError::Connection(e.to_string()))?
            {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(ack)) => Ok(Event::Connected {
                    session_present: ack.session_present,
                }),
                rumqttc::Event::Incoming(rumqttc::Packet::SubAck(ack)) => Ok(Event::Subscribed {
                    granted: ack
                        .return_codes
                        .iter()
                        .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))),
                }),
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => {
                    let inbound = Inbound {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        response_topic: None,
                        correlation_data: None,
                        message_expiry_s: None,
                    };
                    Ok(Event::Message(inbound, AckToken::V4(p)))
                }
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)) => {
                    Ok(Event::PublishAcked { refused: None })
                }
                rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect) => Ok(Event::Disconnected),
                _ => Ok(Event::Other),
            },
        }
    }
}

/// Why an MQTT 5 broker did not take a publish, from its PUBACK; None when it did.
fn puback_refusal(ack: v5::mqttbytes::v5::PubAck) -> Option<String> {
    use v5::mqttbytes::v5::PubAckReason as R;
    match ack.reason {
        R::Success | R::NoMatchingSubscribers => None,
        reason => {
            let detail = ack.properties.and_then(|p| p.reason_string);
            Some(match detail {
                Some(d) => format!("{reason:?} ({d})"),
                None => format!("{reason:?}"),
            })
        }
    }
}

/// Jittered exponential backoff between reconnect attempts: each delay is
/// drawn from [base/2, base], and base doubles up to the maximum, so a plant
/// full of boards does not reconnect in lock-step after a broker restart.
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = base / 2;
        half + Duration::from_millis(rng.random_range(0..=half.as_millis() as u64))
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let bases = [100u64, 200, 400, 800, 1000, 1000];
        for base in bases {
            let d = b.next_delay(&mut rng).as_millis() as u64;
            assert!(
                (base / 2..=base).contains(&d),
                "{d} not in [{}, {base}]",
                base / 2
            );
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
    }
}
