//! `swarm-llm ask`: a command-line client that publishes one question, waits
//! for its reply and returns the reply JSON. It speaks MQTT 5 (reply address in
//! Response Topic and Correlation Data) or 3.1.1 (`reply_to` and `id` in the
//! payload), which makes it both a tool for operators and a check that both
//! paths of the service work.

use rand::SeedableRng;
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;

use crate::config::MqttProtocol;
use crate::mqtt::{self, ConnectSettings, Event, MqttError, PublishProps, TlsFiles};
use crate::protocol::RequestPayload;

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("broker URL {0:?}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")]
    BadUrl(String),
    #[error("an mqtts:// broker needs --ca-file")]
    TlsNeedsCa,
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    #[error("the broker refused the subscription to {0}")]
    SubscribeRefused(String),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

#[derive(Debug, Clone)]
pub struct AskOptions {
    pub broker: String,
    pub protocol: MqttProtocol,
    pub topic: String,
    pub reply_topic: Option<String>,
    pub question: String,
    pub id: Option<String>,
    pub max_tokens: Option<u32>,
    pub deadline_ms: Option<u64>,
    pub timeout: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<TlsFiles>,
}

/// Splits `mqtt://host:port` / `mqtts://host:port` into (tls, host, port).
pub fn parse_broker_url(url: &str) -> Result<(bool, String, u16), AskError> {
    let bad = || AskError::BadUrl(url.to_string());
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err(bad());
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
        None => (rest, if tls { 8883 } else { 1883 }),
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok((tls, host.to_string(), port))
}

/// Publishes the question and returns the reply payload.
pub async fn ask(o: AskOptions) -> Result<Vec<u8>, AskError> {
    let (tls, host, port) = parse_broker_url(&o.broker)?;
    if tls && o.tls.is_none() {
        return Err(AskError::TlsNeedsCa);
    }
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let tag = format!("{:016x}", rng.random::<u64>());
    let id = o.id.clone().unwrap_or_else(|| format!("ask-{tag}"));
    let reply_topic = o
        .reply_topic
        .clone()
        .unwrap_or_else(|| format!("swarm/reply/ask-{tag}"));
    let settings = ConnectSettings {
        host,
        port,
        protocol: o.protocol,
        client_id: format!("swarm-llm-ask-{tag}"),
        clean_session: true,
        keep_alive: Duration::from_secs(30),
        session_expiry_s: 0,
        max_packet_bytes: 4 * 1024 * 1024,
        credentials: o
            .username
            .clone()
            .map(|u| (u, o.password.clone().unwrap_or_default())),
        tls: if tls { o.tls.clone() } else { None },
        last_will: None,
        receive_maximum: None,
    };
    let (client, mut events) = mqtt::connect(&settings, false);
    // The event loop runs in its own task so this one may await publishes.
    let (tx, mut rx) = mpsc::channel(64);
    let poller = tokio::spawn(async move {
        loop {
            let e = events.poll().await;
            let failed = e.is_err();
            if tx.send(e).await.is_err() || failed {
                break;
            }
        }
    });
    let correlation = tag.as_bytes().to_vec();
    let result = tokio::time::timeout(o.timeout, async {
        loop {
            match rx.recv().await.expect("poller sends until an error") {
                Err(e) => return Err(AskError::Mqtt(e)),
                Ok(Event::Connected { .. }) => client.try_subscribe(&reply_topic)?,
                Ok(Event::Subscribed { granted: false }) => {
                    return Err(AskError::SubscribeRefused(reply_topic.clone()))
                }
                Ok(Event::Subscribed { granted: true }) => {
                    let (payload, props) = request_payload(&o, &id, &reply_topic, &correlation);
                    client.publish(&o.topic, payload, false, props).await?;
                }
                Ok(Event::Message(m, _)) if m.topic == reply_topic => {
                    let ours = match o.protocol {
                        MqttProtocol::V5 => m.correlation_data.as_deref() == Some(&correlation[..]),
                        MqttProtocol::V311 => {
                            serde_json::from_slice::<serde_json::Value>(&m.payload)
                                .is_ok_and(|v| v["id"].as_str() == Some(&id))
                        }
                    };
                    if ours {
                        return Ok(m.payload);
                    }
                }
                Ok(_) => {}
            }
        }
    })
    .await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), poller).await;
    result.unwrap_or(Err(AskError::Timeout(o.timeout)))
}

fn request_payload(
    o: &AskOptions,
    id: &str,
    reply_topic: &str,
    correlation: &[u8],
) -> (Vec<u8>, PublishProps) {
    let mut body = RequestPayload {
        id: Some(id.to_string()),
        question: o.question.clone(),
        max_tokens: o.max_tokens,
        deadline_ms: o.deadline_ms,
        ..RequestPayload::default()
    };
    let props = match o.protocol {
        MqttProtocol::V5 => PublishProps {
            response_topic: Some(reply_topic.to_string()),
            correlation_data: Some(correlation.to_vec()),
        },
        MqttProtocol::V311 => {
            body.reply_to = Some(reply_topic.to_string());
            PublishProps::default()
        }
    };
    (serde_json::to_vec(&body).expect("json"), props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_broker_url("mqtt://127.0.0.1:1884").unwrap(),
            (false, "127.0.0.1".into(), 1884)
        );
        assert_eq!(
            parse_broker_url("mqtts://broker.local").unwrap(),
            (true, "broker.local".into(), 8883)
        );
        assert_eq!(
            parse_broker_url("mqtt://h/").unwrap(),
            (false, "h".into(), 1883)
        );
        assert!(parse_broker_url("tcp://h:1").is_err());
        assert!(parse_broker_url("mqtt://:1").is_err());
        assert!(parse_broker_url("mqtt://h:port").is_err());
    }
}
