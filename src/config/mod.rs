//! Typed service configuration: TOML in, validated [`Config`] out.
//!
//! Parsing rejects unknown keys (a typo must not silently fall back to a
//! default). Validation then checks every value and reports *all* problems at
//! once, each with the dotted key it belongs to, so an operator fixes the file
//! in one pass. `swarm-llm check-config` runs exactly this, which is why the
//! systemd unit can use it as `ExecStartPre`.
//!
//! Secrets never live in this file: the MQTT password comes from a file (a
//! systemd credential) or the environment.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cloud::CloudConfig;
use crate::route::harm::HarmHead;
use crate::route::policy::Policy;
use crate::route::safety::{SafetyClassifier, SafetyConfig};

mod layers;
pub use layers::{drop_in_dir, Layers};

/// Where `swarm-llm run` and `check-config` look for the config when no
/// `--config` is given and `SWARM_LLM_CONFIG` is unset; its drop-ins are in
/// `/etc/swarm-llm/swarm.toml.d/`.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/swarm-llm/swarm.toml";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "SWARM_LLM_CONFIG";

/// The config file a command reads: `--config`, else `$SWARM_LLM_CONFIG`,
/// else the board's /etc/swarm-llm/swarm.toml; its drop-ins come with it.
#[derive(clap::Args)]
pub struct ConfigArg {
    /// The config file (its drop-ins are read from FILE.d/*.toml).
    #[arg(long, short, value_name = "FILE", env = CONFIG_ENV,
          default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// The systemd credential with the MQTT password (`swarm-llm.mqtt-password`),
/// read when no `mqtt.password_file` is configured.
pub const MQTT_PASSWORD_CREDENTIAL: &str = "mqtt-password";

/// Environment variable that supplies the MQTT password when neither
/// `mqtt.password_file` nor the credential is there.
pub const MQTT_PASSWORD_ENV: &str = "SWARM_LLM_MQTT_PASSWORD";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // Not a `source`: the message says it, and `{:#}` would say it twice.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n{}", .problems.len(), Problems(.problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One validation finding: the dotted key, what is wrong with it, and the
/// file that set the key (None where it has its default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub file: Option<PathBuf>,
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match &p.file {
                Some(file) => write!(f, "  - {} ({}): {}", p.key, file.display(), p.message)?,
                None => write!(f, "  - {}: {}", p.key, p.message)?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Name of this board; used in the status topic and the MQTT client id.
    /// `${HOSTNAME}` (the default) is the board's hostname and
    /// `${MACHINE_ID}` an id derived from its machine-id (docs/fleet.md).
    #[serde(default = "default_node")]
    pub node: String,
    #[serde(default)]
    pub mqtt: MqttConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub inference: InferenceConfig,
    /// Thresholds of the routing policy.
    #[serde(default)]
    pub policy: Policy,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub safety: SafetyConfig,
    /// The large model behind an OpenAI-compatible API; without it, questions
    /// the small models cannot answer well get a degraded local answer.
    #[serde(default)]
    pub cloud: Option<CloudConfig>,
    /// Where accepted questions are kept until answered; without it a killed
    /// process loses the questions it held.
    #[serde(default)]
    pub journal: Option<JournalConfig>,
    /// The local small models. Each one is owned by its own inference thread.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    /// A Prometheus scrape endpoint; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
}

/// The Prometheus endpoint (see [`crate::metrics`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address and port to listen on, e.g. "127.0.0.1:9464".
    pub listen: String,
}

impl MetricsConfig {
    /// The listen address; None when it is not `IP:PORT`.
    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.listen.parse().ok()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Models that vote, in the order they are asked (the first model's answer
    /// is reused); default: all models.
    pub swarm: Vec<String>,
    /// Request topic filters whose questions must never leave the board (data residency).
    pub cloud_never: Vec<String>,
    /// Other swarm-llm boards whose first model votes after the local
    /// models, asked over MQTT in this order.
    pub peers: Vec<PeerConfig>,
}

/// A peer board that votes in this board's swarm.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Short name; its ballots read `NAME:MODEL`.
    pub name: String,
    /// A topic the peer takes questions on (inside its `mqtt.request_filter`).
    pub topic: String,
    /// Weight of its ballot in the vote, like a model's `vote_weight`.
    #[serde(default = "default_vote_weight")]
    pub weight: f32,
    /// How long to wait for its vote; past it the vote goes on without it.
    #[serde(default = "default_peer_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_peer_timeout_ms() -> u64 {
    5_000
}

/// The question journal (see [`crate::journal`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournalConfig {
    /// The state folder; under systemd `${STATE_DIRECTORY}`.
    pub dir: PathBuf,
    /// The file is rewritten with only what is still needed once it is larger.
    #[serde(default = "default_journal_max_bytes")]
    pub max_bytes: u64,
}

fn default_journal_max_bytes() -> u64 {
    4 << 20
}

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Payloads larger than this are refused before parsing.
    pub max_payload_bytes: usize,
    /// Questions longer than this (UTF-8 bytes) are refused.
    pub max_question_bytes: usize,
    /// Accepted questions waiting for the router; when full, askers get `busy`.
    pub intake_queue: usize,
    /// Questions being answered at once (across all routes).
    pub max_in_flight: usize,
    /// Deadline for a question that does not bring its own `deadline_ms`.
    pub default_deadline_ms: u64,
    /// Upper bound for a request's own `deadline_ms`.
    pub max_deadline_ms: u64,
    /// On shutdown, how long in-flight questions may take to finish.
    pub drain_timeout_ms: u64,
    /// Questions per minute one asker (one request topic) may send; none: no limit.
    pub rate_per_minute: Option<u32>,
    /// How many questions an asker may send at once before the rate applies.
    pub rate_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_question_bytes: 2048,
            intake_queue: 64,
            max_in_flight: 8,
            default_deadline_ms: 120_000,
            max_deadline_ms: 600_000,
            drain_timeout_ms: 20_000,
            rate_per_minute: None,
            rate_burst: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// The model that answers a question locally (a `models[].name`); defaults
    /// to the first model listed.
    pub default_model: Option<String>,
    /// System prompt given to chat-template models and to `{system}` in templates.
    pub system_prompt: String,
}

/// The system prompt unless configured.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a concise assistant for industrial plant staff. \
     Answer in one short sentence; give the number with its unit \
     when the question asks for a value.";

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            default_model: None,
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Short name used in replies, logs and routing.
    pub name: String,
    /// GGUF file; a relative path is taken from the config file's folder.
    pub path: PathBuf,
    #[serde(default = "default_threads")]
    pub threads: u32,
    #[serde(default = "default_context_size")]
    pub context_size: u32,
    #[serde(default = "default_max_tokens")]
    pub max_tokens: u32,
    /// Prompt tokens processed per llama.cpp step (micro-batch). llama.cpp
    /// reserves its compute buffer for this many tokens' logits, so it bounds
    /// memory (about vocabulary x 4 bytes per token); prompts longer than it
    /// are processed in several steps.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: u32,
    /// Questions this model decodes together (continuous batching), each as
    /// its own sequence sharing the context's `context_size` cells. 1 (the
    /// default) answers one at a time; more pays where a step costs little
    /// more for several tokens than for one (a GPU, or more cores than
    /// threads), as llama-server's `--parallel`.
    #[serde(default = "default_parallel")]
    pub parallel: u32,
    /// Element type of the KV cache: `q8_0` (default; half the memory of
    /// `f16` at a negligible cost in quality) or `f16`.
    #[serde(default)]
    pub kv_cache: KvCache,
    /// Map the model file instead of reading it into memory. Off by default:
    /// reading avoids a second copy of the tensors llama.cpp repacks for its
    /// CPU kernels, and a board without swap never re-reads weights from flash
    /// under memory pressure. On where several processes share one model file.
    #[serde(default)]
    pub mmap: bool,
    /// Layers offloaded to the GPU (needs the `cuda` build); 0 keeps it on the CPU.
    #[serde(default)]
    pub gpu_layers: u32,
    /// Prompt for models whose file has no chat template (or a better one):
    /// `{system}` and `{question}` are replaced. Without it the file's chat
    /// template is used.
    #[serde(default)]
    pub prompt_template: Option<String>,
    /// Generation also stops when the answer contains one of these strings
    /// (e.g. "\n" for a few-shot completion prompt); the stop string is cut off.
    #[serde(default)]
    pub stop: Vec<String>,
    /// 0 means greedy decoding (deterministic, the default).
    #[serde(default)]
    pub temperature: f32,
    /// Jobs waiting for this model's thread.
    #[serde(default = "default_queue_depth")]
    pub queue_depth: usize,
    /// How much this model's votes count in a swarm vote (times its confidence).
    #[serde(default = "default_vote_weight")]
    pub vote_weight: f32,
    /// The model's letter prior on multiple-choice questions, A first: its
    /// mean distribution over the option letters, measured on recorded
    /// answers by `swarm-llm calibrate --learn`. Divided out of each answer's
    /// letter distribution. Unset: measured at load on a content-free question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub letter_prior: Option<Vec<f32>>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum KvCache {
    F16,
    #[default]
    Q8_0,
}

impl KvCache {
    /// Its name in the config, which is also the cache type llama.cpp's own
    /// tools take (`-ctk`, `-ctv`), so benchmarks run them with the same cache.
    pub fn as_str(self) -> &'static str {
        match self {
            KvCache::F16 => "f16",
            KvCache::Q8_0 => "q8_0",
        }
    }
}

fn default_node() -> String {
    crate::identity::HOSTNAME_VAR.into()
}

fn default_vote_weight() -> f32 {
    1.0
}

fn default_threads() -> u32 {
    std::thread::available_parallelism().map_or(2, |n| n.get() as u32)
}
fn default_context_size() -> u32 {
    1024
}
fn default_max_tokens() -> u32 {
    128
}
fn default_batch_tokens() -> u32 {
    128
}
fn default_parallel() -> u32 {
    1
}
fn default_queue_depth() -> usize {
    8
}

impl Config {
    /// Reads the config file and its drop-ins (`<path>.d/*.toml`, see
    /// [`Layers`]), then resolves and validates the merged result. Relative
    /// paths are resolved against the folder of the file that set them; each
    /// problem names that file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_layers(path).map(|(config, _)| config)
    }

    /// [`Config::load`], also returning the files read.
    pub fn load_layers(path: &Path) -> Result<(Config, Layers), ConfigError> {
        let (mut config, layers) = Layers::read(path)?;
        let main_dir = path.parent().unwrap_or(Path::new("."));
        let mut problems = config.resolve_paths(|key| {
            layers
                .file_of(key)
                .and_then(Path::parent)
                .unwrap_or(main_dir)
                .to_owned()
        });
        problems.extend(config.resolve_identity());
        // A value that could not be resolved is reported once, not again as invalid.
        let unresolved: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
        problems.extend(
            config
                .validate()
                .into_iter()
                .filter(|p| !unresolved.contains(&p.key)),
        );
        if layers.has_drop_ins() {
            for p in &mut problems {
                p.file = layers.file_of(&p.key).map(Path::to_owned);
            }
        }
        if problems.is_empty() {
            Ok((config, layers))
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Expands `${HOSTNAME}` and `${MACHINE_ID}` in `node` and
    /// `mqtt.client_id`, and gives the client id its default: the node and
    /// the machine's id, so boards that share a hostname still differ at the
    /// broker (a machine without a machine-id gets `swarm-llm-<node>`).
    fn resolve_identity(&mut self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut expand = |key: &str, text: &mut String| match crate::identity::expand(text)
            .and_then(|t| {
                expand_env(&t).map_err(|var| format!("environment variable {var} is not set"))
            }) {
            Ok(t) => *text = t,
            Err(message) => problems.push(Problem {
                key: key.into(),
                message,
                file: None,
            }),
        };
        expand("node", &mut self.node);
        if let Some(id) = self.mqtt.client_id.as_mut() {
            expand("mqtt.client_id", id);
        } else if problems.is_empty() {
            // Without a machine-id, client_id() gives `swarm-llm-<node>`.
            if let Ok(machine) = crate::identity::machine_id() {
                self.mqtt.client_id = Some(format!("{}-{machine}", self.client_id()));
            }
        }
        problems
    }

    /// Parses TOML text without validating it.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Expands `${VAR}` in file paths and makes relative ones relative to
    /// `base_of(key)`, the folder of the file that set them; returns the
    /// variables that are not set.
    fn resolve_paths(&mut self, base_of: impl Fn(&str) -> PathBuf) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut resolve = |key: String, p: &mut PathBuf| {
            match expand_env(&p.to_string_lossy()) {
                Ok(expanded) => *p = PathBuf::from(expanded),
                Err(var) => problems.push(Problem {
                    key: key.clone(),
                    message: format!("environment variable {var} is not set"),
                    file: None,
                }),
            }
            if p.is_relative() {
                *p = base_of(&key).join(&*p);
            }
        };
        for (i, m) in self.models.iter_mut().enumerate() {
            resolve(format!("models[{i}].path"), &mut m.path);
        }
        if let Some(tls) = &mut self.mqtt.tls {
            resolve("mqtt.tls.ca_file".into(), &mut tls.ca_file);
            if let Some(p) = tls.client_cert_file.as_mut() {
                resolve("mqtt.tls.client_cert_file".into(), p);
            }
            if let Some(p) = tls.client_key_file.as_mut() {
                resolve("mqtt.tls.client_key_file".into(), p);
            }
        }
        if let Some(p) = self.mqtt.password_file.as_mut() {
            resolve("mqtt.password_file".into(), p);
        }
        if let Some(j) = self.journal.as_mut() {
            resolve("journal.dir".into(), &mut j.dir);
        }
        if let Some(p) = self.safety.learned.head.as_mut() {
            resolve("safety.learned.head".into(), p);
        }
        problems
    }

    /// Checks every value; returns all problems found (empty when valid).
    /// Files named by the config are checked for existence here so that a
    /// missing model is a config error (exit 78), not a crash at load time.
    pub fn validate(&self) -> Vec<Problem> {
        let mut v = Validator::default();
        if self.node.is_empty()
            || !self
                .node
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            v.add("node", "must be non-empty and use only letters, digits, '-' and '_' (it becomes a topic level and client id)");
        }
        self.mqtt.validate(&mut v);
        self.limits.validate(&mut v);
        if let Some(m) = &self.metrics {
            if m.address().is_none() {
                v.add(
                    "metrics.listen",
                    format!("{:?} is not IP:PORT (e.g. \"127.0.0.1:9464\")", m.listen),
                );
            }
        }
        if let Some(j) = &self.journal {
            if j.max_bytes < 64 << 10 {
                v.add("journal.max_bytes", "must be at least 65536");
            }
            if j.dir.exists() && !j.dir.is_dir() {
                v.add(
                    "journal.dir",
                    format!("{} is not a folder", j.dir.display()),
                );
            }
        }
        if self.models.is_empty() {
            v.add("models", "at least one model is needed");
        }
        for (i, m) in self.models.iter().enumerate() {
            m.validate(&format!("models[{i}]"), &mut v);
            // Every question in flight asks the first model: fewer than its
            // slots would leave some idle for good.
            if m.parallel as usize > self.limits.max_in_flight {
                v.add(
                    format!("models[{i}].parallel"),
                    format!(
                        "is {} but limits.max_in_flight is {}: raise max_in_flight or the slots stay idle",
                        m.parallel, self.limits.max_in_flight
                    ),
                );
            }
            if self.models[..i].iter().any(|o| o.name == m.name) {
                v.add(
                    format!("models[{i}].name"),
                    format!("duplicate model name {:?}", m.name),
                );
            }
        }
        if let Some(name) = &self.inference.default_model {
            if !self.models.iter().any(|m| &m.name == name) {
                v.add(
                    "inference.default_model",
                    format!("{name:?} is not the name of a configured model"),
                );
            }
        }
        for (i, name) in self.routing.swarm.iter().enumerate() {
            if !self.models.iter().any(|m| &m.name == name) {
                v.add(
                    format!("routing.swarm[{i}]"),
                    format!("{name:?} is not the name of a configured model"),
                );
            }
        }
        for (i, peer) in self.routing.peers.iter().enumerate() {
            let key = format!("routing.peers[{i}]");
            if peer.name.is_empty() || peer.name.contains(|c: char| c.is_whitespace() || c == ':') {
                v.add(
                    format!("{key}.name"),
                    "must be a non-empty name without spaces or ':'",
                );
            } else if self.models.iter().any(|m| m.name == peer.name)
                || self.routing.peers[..i].iter().any(|p| p.name == peer.name)
            {
                v.add(
                    format!("{key}.name"),
                    format!("{:?} is already a model or peer name", peer.name),
                );
            }
            if let Err(e) = crate::topic::validate_topic(&peer.topic) {
                v.add(format!("{key}.topic"), e);
            } else if crate::topic::matches_filter(&self.mqtt.request_filter, &peer.topic) {
                v.add(
                    format!("{key}.topic"),
                    format!(
                        "{:?} matches this board's own mqtt.request_filter: it would ask itself",
                        peer.topic
                    ),
                );
            }
            if !(0.0..=10.0).contains(&peer.weight) {
                v.add(format!("{key}.weight"), "must be between 0 and 10");
            }
            if !(100..=60_000).contains(&peer.timeout_ms) {
                v.add(format!("{key}.timeout_ms"), "must be between 100 and 60000");
            }
        }
        for (i, f) in self.routing.cloud_never.iter().enumerate() {
            if let Err(e) = crate::topic::validate_filter(f) {
                v.add(format!("routing.cloud_never[{i}]"), e);
            }
        }
        for (key, message) in self.policy.validate("policy") {
            v.add(key, message);
        }
        if let Err(e) = SafetyClassifier::new(&self.safety) {
            v.add("safety", e.to_string());
        }
        if !(self.safety.threshold > 0.0 && self.safety.threshold <= 1.0) {
            v.add("safety.threshold", "must be above 0 and at most 1");
        }
        let learned = &self.safety.learned;
        if learned.threshold.is_some_and(|t| !(t > 0.0 && t <= 1.0)) {
            v.add("safety.learned.threshold", "must be above 0 and at most 1");
        }
        if let Some(name) = &learned.model {
            if !self.models.iter().any(|m| &m.name == name) {
                v.add(
                    "safety.learned.model",
                    format!("names {name:?}, which is not a configured model"),
                );
            }
        }
        if let Some(path) = &learned.head {
            if v.file_exists("safety.learned.head", path) {
                let head = std::fs::read_to_string(path)
                    .map_err(|e| e.to_string())
                    .and_then(|t| HarmHead::from_json(&t).map_err(|e| e.to_string()));
                if let Err(e) = head {
                    v.add("safety.learned.head", e);
                }
            }
        }
        for (key, message) in self.safety.cloud_judge.validate("safety.cloud_judge") {
            v.add(key, message);
        }
        if let Some(cloud) = &self.cloud {
            for (key, message) in cloud.validate("cloud") {
                v.add(key, message);
            }
        }
        v.problems
    }

    /// How much a model's votes count (1 for a name that is not configured).
    pub fn vote_weight(&self, model: &str) -> f32 {
        self.models
            .iter()
            .find(|m| m.name == model)
            .map_or(1.0, |m| m.vote_weight)
    }

    /// The models that vote, in order: `routing.swarm`, or all models.
    pub fn swarm_models(&self) -> Vec<&str> {
        if self.routing.swarm.is_empty() {
            self.models.iter().map(|m| m.name.as_str()).collect()
        } else {
            self.routing.swarm.iter().map(String::as_str).collect()
        }
    }

    /// The model that answers locally.
    pub fn default_model(&self) -> &ModelConfig {
        self.inference
            .default_model
            .as_ref()
            .and_then(|n| self.models.iter().find(|m| &m.name == n))
            .unwrap_or(&self.models[0])
    }

    pub fn client_id(&self) -> String {
        self.mqtt
            .client_id
            .clone()
            .unwrap_or_else(|| format!("swarm-llm-{}", self.node))
    }

    pub fn status_topic(&self) -> String {
        format!("{}/{}", self.mqtt.status_topic_prefix, self.node)
    }

    /// Where peers send the votes this board asked them for.
    pub fn peer_vote_topic(&self) -> String {
        format!("{}/{}/votes", self.mqtt.reply_topic_prefix, self.node)
    }

    /// The default configuration, as printed by `print-default-config`.
    pub fn example() -> Config {
        Config {
            node: default_node(),
            mqtt: MqttConfig::default(),
            limits: LimitsConfig::default(),
            inference: InferenceConfig::default(),
            policy: Policy::default(),
            routing: RoutingConfig::default(),
            safety: SafetyConfig::default(),
            cloud: Some(CloudConfig::default()),
            journal: Some(JournalConfig {
                dir: "${STATE_DIRECTORY:-/var/lib/swarm-llm}".into(),
                max_bytes: default_journal_max_bytes(),
            }),
            models: vec![ModelConfig {
                name: "smollm2".into(),
                path: "/usr/share/swarm-llm/models/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
                threads: 2,
                context_size: default_context_size(),
                max_tokens: 64,
                batch_tokens: default_batch_tokens(),
                parallel: default_parallel(),
                kv_cache: KvCache::Q8_0,
                mmap: false,
                gpu_layers: 0,
                prompt_template: None,
                stop: vec![],
                temperature: 0.0,
                queue_depth: default_queue_depth(),
                vote_weight: default_vote_weight(),
                letter_prior: None,
            }],
            metrics: None,
        }
    }
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

    fn validate(&self, v: &mut Validator) {
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

impl LimitsConfig {
    fn validate(&self, v: &mut Validator) {
        if self.max_question_bytes == 0 {
            v.add("limits.max_question_bytes", "must be above 0");
        }
        if self.max_payload_bytes < self.max_question_bytes {
            v.add(
                "limits.max_payload_bytes",
                "must be at least limits.max_question_bytes",
            );
        }
        if self.intake_queue == 0 {
            v.add("limits.intake_queue", "must be above 0");
        }
        if self.rate_per_minute == Some(0) || self.rate_burst == 0 {
            v.add(
                "limits.rate_per_minute",
                "the rate and limits.rate_burst must be above 0",
            );
        }
        if self.max_in_flight == 0 {
            v.add("limits.max_in_flight", "must be above 0");
        }
        if self.default_deadline_ms == 0 || self.default_deadline_ms > self.max_deadline_ms {
            v.add(
                "limits.default_deadline_ms",
                "must be above 0 and not above limits.max_deadline_ms",
            );
        }
    }
}

impl ModelConfig {
    fn validate(&self, key: &str, v: &mut Validator) {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            v.add(
                format!("{key}.name"),
                "must be non-empty and use only letters, digits, '-', '_' and '.'",
            );
        }
        v.file_exists(&format!("{key}.path"), &self.path);
        if !(1..=256).contains(&self.threads) {
            v.add(format!("{key}.threads"), "must be between 1 and 256");
        }
        if !(128..=131_072).contains(&self.context_size) {
            v.add(
                format!("{key}.context_size"),
                "must be between 128 and 131072",
            );
        }
        if self.max_tokens == 0 || self.max_tokens >= self.context_size {
            v.add(
                format!("{key}.max_tokens"),
                "must be above 0 and below context_size",
            );
        }
        if !(16..=self.context_size).contains(&self.batch_tokens) {
            v.add(
                format!("{key}.batch_tokens"),
                "must be between 16 and context_size",
            );
        }
        if !(1..=64).contains(&self.parallel) {
            v.add(format!("{key}.parallel"), "must be between 1 and 64");
        }
        if let Some(t) = &self.prompt_template {
            if let Err(e) = crate::prompt::validate_template(t) {
                v.add(format!("{key}.prompt_template"), e);
            }
        }
        if self.stop.iter().any(String::is_empty) {
            v.add(format!("{key}.stop"), "stop strings must not be empty");
        }
        if !(0.0..=2.0).contains(&self.temperature) {
            v.add(format!("{key}.temperature"), "must be between 0 and 2");
        }
        if self.queue_depth == 0 {
            v.add(format!("{key}.queue_depth"), "must be above 0");
        }
        if !(0.0..=10.0).contains(&self.vote_weight) {
            v.add(format!("{key}.vote_weight"), "must be between 0 and 10");
        }
        if let Some(prior) = &self.letter_prior {
            let total: f32 = prior.iter().sum();
            if !(2..=crate::route::choice::LETTERS.len()).contains(&prior.len())
                || prior.iter().any(|p| !(p.is_finite() && *p > 0.0))
                || (total - 1.0).abs() > 0.01
            {
                v.add(
                    format!("{key}.letter_prior"),
                    "must be 2 to 5 positive shares (A first) that add up to 1",
                );
            }
        }
    }
}

/// Replaces `${NAME}` with the environment variable's value, or with
/// `default` in `${NAME:-default}` when it is unset or empty; Err(NAME) when
/// unset without a default.
fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + 2 + len];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        out.push_str(&rest[..start]);
        let value = std::env::var(name).ok().filter(|v| !v.is_empty());
        out.push_str(&match (value, default) {
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(name.to_string()),
        });
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Default)]
struct Validator {
    problems: Vec<Problem>,
}

impl Validator {
    fn add(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.into(),
            message: message.into(),
            file: None,
        });
    }

    /// Reports a missing file; true when it is there.
    fn file_exists(&mut self, key: &str, path: &Path) -> bool {
        let there = path.is_file();
        if !there {
            self.add(key, format!("no such file: {}", path.display()));
        }
        there
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kv_cache_is_named_as_in_the_config() {
        for kv in [KvCache::F16, KvCache::Q8_0] {
            assert_eq!(serde_json::to_value(kv).unwrap(), kv.as_str());
        }
    }

    fn valid_toml(model_path: &Path) -> String {
        format!(
            "node = \"edge-01\"\n[[models]]\nname = \"smollm2\"\npath = {:?}\nthreads = 2\n",
            model_path.display().to_string()
        )
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|p| p.key.as_str()).collect()
    }

    #[test]
    fn minimal_config_is_valid_with_defaults() {
        let model = tempfile::NamedTempFile::new().unwrap();
        let config = Config::parse(&valid_toml(model.path())).unwrap();
        assert_eq!(config.validate(), vec![]);
        assert_eq!(config.mqtt.request_filter, "swarm/query/#");
        assert_eq!(config.default_model().name, "smollm2");
        assert_eq!(config.client_id(), "swarm-llm-edge-01");
        assert_eq!(config.status_topic(), "swarm/status/edge-01");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::parse("node = \"a\"\n[mqtt]\nhots = \"x\"\n").unwrap_err();
        assert!(err.contains("unknown field `hots`"), "{err}");
        let err = Config::parse("node = \"a\"\ncolour = 1\n").unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
node = "bad node"
[mqtt]
port = 0
status_interval_s = 0
request_filter = "swarm/#/query"
reply_topic_prefix = "swarm/query"
[limits]
intake_queue = 0
[inference]
default_model = "nope"
[[models]]
name = "a"
path = "/nonexistent/model.gguf"
threads = 0
context_size = 256
max_tokens = 256
prompt_template = "no placeholder"
[[models]]
name = "a"
path = "/nonexistent/other.gguf"
temperature = 5.0
letter_prior = [0.5, 0.6]
parallel = 0
[[models]]
name = "b"
path = "/nonexistent/third.gguf"
parallel = 16
[metrics]
listen = "localhost"
"#;
        let problems = Config::parse(text).unwrap().validate();
        let keys = keys(&problems);
        for want in [
            "node",
            "mqtt.port",
            "mqtt.status_interval_s",
            "mqtt.request_filter",
            "limits.intake_queue",
            "inference.default_model",
            "models[0].path",
            "models[0].threads",
            "models[0].max_tokens",
            "models[0].prompt_template",
            "models[1].name",
            "models[1].path",
            "models[1].temperature",
            "models[1].letter_prior",
            "models[1].parallel",
            "models[2].parallel",
            "metrics.listen",
        ] {
            assert!(keys.contains(&want), "missing {want} in {keys:?}");
        }
    }

    #[test]
    fn a_share_group_subscribes_in_the_group_and_a_bad_one_is_named() {
        let model = tempfile::NamedTempFile::new().unwrap();
        let mut config = Config::parse(&valid_toml(model.path())).unwrap();
        assert_eq!(config.mqtt.subscription(), "swarm/query/#");
        config.mqtt.share_group = Some("line3".into());
        assert!(config.validate().is_empty());
        assert_eq!(config.mqtt.subscription(), "$share/line3/swarm/query/#");
        for bad in ["", "line/3", "line+", "#"] {
            config.mqtt.share_group = Some(bad.into());
            let problems = config.validate();
            assert_eq!(keys(&problems), vec!["mqtt.share_group"], "{bad:?}");
        }
    }

    #[test]
    fn reply_prefix_inside_request_filter_is_a_loop() {
        let model = tempfile::NamedTempFile::new().unwrap();
        let mut config = Config::parse(&valid_toml(model.path())).unwrap();
        config.mqtt.reply_topic_prefix = "swarm/query/replies".into();
        let problems = config.validate();
        assert_eq!(keys(&problems), vec!["mqtt.reply_topic_prefix"]);
        assert!(problems[0].message.contains("own messages"));
    }

    #[test]
    fn peers_are_checked_and_each_problem_named() {
        let model = tempfile::NamedTempFile::new().unwrap();
        let text = format!(
            "{}{}",
            valid_toml(model.path()),
            r#"
[[routing.peers]]
name = "line2"
topic = "swarm/query-line2/votes"

[[routing.peers]]
name = "smollm2"
topic = "swarm/query/line3"
weight = -1.0
timeout_ms = 10

[[routing.peers]]
name = "line4"
topic = "swarm/+/votes"
"#
        );
        let config = Config::parse(&text).unwrap();
        assert_eq!(config.routing.peers[0].weight, 1.0);
        assert_eq!(config.routing.peers[0].timeout_ms, 5_000);
        let problems = config.validate();
        assert_eq!(
            keys(&problems),
            vec![
                "routing.peers[1].name",
                "routing.peers[1].topic",
                "routing.peers[1].weight",
                "routing.peers[1].timeout_ms",
                "routing.peers[2].topic",
            ]
        );
        assert!(problems[1].message.contains("ask itself"), "{problems:?}");
        assert_eq!(config.peer_vote_topic(), "swarm/reply/edge-01/votes");
    }

    #[test]
    fn tls_client_cert_needs_key() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut config = Config::parse(&valid_toml(file.path())).unwrap();
        config.mqtt.tls = Some(TlsConfig {
            ca_file: file.path().into(),
            client_cert_file: Some(file.path().into()),
            client_key_file: None,
        });
        assert_eq!(keys(&config.validate()), vec!["mqtt.tls"]);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.gguf"), b"x").unwrap();
        let cfg = dir.path().join("swarm.toml");
        std::fs::write(
            &cfg,
            "node = \"n\"\n[[models]]\nname = \"m\"\npath = \"m.gguf\"\n",
        )
        .unwrap();
        let config = Config::load(&cfg).unwrap();
        assert_eq!(config.models[0].path, dir.path().join("m.gguf"));
    }

    #[test]
    fn paths_expand_environment_variables() {
        std::env::set_var("SWARM_LLM_TEST_DIR", "/opt/models");
        assert_eq!(
            expand_env("${SWARM_LLM_TEST_DIR}/m.gguf").unwrap(),
            "/opt/models/m.gguf"
        );
        assert_eq!(expand_env("plain/path").unwrap(), "plain/path");
        assert_eq!(
            expand_env("${SWARM_LLM_SURELY_UNSET:-/var/lib/x}/j").unwrap(),
            "/var/lib/x/j"
        );
        assert_eq!(
            expand_env("${SWARM_LLM_SURELY_UNSET}/m").unwrap_err(),
            "SWARM_LLM_SURELY_UNSET"
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("swarm.toml");
        std::fs::write(
            &cfg,
            "node = \"n\"\n[[models]]\nname = \"m\"\npath = \"${SWARM_LLM_SURELY_UNSET}/m.gguf\"\n",
        )
        .unwrap();
        let err = Config::load(&cfg).unwrap_err().to_string();
        assert!(
            err.contains("1 problem(s)")
                && err.contains(
                    "models[0].path: environment variable SWARM_LLM_SURELY_UNSET is not set"
                ),
            "{err}"
        );
    }

    #[test]
    fn load_reports_invalid_file_with_all_keys() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("swarm.toml");
        std::fs::write(
            &cfg,
            "node = \"\"\n[[models]]\nname = \"m\"\npath = \"missing.gguf\"\n",
        )
        .unwrap();
        let err = Config::load(&cfg).unwrap_err().to_string();
        assert!(err.contains("2 problem(s)"), "{err}");
        assert!(
            err.contains("- node:") && err.contains("- models[0].path: no such file"),
            "{err}"
        );
    }

    #[test]
    fn a_board_is_named_after_its_host_without_an_edit() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.gguf"), b"x").unwrap();
        let cfg = dir.path().join("swarm.toml");
        std::fs::write(&cfg, "[[models]]\nname = \"m\"\npath = \"m.gguf\"\n").unwrap();
        let config = Config::load(&cfg).unwrap();
        let host = crate::identity::hostname().unwrap();
        assert_eq!(config.node, host);
        let client_id = config.client_id();
        match crate::identity::machine_id() {
            Ok(machine) => assert_eq!(client_id, format!("swarm-llm-{host}-{machine}")),
            Err(_) => assert_eq!(client_id, format!("swarm-llm-{host}")),
        }
        std::fs::write(
            &cfg,
            "node = \"${HOSTNAME}-a\"\n[mqtt]\nclient_id = \"plant-${HOSTNAME}\"\n[[models]]\nname = \"m\"\npath = \"m.gguf\"\n",
        )
        .unwrap();
        let config = Config::load(&cfg).unwrap();
        assert_eq!(config.node, format!("{host}-a"));
        assert_eq!(config.client_id(), format!("plant-{host}"));
    }

    #[test]
    fn problems_name_the_drop_in_that_set_them_and_paths_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("swarm.toml");
        std::fs::write(
            &cfg,
            "node = \"n\"\n[mqtt]\nport = 0\n[[models]]\nname = \"m\"\npath = \"m.gguf\"\n",
        )
        .unwrap();
        let drop_ins = drop_in_dir(&cfg);
        std::fs::create_dir(&drop_ins).unwrap();
        let board = drop_ins.join("50-board.toml");
        std::fs::write(
            &board,
            "node = \"bad node\"\n[[models]]\nname = \"m\"\npath = \"board.gguf\"\n",
        )
        .unwrap();
        let err = Config::load(&cfg).unwrap_err().to_string();
        for want in [
            format!("- node ({}):", board.display()),
            format!("- mqtt.port ({}):", cfg.display()),
            format!(
                "- models[0].path ({}): no such file: {}",
                board.display(),
                drop_ins.join("board.gguf").display()
            ),
        ] {
            assert!(err.contains(&want), "no {want:?} in {err}");
        }
    }

    #[test]
    fn example_round_trips_through_toml() {
        let example = Config::example();
        let text = toml::to_string(&example).unwrap();
        assert_eq!(Config::parse(&text).unwrap(), example);
    }
}
