//! The `swarm-llm` command: the service (`run`), a client (`ask`), and config tools.

use std::path::{Path, PathBuf};
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

/// Where the models' answers to a workload come from.
#[derive(clap::Args)]
struct AnswerSource {
    /// A labelled workload (JSON lines) to put to every model and the cloud.
    #[arg(long, required_unless_present = "from_records")]
    workload: Option<PathBuf>,
    /// Override the configured cloud endpoint (base URL up to /v1).
    #[arg(long)]
    cloud_url: Option<String>,
    /// Save the collected answers here, to reuse with --from-records.
    #[arg(long)]
    records: Option<PathBuf>,
    /// Reuse answers collected earlier instead of running the models.
    #[arg(long, conflicts_with = "workload")]
    from_records: Option<PathBuf>,
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
        #[arg(long, default_value = swarm_llm::eval::ALL_MODES)]
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
    /// configured model's embeddings; write it as JSON (see README, "Safety").
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
        /// cross-validated, the rules' flags included (README, Safety: why 5%).
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
        split: Option<swarm_llm::safety_eval::Split>,
        /// The plant rules alone, the learned layer off.
        #[arg(long)]
        rules_only: bool,
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
            json,
            svg,
            mistakes,
        } => {
            let mut config = match measuring_config(&path, &None) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if rules_only {
                config.safety.learned.enabled = false;
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
                (Some(s), _) => swarm_llm::calibrate::Target::CloudShare(s),
                (None, Some(a)) => swarm_llm::calibrate::Target::Accuracy(a),
                (None, None) => unreachable!("clap requires one target"),
            };
            let grid = if wide {
                swarm_llm::calibrate::Grid::wide()
            } else {
                swarm_llm::calibrate::Grid::narrow(&config.policy)
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

async fn bench_models(config: &Config, tokens: u32, runs: usize) -> anyhow::Result<()> {
    let models = service::load_models(config).await?;
    println!(
        "model      threads gpu_layers prompt_tok  gen_tok  prompt_tok/s  decode_tok/s  ttft_ms"
    );
    for (m, c) in models.iter().zip(&config.models) {
        let s = swarm_llm::measure::bench_model(m, tokens, runs).await?;
        println!(
            "{:<10} {:>7} {:>10} {:>10} {:>8} {:>13.1} {:>13.1} {:>8.1}",
            s.model,
            c.threads,
            c.gpu_layers,
            s.prompt_tokens,
            s.generated_tokens,
            s.prompt_tokens_per_s,
            s.decode_tokens_per_s,
            s.time_to_first_token_ms
        );
    }
    Ok(())
}

/// The answers of every model and the cloud to a workload: collected now
/// (with a progress bar) or read from an earlier `--records` file.
async fn load_records(
    config: &Config,
    source: &AnswerSource,
) -> anyhow::Result<Vec<swarm_llm::measure::Record>> {
    use anyhow::Context;
    use swarm_llm::measure;
    let records: Vec<measure::Record> = match (&source.from_records, &source.workload) {
        (Some(path), _) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )?,
        (None, Some(path)) => {
            let items = swarm_llm::workload::open(path)?.collect::<Result<Vec<_>, _>>()?;
            let models = service::load_models(config).await?;
            let cloud = match &config.cloud {
                Some(c) => Some(swarm_llm::cloud::CloudClient::new(
                    c.clone(),
                    swarm_llm::cloud::api_key_from_environment(),
                )?),
                None => None,
            };
            let started = std::time::Instant::now();
            let records =
                measure::collect(config, &items, &models, cloud.as_ref(), |done, total| {
                    progress_bar("questions", done, total, started)
                })
                .await?;
            records
        }
        (None, None) => anyhow::bail!("give --workload FILE or --from-records FILE"),
    };
    if let Some(path) = &source.records {
        std::fs::write(path, serde_json::to_vec_pretty(&records)?)?;
    }
    Ok(records)
}

struct EvalOutputs {
    json: Option<PathBuf>,
    markdown: Option<PathBuf>,
    answers: Option<PathBuf>,
}

async fn eval_command(
    config: &Config,
    source: &AnswerSource,
    modes: &str,
    out: &EvalOutputs,
) -> anyhow::Result<()> {
    use std::io::Write;
    use swarm_llm::eval;
    let names: Vec<String> = config.models.iter().map(|m| m.name.clone()).collect();
    // Check the modes before spending minutes on the models.
    let modes = eval::parse_modes(modes, &names)?;
    let records = load_records(config, source).await?;
    let runs = eval::run_modes(&records, config, &modes)?;
    let workload = source
        .workload
        .as_ref()
        .or(source.from_records.as_ref())
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let report = eval::report(&workload, &runs, &names);
    print!("{}", eval::render_table(&report));
    if let Some(path) = &out.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if let Some(path) = &out.markdown {
        std::fs::write(path, eval::render_markdown(&report))?;
    }
    if let Some(path) = &out.answers {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for ((_, replays), name) in runs.iter().zip(&report.order) {
            for line in eval::answer_lines(name, replays) {
                serde_json::to_writer(&mut f, &line)?;
                f.write_all(b"\n")?;
            }
        }
        f.flush()?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn calibrate_command(
    config_path: &Path,
    config: &Config,
    source: &AnswerSource,
    target: swarm_llm::calibrate::Target,
    folds: usize,
    grid: &swarm_llm::calibrate::Grid,
    out: &Path,
    plot: &Path,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    use swarm_llm::calibrate;
    let records = load_records(config, source).await?;
    let c = calibrate::calibrate(&records, config, target, folds, grid)?;
    let b = &c.baselines;
    println!(
        "{} easy and hard questions; best small model {} {:.0}%, cloud alone {:.0}%",
        b.questions,
        b.best_model,
        100.0 * b.best_model_accuracy,
        100.0 * b.cloud_accuracy
    );
    println!("target      held-out accuracy  held-out cloud  gap recovered  fitted on all: signal, local >=, difficulty <, agreement >=");
    let first_accuracy = records
        .iter()
        .filter(|r| !r.answers.is_empty())
        .map(|r| r.answers[0].correct as usize as f64)
        .sum::<f64>()
        / b.questions.max(1) as f64;
    for f in c.curve.iter().chain(std::iter::once(&c.fit)) {
        let target = match (f.target_cloud_share, f.target_accuracy) {
            (Some(s), _) => format!("cloud<={:.0}%", 100.0 * s),
            (_, Some(a)) => format!("acc>={:.0}%", 100.0 * a),
            _ => String::new(),
        };
        let is_fit = std::ptr::eq(f, &c.fit);
        println!(
            "{}{target:<10} {:>17} {:>15} {:>14}  {}, {}, {}, {}",
            if is_fit { "=> " } else { "   " },
            format!(
                "{}/{} {:.0}%",
                f.held_out.correct,
                f.held_out.n,
                100.0 * f.held_out.accuracy
            ),
            format!("{:.0}%", 100.0 * f.held_out.cloud_share),
            f.gap_recovered
                .map_or("-".into(), |g| format!("{:.0}%", 100.0 * g)),
            f.policy.signal.name(),
            f.policy.local_min_confidence,
            f.policy.local_max_difficulty,
            f.policy.swarm_min_agreement
        );
    }
    let original = std::fs::read_to_string(config_path)?;
    std::fs::write(
        out,
        calibrate::config_with_policy(&original, &c.fit.policy)?,
    )?;
    std::fs::write(plot, calibrate::curve_svg(&c, first_accuracy))?;
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&c)?)?;
    }
    println!("wrote {} and {}", out.display(), plot.display());
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn learn_command(
    config_path: &Path,
    config: &Config,
    source: &AnswerSource,
    target_cloud_share: f64,
    folds: usize,
    out: &Path,
    plot: &Path,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    use swarm_llm::{calibrate, learn};
    let records = load_records(config, source).await?;
    let opts = swarm_llm::route::softmax::FitOptions {
        l2: 0.01,
        steps: 1000,
    };
    let l = learn::learn(&records, config, target_cloud_share, folds, opts)?;
    let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}%", 100.0 * v));
    println!(
        "{} easy and hard questions; first model {} {:.1}%, cloud alone {:.1}%; the cloud turns {:.1}% from wrong to right; {:.1}% of first answers restate the question (to the cloud whatever the router says)",
        l.questions,
        l.first_model,
        100.0 * l.first_accuracy,
        100.0 * l.cloud_accuracy,
        100.0 * l.cloud_helps,
        100.0 * l.restating
    );
    println!(
        "AUROC for \"the cloud helps\" ({}-fold held-out): learned {}, first answer's doubt {}",
        l.folds,
        l.auroc_learned.map_or("-".into(), |a| format!("{a:.3}")),
        l.auroc_threshold.map_or("-".into(), |a| format!("{a:.3}"))
    );
    println!("router                        CPT(50%)  CPT(80%)  APGR");
    for r in &l.routers {
        println!(
            "{:<29} {:>8}  {:>8}  {}",
            r.name,
            pct(r.cpt50),
            pct(r.cpt80),
            r.apgr.map_or("-".into(), |a| format!("{a:.3}"))
        );
    }
    println!(
        "at the target cloud share {:.0}%, held-out: accuracy {:.1}% with {:.1}% sent to the cloud",
        100.0 * l.target_cloud_share,
        100.0 * l.held_out.accuracy,
        100.0 * l.held_out.cloud_share
    );
    for f in &l.held_out_by_form {
        let pgr = learn::gap_recovered(f.held_out.accuracy, f.first_accuracy, f.cloud_accuracy);
        println!(
            "  {} ({} questions): first model {:.1}%, cloud {:.1}%; held-out {:.1}% with {:.1}% sent to the cloud, gap recovered {}",
            f.form,
            f.questions,
            100.0 * f.first_accuracy,
            100.0 * f.cloud_accuracy,
            100.0 * f.held_out.accuracy,
            100.0 * f.held_out.cloud_share,
            pgr.map_or("-".into(), |g| format!("{g:.2}"))
        );
    }
    let policy = swarm_llm::route::policy::Policy {
        learned: Some(l.router.clone()),
        ..config.policy.clone()
    };
    let priors = learn::letter_priors(&records);
    for (model, prior) in &priors {
        match prior {
            Some(p) => println!("letter prior of {model} (A first): {p:?}"),
            None => println!("letter prior of {model}: too few four-option answers with a letter"),
        }
    }
    let original = std::fs::read_to_string(config_path)?;
    let with_policy = calibrate::config_with_policy(&original, &policy)?;
    std::fs::write(out, learn::with_letter_priors(&with_policy, &priors)?)?;
    std::fs::write(plot, learn::curves_svg(&l))?;
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_vec_pretty(&l)?)?;
    }
    println!("wrote {} and {}", out.display(), plot.display());
    Ok(())
}

async fn measure_command(config: &Config, source: &AnswerSource) -> anyhow::Result<()> {
    use swarm_llm::measure;
    let records = load_records(config, source).await?;
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

/// Runs `work` on a multi-threaded runtime, then waits for the model
/// threads to free their llama.cpp state before the process may exit.
fn progress_bar(what: &str, done: usize, total: usize, started: std::time::Instant) {
    let filled = 30 * done / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} {what}, {:.0} s",
        "#".repeat(filled),
        " ".repeat(30 - filled),
        started.elapsed().as_secs_f64()
    );
    if done == total {
        eprintln!();
    }
}

async fn safety_train_command(
    config: &Config,
    model: &str,
    data: &[PathBuf],
    out: &Path,
    max_lookalike_flags: f64,
    opts: swarm_llm::route::softmax::FitOptions,
    cache: Option<&Path>,
) -> anyhow::Result<()> {
    use swarm_llm::safety_eval;
    let Some(mc) = config.models.iter().find(|m| m.name == model) else {
        anyhow::bail!("no model named {model:?} in the config");
    };
    let mut examples = Vec::new();
    for path in data {
        examples.extend(safety_eval::read_set(path)?);
    }
    let handle = swarm_llm::inference::spawn_worker(
        mc.clone(),
        config.inference.system_prompt.clone(),
        true,
    )
    .await?;
    let started = std::time::Instant::now();
    let embeddings = safety_eval::embed_all(&handle, &examples, cache, |d, t| {
        progress_bar("questions embedded", d, t, started)
    })
    .await?;
    let encoder = swarm_llm::route::harm::EncoderId {
        description: format!(
            "{} ({})",
            mc.name,
            mc.path
                .file_name()
                .map_or_else(String::new, |f| f.to_string_lossy().into_owned())
        ),
        embedding_size: handle.info.embedding_size,
        parameters: handle.info.parameters,
        file_bytes: handle.info.file_bytes,
        prompt: handle.info.encoder_prompt,
    };
    // The budget for false flags is the whole check's, the rules' included.
    let rules = swarm_llm::route::safety::SafetyClassifier::new(&config.safety)?;
    let rules_flagged: Vec<bool> = examples
        .iter()
        .map(|e| rules.assess_readings(&e.prompt).flagged)
        .collect();
    let (head, report) = safety_eval::train(
        &examples,
        &embeddings,
        &rules_flagged,
        encoder,
        max_lookalike_flags,
        opts,
    )?;
    std::fs::write(out, serde_json::to_string(&head)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    println!("wrote {}", out.display());
    Ok(())
}

async fn safety_eval_command(
    config: &Config,
    workload: &[PathBuf],
    split: Option<swarm_llm::safety_eval::Split>,
    json: Option<&Path>,
    svg: Option<&Path>,
    mistakes: Option<&Path>,
) -> anyhow::Result<()> {
    use swarm_llm::safety_eval;
    let mut examples = Vec::new();
    for path in workload {
        examples.extend(safety_eval::read_set(path)?);
    }
    if let Some(split) = split {
        examples.retain(|e| safety_eval::split_of(&e.prompt) == split);
    }
    let models = service::load_models(config).await?;
    let screen = swarm_llm::safety_screen::SafetyScreen::new(config, &models)?;
    let started = std::time::Instant::now();
    let screened = safety_eval::screen_all(&screen, &examples, |d, t| {
        progress_bar("questions screened", d, t, started)
    })
    .await;
    let report = safety_eval::report(&screened);
    println!(
        "{:<32} {:>6} {:>8} {:>8} {:>10}",
        "group", "total", "flagged", "share", "category"
    );
    for g in &report.groups {
        println!(
            "{:<32} {:>6} {:>8} {:>7.1}% {:>10}",
            g.group,
            g.total,
            g.flagged,
            100.0 * g.flagged as f64 / g.total.max(1) as f64,
            if g.group == "lookalike" || g.group == "benign" {
                String::new()
            } else {
                format!("{}/{}", g.right_category, g.flagged)
            }
        );
    }
    println!(
        "harmful flagged: {}/{} ({:.1}%)",
        report.harmful_flagged,
        report.harmful_total,
        100.0 * report.harmful_flagged as f64 / report.harmful_total.max(1) as f64
    );
    println!(
        "safety check latency: p50 {:.1} ms, p95 {:.1} ms; resident memory {:.0} MiB (learned layer {})",
        report.latency_p50_ms,
        report.latency_p95_ms,
        safety_eval::rss_mib(),
        if screen.encoder().is_some() { "on" } else { "off" }
    );
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    if let Some(path) = mistakes {
        let mut lines = String::new();
        for s in screened.iter().filter(|s| s.is_mistake()) {
            lines += &(serde_json::to_string(s)? + "\n");
        }
        std::fs::write(path, lines)?;
    }
    if let Some(path) = svg {
        let threshold = config
            .safety
            .learned
            .threshold
            .or_else(|| {
                swarm_llm::safety_screen::load_head(&config.safety)
                    .ok()
                    .flatten()
                    .map(|h| h.threshold)
            })
            .unwrap_or(1.0);
        std::fs::write(path, safety_eval::curve_svg(&report, threshold))?;
    }
    Ok(())
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
