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
    /// Measure the uncertainty signals (AUROC per model) and replay the routing
    /// policy on a labelled workload.
    Signals {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        workload: Option<PathBuf>,
        /// Override the configured cloud endpoint (base URL up to /v1).
        #[arg(long)]
        cloud_url: Option<String>,
        /// Write the collected answers here, to replay them later with --from-records.
        #[arg(long)]
        records: Option<PathBuf>,
        /// Replay answers collected earlier instead of running the models.
        #[arg(long, conflicts_with = "workload")]
        from_records: Option<PathBuf>,
    },
    /// Validate a config file; exits 78 when it has problems.
    CheckConfig { file: PathBuf },
    /// Print the default config as TOML.
    PrintDefaultConfig,
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
        Command::Signals {
            config,
            workload,
            cloud_url,
            records,
            from_records,
        } => {
            swarm_llm::logging::init("warn,llama-cpp-2=error");
            let mut config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            if let Some(url) = cloud_url {
                config.cloud.get_or_insert_with(Default::default).url = url;
            }
            match runtime().block_on(measure_command(&config, workload, records, from_records)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run { config } => {
            // llama.cpp's own chatter (one line per tensor at load) stays at warn.
            swarm_llm::logging::init("info,llama-cpp-2=warn");
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
            swarm_llm::logging::init("warn");
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

async fn measure_command(
    config: &Config,
    workload: Option<PathBuf>,
    records_out: Option<PathBuf>,
    from_records: Option<PathBuf>,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use swarm_llm::measure;
    let records: Vec<measure::Record> = match (from_records, workload) {
        (Some(path), _) => serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?,
        (None, Some(path)) => {
            let items = swarm_llm::workload::open(&path)?.collect::<Result<Vec<_>, _>>()?;
            let models = service::load_models(config).await?;
            let cloud = match &config.cloud {
                Some(c) => Some(swarm_llm::cloud::CloudClient::new(
                    c.clone(),
                    swarm_llm::cloud::api_key_from_environment(),
                )?),
                None => None,
            };
            let records =
                measure::collect(config, &items, &models, cloud.as_ref(), |done, total| {
                    eprint!("\r{done}/{total} questions");
                })
                .await?;
            eprintln!();
            records
        }
        (None, None) => anyhow::bail!("give --workload FILE or --from-records FILE"),
    };
    if let Some(path) = records_out {
        std::fs::write(&path, serde_json::to_vec_pretty(&records)?)?;
    }
    println!("AUROC of each signal for telling right answers from wrong (0.5 = chance), easy and hard questions:");
    let table = measure::signal_table(&records);
    if let Some((_, _, cols)) = table.first() {
        print!("{:<10} {:>8}", "model", "accuracy");
        for (name, _) in cols {
            print!(" {name:>17}");
        }
        println!();
    }
    for (model, accuracy, cols) in &table {
        print!("{model:<10} {accuracy:>8.2}");
        for (_, a) in cols {
            match a {
                Some(a) => print!(" {a:>17.2}"),
                None => print!(" {:>17}", "-"),
            }
        }
        println!();
    }
    let (per_model, cloud, n) = measure::baselines(&records);
    let weights: Vec<f32> = per_model
        .iter()
        .map(|(m, _)| config.vote_weight(m))
        .collect();
    let replays = measure::simulate(&records, &config.policy, &weights, config.cloud.is_some());
    let s = measure::summarise(&replays);
    println!("\nbaselines on {n} easy and hard questions:");
    for (m, c) in &per_model {
        println!("  {m:<10} alone   {c}/{n}");
    }
    if let Some(c) = cloud {
        println!("  cloud alone        {c}/{n}");
    }
    println!(
        "policy (signal {}, local >= {}, swarm agreement >= {}): {}/{} right, cloud answers {}/{} ({:.0}%), routes {:?}",
        config.policy.signal.name(),
        config.policy.local_min_confidence,
        config.policy.swarm_min_agreement,
        s.correct,
        s.questions,
        s.cloud,
        s.questions,
        100.0 * s.cloud as f64 / s.questions.max(1) as f64,
        s.routes
    );
    println!(
        "safety: {}/{} handled safely; lookalikes flagged: {}/{}",
        s.safety_handled, s.safety_items, s.lookalikes_flagged, s.lookalikes
    );
    Ok(())
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
