//! The wiring: loads the models, connects to the broker, and joins the stages
//! with bounded channels. This is the one place to read to see how a question
//! flows through the service:
//!
//! ```text
//!  broker ──> mqtt_in ──raw──> intake ──accepted──> router ──> model threads
//!     ^          │ PUBACKs       │  │                 │
//!     │          v               │  └──> journal <──┐ │
//!     └──────── mqtt_out <──────replies─────────────┴─┘
//! ```
//!
//! The journal holds each accepted question from before its PUBACK until
//! the broker has acknowledged its reply; intake answers what it still holds
//! from the last run before taking new messages. With `routing.peers`, the
//! router's votes also ask peer boards over the same connection, and mqtt_in
//! hands their votes back ([`crate::peers`]).
//!
//! Shutdown (the `shutdown` token) runs front to back, losing nothing that was
//! accepted: mqtt_in stops taking messages (unacknowledged ones stay with the
//! broker), intake stops, the router answers what it holds within the drain
//! timeout, mqtt_out publishes every reply, the offline status and DISCONNECT,
//! and mqtt_in flushes them to the broker.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cloud::{self, CloudClient, CloudError};
use crate::config::Config;
use crate::inference::{self, InferenceError, ModelHandle};
use crate::journal::{Entry, Journal, JournalError, JournalSettings};
use crate::mqtt::{self, Backoff, ConnectSettings, MqttError};
use crate::peers::Peers;
use crate::pipeline::Pipeline;
use crate::ratelimit::RateLimiter;
use crate::safety_screen::{self, ScreenError};
use crate::stages::mqtt_out::{MqttOut, StatusPayloads};
use crate::stages::{intake::Intake, mqtt_in::MqttIn, router::Router};
use crate::systemd;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Model(#[from] InferenceError),
    #[error(transparent)]
    Mqtt(#[from] MqttError),
    #[error(transparent)]
    Safety(#[from] ScreenError),
    #[error("cloud client: {0}")]
    Cloud(#[from] CloudError),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

/// How long past the drain timeout mqtt_out may still wait for PUBACKs
/// (the unit's TimeoutStopSec leaves room for it).
const PUBACK_GRACE: Duration = Duration::from_secs(10);

/// How many unacknowledged QoS 1 questions the broker may send us at once
/// (MQTT 5 Receive Maximum); the raw channel into intake is larger.
const RECEIVE_MAXIMUM: u16 = 128;
const RAW_CHANNEL: usize = 1024;

/// The retained status (read back by [`crate::ask::BoardStatus`]).
#[derive(Serialize)]
struct Status<'a> {
    node: &'a str,
    state: &'a str,
    version: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    models: Vec<&'a str>,
    /// "ok", "failing" (answers flow but a crash loses them) or "off".
    #[serde(skip_serializing_if = "Option::is_none")]
    journal: Option<&'a str>,
    /// Questions waiting for or inside the model threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    load: Option<usize>,
    /// "up", or "down" while the cloud's breaker is open; absent without a cloud.
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    counters: Option<crate::metrics::Counters>,
    /// The cloud share held (`routing.cloud_share`): target, recent share, live cut.
    #[serde(skip_serializing_if = "Option::is_none")]
    cloud_share: Option<crate::route::share::ShareStatus>,
}

fn offline_status(config: &Config) -> Vec<u8> {
    serde_json::to_vec(&Status {
        node: &config.node,
        state: "offline",
        version: env!("CARGO_PKG_VERSION"),
        models: vec![],
        journal: None,
        load: None,
        cloud: None,
        counters: None,
        cloud_share: None,
    })
    .expect("status serialises")
}

/// The online status of the moment: models, journal, load, cloud, counters.
fn online_status(
    node: &str,
    models: &[ModelHandle],
    pipeline: &Pipeline,
    journal: &str,
) -> Vec<u8> {
    let load = models
        .iter()
        .map(|m| m.queued() + m.health().active())
        .sum();
    let cloud = pipeline
        .cloud()
        .map(|c| if c.available().is_ok() { "up" } else { "down" });
    serde_json::to_vec(&Status {
        node,
        state: "online",
        version: env!("CARGO_PKG_VERSION"),
        models: models.iter().map(|m| m.info.name.as_str()).collect(),
        journal: Some(journal),
        load: Some(load),
        cloud,
        counters: Some(crate::metrics::counters()),
        cloud_share: pipeline.cloud_share().map(|s| s.status()),
    })
    .expect("status serialises")
}

/// Loads every configured model, each on its own thread; the one that reads
/// questions for the learned safety check gets an encoder too.
pub async fn load_models(config: &Config) -> Result<Vec<ModelHandle>, ServiceError> {
    let head = safety_screen::load_head(&config.safety)?;
    let encoder = head
        .as_ref()
        .and_then(|h| safety_screen::encoder_model(config, h));
    let mut models = Vec::with_capacity(config.models.len());
    for m in &config.models {
        models.push(
            inference::spawn_worker(
                m.clone(),
                config.inference.system_prompt.clone(),
                encoder == Some(m.name.as_str()),
            )
            .await?,
        );
    }
    Ok(models)
}

/// The answering pipeline over the loaded models, with the cloud client when
/// one is configured (its key from a systemd credential or the environment).
pub fn build_pipeline(config: &Config, models: &[ModelHandle]) -> Result<Pipeline, ServiceError> {
    let cloud = match &config.cloud {
        Some(c) => Some(CloudClient::new(
            c.clone(),
            cloud::api_key_from_environment(),
        )?),
        None => None,
    };
    Ok(Pipeline::new(config, models, cloud)?)
}

/// Runs the service until `shutdown` is cancelled and the drain is complete.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), ServiceError> {
    let (journal, owed, journal_healthy) = open_journal(&config)?;
    let journal_state = if journal.is_some() { "ok" } else { "off" };
    let models = load_models(&config).await?;
    let mut pipeline = build_pipeline(&config, &models)?;

    let status_topic = config.status_topic();
    let (client, events) = connect(&config)?;
    let peers = (!config.routing.peers.is_empty()).then(|| {
        Arc::new(Peers::new(
            config.routing.peers.clone(),
            config.peer_vote_topic(),
            client.clone(),
        ))
    });
    if let Some(p) = &peers {
        pipeline = pipeline.with_peers(p.clone());
    }
    let pipeline = Arc::new(pipeline);

    let (raw_tx, raw_rx) = mpsc::channel(RAW_CHANNEL);
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    let give_up = CancellationToken::new();
    let (subscribed_tx, subscribed_rx) = watch::channel(false);
    let (accepted_tx, accepted_rx) = mpsc::channel(config.limits.intake_queue);
    let metrics_stop = CancellationToken::new();
    start_metrics(
        &config,
        crate::metrics::State {
            models: models.clone(),
            model_queue_depths: config.models.iter().map(|m| m.queue_depth).collect(),
            pipeline: pipeline.clone(),
            intake: accepted_tx.downgrade(),
            journal_healthy: journal_healthy.clone(),
            journal_on: journal.is_some(),
        },
        metrics_stop.clone(),
    );
    let (out_tx, out_rx) = mpsc::channel(config.limits.intake_queue + config.limits.max_in_flight);
    let mqtt_done = CancellationToken::new();
    let tasks = TaskTracker::new();

    tasks.spawn(
        MqttIn {
            client: client.clone(),
            events,
            subscription: config.mqtt.subscription(),
            peers,
            link: link_tx,
            backoff: Backoff::new(
                Duration::from_millis(config.mqtt.reconnect_min_ms),
                Duration::from_millis(config.mqtt.reconnect_max_ms),
            ),
            to_intake: raw_tx,
            subscribed: subscribed_tx,
            stop_intake: shutdown.clone(),
            stop: mqtt_done.clone(),
        }
        .run(),
    );
    tasks.spawn(
        Intake {
            client: client.clone(),
            rules: config.decode_rules(),
            node: config.node.clone(),
            from_mqtt: raw_rx,
            to_router: accepted_tx,
            to_out: out_tx.clone(),
            stop: shutdown.clone(),
            rate_limit: config
                .limits
                .rate_per_minute
                .map(|r| RateLimiter::new(r, config.limits.rate_burst)),
            journal: journal.clone(),
            owed,
        }
        .run(),
    );
    let status_pipeline = pipeline.clone();
    tasks.spawn(
        Router {
            pipeline: pipeline.clone(),
            requests: accepted_rx,
            to_out: out_tx,
            max_in_flight: config.limits.max_in_flight,
            drain_timeout: Duration::from_millis(config.limits.drain_timeout_ms),
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    tasks.spawn(
        MqttOut {
            client,
            replies: out_rx,
            link: link_rx,
            journal,
            journal_healthy,
            status_topic,
            status: status_payloads(&config, &models, status_pipeline, journal_state),
            give_up: give_up.clone(),
            done: mqtt_done,
        }
        .run(),
    );
    tell_systemd(&tasks, &models, subscribed_rx, &shutdown);
    tasks.close();
    shutdown.cancelled().await;
    systemd::stopping();
    let grace = Duration::from_millis(config.limits.drain_timeout_ms) + PUBACK_GRACE;
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        give_up.cancel();
    });
    tracing::info!("shutting down: answering accepted questions, then disconnecting");
    tasks.wait().await;
    if let Some(share) = pipeline.cloud_share() {
        share.save();
    }
    metrics_stop.cancel();
    tracing::info!("stopped");
    Ok(())
}

/// READY=1 once the models are loaded (before this is called) and the
/// subscription is granted; the watchdog's pings while the models answer.
fn tell_systemd(
    tasks: &TaskTracker,
    models: &[ModelHandle],
    mut subscribed: watch::Receiver<bool>,
    shutdown: &CancellationToken,
) {
    let ready_models = models.to_vec();
    tasks.spawn(async move {
        if subscribed.wait_for(|s| *s).await.is_ok() {
            systemd::ready(&ready_models);
        }
    });
    if let Some(period) = systemd::watchdog_period() {
        tasks.spawn(systemd::watchdog(models.to_vec(), period, shutdown.clone()));
    }
}

/// The MQTT client (not yet connected: its event loop connects), with the
/// offline status as its last will and manual acknowledgements, so that a
/// question is acknowledged only once the journal holds it.
fn connect(config: &Config) -> Result<(mqtt::Client, mqtt::EventLoop), ServiceError> {
    let mut settings = ConnectSettings::from_config(&config.mqtt, config.client_id())?;
    settings.last_will = Some((config.status_topic(), offline_status(config)));
    settings.receive_maximum = Some(RECEIVE_MAXIMUM);
    tracing::info!(
        broker = %format!("{}:{}", config.mqtt.host, config.mqtt.port),
        protocol = ?config.mqtt.protocol,
        client_id = %settings.client_id,
        "connecting"
    );
    Ok(mqtt::connect(&settings, true))
}

/// The journal, the questions it still owes replies to, and its health.
type OpenedJournal = (Option<Journal>, Vec<Entry>, watch::Receiver<bool>);

/// Opens the configured journal; without one, questions held when the
/// process is killed are lost.
fn open_journal(config: &Config) -> Result<OpenedJournal, ServiceError> {
    let Some(j) = &config.journal else {
        tracing::warn!(
            "no [journal] configured: questions held when the process is killed are lost"
        );
        return Ok((None, Vec::new(), watch::channel(true).1));
    };
    let (journal, owed, healthy) = Journal::start(&JournalSettings {
        dir: j.dir.clone(),
        max_bytes: j.max_bytes,
    })?;
    Ok((Some(journal), owed, healthy))
}

/// Serves and samples the metrics where configured. Metrics are the
/// operator's view, not the service: an endpoint that cannot listen is an
/// error in the log, and the questions are answered.
fn start_metrics(config: &Config, state: crate::metrics::State, stop: CancellationToken) {
    let Some(listen) = config.metrics.as_ref().and_then(|m| m.address()) else {
        return;
    };
    match crate::metrics::install(listen) {
        Ok(()) => {
            tokio::spawn(crate::metrics::sample(state, stop));
        }
        Err(e) => tracing::error!("{e}; answering without metrics"),
    }
}

/// The retained status the MQTT-out stage publishes: online (with the
/// journal's state as it writes), and the offline one for the last will.
fn status_payloads(
    config: &Config,
    models: &[ModelHandle],
    pipeline: Arc<Pipeline>,
    journal_state: &'static str,
) -> StatusPayloads {
    let (node, models) = (config.node.clone(), models.to_vec());
    StatusPayloads {
        online: Box::new(move |journal_writes| {
            let journal = if journal_writes {
                journal_state
            } else {
                "failing"
            };
            online_status(&node, &models, &pipeline, journal)
        }),
        offline: offline_status(config),
        every: Duration::from_secs(config.mqtt.status_interval_s),
    }
}
