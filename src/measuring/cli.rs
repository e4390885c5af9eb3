//! The measuring commands' command line: their arguments and which body in
//! [`super::commands`] each one runs. Built only with the `measure` feature
//! (on by default, off in the firmware: `cargo build --no-default-features`).

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::calibrate::{Grid, Target};
use super::commands::{
    bench_models, calibrate_command, eval_command, learn_command, measure_command,
    safety_eval_command, safety_train_command, stream_command, AnswerSource, EvalOutputs,
    StreamSettings,
};
use crate::config::{Config, ConfigArg};
use crate::route::softmax::FitOptions;

/// A command-line argument that does not fit the config (exit code 2, as
/// for the arguments clap itself rejects).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Subcommand)]
pub enum MeasureCommand {
    /// Measure the uncertainty signals (AUROC per model) and replay the routing
    /// policy on a labelled workload.
    Signals {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        answers: AnswerSource,
    },
    /// Compare edge-only, swarm, swarm+cloud, cloud-only and a random router
    /// on a labelled workload: accuracy with 95% intervals, cloud share and
    /// traffic, latency per route, safety.
    Eval {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        answers: AnswerSource,
        /// Comma-separated subset of: edge-only, edge-only:MODEL, swarm,
        /// swarm+cloud, cloud-only, random.
        #[arg(long, default_value = super::eval::ALL_MODES)]
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
        #[command(flatten)]
        config: ConfigArg,
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
        /// Cross-validation folds.
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
    /// Replay recorded answers (from `eval --records`) in order as one stream
    /// through the router: the cloud share over every window with the live
    /// cut (`routing.cloud_share`) against fixed cuts, and accuracy; with
    /// --budget, the hourly budget's calls per quarter-hour with and without
    /// pacing. Prints Markdown.
    Stream {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        settings: StreamSettings,
    },
    /// Measure each configured model's prompt and decode speed on this board
    /// (median of several runs after a warm-up), e.g. to size threads or
    /// check GPU offload with --gpu-layers.
    BenchModel {
        #[command(flatten)]
        config: ConfigArg,
        /// Only these models (default: all).
        #[arg(long)]
        model: Vec<String>,
        /// Override every model's gpu_layers (needs a build with --features cuda).
        #[arg(long)]
        gpu_layers: Option<u32>,
        /// Override every model's thread count.
        #[arg(long)]
        threads: Option<u32>,
        /// Tokens to generate per run.
        #[arg(long, default_value_t = 128)]
        tokens: u32,
        /// Timed runs per model (the median is printed).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Train the learned harm check's head on labelled sets, with one
    /// configured model's embeddings; write it as JSON (see docs/safety.md).
    SafetyTrain {
        #[command(flatten)]
        config: ConfigArg,
        /// The configured model whose embeddings the head reads.
        #[arg(long)]
        model: String,
        /// Labelled sets (JSON lines with `prompt` and `harm` or `category`).
        #[arg(long = "data", required = true)]
        data: Vec<PathBuf>,
        /// The head (JSON) goes here.
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
        #[command(flatten)]
        config: ConfigArg,
        /// Labelled sets (JSON lines with `prompt` and `harm` or `category`).
        #[arg(long = "workload", required = true)]
        workload: Vec<PathBuf>,
        /// Only the questions of this split (test: held out from training).
        #[arg(long)]
        split: Option<super::safety_eval::Split>,
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
        /// Write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Draw the threshold curve (SVG) here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Write the questions it got wrong (harmful ones let through, benign
        /// ones flagged) here, one JSON object a line.
        #[arg(long)]
        mistakes: Option<PathBuf>,
    },
}

impl MeasureCommand {
    pub fn config_path(&self) -> &Path {
        match self {
            MeasureCommand::Signals { config, .. }
            | MeasureCommand::Eval { config, .. }
            | MeasureCommand::Calibrate { config, .. }
            | MeasureCommand::Stream { config, .. }
            | MeasureCommand::BenchModel { config, .. }
            | MeasureCommand::SafetyTrain { config, .. }
            | MeasureCommand::SafetyEval { config, .. } => &config.config,
        }
    }

    /// What the command logs: bench-model shows llama.cpp's load summary
    /// (offloaded layers, buffer sizes), which is part of its answer.
    pub fn log_filter(&self) -> &'static str {
        match self {
            MeasureCommand::BenchModel { .. } => "warn,llama-cpp-2=info",
            _ => "warn,llama-cpp-2=error",
        }
    }

    /// The cloud endpoint given on the command line, which replaces the configured one.
    fn cloud_url(&self) -> Option<String> {
        match self {
            MeasureCommand::Signals { answers, .. }
            | MeasureCommand::Eval { answers, .. }
            | MeasureCommand::Calibrate { answers, .. } => answers.cloud_url.clone(),
            MeasureCommand::SafetyEval { cloud_url, .. } => cloud_url.clone(),
            _ => None,
        }
    }

    /// Runs the command on the loaded config.
    pub async fn run(self, mut config: Config) -> anyhow::Result<()> {
        let path = self.config_path().to_owned();
        if let Some(url) = self.cloud_url() {
            config.cloud.get_or_insert_with(Default::default).url = url;
        }
        match self {
            MeasureCommand::Signals { answers, .. } => measure_command(&config, &answers).await,
            MeasureCommand::Eval {
                answers,
                modes,
                json,
                markdown,
                answers_out,
                ..
            } => {
                let outputs = EvalOutputs {
                    json,
                    markdown,
                    answers: answers_out,
                };
                eval_command(&config, &answers, &modes, &outputs).await
            }
            MeasureCommand::Calibrate {
                answers,
                target_cloud_share,
                target_accuracy,
                folds,
                wide,
                learn,
                out,
                plot,
                json,
                ..
            } => {
                let plot = plot.unwrap_or_else(|| out.with_extension("svg"));
                let target = match (target_cloud_share, target_accuracy) {
                    (Some(s), _) => Target::CloudShare(s),
                    (None, Some(a)) => Target::Accuracy(a),
                    (None, None) => unreachable!("clap requires one target"),
                };
                let json = json.as_deref();
                match target {
                    Target::CloudShare(share) if learn => {
                        learn_command(&path, &config, &answers, share, folds, &out, &plot, json)
                            .await
                    }
                    _ => {
                        let grid = if wide {
                            Grid::wide()
                        } else {
                            Grid::narrow(&config.policy)
                        };
                        calibrate_command(
                            &path, &config, &answers, target, folds, &grid, &out, &plot, json,
                        )
                        .await
                    }
                }
            }
            MeasureCommand::Stream { settings, .. } => stream_command(&config, &settings),
            MeasureCommand::BenchModel {
                model,
                gpu_layers,
                threads,
                tokens,
                runs,
                ..
            } => {
                select_models(&mut config, &model, gpu_layers, threads)?;
                bench_models(&config, tokens, runs).await
            }
            MeasureCommand::SafetyTrain {
                model,
                data,
                out,
                max_lookalike_flags,
                steps,
                l2,
                cache,
                ..
            } => {
                safety_train_command(
                    &config,
                    &model,
                    &data,
                    &out,
                    max_lookalike_flags,
                    FitOptions { l2, steps },
                    cache.as_deref(),
                )
                .await
            }
            MeasureCommand::SafetyEval {
                workload,
                split,
                rules_only,
                board_only,
                json,
                svg,
                mistakes,
                ..
            } => {
                if rules_only {
                    config.safety.learned.enabled = false;
                }
                if board_only {
                    config.safety.cloud_judge.enabled = false;
                }
                safety_eval_command(
                    &config,
                    &workload,
                    split,
                    json.as_deref(),
                    svg.as_deref(),
                    mistakes.as_deref(),
                )
                .await
            }
        }
    }
}

/// Keeps the models `bench-model` names (all when none is named), with the
/// thread and offload settings given on the command line.
fn select_models(
    config: &mut Config,
    names: &[String],
    gpu_layers: Option<u32>,
    threads: Option<u32>,
) -> Result<(), UsageError> {
    if let Some(unknown) = names
        .iter()
        .find(|n| !config.models.iter().any(|m| &m.name == *n))
    {
        return Err(UsageError(format!(
            "no model named {unknown:?} in the config"
        )));
    }
    config
        .models
        .retain(|m| names.is_empty() || names.contains(&m.name));
    for m in &mut config.models {
        m.gpu_layers = gpu_layers.unwrap_or(m.gpu_layers);
        m.threads = threads.unwrap_or(m.threads);
    }
    Ok(())
}
