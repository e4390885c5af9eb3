//! The MQTT section of the config: the broker, the protocol version, TLS,
//! topics and reconnection.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Validator;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum MqttProtocol {
    /// MQTT 5: requests may carry Response Topic and Correlation Data.
    #[serde(rename = "v5")]
    V5,
    /// MQTT 3.1.1, for older brokers and gateways: the reply address is in the payload.
    #[serde(rename = "v311")]
    V311,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    pub host: String,
    pub port: u16,
    pub protocol: MqttProtocol,
    /// Defaults to `swarm-llm-<node>-<machine>`, `<machine>` derived from
    /// /etc/machine-id (docs/fleet.md). Must be stable across restarts: the
    /// broker keeps the persistent session (and unacknowledged questions)
    /// under it. May name `${HOSTNAME}` and `${MACHINE_ID}`.
    pub client_id: Option<String>,
    /// Topic filter the service subscribes to for questions.
    pub request_filter: String,
    /// Boards with the same group share one question stream: each question
    /// goes to one of them (an MQTT shared subscription,
    /// `$share/<group>/<request_filter>`). Replies, loop checks and ACLs go by
    /// the question's real topic, as without a group.
    pub share_group: Option<String>,
    /// Where a reply goes when the request names no reply address: this prefix
    /// followed by the request topic's levels below the filter's fixed part
    /// (`swarm/query/line3/plc7` -> `swarm/reply/line3/plc7`).
    pub reply_topic_prefix: String,
    /// Retained status goes to `<prefix>/<node>`, with a last will saying offline.
    pub status_topic_prefix: String,
    /// How often the retained status is published again with the board's
    /// counters and load, so an MQTT-only plant sees them (`swarm-llm status`).
    pub status_interval_s: u64,
    pub keep_alive_s: u64,
    /// How long the broker keeps our session (and queued questions) while we are
    /// away, MQTT 5 only.
    pub session_expiry_s: u32,
    /// Largest MQTT packet accepted. Larger than any payload limit so that an
    /// oversize question is answered with an error instead of breaking the link.
    pub max_packet_bytes: u32,
    /// Reconnect backoff bounds; the delay doubles with jitter between them.
    pub reconnect_min_ms: u64,
    pub reconnect_max_ms: u64,
    pub username: Option<String>,
    /// File holding the broker password. Without it the password is the
    /// systemd credential `swarm-llm.mqtt-password`, else `SWARM_LLM_MQTT_PASSWORD`.
    pub password_file: Option<PathBuf>,
    pub tls: Option<TlsConfig>,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 1883,
            protocol: MqttProtocol::V5,
            client_id: None,
            request_filter: "swarm/query/#".into(),
            share_group: None,
            reply_topic_prefix: "swarm/reply".into(),
            status_topic_prefix: "swarm/status".into(),
            keep_alive_s: 30,
            status_interval_s: 30,
            session_expiry_s: 86_400,
            max_packet_bytes: 2 * 1024 * 1024,
            reconnect_min_ms: 500,
            reconnect_max_ms: 30_000,
            username: None,
            password_file: None,
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the CA that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM client certificate and key, for mutual TLS.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

impl MqttConfig {
    /// What the service subscribes to for questions: the request filter, in
    /// its share group when it has one.
    pub fn subscription(&self) -> String {
        match &self.share_group {
            Some(g) => format!("$share/{g}/{}", self.request_filter),
            None => self.request_filter.clone(),
        }
    }

    pub(super) fn validate(&self, v: &mut Validator) {
        if self.host.trim().is_empty() {
            v.add("mqtt.host", "must not be empty");
        }
        if self.port == 0 {
            v.add("mqtt.port", "must be between 1 and 65535");
        }
        if let Err(e) = crate::topic::validate_filter(&self.request_filter) {
            v.add("mqtt.request_filter", e);
        }
        if let Some(g) = &self.share_group {
            if g.is_empty() || g.contains(['/', '+', '#']) || g.chars().any(char::is_control) {
                v.add(
                    "mqtt.share_group",
                    format!("{g:?} must be a non-empty name without '/', '+', '#' or control characters (MQTT's share name)"),
                );
            }
        }
        for (key, prefix) in [
            ("mqtt.reply_topic_prefix", &self.reply_topic_prefix),
            ("mqtt.status_topic_prefix", &self.status_topic_prefix),
        ] {
            if let Err(e) = crate::topic::validate_topic(prefix) {
                v.add(key, e);
            } else if crate::topic::matches_filter(&self.request_filter, &format!("{prefix}/x")) {
                v.add(key, format!("topics under {prefix:?} match mqtt.request_filter {:?}: the service would read its own messages as questions", self.request_filter));
            }
        }
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 256 {
                v.add("mqtt.client_id", "must be 1 to 256 characters");
            }
        }
        if !(5..=3600).contains(&self.keep_alive_s) {
            v.add("mqtt.keep_alive_s", "must be between 5 and 3600");
        }
        if !(1..=86_400).contains(&self.status_interval_s) {
            v.add("mqtt.status_interval_s", "must be between 1 and 86400");
        }
        if self.max_packet_bytes < 1024 {
            v.add("mqtt.max_packet_bytes", "must be at least 1024");
        }
        if self.reconnect_min_ms == 0 || self.reconnect_min_ms > self.reconnect_max_ms {
            v.add(
                "mqtt.reconnect_min_ms",
                "must be above 0 and not above mqtt.reconnect_max_ms",
            );
        }
        if self.password_file.is_some() && self.username.is_none() {
            v.add("mqtt.password_file", "a password needs mqtt.username");
        }
        if let Some(p) = &self.password_file {
            v.file_exists("mqtt.password_file", p);
        }
        if let Some(tls) = &self.tls {
            v.file_exists("mqtt.tls.ca_file", &tls.ca_file);
            match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(c), Some(k)) => {
                    v.file_exists("mqtt.tls.client_cert_file", c);
                    v.file_exists("mqtt.tls.client_key_file", k);
                }
                (None, None) => {}
                _ => v.add(
                    "mqtt.tls",
                    "client_cert_file and client_key_file go together (mutual TLS)",
                ),
            }
        }
    }
}
