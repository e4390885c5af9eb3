//! The bodies of the measuring commands (`signals`, `eval`, `calibrate`, `stream`,
//! `bench-model`, `safety-train`, `safety-eval`): they load or collect the
//! answers, call the measuring modules and print or write what they found.
//! `main.rs` only parses the command line and picks one.

use std::path::{Path, PathBuf};

use super::{calibrate, eval, learn, measure, safety_eval, workload};
use crate::config::Config;
use crate::service;

/// Where the models' answers to a workload come from.
#[derive(clap::Args)]
pub struct AnswerSource {
    /// A labelled workload (JSON lines) to put to every model and the cloud.
    #[arg(long, required_unless_present = "from_records")]
    pub workload: Option<PathBuf>,
    /// Override the configured cloud endpoint (base URL up to /v1).
    #[arg(long)]
    pub cloud_url: Option<String>,
    /// Save the collected answers here, to reuse with --from-records.
    #[arg(long)]
    pub records: Option<PathBuf>,
    /// Reuse answers collected earlier instead of running the models.
    #[arg(long, conflicts_with = "workload")]
    pub from_records: Option<PathBuf>,
}

pub async fn bench_models(config: &Config, tokens: u32, runs: usize) -> anyhow::Result<()> {
    let models = service::load_models(config).await?;
    println!(
        "model      threads gpu_layers prompt_tok  gen_tok  prompt_tok/s  decode_tok/s  ttft_ms"
    );
    for (m, c) in models.iter().zip(&config.models) {
        let s = measure::bench_model(m, tokens, runs).await?;
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
pub async fn load_records(
    config: &Config,
    source: &AnswerSource,
) -> anyhow::Result<Vec<measure::Record>> {
    use anyhow::Context;
    let records: Vec<measure::Record> = match (&source.from_records, &source.workload) {
        (Some(path), _) => serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )?,
        (None, Some(path)) => {
            let items = workload::open(path)?.collect::<Result<Vec<_>, _>>()?;
            let models = service::load_models(config).await?;
            let cloud = cloud_client(config)?;
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

/// Where `eval` writes its report besides the table on stdout.
pub struct EvalOutputs {
    pub json: Option<PathBuf>,
    pub markdown: Option<PathBuf>,
    pub answers: Option<PathBuf>,
}

pub async fn eval_command(
    config: &Config,
    source: &AnswerSource,
    modes: &str,
    out: &EvalOutputs,
) -> anyhow::Result<()> {
    use std::io::Write;
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
pub async fn calibrate_command(
    config_path: &Path,
    config: &Config,
    source: &AnswerSource,
    target: calibrate::Target,
    folds: usize,
    grid: &calibrate::Grid,
    out: &Path,
    plot: &Path,
    json: Option<&Path>,
) -> anyhow::Result<()> {
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
pub async fn learn_command(
    config_path: &Path,
    config: &Config,
    source: &AnswerSource,
    target_cloud_share: f64,
    folds: usize,
    out: &Path,
    plot: &Path,
    json: Option<&Path>,
) -> anyhow::Result<()> {
    let records = load_records(config, source).await?;
    let opts = crate::route::softmax::FitOptions {
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
    let policy = crate::route::policy::Policy {
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

pub async fn measure_command(config: &Config, source: &AnswerSource) -> anyhow::Result<()> {
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

/// Redraws a one-line progress bar on stderr when it is a terminal; into a
/// log or CI output, a plain line every tenth of the way instead of a `\r`
/// line per step.
fn progress_bar(what: &str, done: usize, total: usize, started: std::time::Instant) {
    use std::io::IsTerminal;
    let elapsed = started.elapsed().as_secs_f64();
    if !std::io::stderr().is_terminal() {
        let tenth = |n: usize| 10 * n / total.max(1);
        if done > 0 && (done == total || done == 1 || tenth(done) != tenth(done - 1)) {
            eprintln!("{done}/{total} {what}, {elapsed:.0} s");
        }
        return;
    }
    let filled = 30 * done / total.max(1);
    eprint!(
        "\r[{}{}] {done}/{total} {what}, {:.0} s",
        "#".repeat(filled),
        " ".repeat(30 - filled),
        elapsed
    );
    if done == total {
        eprintln!();
    }
}

pub async fn safety_train_command(
    config: &Config,
    model: &str,
    data: &[PathBuf],
    out: &Path,
    max_lookalike_flags: f64,
    opts: crate::route::softmax::FitOptions,
    cache: Option<&Path>,
) -> anyhow::Result<()> {
    let Some(mc) = config.models.iter().find(|m| m.name == model) else {
        anyhow::bail!("no model named {model:?} in the config");
    };
    let mut examples = Vec::new();
    for path in data {
        examples.extend(safety_eval::read_set(path)?);
    }
    let handle =
        crate::inference::spawn_worker(mc.clone(), config.inference.system_prompt.clone(), true)
            .await?;
    let started = std::time::Instant::now();
    let embeddings = safety_eval::embed_all(&handle, &examples, cache, |d, t| {
        progress_bar("questions embedded", d, t, started)
    })
    .await?;
    let encoder = crate::route::harm::EncoderId {
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
    let rules = crate::route::safety::SafetyClassifier::new(&config.safety)?;
    let rules_flagged: Vec<bool> = examples
        .iter()
        .map(|e| rules.assess(&e.prompt).flagged)
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

/// The configured cloud's client, if one is configured.
fn cloud_client(config: &Config) -> anyhow::Result<Option<crate::cloud::CloudClient>> {
    Ok(match &config.cloud {
        Some(c) => Some(crate::cloud::CloudClient::new(
            c.clone(),
            crate::cloud::api_key_from_environment(),
        )?),
        None => None,
    })
}

pub async fn safety_eval_command(
    config: &Config,
    workload: &[PathBuf],
    split: Option<safety_eval::Split>,
    json: Option<&Path>,
    svg: Option<&Path>,
    mistakes: Option<&Path>,
) -> anyhow::Result<()> {
    let mut examples = Vec::new();
    for path in workload {
        examples.extend(safety_eval::read_set(path)?);
    }
    if let Some(split) = split {
        examples.retain(|e| safety_eval::split_of(&e.prompt) == split);
    }
    let models = service::load_models(config).await?;
    let screen = crate::safety_screen::SafetyScreen::new(config, &models)?;
    let cloud = cloud_client(config)?.filter(|_| config.safety.cloud_judge.enabled);
    let started = std::time::Instant::now();
    let screened = safety_eval::screen_all(&screen, cloud.as_ref(), &examples, |d, t| {
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
    if cloud.is_some() {
        let b = &report.board;
        println!(
            "cloud judge asked on {} questions; the board alone flagged harmful {}/{} ({:.1}%), lookalikes {}/{} ({:.1}%)",
            report.judged,
            b.harmful_flagged,
            report.harmful_total,
            100.0 * b.harmful_flagged as f64 / report.harmful_total.max(1) as f64,
            b.lookalikes_flagged,
            b.lookalikes_total,
            100.0 * b.lookalikes_flagged as f64 / b.lookalikes_total.max(1) as f64
        );
    }
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
                crate::safety_screen::load_head(&config.safety)
                    .ok()
                    .flatten()
                    .map(|h| h.threshold)
            })
            .unwrap_or(1.0);
        std::fs::write(path, safety_eval::curve_svg(&report, threshold))?;
    }
    Ok(())
}

/// What `stream` replays and how.
#[derive(clap::Args)]
pub struct StreamSettings {
    /// Records, in stream order (repeat the option).
    #[arg(long = "from-records", required = true)]
    pub records: Vec<PathBuf>,
    /// Questions whose id starts with this come after all others: the
    /// mix shifts to them (repeat the option).
    #[arg(long)]
    pub then: Vec<String>,
    /// The share to hold; default: the config's routing.cloud_share.
    #[arg(long)]
    pub cloud_share: Option<f64>,
    /// Questions per window the share is reported over.
    #[arg(long, default_value_t = 200)]
    pub window: usize,
    /// Also replay on a clock: this many cloud calls an hour allowed,
    /// questions at three times that rate.
    #[arg(long)]
    pub budget: Option<u32>,
    /// The share wanted in the budget replay (above a third, so the
    /// budget binds).
    #[arg(long, default_value_t = 0.5)]
    pub budget_share: f64,
}

/// Replays recorded answers as one stream (`swarm-llm stream`) and prints
/// the cloud share per window and accuracy for the live cut and fixed ones,
/// and with `--budget` the calls per quarter-hour with and without pacing,
/// as Markdown.
pub fn stream_command(config: &Config, s: &StreamSettings) -> anyhow::Result<()> {
    use super::stream::{self, Cut};
    use anyhow::Context;
    let mut records = Vec::new();
    for path in &s.records {
        let part: Vec<measure::Record> = serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        records.extend(part);
    }
    let Some(cloud_share) = s.cloud_share.or(config.routing.cloud_share.map(f64::from)) else {
        return Err(super::cli::UsageError(
            "give --cloud-share or set routing.cloud_share in the config".into(),
        )
        .into());
    };
    let records = stream::shift_to(records, &s.then);
    let shift = records
        .iter()
        .position(|r| s.then.iter().any(|p| r.id.starts_with(p.as_str())));
    let policy = &config.policy;
    let Some(fitted) = policy.learned.as_ref().map(|l| l.cloud_at) else {
        anyhow::bail!("the config has no learned router ([policy.learned]) whose cut to hold");
    };
    let weights: Vec<f32> = config.models.iter().map(|m| m.vote_weight).collect();
    let target = cloud_share as f32;
    let online = stream::run(&records, policy, &weights, Cut::Online(target), None);
    let same = stream::fixed_cut_for_share(&records, policy, &weights, online.share());
    let rows = [
        (format!("live cut, cloud_share {target}"), online),
        (
            format!("fixed: the fitted cut {fitted:.3}"),
            stream::run(&records, policy, &weights, Cut::Fixed(fitted), None),
        ),
        (
            format!("fixed: {same:.3}, the live cut's share in hindsight"),
            stream::run(&records, policy, &weights, Cut::Fixed(same), None),
        ),
    ];
    let half = shift.unwrap_or(records.len() / 2);
    println!(
        "{} questions; {}; windows of {} from question {}\n",
        records.len(),
        shift.map_or("no shift".to_string(), |i| format!(
            "the mix shifts at question {i}"
        )),
        s.window,
        s.window
    );
    println!("| router | cloud share | before / after the shift | right | windows within {:.0} +/- 4 points | lowest - highest window |", target * 100.0);
    println!("|---|---|---|---|---|---|");
    for (name, run) in &rows {
        let windows = run.window_shares(s.window, s.window);
        let inside = windows
            .iter()
            .filter(|w| (**w - cloud_share).abs() <= 0.04 + 1e-9)
            .count();
        let range = windows
            .iter()
            .fold(None, |r: Option<(f64, f64)>, w| {
                Some(r.map_or((*w, *w), |(lo, hi)| (lo.min(*w), hi.max(*w))))
            })
            .map_or("-".to_string(), |(lo, hi)| {
                format!("{:.1}% - {:.1}%", 100.0 * lo, 100.0 * hi)
            });
        let part = |from: usize, to: usize| {
            let sent = &run.sent[from..to];
            100.0 * sent.iter().filter(|x| **x).count() as f64 / sent.len().max(1) as f64
        };
        let (right, scored) = run.accuracy();
        println!(
            "| {name} | {:.1}% | {:.1}% / {:.1}% | {right}/{scored} ({:.1}%) | {inside}/{} | {range} |",
            100.0 * run.share(),
            part(0, half),
            part(half, records.len()),
            100.0 * right as f64 / scored.max(1) as f64,
            windows.len(),
        );
    }
    if let Some(budget) = s.budget {
        print_budget_pacing(&records, config, &weights, budget, s.budget_share as f32);
    }
    Ok(())
}

/// The budget scenario: questions at three times the budget's rate, a share
/// that wants more than the budget; calls per quarter-hour, hard limit only
/// against paced.
fn print_budget_pacing(
    records: &[measure::Record],
    config: &Config,
    weights: &[f32],
    budget: u32,
    share: f32,
) {
    use super::stream::{self, Clock, Cut};
    let gap = std::time::Duration::from_secs_f64(3600.0 / (3.0 * f64::from(budget)));
    let per_quarter = (3 * budget as usize) / 4;
    let runs = [false, true].map(|paced| {
        let clock = Clock {
            gap,
            calls_per_hour: budget,
            paced,
        };
        stream::run(
            records,
            &config.policy,
            weights,
            Cut::Online(share),
            Some(clock),
        )
    });
    println!(
        "\nBudget {budget} calls an hour, {} questions an hour, cloud_share {share}: calls per quarter-hour ({per_quarter} questions each)\n",
        3 * budget
    );
    println!("| hour | quarter | hard limit only | paced |");
    println!("|---|---|---|---|");
    let [hard, paced] = runs.map(|r| r.calls_per(per_quarter));
    for (i, (h, p)) in hard.iter().zip(&paced).enumerate() {
        println!("| {} | {} | {h} | {p} |", i / 4 + 1, i % 4 + 1);
    }
}
