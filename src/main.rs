//! The `swarm-llm` command: the service (`run`), a client (`ask`), and config tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use swarm_llm::ask::{self, AskOptions};
use swarm_llm::config::{Config, MqttProtocol, EXIT_CONFIG, MQTT_PASSWORD_ENV};
use swarm_llm::measuring::commands::{
    bench_models, calibrate_command, eval_command, learn_command, measure_command,
    safety_eval_command, safety_train_command, AnswerSource, EvalOutputs,
};
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

/// Which broker a command-line client talks to, and how it logs in (the
/// password comes from the environment, never the command line).
#[derive(clap::Args)]
struct BrokerArgs {
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    broker: String,
    /// MQTT protocol version.
    #[arg(long, value_parser = ["5", "3.1.1"], default_value = "5")]
    mqtt: String,
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
}

impl BrokerArgs {
    fn login(&self) -> Result<(MqttProtocol, ask::Login), String> {
        let read =
            |p: &PathBuf| std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()));
        let client_auth = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
            _ => None,
        };
        let tls = self
            .ca_file
            .as_ref()
            .map(read)
            .transpose()?
            .map(|ca| TlsFiles { ca, client_auth });
        let protocol = if self.mqtt == "5" {
            MqttProtocol::V5
        } else {
            MqttProtocol::V311
        };
        Ok((
            protocol,
            ask::Login {
                username: self.username.clone(),
                password: std::env::var(MQTT_PASSWORD_ENV).ok(),
                tls,
            },
        ))
    }
}

/// Loads the config for a measuring command, with --cloud-url applied.
fn measuring_config(path: &Path, cloud_url: &Option<String>) -> Result<Config, ExitCode> {
    swarm_llm::logging::init("warn,llama-cpp-2=error");
    let mut config = Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_CONFIG as u8)
    })?;
    if let Some(url) = cloud_url {
        config.cloud.get_or_insert_with(Default::default).url = url.clone();
    }
    Ok(config)
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

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
        #[command(flatten)]
        broker: BrokerArgs,
        /// Topic to publish the question on.
        #[arg(long, default_value = "swarm/query/cli")]
        topic: String,
        /// Topic to receive the reply on (default: a fresh one under swarm/reply/).
        #[arg(long)]
        reply_topic: Option<String>,
        /// Seconds to wait for the reply.
        #[arg(long, default_value_t = 120.0)]
        timeout: f64,
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        max_tokens: Option<u32>,
        #[arg(long)]
        deadline_ms: Option<u64>,
    },
    /// List the boards on a broker from their retained statuses: one line
    /// each (state, version, journal, models), or JSON.
    Status {
        #[command(flatten)]
        broker: BrokerArgs,
        /// The boards' `mqtt.status_topic_prefix`.
        #[arg(long, default_value = "swarm/status")]
        prefix: String,
        /// Seconds to collect statuses after subscribing.
        #[arg(long, default_value_t = 1.0)]
        wait: f64,
        /// One JSON array instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Measure the uncertainty signals (AUROC per model) and replay the routing
    /// policy on a labelled workload.
    Signals {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        answers: AnswerSource,
    },
    /// Compare edge-only, swarm, swarm+cloud, cloud-only and a random router
    /// on a labelled workload: accuracy with 95% intervals, cloud share and
    /// traffic, latency per route, safety.
    Eval {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        answers: AnswerSource,
        /// Comma-separated subset of: edge-only, edge-only:MODEL, swarm,
        /// swarm+cloud, cloud-only, random.
        #[arg(long, default_value = swarm_llm::measuring::eval::ALL_MODES)]
        modes: String,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write the report as a Markdown table here.
        #[arg(long)]
        markdown: Option<PathBuf>,
        /// Write one JSON line per question and mode here.
        #[arg(long)]
        answers_out: Option<PathBuf>,
    },
    /// Fit the policy's thresholds to a target cloud share (or accuracy) with
    /// cross-validation; write the whole config with them, and the
    /// accuracy-against-cloud-share curve as SVG.
    Calibrate {
        #[arg(long, short)]
        config: PathBuf,
        #[command(flatten)]
        answers: AnswerSource,
        /// The most questions (a share, 0 to 1) the cloud may answer.
        #[arg(
            long,
            conflicts_with = "target_accuracy",
            required_unless_present = "target_accuracy"
        )]
        target_cloud_share: Option<f64>,
        /// Instead: the accuracy (0 to 1) to reach with the fewest cloud calls.
        #[arg(long)]
        target_accuracy: Option<f64>,
        #[arg(long, default_value_t = 5)]
        folds: usize,
        /// Sweep every signal and all four thresholds, not just the first
        /// model's confidence bar and the swarm's agreement bar.
        #[arg(long)]
        wide: bool,
        /// Fit the learned router (`[policy.learned]`) instead of the
        /// thresholds, and draw it against the threshold, random and oracle
        /// routers with CPT(50%), CPT(80%) and APGR.
        #[arg(long, conflicts_with_all = ["target_accuracy", "wide"])]
        learn: bool,
        /// The config with the fitted thresholds goes here.
        #[arg(long)]
        out: PathBuf,
        /// The curve (SVG); default: the --out file with .svg.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The calibration figures as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Measure each configured model's prompt and decode speed on this board
    /// (median of several runs after a warm-up), e.g. to size threads or
    /// check GPU offload with --gpu-layers.
    BenchModel {
        #[arg(long, short)]
        config: PathBuf,
        /// Only these models (default: all).
        #[arg(long)]
        model: Vec<String>,
        /// Override every model's gpu_layers (needs a build with --features cuda).
        #[arg(long)]
        gpu_layers: Option<u32>,
        /// Override every model's thread count.
        #[arg(long)]
        threads: Option<u32>,
        #[arg(long, default_value_t = 128)]
        tokens: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Train the learned harm check's head on labelled sets, with one
    /// configured model's embeddings; write it as JSON (see docs/safety.md).
    SafetyTrain {
        #[arg(long, short)]
        config: PathBuf,
        /// The configured model whose embeddings the head reads.
        #[arg(long)]
        model: String,
        /// Labelled sets (JSON lines with `prompt` and `harm` or `category`).
        #[arg(long = "data", required = true)]
        data: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// The most benign lookalikes (a share) the chosen threshold may flag,
        /// cross-validated, the rules' flags included (docs/safety.md: the budget).
        #[arg(long, default_value_t = 0.05)]
        max_lookalike_flags: f64,
        /// Gradient steps of the fit (it needs about 2000 to settle on a few thousand features).
        #[arg(long, default_value_t = 2000)]
        steps: usize,
        /// L2 penalty on the weights; 0.1 was best on held-out questions among 0.001 to 1.
        #[arg(long, default_value_t = 0.1)]
        l2: f32,
        /// Keep the questions' embeddings in this file and reuse them, so a
        /// refit with other settings does not read every question again.
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Measure the safety check as the service runs it on labelled sets:
    /// flagged share per harm category, false flags, the threshold curve
    /// (SVG), its latency and the process's memory.
    SafetyEval {
        #[arg(long, short)]
        config: PathBuf,
        /// Labelled sets (JSON lines with `prompt` and `harm` or `category`).
        #[arg(long = "workload", required = true)]
        workload: Vec<PathBuf>,
        /// Only the questions of this split (test: held out from training).
        #[arg(long)]
        split: Option<swarm_llm::measuring::safety_eval::Split>,
        /// The plant rules alone, the learned layer off.
        #[arg(long)]
        rules_only: bool,
        /// The board's layers alone, the cloud judge off (it is asked where
        /// a cloud is configured and `safety.cloud_judge.enabled`).
        #[arg(long)]
        board_only: bool,
        /// Override the configured cloud endpoint the judge asks (base URL up to /v1).
        #[arg(long)]
        cloud_url: Option<String>,
        #[arg(long)]
        json: Option<PathBuf>,
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Write the questions it got wrong (harmful ones let through, benign
        /// ones flagged) here, one JSON object a line.
        #[arg(long)]
        mistakes: Option<PathBuf>,
    },
    /// Validate a config file; exits 78 when it has problems.
    CheckConfig { file: PathBuf },
    /// Print the default config as TOML.
    PrintDefaultConfig,
}

impl Command {
    /// Whether the command runs llama.cpp; the others (asking, listing,
    /// checking a config) need no OpenMP settings and no restart for them.
    fn runs_models(&self) -> bool {
        !matches!(
            self,
            Command::Ask { .. }
                | Command::Status { .. }
                | Command::CheckConfig { .. }
                | Command::PrintDefaultConfig
        )
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.runs_models() {
        swarm_llm::inference::restart_with_openmp_waits();
    }
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
        Command::SafetyTrain {
            config: path,
            model,
            data,
            out,
            max_lookalike_flags,
            steps,
            l2,
            cache,
        } => {
            let config = match measuring_config(&path, &None) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let opts = swarm_llm::route::softmax::FitOptions { l2, steps };
            finish(block_on(safety_train_command(
                &config,
                &model,
                &data,
                &out,
                max_lookalike_flags,
                opts,
                cache.as_deref(),
            )))
        }
        Command::SafetyEval {
            config: path,
            workload,
            split,
            rules_only,
            board_only,
            cloud_url,
            json,
            svg,
            mistakes,
        } => {
            let mut config = match measuring_config(&path, &cloud_url) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if rules_only {
                config.safety.learned.enabled = false;
            }
            if board_only {
                config.safety.cloud_judge.enabled = false;
            }
            finish(block_on(safety_eval_command(
                &config,
                &workload,
                split,
                json.as_deref(),
                svg.as_deref(),
                mistakes.as_deref(),
            )))
        }
        Command::PrintDefaultConfig => {
            print!(
                "{}",
                toml::to_string(&Config::example()).expect("the example serialises")
            );
            ExitCode::SUCCESS
        }
        Command::Signals {
            config: path,
            answers,
        } => {
            let config = match measuring_config(&path, &answers.cloud_url) {
                Ok(c) => c,
                Err(code) => return code,
            };
            finish(block_on(measure_command(&config, &answers)))
        }
        Command::Eval {
            config: path,
            answers,
            modes,
            json,
            markdown,
            answers_out,
        } => {
            let config = match measuring_config(&path, &answers.cloud_url) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let outputs = EvalOutputs {
                json,
                markdown,
                answers: answers_out,
            };
            finish(block_on(eval_command(&config, &answers, &modes, &outputs)))
        }
        Command::Calibrate {
            config: path,
            answers,
            target_cloud_share,
            target_accuracy,
            folds,
            wide,
            learn,
            out,
            plot,
            json,
        } => {
            let config = match measuring_config(&path, &answers.cloud_url) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let plot = plot.unwrap_or_else(|| out.with_extension("svg"));
            if learn {
                let share = target_cloud_share.expect("--learn conflicts with --target-accuracy");
                return finish(block_on(learn_command(
                    &path,
                    &config,
                    &answers,
                    share,
                    folds,
                    &out,
                    &plot,
                    json.as_deref(),
                )));
            }
            let target = match (target_cloud_share, target_accuracy) {
                (Some(s), _) => swarm_llm::measuring::calibrate::Target::CloudShare(s),
                (None, Some(a)) => swarm_llm::measuring::calibrate::Target::Accuracy(a),
                (None, None) => unreachable!("clap requires one target"),
            };
            let grid = if wide {
                swarm_llm::measuring::calibrate::Grid::wide()
            } else {
                swarm_llm::measuring::calibrate::Grid::narrow(&config.policy)
            };
            finish(block_on(calibrate_command(
                &path,
                &config,
                &answers,
                target,
                folds,
                &grid,
                &out,
                &plot,
                json.as_deref(),
            )))
        }
        Command::BenchModel {
            config,
            model,
            gpu_layers,
            threads,
            tokens,
            runs,
        } => {
            // llama.cpp's load summary (offloaded layers, buffer sizes) is
            // part of the answer here.
            swarm_llm::logging::init("warn,llama-cpp-2=info");
            let mut config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG as u8);
                }
            };
            if let Some(unknown) = model
                .iter()
                .find(|n| !config.models.iter().any(|m| &m.name == *n))
            {
                eprintln!("error: no model named {unknown:?} in the config");
                return ExitCode::from(EXIT_CONFIG as u8);
            }
            config
                .models
                .retain(|m| model.is_empty() || model.contains(&m.name));
            for m in &mut config.models {
                m.gpu_layers = gpu_layers.unwrap_or(m.gpu_layers);
                m.threads = threads.unwrap_or(m.threads);
            }
            match block_on(bench_models(&config, tokens, runs)) {
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
            block_on(run_service(config))
        }
        Command::Ask {
            question,
            broker,
            topic,
            reply_topic,
            timeout,
            id,
            max_tokens,
            deadline_ms,
        } => {
            swarm_llm::logging::init("warn");
            let (protocol, login) = match broker.login() {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let options = AskOptions {
                broker: broker.broker,
                protocol,
                topic,
                reply_topic,
                question,
                id,
                max_tokens,
                deadline_ms,
                timeout: Duration::from_secs_f64(timeout),
                login,
            };
            match block_on(ask::ask(options)) {
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
        Command::Status {
            broker,
            prefix,
            wait,
            json,
        } => {
            swarm_llm::logging::init("warn");
            let listed =
                broker
                    .login()
                    .map_err(anyhow::Error::msg)
                    .and_then(|(protocol, login)| {
                        Ok(block_on(ask::statuses(
                            &broker.broker,
                            protocol,
                            &login,
                            &prefix,
                            Duration::from_secs_f64(wait),
                        ))?)
                    });
            match listed {
                Ok(boards) if json => {
                    println!("{}", serde_json::to_string_pretty(&boards).expect("json"));
                    ExitCode::SUCCESS
                }
                Ok(boards) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    print!("{}", ask::render_statuses(&boards, now));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn block_on<F: std::future::Future>(work: F) -> F::Output {
    let out = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(work);
    swarm_llm::inference::wait_for_workers(Duration::from_secs(10));
    out
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
