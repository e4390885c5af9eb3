//! swarm-llm: an edge service that answers questions arriving over MQTT with
//! quantized small language models run in-process through llama.cpp.
//!
//! A sensor gateway or operator publishes a question; the service answers it
//! with a local model and publishes the answer back to the asker, with the
//! route that produced it and the signals measured on the way.
//!
//! # Where things are
//!
//! - [`service`]: the wiring. Loads models, connects, joins the stages with
//!   bounded channels; start reading here.
//! - [`stages`]: one async task per stage: [`stages::mqtt_in`] (polls the
//!   broker), [`stages::intake`] (decodes, admits or refuses, acknowledges),
//!   [`stages::router`] (answers, with bounded concurrency and a drain on
//!   shutdown), [`stages::mqtt_out`] (publishes replies and status).
//! - [`pipeline`]: answers one question by following the routing policy with
//!   the models and the cloud; shared by the router stage and the measurement
//!   commands.
//! - [`safety_screen`]: the safety check before generation: the plant rules
//!   and the learned harm check on a model's encoder.
//! - [`route`]: the pure routing core: [`route::safety`] (the safety
//!   signal's rules and verdict), [`route::harm`] (the learned harm check's
//!   head, taxonomy and de-obfuscation), [`route::softmax`] (its classifier),
//!   [`route::signals`] (uncertainty, difficulty, AUROC), [`route::choice`]
//!   (multiple-choice options and letter distributions), [`route::learned`]
//!   (the learned router's score), [`route::vote`] (normalising and tallying
//!   the swarm's answers), [`route::policy`] (local, swarm, cloud or refuse),
//!   [`route::share`] (the cloud share held online by moving the learned
//!   router's cut).
//! - [`cloud_share`]: that controller's live state, saved in the journal's folder.
//! - [`journal`]: accepted questions on disk (postcard frames with a
//!   checksum) until their reply is acknowledged; replayed at start.
//! - [`peers`]: other boards voting in the swarm: vote requests over MQTT
//!   and the votes that come back.
//! - [`breaker`]: the circuit breaker the cloud and peer boards share (pure).
//! - [`cloud`]: OpenAI-compatible client with retries, circuit breaker and budget.
//! - [`inference`]: one OS thread per model owning its llama.cpp context;
//!   [`inference::sampling`] is the pure per-token maths (choice, probability,
//!   entropy).
//! - [`protocol`]: the request and reply formats (pure).
//! - [`prompt`]: prompt assembly, keeping the question apart from the template (pure).
//! - [`topic`]: MQTT topic rules (pure).
//! - [`ratelimit`]: a token bucket per asker (pure).
//! - [`text`]: reading numbers, units and words in answers (pure).
//! - [`measuring`]: the measuring tools, apart from the answering path:
//!   workloads, signal AUROC, the paper's comparison (`eval`), calibration
//!   and the learned router's fit, the safety check's training and
//!   measurement, and the command bodies that run them.
//! - [`config`]: typed TOML config in layers (the file and its drop-ins) and
//!   the validation that reports every problem with its file.
//! - [`identity`]: the board's name and MQTT client id from its hostname and machine-id.
//! - [`tls`]: the one TLS crypto provider (rustls with ring) for MQTT and the cloud.
//! - [`mqtt`]: one face over rumqttc's MQTT 5 and 3.1.1 clients, and reconnect backoff.
//! - [`metrics`]: the Prometheus endpoint (off by default) and what feeds it.
//! - [`systemd`]: readiness, stopping, a watchdog that trips on a hung model
//!   thread, and the secrets systemd passes as credentials.
//! - [`logging`]: tracing to stderr, or to journald with structured fields.
//! - [`ask`]: the command-line client.

pub mod ask;
pub mod cloud;
pub mod cloud_share;
pub mod config;
pub mod identity;
pub mod inference;
pub mod journal;
pub mod logging;
#[cfg(feature = "measure")]
pub mod measuring;
pub mod metrics;
pub mod mqtt;
pub mod peers;
pub mod pipeline;
pub mod prompt;
pub mod safety_screen;
pub mod service;
pub mod stages;
pub mod systemd;
pub mod tls;

// The pure core, from its own crate, under the names the rest of the
// service and the tests use.
pub use swarm_llm_core::{breaker, protocol, ratelimit, route, text, topic};
