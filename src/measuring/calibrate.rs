//! Calibration: fitting the policy's thresholds to a target cloud share (or
//! a target accuracy) on a labelled workload, with the figure that matters
//! measured on questions the fit did not see.
//!
//! The sweep replays the policy ([`measure::replay_one`]) on recorded
//! answers for every point of a grid: the confidence signal, the bar for
//! keeping the first answer, the hardest question kept local, and the
//! swarm's agreement bar. What the swarm says depends only on the signal and
//! the agreement bar, so it is computed once per pair. k-fold
//! cross-validation (folds stratified by category, seeded) fits on k-1 folds
//! and scores the held-out one; the pooled held-out accuracy and cloud share
//! are the honest figures. The thresholds written out are fitted on all the
//! questions.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;

use crate::config::Config;
use crate::measuring::measure::{self, Record, SwarmView};
use crate::measuring::plot::Plot;
use crate::measuring::workload::Category;
use crate::route::policy::{Policy, Route};
use crate::route::signals::Signal;

const SEED: u64 = 0xca11b;

/// What to fit for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The best accuracy with at most this share of questions sent to the cloud.
    CloudShare(f64),
    /// The lowest cloud share reaching at least this accuracy.
    Accuracy(f64),
}

/// The grid swept. Every combination is a candidate policy.
pub struct Grid {
    pub signals: Vec<Signal>,
    pub local_min_confidence: Vec<f32>,
    pub local_max_difficulty: Vec<f32>,
    pub swarm_min_agreement: Vec<f32>,
}

const AGREEMENT: [f32; 9] = [0.34, 0.4, 0.5, 0.6, 0.67, 0.75, 0.8, 0.9, 1.01];

impl Grid {
    /// Every signal and all four thresholds: the most freedom, and on a small
    /// workload the most overfitting (cross-validation shows how much).
    pub fn wide() -> Self {
        Self {
            signals: Signal::ALL.to_vec(),
            local_min_confidence: (0..=40).map(|i| i as f32 / 40.0).collect(),
            local_max_difficulty: vec![0.4, 0.6, 0.8, 1.0],
            swarm_min_agreement: AGREEMENT.to_vec(),
        }
    }

    /// The configured signal (chosen by its AUROC, `swarm-llm signals`) and
    /// difficulty bar; only the two thresholds that set the cloud share move.
    pub fn narrow(p: &Policy) -> Self {
        Self {
            signals: vec![p.signal],
            local_max_difficulty: vec![p.local_max_difficulty],
            ..Self::wide()
        }
    }
}

/// Right answers and cloud calls of one policy on a set of questions.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Score {
    pub n: usize,
    pub correct: usize,
    pub cloud: usize,
}

impl Score {
    pub fn accuracy(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.correct as f64 / self.n as f64
        }
    }

    pub fn cloud_share(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.cloud as f64 / self.n as f64
        }
    }

    fn add(&mut self, o: Score) {
        self.n += o.n;
        self.correct += o.correct;
        self.cloud += o.cloud;
    }
}

/// The easy and hard records, each candidate's outcome on each one
/// precomputed: (right, went to the cloud).
struct Sweep {
    candidates: Vec<Policy>,
    /// outcomes[candidate][question]
    outcomes: Vec<Vec<(bool, bool)>>,
}

impl Sweep {
    fn new(records: &[&Record], base: &Policy, grid: &Grid, weights: &[f32]) -> Sweep {
        let mut candidates = Vec::new();
        let mut outcomes = Vec::new();
        for &signal in &grid.signals {
            for &agreement in &grid.swarm_min_agreement {
                let views: Vec<SwarmView> = records
                    .iter()
                    .map(|r| measure::swarm_view(r, signal, agreement, weights))
                    .collect();
                for &local in &grid.local_min_confidence {
                    for &difficulty in &grid.local_max_difficulty {
                        let policy = Policy {
                            signal,
                            local_min_confidence: local,
                            local_max_difficulty: difficulty,
                            // The shortcut past the vote stays as configured,
                            // below the bar for keeping an answer.
                            cloud_below_confidence: base.cloud_below_confidence.min(local),
                            swarm_min_agreement: agreement,
                            learned: None,
                        };
                        outcomes.push(
                            records
                                .iter()
                                .zip(&views)
                                .map(|(r, v)| {
                                    let replay = measure::replay_one(r, v, &policy, true);
                                    (replay.correct == Some(true), replay.route == Route::Cloud)
                                })
                                .collect(),
                        );
                        candidates.push(policy);
                    }
                }
            }
        }
        Sweep {
            candidates,
            outcomes,
        }
    }

    fn score(&self, candidate: usize, questions: &[usize]) -> Score {
        let o = &self.outcomes[candidate];
        questions.iter().fold(
            Score {
                n: questions.len(),
                ..Score::default()
            },
            |mut s, &q| {
                s.correct += o[q].0 as usize;
                s.cloud += o[q].1 as usize;
                s
            },
        )
    }

    /// The candidate that best meets `target` on `questions`: among those
    /// that meet it, the most accurate (cloud share target) or the one with
    /// the fewest cloud calls (accuracy target); when none meets it, the one
    /// closest to it. Ties go to the other measure, then the earlier candidate.
    fn fit(&self, target: Target, questions: &[usize]) -> usize {
        let scores: Vec<Score> = (0..self.candidates.len())
            .map(|c| self.score(c, questions))
            .collect();
        let right = |s: &Score| s.correct as i64;
        let cloud = |s: &Score| -(s.cloud as i64);
        let key = |s: &Score| match target {
            Target::CloudShare(max) if s.cloud_share() <= max + 1e-9 => (1, right(s), cloud(s)),
            Target::CloudShare(_) => (0, cloud(s), right(s)),
            Target::Accuracy(min) if s.accuracy() >= min - 1e-9 => (1, cloud(s), right(s)),
            Target::Accuracy(_) => (0, right(s), cloud(s)),
        };
        (0..scores.len())
            .max_by(|&a, &b| key(&scores[a]).cmp(&key(&scores[b])).then(b.cmp(&a)))
            .expect("the grid is not empty")
    }
}

/// k folds of question indices, stratified by category and shuffled with a fixed seed.
pub(crate) fn folds(records: &[&Record], k: usize) -> Vec<Vec<usize>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(SEED);
    let mut folds = vec![Vec::new(); k];
    let mut next = 0;
    for cat in [Category::Easy, Category::Hard] {
        let mut of: Vec<usize> = (0..records.len())
            .filter(|&i| records[i].category == cat)
            .collect();
        of.shuffle(&mut rng);
        for i in of {
            folds[next % k].push(i);
            next += 1;
        }
    }
    folds
}

/// One calibration: the thresholds fitted on everything, and how a fit
/// fares on questions it did not see.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub target_cloud_share: Option<f64>,
    pub target_accuracy: Option<f64>,
    pub policy: Policy,
    /// The fitted policy on all the questions it was fitted on.
    pub in_sample: ScoreReport,
    /// Pooled over the held-out folds.
    pub held_out: ScoreReport,
    /// Share of the gap between the best small model and the cloud that the
    /// held-out accuracy closes (RouteLLM's performance gap recovered).
    pub gap_recovered: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ScoreReport {
    pub n: usize,
    pub correct: usize,
    pub accuracy: f64,
    pub cloud_share: f64,
}

impl From<Score> for ScoreReport {
    fn from(s: Score) -> Self {
        Self {
            n: s.n,
            correct: s.correct,
            accuracy: s.accuracy(),
            cloud_share: s.cloud_share(),
        }
    }
}

/// The figures every fit is compared with, on the easy and hard questions.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    pub questions: usize,
    pub best_model: String,
    pub best_model_accuracy: f64,
    pub cloud_accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Calibration {
    pub folds: usize,
    pub baselines: Baselines,
    pub fit: Fit,
    /// The same fit for cloud-share targets from 0 to 1, for the curve.
    pub curve: Vec<Fit>,
}

#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    #[error("calibration needs easy or hard questions with every model's and the cloud's answers")]
    NoAnswers,
    #[error("{0} folds for {1} questions: use between 2 and the number of questions")]
    Folds(usize, usize),
    #[error("cannot fit the learned router: {0}")]
    Fit(String),
}

/// The easy and hard records with every model's and the cloud's answers,
/// the questions a fit learns from; checked to split into `k` folds.
pub(crate) fn fitting_questions(
    records: &[Record],
    k: usize,
) -> Result<Vec<&Record>, CalibrateError> {
    let questions: Vec<&Record> = records
        .iter()
        .filter(|r| r.category != Category::Safety && !r.answers.is_empty() && r.cloud.is_some())
        .collect();
    if questions.is_empty() {
        return Err(CalibrateError::NoAnswers);
    }
    if k < 2 || k > questions.len() {
        return Err(CalibrateError::Folds(k, questions.len()));
    }
    Ok(questions)
}

/// Fits the thresholds of `config`'s policy for `target` on `records`.
pub fn calibrate(
    records: &[Record],
    config: &Config,
    target: Target,
    k: usize,
    grid: &Grid,
) -> Result<Calibration, CalibrateError> {
    let questions = fitting_questions(records, k)?;
    let weights: Vec<f32> = config.models.iter().map(|m| m.vote_weight).collect();
    let sweep = Sweep::new(&questions, &config.policy, grid, &weights);
    let folds = folds(&questions, k);
    let all: Vec<usize> = (0..questions.len()).collect();

    let n = questions.len() as f64;
    let best = crate::measuring::eval::best_model(records);
    let best_right = questions.iter().filter(|r| r.answers[best].correct).count() as f64;
    let cloud_right = questions
        .iter()
        .filter(|r| r.cloud.as_ref().is_some_and(|c| c.correct))
        .count() as f64;
    let baselines = Baselines {
        questions: questions.len(),
        best_model: questions[0].answers[best].model.clone(),
        best_model_accuracy: best_right / n,
        cloud_accuracy: cloud_right / n,
    };

    let fit_for = |target: Target| {
        let mut held_out = Score::default();
        for (i, test) in folds.iter().enumerate() {
            let train: Vec<usize> = folds
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, f)| f.iter().copied())
                .collect();
            let chosen = sweep.fit(target, &train);
            held_out.add(sweep.score(chosen, test));
        }
        let chosen = sweep.fit(target, &all);
        let gap = baselines.cloud_accuracy - baselines.best_model_accuracy;
        Fit {
            target_cloud_share: match target {
                Target::CloudShare(s) => Some(s),
                Target::Accuracy(_) => None,
            },
            target_accuracy: match target {
                Target::Accuracy(a) => Some(a),
                Target::CloudShare(_) => None,
            },
            policy: sweep.candidates[chosen].clone(),
            in_sample: sweep.score(chosen, &all).into(),
            held_out: held_out.into(),
            gap_recovered: (gap > 0.0)
                .then(|| (held_out.accuracy() - baselines.best_model_accuracy) / gap),
        }
    };
    let curve = (0..=20)
        .map(|i| fit_for(Target::CloudShare(i as f64 * 0.05)))
        .collect();
    Ok(Calibration {
        folds: k,
        fit: fit_for(target),
        baselines,
        curve,
    })
}

/// The original config text with its `[policy]` table replaced by `policy`,
/// so paths keep their `${VARIABLES}` and the file stays usable as is.
pub fn config_with_policy(original_toml: &str, policy: &Policy) -> Result<String, toml::de::Error> {
    let mut doc: toml::Table = toml::from_str(original_toml)?;
    let mut policy = toml::Value::try_from(policy).expect("a policy serialises");
    // The thresholds are f32: written through f64 they would read
    // 0.3499999940395355 for 0.35.
    for (_, value) in policy
        .as_table_mut()
        .expect("a policy is a table")
        .iter_mut()
    {
        if let toml::Value::Float(f) = value {
            *f = (*f * 1e4).round() / 1e4;
        }
    }
    doc.insert("policy".into(), policy);
    Ok(toml::to_string(&doc).expect("a table serialises"))
}

/// Accuracy against cloud share as an SVG plot: the held-out curve, the
/// chosen fit, the best small model, the cloud alone, and the random
/// router's line between the first model and the cloud.
pub fn curve_svg(c: &Calibration, first_model_accuracy: f64) -> String {
    let mut plot = Plot::new(
        &format!(
            "swarm-llm: accuracy against cloud share, {}-fold cross-validated; dashed: random router",
            c.folds
        ),
        "share of questions sent to the cloud (held-out)",
        "accuracy on easy and hard questions (held-out)",
    );
    plot.line(
        &[
            (0.0, first_model_accuracy),
            (1.0, c.baselines.cloud_accuracy),
        ],
        "#999",
        true,
        0.0,
    );
    let points: Vec<(f64, f64)> = c
        .curve
        .iter()
        .map(|f| (f.held_out.cloud_share, f.held_out.accuracy))
        .collect();
    plot.line(&points, "#1f77b4", false, 3.0);
    plot.mark(
        0.0,
        c.baselines.best_model_accuracy,
        "#2ca02c",
        &format!("best small model ({})", c.baselines.best_model),
    );
    plot.mark(1.0, c.baselines.cloud_accuracy, "#d62728", "cloud only");
    plot.mark(
        c.fit.held_out.cloud_share,
        c.fit.held_out.accuracy,
        "#ff7f0e",
        "fitted (held-out)",
    );
    plot.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measuring::measure::{fixtures, ModelAnswer};

    fn answer(model: &str, text: &str, p: f32, correct: bool) -> ModelAnswer {
        fixtures::answer(model, text, p, correct, 10.0)
    }

    /// Questions where the first model's confidence tells right from wrong:
    /// confident ones (two in three) are right, unsure ones are wrong, the
    /// second model is always wrong and the cloud always right.
    fn separable(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| {
                let right = i % 3 != 0;
                let p = if right { 0.9 } else { 0.2 };
                Record {
                    id: format!("q{i}"),
                    category: if i % 2 == 0 {
                        Category::Easy
                    } else {
                        Category::Hard
                    },
                    lookalike: false,
                    prompt: "What is the value".into(),
                    safety_score: 0.0,
                    safety_flagged: false,
                    safety_action: crate::route::harm::SafetyAction::Allow,
                    safety_reasons: vec![],
                    difficulty: 0.2,
                    answers: vec![
                        answer("a", &format!("{i} V"), p, right),
                        answer("b", &format!("{} V", i + 1000), 0.5, false),
                    ],
                    cloud: Some(answer("cloud", &format!("{i} V"), 1.0, true)),
                    cloud_tokens: 40,
                    cloud_bytes: 400,
                }
            })
            .collect()
    }

    fn config() -> Config {
        fixtures::two_models()
    }

    #[test]
    fn a_separating_signal_is_fitted_and_holds_out_of_sample() {
        let records = separable(40);
        let c = calibrate(
            &records,
            &config(),
            Target::CloudShare(0.5),
            5,
            &Grid::wide(),
        )
        .unwrap();
        assert_eq!(c.baselines.best_model_accuracy, 26.0 / 40.0);
        assert_eq!(c.baselines.cloud_accuracy, 1.0);
        // The unsure third goes to the cloud, the rest stays: all right.
        assert_eq!(c.fit.held_out.correct, 40);
        assert_eq!(c.fit.held_out.cloud_share, 14.0 / 40.0);
        assert_eq!(c.fit.gap_recovered, Some(1.0));
        assert!(c.fit.policy.local_min_confidence > 0.2);
        assert!(c.fit.policy.local_min_confidence <= 0.9);
        // No cloud allowed: the first model's accuracy, nothing better.
        let none = &c.curve[0];
        assert_eq!(none.held_out.cloud_share, 0.0);
        assert!(none.held_out.accuracy <= 26.0 / 40.0 + 1e-9);
    }

    #[test]
    fn an_accuracy_target_takes_the_fewest_cloud_calls() {
        let records = separable(40);
        let c = calibrate(&records, &config(), Target::Accuracy(1.0), 4, &Grid::wide()).unwrap();
        assert_eq!(c.fit.in_sample.correct, 40);
        assert_eq!(c.fit.in_sample.cloud_share, 14.0 / 40.0);
    }

    #[test]
    fn an_unreachable_target_gets_the_closest_fit() {
        let records = separable(40);
        let refs: Vec<&Record> = records.iter().collect();
        let sweep = Sweep::new(&refs, &Policy::default(), &Grid::wide(), &[1.0, 1.0]);
        let all: Vec<usize> = (0..40).collect();
        // Some candidates send everything to the cloud, none can beat 100%
        // accuracy: the fewest cloud calls that reach the best accuracy.
        let best = sweep.score(sweep.fit(Target::Accuracy(1.5), &all), &all);
        assert_eq!((best.correct, best.cloud), (40, 14));
        // A negative share is out of reach: the fewest cloud calls there are.
        let fewest = sweep.score(sweep.fit(Target::CloudShare(-1.0), &all), &all);
        assert_eq!(fewest.cloud, 0);
    }

    #[test]
    fn folds_cover_every_question_once() {
        let records = separable(23);
        let refs: Vec<&Record> = records.iter().collect();
        let f = folds(&refs, 5);
        let mut all: Vec<usize> = f.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert!(f.iter().all(|f| f.len() >= 4));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let records = separable(4);
        assert!(matches!(
            calibrate(
                &records,
                &config(),
                Target::CloudShare(0.3),
                5,
                &Grid::wide()
            ),
            Err(CalibrateError::Folds(5, 4))
        ));
        assert!(matches!(
            calibrate(&[], &config(), Target::CloudShare(0.3), 5, &Grid::wide()),
            Err(CalibrateError::NoAnswers)
        ));
    }

    #[test]
    fn the_written_config_keeps_everything_but_the_policy() {
        let original = "node = \"n\"\n[policy]\nlocal_min_confidence = 0.9\n\n[[models]]\nname = \"m\"\npath = \"${SWARM_LLM_MODELS}/m.gguf\"\n";
        let policy = Policy {
            local_min_confidence: 0.35,
            ..Policy::default()
        };
        let out = config_with_policy(original, &policy).unwrap();
        let parsed = Config::parse(&out).unwrap();
        assert_eq!(parsed.policy, policy);
        assert!(out.contains("local_min_confidence = 0.35\n"), "{out}");
        assert!(out.contains("${SWARM_LLM_MODELS}/m.gguf"));
    }

    #[test]
    fn the_curve_plot_is_an_svg_with_every_point() {
        let records = separable(20);
        let c = calibrate(
            &records,
            &config(),
            Target::CloudShare(0.3),
            4,
            &Grid::wide(),
        )
        .unwrap();
        let svg = curve_svg(&c, 0.5);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("r=\"3\"").count(), 21);
    }
}
