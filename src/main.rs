//! The `swarm-llm` command: the service (`run`), a client (`ask`), and config tools.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use swarm_llm::ask::{self, AskOptions};
use swarm_llm::config::{Config, MqttProtocol, EXIT_CONFIG, MQTT_PASSWORD_ENV};
use swarm_llm::mqtt::TlsFiles;
use swarm_llm::service::{self, ServiceError};
use tokio_util::sync::CancellationToken;

/// Exit code when a model cannot be loaded (`EX_DATAERR`): a corrupt or
/// incompatible file, which a restart will not fix.
const EXIT_MODEL: u8 = 65;
/// Exit code for `ask` when the reply carries an error.
const EXIT_ERROR_REPLY: u8 = 3;
/// Exit code for `ask` when no reply came in time.
const EXIT_TIMEOUT: u8 = 4;

#[derive(Parser)]
#[command(
    name = "swarm-llm",
    version,
    about = "Answers MQTT questions with a swarm of small local language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Publish one question, wait for the reply and print it as JSON.
    Ask {
        /// The question.
        question: String,
        #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
        broker: String,
        /// Topic to publish the question on.
        #[arg(long, default_value = "swarm/query/cli")]
        topic: String,
        /// Topic to receive the reply on (default: a fresh one under swarm/reply/).
        #[arg(long)]
        reply_topic: Option<String>,
        /// MQTT protocol version.
        #[arg(long, value_parser = ["5", "3.1.1"], default_value = "5")]
        mqtt: String,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        max_tokens: Option<u32>,
        #[arg(long)]
        deadline_ms: Option<u64>,
        #[arg(long)]
        username: Option<String>,
        /// CA certificate (PEM) for an mqtts:// broker.
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// Client certificate and key (PEM) for mutual TLS.
        #[arg(long, requires = "key")]
        cert: Option<PathBuf>,
        #[arg(long, requires = "cert")]
        key: Option<PathBuf>,
    },
    /// Validate a config file; exits 78 when it has problems.
    CheckConfig { file: PathBuf },
    /// Print the default config as TOML.
    PrintDefaultConfig,
}

fn init_logging(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG as u8)
            }
        },
        Command::PrintDefaultConfig => {
            print!(
                "{}",
                toml::to_string(&Config::example()).expect("the example serialises")
            );
            ExitCode::SUCCESS
        }
        Command::Run { config } => {
            // llama.cpp's own chatter (one line per tensor at load) stays at warn.
            init_logging("info,llama-cpp-2=warn");
            let config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            runtime().block_on(run_service(config))
        }
        Command::Ask {
            question,
            broker,
            topic,
            reply_topic,
            mqtt,
            timeout,
            id,
            max_tokens,
            deadline_ms,
            username,
            ca_file,
            cert,
            key,
        } => {
            init_logging("warn");
            let read = |p: &PathBuf| {
                std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
            };
            let tls = match ca_file.as_ref().map(read).transpose().and_then(|ca| {
                let auth = match (&cert, &key) {
                    (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                    _ => None,
                };
                Ok(ca.map(|ca| TlsFiles {
                    ca,
                    client_auth: auth,
                }))
            }) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = AskOptions {
                broker,
                protocol: if mqtt == "5" {
                    MqttProtocol::V5
                } else {
                    MqttProtocol::V311
                },
                topic,
                reply_topic,
                question,
                id,
                max_tokens,
                deadline_ms,
                timeout: Duration::from_secs_f64(timeout),
                username,
                password: std::env::var(MQTT_PASSWORD_ENV).ok(),
                tls,
            };
            match runtime().block_on(ask::ask(options)) {
                Ok(payload) => {
                    println!("{}", String::from_utf8_lossy(&payload));
                    let failed = serde_json::from_slice::<serde_json::Value>(&payload)
                        .map_or(true, |v| !v["error"].is_null());
                    if failed {
                        ExitCode::from(EXIT_ERROR_REPLY)
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e @ ask::AskError::Timeout(_)) => {
                    eprintln!("error: {e}");
                    ExitCode::from(EXIT_TIMEOUT)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn run_service(config: Config) -> ExitCode {
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    match service::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ ServiceError::Model(_)) => {
            tracing::error!("{e}");
            ExitCode::from(EXIT_MODEL)
        }
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// First SIGTERM or SIGINT: graceful drain. A second one: exit at once.
async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if round == 0 {
            tracing::info!("signal received: draining (send it again to exit at once)");
            shutdown.cancel();
        }
    }
    tracing::warn!("second signal: exiting without draining");
    std::process::exit(1);
}
