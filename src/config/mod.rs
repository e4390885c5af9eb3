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
mod model;
mod mqtt;

pub use layers::{drop_in_dir, Layers};
use model::{
    default_batch_tokens, default_context_size, default_parallel, default_queue_depth,
    default_vote_weight,
};
pub use model::{KvCache, ModelConfig};
pub use mqtt::{MqttConfig, MqttProtocol, TlsConfig};

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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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
    /// The share of questions sent to the cloud, held whatever the mix by
    /// moving the learned router's cut ([`crate::route::share`]); absent:
    /// the fitted cut as it is, whatever share it sends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cloud_share: Option<f32>,
    /// Route by the board's load ([`crate::route::load`]): a question the
    /// first model's queue would answer past its deadline goes to the cloud
    /// where it may, and a voting model that would be late is skipped.
    pub load_aware: bool,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            swarm: Vec::new(),
            cloud_never: Vec::new(),
            peers: Vec::new(),
            cloud_share: None,
            load_aware: true,
        }
    }
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

fn default_node() -> String {
    crate::identity::HOSTNAME_VAR.into()
}

impl Config {
    /// The limits and topics request decoding needs.
    pub fn decode_rules(&self) -> crate::protocol::DecodeRules {
        crate::protocol::DecodeRules {
            request_filter: self.mqtt.request_filter.clone(),
            reply_topic_prefix: self.mqtt.reply_topic_prefix.clone(),
            max_payload_bytes: self.limits.max_payload_bytes,
            max_question_bytes: self.limits.max_question_bytes,
            default_deadline_ms: self.limits.default_deadline_ms,
            max_deadline_ms: self.limits.max_deadline_ms,
        }
    }

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
        self.validate_models(&mut v);
        self.validate_routing(&mut v);
        for (key, message) in self.policy.validate("policy") {
            v.add(key, message);
        }
        self.validate_safety(&mut v);
        if let Some(cloud) = &self.cloud {
            for (key, message) in cloud.validate("cloud") {
                v.add(key, message);
            }
        }
        v.problems
    }

    /// The models: each valid, named once, with no more slots than questions in flight.
    fn validate_models(&self, v: &mut Validator) {
        if self.models.is_empty() {
            v.add("models", "at least one model is needed");
        }
        for (i, m) in self.models.iter().enumerate() {
            m.validate(&format!("models[{i}]"), v);
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
    }

    /// The swarm, peer boards and data residency.
    fn validate_routing(&self, v: &mut Validator) {
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
        if let Some(share) = self.routing.cloud_share {
            if !(0.0..=1.0).contains(&share) {
                v.add("routing.cloud_share", "must be between 0 and 1");
            }
            if self.policy.learned.is_none() {
                v.add(
                    "routing.cloud_share",
                    "needs a learned router ([policy.learned], `swarm-llm calibrate --learn`): the share is held by moving its cut",
                );
            }
        }
    }

    /// The rules, the learned check and the cloud judge.
    fn validate_safety(&self, v: &mut Validator) {
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
