//! Evaluation: the SWARM-LLM paper's comparison on a labelled workload, with
//! what the paper leaves out (confidence intervals, a random router with the
//! same cloud share, the cloud traffic saved, latency per route).
//!
//! Every question is put once to each small model and to the cloud
//! ([`measure::collect`]: real inference, the workload's scorer); each mode
//! is then derived from those answers by the policy's own pure functions,
//! so the modes differ only in routing, never in luck of generation:
//!
//! - `edge-only:NAME`: one small model answers everything; `edge-only` is
//!   the best of them on the easy and hard questions.
//! - `swarm`: the configured policy with no cloud.
//! - `swarm+cloud`: the configured policy.
//! - `cloud-only`: the cloud answers everything.
//! - `random`: the first model or the cloud, the cloud for a random set of
//!   questions as large as `swarm+cloud` sends it (the baseline a router must
//!   beat to be worth its signals).
//!
//! Safety questions are never generated for; in every mode they go through
//! the same safety gates, with the cloud available or not as the mode has it.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::config::Config;
use crate::measuring::measure::{self, Record, Replay};
use crate::measuring::stats::percentile;
use crate::measuring::workload::Category;
use crate::route::policy::{self, Gates, Route};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("unknown mode {0:?}: use edge-only, edge-only:MODEL, swarm, swarm+cloud, cloud-only or random")]
    UnknownMode(String),
    #[error("mode {0} needs the cloud's answers: configure [cloud] or pass --cloud-url")]
    NeedsCloud(String),
}

/// One way of answering the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One small model, by its index in the config.
    EdgeOnly(usize),
    /// The small model that is right most often.
    BestEdge,
    Swarm,
    SwarmCloud,
    CloudOnly,
    Random,
}

impl Mode {
    pub fn name(self, models: &[String]) -> String {
        match self {
            Mode::EdgeOnly(i) => format!("edge-only:{}", models[i]),
            Mode::BestEdge => "edge-only".into(),
            Mode::Swarm => "swarm".into(),
            Mode::SwarmCloud => "swarm+cloud".into(),
            Mode::CloudOnly => "cloud-only".into(),
            Mode::Random => "random".into(),
        }
    }

    fn needs_cloud(self) -> bool {
        matches!(self, Mode::SwarmCloud | Mode::CloudOnly | Mode::Random)
    }
}

/// Reads a comma-separated mode list; `edge-only` brings each small model
/// alone as well as the best of them.
pub fn parse_modes(list: &str, models: &[String]) -> Result<Vec<Mode>, EvalError> {
    let mut modes = Vec::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "edge-only" => {
                modes.extend((0..models.len()).map(Mode::EdgeOnly));
                modes.push(Mode::BestEdge);
            }
            "swarm" => modes.push(Mode::Swarm),
            "swarm+cloud" => modes.push(Mode::SwarmCloud),
            "cloud-only" => modes.push(Mode::CloudOnly),
            "random" => modes.push(Mode::Random),
            other => match other
                .strip_prefix("edge-only:")
                .and_then(|m| models.iter().position(|n| n == m))
            {
                Some(i) => modes.push(Mode::EdgeOnly(i)),
                None => return Err(EvalError::UnknownMode(other.into())),
            },
        }
    }
    modes.dedup();
    Ok(modes)
}

pub const ALL_MODES: &str = "edge-only,swarm,swarm+cloud,cloud-only,random";

/// Seed of the random router's draw, so a report can be reproduced.
const RANDOM_SEED: u64 = 0x5eed;

fn answered(r: &Record) -> bool {
    !r.answers.is_empty()
}

/// The route of a safety question under the gates, cloud available or not.
fn safety_route(r: &Record, cloud_available: bool) -> Route {
    policy::before_generation(Gates {
        safety: r.safety_action,
        cloud_allowed: true,
        cloud_available,
    })
    .route()
}

/// Index of the small model that is right most often (the first on a tie).
pub fn best_model(records: &[Record]) -> usize {
    let (per_model, _, _) = measure::baselines(records);
    per_model
        .iter()
        .enumerate()
        .max_by_key(|(m, (_, right))| (*right, std::cmp::Reverse(*m)))
        .map_or(0, |(m, _)| m)
}

/// Each question answered by small model `m` alone.
fn edge_only(records: &[Record], m: usize) -> Vec<Replay> {
    records
        .iter()
        .map(|r| match r.answers.get(m) {
            Some(a) => Replay::answered(r, Route::Local, a, a.latency_ms),
            None => Replay::unanswered(r, safety_route(r, false)),
        })
        .collect()
}

fn cloud_only(records: &[Record]) -> Vec<Replay> {
    records
        .iter()
        .map(|r| match &r.cloud {
            Some(c) if answered(r) => Replay::answered(r, Route::Cloud, c, c.latency_ms),
            _ => match safety_route(r, true) {
                // Nothing is answered locally in this mode.
                Route::Local => Replay::unanswered(r, Route::Cloud),
                route => Replay::unanswered(r, route),
            },
        })
        .collect()
}

/// The first model, or the cloud for `cloud_count` questions drawn at random.
fn random_router(records: &[Record], cloud_count: usize) -> Vec<Replay> {
    let mut candidates: Vec<usize> = (0..records.len())
        .filter(|&i| answered(&records[i]))
        .collect();
    candidates.shuffle(&mut rand::rngs::StdRng::seed_from_u64(RANDOM_SEED));
    candidates.truncate(cloud_count);
    records
        .iter()
        .enumerate()
        .map(|(i, r)| match (&r.cloud, r.answers.first()) {
            (Some(c), Some(_)) if candidates.contains(&i) => {
                Replay::answered(r, Route::Cloud, c, c.latency_ms)
            }
            (_, Some(a)) => Replay::answered(r, Route::Local, a, a.latency_ms),
            (_, None) => Replay::unanswered(r, safety_route(r, true)),
        })
        .collect()
}

/// The answers of every mode, in the order asked.
pub fn run_modes(
    records: &[Record],
    config: &Config,
    modes: &[Mode],
) -> Result<Vec<(Mode, Vec<Replay>)>, EvalError> {
    let names: Vec<String> = config.models.iter().map(|m| m.name.clone()).collect();
    let has_cloud = records
        .iter()
        .filter(|r| answered(r))
        .all(|r| r.cloud.is_some());
    let weights: Vec<f32> = config.models.iter().map(|m| m.vote_weight).collect();
    // swarm+cloud's answers, computed once: that mode and the random router use them.
    let mut full: Option<Vec<Replay>> = None;
    let mut full = || {
        full.get_or_insert_with(|| measure::simulate(records, &config.policy, &weights, true))
            .clone()
    };
    let mut out = Vec::with_capacity(modes.len());
    for &mode in modes {
        if mode.needs_cloud() && !has_cloud {
            return Err(EvalError::NeedsCloud(mode.name(&names)));
        }
        let replays = match mode {
            Mode::EdgeOnly(m) => edge_only(records, m),
            Mode::BestEdge => edge_only(records, best_model(records)),
            Mode::Swarm => measure::simulate(records, &config.policy, &weights, false),
            Mode::SwarmCloud => full(),
            Mode::CloudOnly => cloud_only(records),
            Mode::Random => {
                let cloud = full()
                    .iter()
                    .filter(|r| r.correct.is_some() && r.route == Route::Cloud)
                    .count();
                random_router(records, cloud)
            }
        };
        out.push((mode, replays));
    }
    Ok(out)
}

/// The 95% Wilson score interval of `successes` out of `n`.
pub fn wilson(successes: usize, n: usize) -> [f64; 2] {
    if n == 0 {
        return [0.0, 1.0];
    }
    let z = 1.959_963_984_540_054_f64;
    let (n, p) = (n as f64, successes as f64 / n as f64);
    let z2n = z * z / n;
    let centre = (p + z2n / 2.0) / (1.0 + z2n);
    let half = z * (p * (1.0 - p) / n + z2n / (4.0 * n)).sqrt() / (1.0 + z2n);
    [(centre - half).max(0.0), (centre + half).min(1.0)]
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Accuracy {
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub ci95: [f64; 2],
}

impl Accuracy {
    fn of(correct: usize, n: usize) -> Self {
        Self {
            n,
            correct,
            accuracy: if n == 0 {
                0.0
            } else {
                correct as f64 / n as f64
            },
            ci95: wilson(correct, n),
        }
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

impl Latency {
    fn of(mut values: Vec<f64>) -> Self {
        values.sort_by(f64::total_cmp);
        Self {
            p50: percentile(&values, 0.5),
            p95: percentile(&values, 0.95),
        }
    }
}

/// One mode's figures. Shares and latencies are over the easy and hard
/// questions; `categories` also holds `all` (easy and hard together) and
/// `safety`, where "correct" means handled safely (flagged, then sent to the
/// cloud with the safety notice or refused).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModeReport {
    pub cloud_share: f64,
    pub cloud_tokens: u64,
    pub cloud_bytes: u64,
    /// Share of cloud-only's tokens this mode does not send (None without cloud-only).
    pub cloud_token_cut: Option<f64>,
    pub safety_handled: f64,
    pub lookalike_flagged: usize,
    pub latency_ms: Latency,
    pub latency_ms_by_route: BTreeMap<String, Latency>,
    pub routes: BTreeMap<String, usize>,
    pub categories: BTreeMap<String, Accuracy>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub workload: String,
    /// Mode names in the order they were asked for.
    pub order: Vec<String>,
    pub modes: BTreeMap<String, ModeReport>,
}

fn mode_report(replays: &[Replay], cloud_only_tokens: Option<u64>) -> ModeReport {
    let questions: Vec<&Replay> = replays
        .iter()
        .filter(|r| r.category != Category::Safety)
        .collect();
    let mut categories = BTreeMap::new();
    for cat in [Category::Easy, Category::Hard] {
        let of: Vec<_> = questions.iter().filter(|r| r.category == cat).collect();
        let right = of.iter().filter(|r| r.correct == Some(true)).count();
        categories.insert(cat.as_str().to_string(), Accuracy::of(right, of.len()));
    }
    let right = questions.iter().filter(|r| r.correct == Some(true)).count();
    categories.insert("all".into(), Accuracy::of(right, questions.len()));
    let summary = measure::summarise(replays);
    categories.insert(
        "safety".into(),
        Accuracy::of(summary.safety_handled, summary.safety_items),
    );
    let cloud_tokens: u64 = questions.iter().map(|r| r.cloud_tokens).sum();
    let mut by_route: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for r in &questions {
        if let Some(l) = r.latency_ms {
            by_route.entry(r.route.as_str().into()).or_default().push(l);
        }
    }
    ModeReport {
        cloud_share: if questions.is_empty() {
            0.0
        } else {
            summary.cloud as f64 / questions.len() as f64
        },
        cloud_tokens,
        cloud_bytes: questions.iter().map(|r| r.cloud_bytes).sum(),
        cloud_token_cut: cloud_only_tokens
            .filter(|&t| t > 0)
            .map(|t| 1.0 - cloud_tokens as f64 / t as f64),
        safety_handled: if summary.safety_items == 0 {
            1.0
        } else {
            summary.safety_handled as f64 / summary.safety_items as f64
        },
        lookalike_flagged: summary.lookalikes_flagged,
        latency_ms: Latency::of(questions.iter().filter_map(|r| r.latency_ms).collect()),
        latency_ms_by_route: by_route
            .into_iter()
            .map(|(k, v)| (k, Latency::of(v)))
            .collect(),
        routes: summary
            .routes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        categories,
    }
}

/// The report over every mode's answers.
pub fn report(workload: &str, runs: &[(Mode, Vec<Replay>)], models: &[String]) -> Report {
    let cloud_only_tokens = runs
        .iter()
        .find(|(m, _)| *m == Mode::CloudOnly)
        .map(|(_, r)| {
            r.iter()
                .filter(|r| r.category != Category::Safety)
                .map(|r| r.cloud_tokens)
                .sum()
        });
    Report {
        workload: workload.to_string(),
        order: runs.iter().map(|(m, _)| m.name(models)).collect(),
        modes: runs
            .iter()
            .map(|(m, r)| (m.name(models), mode_report(r, cloud_only_tokens)))
            .collect(),
    }
}

/// One line of `--answers`.
#[derive(Debug, Serialize)]
pub struct AnswerLine<'a> {
    pub id: &'a str,
    pub mode: &'a str,
    pub answer: Option<&'a str>,
    pub route: &'a str,
    pub safety_flagged: bool,
    pub cloud_tokens: u64,
    pub latency_ms: Option<f64>,
}

pub fn answer_lines<'a>(
    mode: &'a str,
    replays: &'a [Replay],
) -> impl Iterator<Item = AnswerLine<'a>> {
    replays.iter().map(move |r| AnswerLine {
        id: &r.id,
        mode,
        answer: r.correct.map(|_| r.answer.as_str()),
        route: r.route.as_str(),
        safety_flagged: r.safety_flagged,
        cloud_tokens: r.cloud_tokens,
        latency_ms: r.latency_ms,
    })
}

fn pct(x: f64) -> String {
    format!("{:.0}%", 100.0 * x)
}

fn acc_cell(a: Option<&Accuracy>) -> String {
    match a {
        Some(a) if a.n > 0 => format!(
            "{}/{} {} [{}-{}]",
            a.correct,
            a.n,
            pct(a.accuracy),
            pct(a.ci95[0]),
            pct(a.ci95[1])
        ),
        _ => "-".into(),
    }
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.0}"))
}

const HEADER: [&str; 11] = [
    "mode",
    "easy",
    "hard",
    "easy+hard",
    "safety handled",
    "cloud",
    "cloud tokens",
    "token cut",
    "p50 ms",
    "p95 ms",
    "routes local/swarm/cloud",
];

fn rows(r: &Report) -> Vec<[String; 11]> {
    r.order
        .iter()
        .map(|name| {
            let m = &r.modes[name];
            let route = |k: &str| m.routes.get(k).copied().unwrap_or(0);
            [
                name.clone(),
                acc_cell(m.categories.get("easy")),
                acc_cell(m.categories.get("hard")),
                acc_cell(m.categories.get("all")),
                acc_cell(m.categories.get("safety")),
                pct(m.cloud_share),
                m.cloud_tokens.to_string(),
                m.cloud_token_cut.map_or("-".into(), pct),
                ms(m.latency_ms.p50),
                ms(m.latency_ms.p95),
                format!("{}/{}/{}", route("local"), route("swarm"), route("cloud")),
            ]
        })
        .collect()
}

/// The report as an aligned table for the terminal.
pub fn render_table(r: &Report) -> String {
    let rows = rows(r);
    let mut widths = HEADER.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(HEADER.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n") + "\n"
}

/// The report as a Markdown table (accuracy as right/total, percent and the
/// 95% Wilson interval).
pub fn render_markdown(r: &Report) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        HEADER.join(" | "),
        " --- |".repeat(HEADER.len())
    );
    for row in rows(r) {
        out += &format!("| {} |\n", row.join(" | "));
    }
    let lookalikes: Vec<String> = r
        .order
        .iter()
        .map(|n| format!("{n} {}", r.modes[n].lookalike_flagged))
        .collect();
    out += &format!(
        "\nLookalike questions flagged as unsafe: {}.\n",
        lookalikes.join(", ")
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values() {
        // Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662.
        let [lo, hi] = wilson(81, 263);
        assert!(
            (lo - 0.2553).abs() < 5e-4 && (hi - 0.3662).abs() < 5e-4,
            "{lo} {hi}"
        );
        // All right still leaves room below; none right leaves room above.
        let [lo, hi] = wilson(10, 10);
        assert!(
            (lo - 0.7225).abs() < 5e-4 && (hi - 1.0).abs() < 1e-12,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 10)[0], 0.0);
        assert_eq!(wilson(0, 0), [0.0, 1.0]);
    }

    use crate::measuring::measure::fixtures::{self, answer};
    use crate::measuring::measure::ModelAnswer;

    /// The shared fixture's record in category `cat`, with a cloud answer
    /// that took 1 s and 50 tokens (the figures the tests below read).
    fn record(id: &str, cat: Category, answers: Vec<ModelAnswer>, cloud: bool) -> Record {
        Record {
            category: cat,
            cloud: Some(answer("cloud", "3 A", 1.0, cloud, 1000.0)),
            cloud_tokens: 50,
            cloud_bytes: 500,
            ..fixtures::record(id, answers, cloud)
        }
    }

    /// A small fixed set: a confident right answer, an unsure one the swarm
    /// fixes, a split one the cloud fixes, and a safety question.
    fn records() -> Vec<Record> {
        let safety = Record {
            id: "s1".into(),
            category: Category::Safety,
            safety_flagged: true,
            safety_action: crate::route::harm::SafetyAction::Cloud,
            answers: vec![],
            cloud: None,
            cloud_tokens: 0,
            cloud_bytes: 0,
            ..record("s1", Category::Safety, vec![], false)
        };
        vec![
            record(
                "e1",
                Category::Easy,
                vec![
                    answer("a", "3 A", 0.95, true, 100.0),
                    answer("b", "5 A", 0.9, false, 50.0),
                ],
                true,
            ),
            record(
                "h1",
                Category::Hard,
                vec![
                    answer("a", "5 A", 0.3, false, 100.0),
                    answer("b", "5 amps", 0.9, false, 50.0),
                ],
                true,
            ),
            record(
                "h2",
                Category::Hard,
                vec![
                    answer("a", "7 A", 0.3, false, 100.0),
                    answer("b", "9 A", 0.3, true, 50.0),
                ],
                true,
            ),
            safety,
        ]
    }

    fn config() -> Config {
        let mut c = crate::measuring::measure::fixtures::two_models();
        c.policy.local_min_confidence = 0.5;
        c.policy.swarm_min_agreement = 0.6;
        c
    }

    #[test]
    fn modes_parse_and_expand() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert_eq!(
            parse_modes("edge-only,swarm+cloud", &names).unwrap(),
            vec![
                Mode::EdgeOnly(0),
                Mode::EdgeOnly(1),
                Mode::BestEdge,
                Mode::SwarmCloud
            ]
        );
        assert_eq!(
            parse_modes("edge-only:b", &names).unwrap(),
            vec![Mode::EdgeOnly(1)]
        );
        assert!(parse_modes("edge-only:c", &names).is_err());
        assert!(parse_modes("swarm,oracle", &names).is_err());
    }

    #[test]
    fn report_on_a_fixed_set_of_answers() {
        let config = config();
        let modes = parse_modes(ALL_MODES, &["a".into(), "b".into()]).unwrap();
        let runs = run_modes(&records(), &config, &modes).unwrap();
        let report = report("fixed.jsonl", &runs, &["a".into(), "b".into()]);
        let m = |n: &str| &report.modes[n];
        assert_eq!(
            report.order[..3],
            ["edge-only:a", "edge-only:b", "edge-only"]
        );
        // a is right once, b once: the first wins the tie.
        assert_eq!(m("edge-only").categories["all"].correct, 1);
        assert_eq!(m("edge-only:b").categories["hard"].correct, 1);
        // e1 local (confident), h1 swarm (agrees on 5 A, wrongly), h2 cloud (split).
        assert_eq!(
            m("swarm+cloud").routes,
            BTreeMap::from([
                ("local".into(), 1),
                ("swarm".into(), 1),
                ("cloud".into(), 1)
            ])
        );
        assert_eq!(m("swarm+cloud").categories["all"].correct, 2);
        assert!((m("swarm+cloud").cloud_share - 1.0 / 3.0).abs() < 1e-9);
        assert_eq!(m("swarm+cloud").cloud_tokens, 50);
        assert_eq!(m("swarm+cloud").cloud_token_cut, Some(1.0 - 50.0 / 150.0));
        // The split question, without a cloud: the swarm's best guess.
        assert_eq!(m("swarm").routes.get("cloud"), None);
        assert_eq!(m("cloud-only").categories["all"].correct, 3);
        assert_eq!(m("cloud-only").cloud_share, 1.0);
        // The random router sends as many to the cloud as swarm+cloud does.
        assert_eq!(m("random").routes.get("cloud"), Some(&1));
        // Latency of h2 on the cloud route: both models voted, then the cloud.
        assert_eq!(
            m("swarm+cloud").latency_ms_by_route["cloud"].p50,
            Some(1150.0)
        );
        // The flagged safety question is sent to the cloud (or refused without one).
        assert_eq!(m("swarm").safety_handled, 1.0);
        assert_eq!(m("edge-only").safety_handled, 1.0);
        assert_eq!(m("cloud-only").categories["safety"].correct, 1);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["modes"]["swarm+cloud"]["categories"]["hard"]["n"], 2);
        assert_eq!(json["modes"]["swarm+cloud"]["latency_ms"]["p50"], 150.0);
        assert!(render_table(&report).contains("swarm+cloud"));
        assert!(render_markdown(&report).starts_with("| mode |"));
    }

    #[test]
    fn modes_that_need_the_cloud_say_so() {
        let mut recs = records();
        for r in &mut recs {
            r.cloud = None;
        }
        let err = run_modes(&recs, &config(), &[Mode::Random]).unwrap_err();
        assert!(err.to_string().contains("--cloud-url"));
        assert!(run_modes(&recs, &config(), &[Mode::Swarm]).is_ok());
    }
}
