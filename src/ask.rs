//! `swarm-llm ask`: a command-line client that publishes one question, waits
//! for its reply and returns the reply JSON. It speaks MQTT 5 (reply address in
//! Response Topic and Correlation Data) or 3.1.1 (`reply_to` and `id` in the
//! payload), which makes it both a tool for operators and a check that both
//! paths of the service work. `swarm-llm status` lists the boards from
//! their retained statuses.

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

/// How the command-line clients log in to the broker.
#[derive(Debug, Clone, Default)]
pub struct Login {
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: Option<TlsFiles>,
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
    pub login: Login,
}

/// A command-line client's connection: its events come on `rx` from a
/// task of their own, so the caller may await publishes meanwhile.
struct Connection {
    client: mqtt::Client,
    rx: mpsc::Receiver<Result<Event, MqttError>>,
    poller: tokio::task::JoinHandle<()>,
}

fn open(
    broker: &str,
    protocol: MqttProtocol,
    login: &Login,
    tag: &str,
) -> Result<Connection, AskError> {
    let (tls, host, port) = parse_broker_url(broker)?;
    if tls && login.tls.is_none() {
        return Err(AskError::TlsNeedsCa);
    }
    let settings = ConnectSettings {
        host,
        port,
        protocol,
        client_id: format!("swarm-llm-cli-{tag}"),
        clean_session: true,
        keep_alive: Duration::from_secs(30),
        session_expiry_s: 0,
        max_packet_bytes: 4 * 1024 * 1024,
        credentials: login
            .username
            .clone()
            .map(|u| (u, login.password.clone().unwrap_or_default())),
        tls: if tls { login.tls.clone() } else { None },
        last_will: None,
        receive_maximum: None,
    };
    let (client, mut events) = mqtt::connect(&settings, false);
    let (tx, rx) = mpsc::channel(64);
    let poller = tokio::spawn(async move {
        loop {
            let e = events.poll().await;
            let failed = e.is_err();
            if tx.send(e).await.is_err() || failed {
                break;
            }
        }
    });
    Ok(Connection { client, rx, poller })
}

/// One board as its retained status describes it. Unknown fields are
/// ignored, so an older `status` reads newer boards.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
pub struct BoardStatus {
    #[serde(default)]
    pub node: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub journal: Option<String>,
    /// Questions waiting for or inside its model threads.
    #[serde(default)]
    pub load: Option<usize>,
    /// "up" or "down"; absent without a cloud.
    #[serde(default)]
    pub cloud: Option<String>,
    #[serde(default)]
    pub counters: Option<crate::metrics::Counters>,
    /// The cloud share it holds, when `routing.cloud_share` is set.
    #[serde(default)]
    pub cloud_share: Option<crate::route::share::ShareStatus>,
    /// The topic it came on.
    #[serde(default)]
    pub topic: String,
}

/// Reads a status payload; None for one that is not a status (or empty: a
/// cleared retained message).
pub fn parse_status(topic: &str, payload: &[u8]) -> Option<BoardStatus> {
    let mut s: BoardStatus = serde_json::from_slice(payload).ok()?;
    s.topic = topic.to_string();
    if s.node.is_empty() {
        s.node = topic.rsplit('/').next().unwrap_or_default().to_string();
    }
    Some(s)
}

/// One line per board: name, state, version, journal, load, replies (of
/// them cloud and errors), how long ago it last replied (`now_unix_s` is now),
/// cloud, the cloud share held (recent/target), models. A dash where a
/// board's status does not say.
pub fn render_statuses(boards: &[BoardStatus], now_unix_s: u64) -> String {
    let row = |c: [&str; 12]| {
        let line = format!(
            "{:<20} {:<8} {:<8} {:<8} {:>5} {:>8} {:>8} {:>6} {:>9} {:<6} {:<9} {}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11]
        );
        line.trim_end().to_string() + "\n"
    };
    let mut out = row([
        "board", "state", "version", "journal", "load", "replies", "to_cloud", "errors", "last",
        "cloud", "share", "models",
    ]);
    for b in boards {
        let c = b.counters.as_ref();
        let num = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |n| n.to_string());
        let last = c.and_then(|c| c.last_reply_unix_s).map_or_else(
            || "-".to_string(),
            |t| format!("{}s_ago", now_unix_s.saturating_sub(t)),
        );
        out += &row([
            &b.node,
            &b.state,
            &b.version,
            b.journal.as_deref().unwrap_or("-"),
            &num(b.load.map(|l| l as u64)),
            &num(c.map(|c| c.replies)),
            &num(c.map(|c| c.routes.get("cloud").copied().unwrap_or(0))),
            &num(c.map(|c| c.errors)),
            &last,
            b.cloud.as_deref().unwrap_or("-"),
            &b.cloud_share.map_or_else(
                || "-".to_string(),
                |s| {
                    let recent = s
                        .recent
                        .map_or("-".to_string(), |r| format!("{:.0}%", r * 100.0));
                    format!("{recent}/{:.0}%", s.target * 100.0)
                },
            ),
            &b.models.join(","),
        ]);
    }
    out
}

/// The retained statuses under `prefix`, collected for `wait` after the
/// subscription is granted (the broker sends retained messages at once),
/// sorted by board name.
pub async fn statuses(
    broker: &str,
    protocol: MqttProtocol,
    login: &Login,
    prefix: &str,
    wait: Duration,
) -> Result<Vec<BoardStatus>, AskError> {
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let tag = format!("{:016x}", rng.random::<u64>());
    let Connection {
        client,
        mut rx,
        poller,
    } = open(broker, protocol, login, &tag)?;
    let filter = format!("{prefix}/+");
    let mut boards = std::collections::BTreeMap::new();
    let mut until: Option<tokio::time::Instant> = None;
    let result = loop {
        let next = match until {
            Some(t) => match tokio::time::timeout_at(t, rx.recv()).await {
                Ok(e) => e,
                Err(_) => break Ok(()),
            },
            None => match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
                Ok(e) => e,
                Err(_) => break Err(AskError::Timeout(Duration::from_secs(30))),
            },
        };
        match next.expect("poller sends until an error") {
            Err(e) => break Err(AskError::Mqtt(e)),
            Ok(Event::Connected { .. }) => client.try_subscribe(&filter)?,
            Ok(Event::Subscribed { granted: false }) => {
                break Err(AskError::SubscribeRefused(filter.clone()))
            }
            Ok(Event::Subscribed { granted: true }) => {
                until = Some(tokio::time::Instant::now() + wait)
            }
            Ok(Event::Message(m, _)) => {
                match parse_status(&m.topic, &m.payload) {
                    Some(s) => boards.insert(m.topic.clone(), s),
                    None => boards.remove(&m.topic),
                };
            }
            Ok(_) => {}
        }
    };
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), poller).await;
    result?;
    let mut list: Vec<BoardStatus> = boards.into_values().collect();
    list.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(list)
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
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let tag = format!("{:016x}", rng.random::<u64>());
    let id = o.id.clone().unwrap_or_else(|| format!("ask-{tag}"));
    let reply_topic = o
        .reply_topic
        .clone()
        .unwrap_or_else(|| format!("swarm/reply/ask-{tag}"));
    let Connection {
        client,
        mut rx,
        poller,
    } = open(&o.broker, o.protocol, &o.login, &tag)?;
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
    fn statuses_read_tolerantly_and_render_one_line_each() {
        let online = parse_status(
            "swarm/status/press-2",
            br#"{"node":"press-2","state":"online","version":"0.1.0","models":["qwen05","smollm2"],"journal":"ok","future":1,
                 "load":2,"cloud":"up","counters":{"replies":40,"routes":{"local":30,"cloud":7},"errors":3,"last_reply_unix_s":995},
                 "cloud_share":{"target":0.25,"target_now":0.25,"recent":0.175,"cut":0.41,"counted":40}}"#,
        )
        .unwrap();
        assert_eq!(online.models, vec!["qwen05", "smollm2"]);
        // A last will names no node: the topic does.
        let offline = parse_status("swarm/status/press-1", br#"{"state":"offline"}"#).unwrap();
        assert_eq!(offline.node, "press-1");
        assert_eq!(parse_status("swarm/status/x", b""), None);
        let table = render_statuses(&[offline, online], 1000);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("press-1") && lines[1].contains("offline"));
        assert!(lines[2].contains("online") && lines[2].ends_with("qwen05,smollm2"));
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cells[3..11],
            ["ok", "2", "40", "7", "3", "5s_ago", "up", "18%/25%"],
            "{table}"
        );
        assert!(
            lines[1].contains(" - "),
            "a status without a share shows a dash: {table}"
        );
    }

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
