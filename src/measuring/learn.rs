//! `calibrate --learn`: fitting the learned router ([`LearnedRouter`]) on
//! recorded answers, and the curves routers are judged by.
//!
//! A router is judged as RouteLLM judges them: accuracy against the share of
//! questions sent to the cloud, from the first model alone (0%) to the cloud
//! alone (100%). The performance gap recovered at a share, PGR = (accuracy -
//! first model's) / (cloud's - first model's), summarises a point; CPT(x) is
//! the cloud share needed to recover x of the gap; APGR is the area under the
//! PGR curve (0.5 for a random router).
//!
//! The learned router's curve comes from k-fold cross-validation: each
//! question is scored by a model fitted on the other folds, and questions go
//! to the cloud from the highest score down. The threshold router sends the
//! first model's least confident answers first (the policy's signal); the
//! oracle sends exactly the questions the cloud turns right, the bound no
//! router can pass.

use serde::Serialize;

use crate::config::Config;
use crate::measuring::calibrate::{folds, CalibrateError};
use crate::measuring::measure::{first_answer, Record};
use crate::measuring::plot::Plot;
use crate::route::learned::{LearnedRouter, FEATURES};
use crate::route::signals::auroc;
use crate::route::softmax::{FitOptions, Softmax};

/// One point of a router's curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub cloud_share: f64,
    pub accuracy: f64,
}

/// The curve of a router that sends questions to the cloud in order of
/// `priority`, highest first. Questions of equal priority go together: a
/// router cannot tell them apart, so between two groups the curve is the
/// straight line a random order among them would give on average.
pub fn ranked_curve(priority: &[f32], local_right: &[bool], cloud_right: &[bool]) -> Vec<Point> {
    let n = priority.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| priority[b].total_cmp(&priority[a]));
    let mut right = local_right.iter().filter(|&&r| r).count() as i64;
    let mut points = vec![Point {
        cloud_share: 0.0,
        accuracy: right as f64 / n.max(1) as f64,
    }];
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && priority[order[j]] == priority[order[i]] {
            let q = order[j];
            right += cloud_right[q] as i64 - local_right[q] as i64;
            j += 1;
        }
        points.push(Point {
            cloud_share: j as f64 / n as f64,
            accuracy: right as f64 / n as f64,
        });
        i = j;
    }
    points
}

/// The share of the gap between the first model and the cloud that
/// `accuracy` closes; None when the cloud is no better.
pub fn gap_recovered(accuracy: f64, first: f64, cloud: f64) -> Option<f64> {
    (cloud > first).then(|| (accuracy - first) / (cloud - first))
}

/// The smallest cloud share at which the curve recovers `x` of the gap
/// (interpolated between points); None if it never does.
pub fn cloud_share_to_recover(curve: &[Point], first: f64, cloud: f64, x: f64) -> Option<f64> {
    let pgr = |p: &Point| gap_recovered(p.accuracy, first, cloud);
    if pgr(curve.first()?)? >= x {
        return Some(curve[0].cloud_share);
    }
    curve.windows(2).find_map(|w| {
        let (a, b) = (pgr(&w[0])?, pgr(&w[1])?);
        (a < x && b >= x)
            .then(|| w[0].cloud_share + (x - a) / (b - a) * (w[1].cloud_share - w[0].cloud_share))
    })
}

/// The area under the PGR curve over cloud shares 0 to 1 (trapezoids).
pub fn average_gap_recovered(curve: &[Point], first: f64, cloud: f64) -> Option<f64> {
    let mut area = 0.0;
    for w in curve.windows(2) {
        let a = gap_recovered(w[0].accuracy, first, cloud)?;
        let b = gap_recovered(w[1].accuracy, first, cloud)?;
        area += 0.5 * (a + b) * (w[1].cloud_share - w[0].cloud_share);
    }
    Some(area)
}

/// One router's curve and its summary figures.
#[derive(Debug, Clone, Serialize)]
pub struct RouterCurve {
    pub name: String,
    pub curve: Vec<Point>,
    /// Cloud share to recover 50% and 80% of the gap.
    pub cpt50: Option<f64>,
    pub cpt80: Option<f64>,
    pub apgr: Option<f64>,
}

impl RouterCurve {
    fn new(name: &str, curve: Vec<Point>, first: f64, cloud: f64) -> Self {
        Self {
            name: name.to_string(),
            cpt50: cloud_share_to_recover(&curve, first, cloud, 0.5),
            cpt80: cloud_share_to_recover(&curve, first, cloud, 0.8),
            apgr: average_gap_recovered(&curve, first, cloud),
            curve,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Learned {
    pub folds: usize,
    pub questions: usize,
    pub first_model: String,
    pub first_accuracy: f64,
    pub cloud_accuracy: f64,
    /// Share of the questions the cloud turns from wrong to right.
    pub cloud_helps: f64,
    /// Share whose first answer restates the question: sent to the cloud
    /// before the router is asked.
    pub restating: f64,
    /// AUROC for "the cloud helps" of the held-out learned score and of the
    /// first answer's doubt (1 - the policy's confidence signal).
    pub auroc_learned: Option<f64>,
    pub auroc_threshold: Option<f64>,
    /// Learned, threshold, random and oracle.
    pub routers: Vec<RouterCurve>,
    pub target_cloud_share: f64,
    /// The fitted router's thresholds applied to held-out folds at the target.
    pub held_out: Point,
    /// The same, for the free-form and the multiple-choice questions apart.
    pub held_out_by_form: Vec<FormFigures>,
    /// Fitted on every question, thresholds for the target share.
    pub router: LearnedRouter,
}

/// The figures of one form of question (free-form or multiple choice).
#[derive(Debug, Clone, Serialize)]
pub struct FormFigures {
    pub form: String,
    pub questions: usize,
    pub first_accuracy: f64,
    pub cloud_accuracy: f64,
    pub held_out: Point,
}

/// Each model's letter prior: its mean letter distribution over the
/// recorded four-option questions it named a letter for (Batch Calibration,
/// Zhou et al. 2024: the bias measured on real questions, not on a
/// content-free one). None for a model with fewer than 20 such answers.
pub fn letter_priors(records: &[Record]) -> Vec<(String, Option<Vec<f32>>)> {
    let Some(first) = records.iter().find(|r| !r.answers.is_empty()) else {
        return vec![];
    };
    (0..first.answers.len())
        .map(|m| {
            let rows: Vec<&Vec<f32>> = records
                .iter()
                .filter_map(|r| r.answers.get(m)?.options.as_ref())
                .filter(|o| o.len() == 4)
                .collect();
            let prior = (rows.len() >= 20).then(|| {
                let mut sum = [0f32; 4];
                for row in &rows {
                    for (s, p) in sum.iter_mut().zip(row.iter()) {
                        *s += p / rows.len() as f32;
                    }
                }
                let total: f32 = sum.iter().sum();
                sum.iter()
                    .map(|s| (s / total * 1e4).round() / 1e4)
                    .collect()
            });
            (first.answers[m].model.clone(), prior)
        })
        .collect()
}

/// The config text with each named model's `letter_prior` set.
pub fn with_letter_priors(
    toml_text: &str,
    priors: &[(String, Option<Vec<f32>>)],
) -> Result<String, toml::de::Error> {
    let mut doc: toml::Table = toml::from_str(toml_text)?;
    if let Some(toml::Value::Array(models)) = doc.get_mut("models") {
        for m in models.iter_mut().filter_map(toml::Value::as_table_mut) {
            let name = m
                .get("name")
                .and_then(toml::Value::as_str)
                .map(str::to_string);
            if let Some((_, Some(prior))) = priors.iter().find(|(n, _)| Some(n) == name.as_ref()) {
                let values = prior
                    .iter()
                    .map(|&p| toml::Value::Float((p as f64 * 1e4).round() / 1e4));
                m.insert("letter_prior".into(), toml::Value::Array(values.collect()));
            }
        }
    }
    Ok(toml::to_string(&doc).expect("a table serialises"))
}

/// The score from which the router sends questions to the cloud so that,
/// with the `forced` ones that go there whatever their score (answers that
/// restate the question), `share` of all of them do (as near as ties allow).
fn cut_for_share(scores: &[f32], forced: &[bool], share: f64) -> f32 {
    let mut sorted: Vec<f32> = scores
        .iter()
        .zip(forced)
        .filter(|(_, &f)| !f)
        .map(|(&s, _)| s)
        .collect();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let wanted = (share * scores.len() as f64).round() as usize;
    let already = scores.len() - sorted.len();
    let m = wanted.saturating_sub(already).min(sorted.len());
    match m {
        0 => 1.0,
        m if m == sorted.len() => 0.0,
        m => 0.5 * (sorted[m - 1] + sorted[m]),
    }
}

/// Fits the learned router on `records` for a target cloud share, with
/// k-fold cross-validated curves for it and the baselines.
pub fn learn(
    records: &[Record],
    config: &Config,
    target_cloud_share: f64,
    k: usize,
    opts: FitOptions,
) -> Result<Learned, CalibrateError> {
    let questions = crate::measuring::calibrate::fitting_questions(records, k)?;
    let n = questions.len();
    let x: Vec<Vec<f32>> = questions
        .iter()
        .map(|r| first_answer(r).features())
        .collect();
    let local_right: Vec<bool> = questions.iter().map(|r| r.answers[0].correct).collect();
    let cloud_right: Vec<bool> = questions
        .iter()
        .map(|r| r.cloud.as_ref().is_some_and(|c| c.correct))
        .collect();
    let helps: Vec<bool> = (0..n).map(|i| cloud_right[i] && !local_right[i]).collect();
    // The policy sends these to the cloud before the router is asked, so the
    // router neither learns from them nor counts them in its share, and
    // every router's curve sends them first.
    let forced: Vec<bool> = questions
        .iter()
        .map(|r| !r.first_answers_question())
        .collect();
    let forced_first = |score: f32, i: usize| if forced[i] { f32::INFINITY } else { score };

    let all: Vec<usize> = (0..n).collect();
    let mut held_out_score = vec![0f32; n];
    let mut sent = vec![false; n];
    for test in folds(&questions, k) {
        let train: Vec<usize> = (0..n).filter(|i| !test.contains(i)).collect();
        let (model, cut) = fit_router(&train, &x, &helps, &forced, target_cloud_share, opts)?;
        for &i in &test {
            held_out_score[i] = forced_first(model.predict(&x[i])[1], i);
            sent[i] = held_out_score[i] >= cut;
        }
    }
    let share_of = |members: &[usize], f: &dyn Fn(usize) -> bool| {
        members.iter().filter(|&&i| f(i)).count() as f64 / members.len() as f64
    };
    let held_out_among = |members: &[usize]| Point {
        cloud_share: share_of(members, &|i| sent[i]),
        accuracy: share_of(members, &|i| {
            if sent[i] {
                cloud_right[i]
            } else {
                local_right[i]
            }
        }),
    };
    let by_form = [("free-form", false), ("multiple choice", true)]
        .into_iter()
        .filter_map(|(form, choice)| {
            let members: Vec<usize> = (0..n)
                .filter(|&i| offers_options(&x[i]) == choice)
                .collect();
            (!members.is_empty()).then(|| FormFigures {
                form: form.to_string(),
                questions: members.len(),
                first_accuracy: share_of(&members, &|i| local_right[i]),
                cloud_accuracy: share_of(&members, &|i| cloud_right[i]),
                held_out: held_out_among(&members),
            })
        })
        .collect();
    let (model, cut) = fit_router(&all, &x, &helps, &forced, target_cloud_share, opts)?;
    let router = LearnedRouter {
        features: FEATURES.iter().map(|f| f.to_string()).collect(),
        cloud_at: cut,
        vote_at: cut,
        model,
    };

    let rate = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / n as f64;
    let (first, cloud) = (rate(&local_right), rate(&cloud_right));
    let signal = config.policy.signal;
    let doubt: Vec<f32> = questions
        .iter()
        .enumerate()
        .map(|(i, r)| forced_first(1.0 - signal.confidence(&r.answers[0].uncertainty), i))
        .collect();
    let outcomes = Outcomes {
        local_right: &local_right,
        cloud_right: &cloud_right,
        helps: &helps,
    };
    let routers = router_curves(&outcomes, &held_out_score, &doubt, signal.name());
    let samples =
        |s: &[f32]| -> Vec<(f32, bool)> { s.iter().copied().zip(helps.iter().copied()).collect() };
    Ok(Learned {
        folds: k,
        questions: n,
        first_model: questions[0].answers[0].model.clone(),
        first_accuracy: first,
        cloud_accuracy: cloud,
        cloud_helps: rate(&helps),
        restating: rate(&forced),
        auroc_learned: auroc(&samples(&held_out_score)),
        auroc_threshold: auroc(&samples(&doubt)),
        routers,
        target_cloud_share,
        held_out: held_out_among(&all),
        held_out_by_form: by_form,
        router,
    })
}

/// Per question: whether the first model and the cloud are right, and
/// whether the cloud helps (right where the first model is wrong).
struct Outcomes<'a> {
    local_right: &'a [bool],
    cloud_right: &'a [bool],
    helps: &'a [bool],
}

/// The curves routers are judged by, from held-out scores: the learned
/// router, the threshold router (`doubt`: the first answer's lack of
/// confidence by `signal`), the random router and the oracle.
fn router_curves(
    o: &Outcomes<'_>,
    learned: &[f32],
    doubt: &[f32],
    signal: &str,
) -> Vec<RouterCurve> {
    let rate = |v: &[bool]| v.iter().filter(|&&b| b).count() as f64 / v.len() as f64;
    let (first, cloud) = (rate(o.local_right), rate(o.cloud_right));
    let curve = |name: &str, scores: &[f32]| {
        RouterCurve::new(
            name,
            ranked_curve(scores, o.local_right, o.cloud_right),
            first,
            cloud,
        )
    };
    let oracle: Vec<f32> = o.helps.iter().map(|&h| h as u8 as f32).collect();
    let random = vec![
        Point {
            cloud_share: 0.0,
            accuracy: first,
        },
        Point {
            cloud_share: 1.0,
            accuracy: cloud,
        },
    ];
    vec![
        curve("learned", learned),
        curve(&format!("threshold ({signal})"), doubt),
        RouterCurve::new("random", random, first, cloud),
        curve("oracle", &oracle),
    ]
}

/// The router fitted on the questions `idx` that reach it (not `forced`),
/// and the score from which it sends `share` of `idx` to the cloud.
///
/// With both free-form and multiple-choice questions among them, each form
/// gets the share on its own: the choice questions' scores are shifted (on
/// the logit scale, through the `offers_options` input) until the cut that
/// sends `share` of them equals the free-form one. A single cut would give
/// each form whatever share the mix of the fitting data implies (on 257
/// MMLU and 45 dev questions, 26% and 53%), while a site's traffic is
/// mostly of one form and its cloud budget must hold for it.
fn fit_router(
    idx: &[usize],
    x: &[Vec<f32>],
    helps: &[bool],
    forced: &[bool],
    share: f64,
    opts: FitOptions,
) -> Result<(Softmax, f32), CalibrateError> {
    let reach: Vec<usize> = idx.iter().copied().filter(|&i| !forced[i]).collect();
    let mut model = LearnedRouter::fit(
        &reach.iter().map(|&i| x[i].clone()).collect::<Vec<_>>(),
        &reach.iter().map(|&i| helps[i]).collect::<Vec<_>>(),
        opts,
    )
    .map_err(|e| CalibrateError::Fit(e.to_string()))?;
    let offers = offers_options_index();
    let cut_among = |members: &[usize]| {
        let scores: Vec<f32> = members.iter().map(|&i| model.predict(&x[i])[1]).collect();
        let f: Vec<bool> = members.iter().map(|&i| forced[i]).collect();
        cut_for_share(&scores, &f, share)
    };
    let cut_of_form = |choice: bool| {
        let form: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| offers_options(&x[i]) == choice)
            .collect();
        (!form.is_empty()).then(|| cut_among(&form))
    };
    let cuts = (cut_of_form(false), cut_of_form(true));
    let logit = |p: f32| (p / (1.0 - p)).ln();
    match cuts {
        (Some(free), Some(choice))
            if [free, choice].iter().all(|c| *c > 0.0 && *c < 1.0)
                && model.scale[offers] != 0.0 =>
        {
            // p = sigmoid(z_cloud - z_keep); adding d to z_cloud where the
            // input is 1 and nothing where it is 0 moves those logits by d.
            let d = logit(free) - logit(choice);
            let (mean, scale) = (model.mean[offers], model.scale[offers]);
            model.weights[1][offers] += d / scale;
            model.bias[1] += d * mean;
            Ok((model, free))
        }
        (Some(cut), None) | (None, Some(cut)) => Ok((model, cut)),
        // A form whose cut sends none or all of it: no shift can match it.
        _ => {
            let cut = cut_among(idx);
            Ok((model, cut))
        }
    }
}

/// Where the router's `offers_options` input sits in a row of features.
fn offers_options_index() -> usize {
    FEATURES
        .iter()
        .position(|&f| f == "offers_options")
        .expect("a feature of the router")
}

/// Whether a row of features is a question that offers options.
fn offers_options(row: &[f32]) -> bool {
    row[offers_options_index()] > 0.5
}

/// Accuracy against cloud share for every router, as an SVG plot.
pub fn curves_svg(l: &Learned) -> String {
    let mut plot = Plot::new(
        &format!(
            "swarm-llm routers: accuracy against cloud share on {} questions, {}-fold cross-validated",
            l.questions, l.folds
        ),
        "share of questions sent to the cloud",
        &format!("accuracy (first model {} alone at 0%)", l.first_model),
    );
    for (router, (colour, dashed)) in l.routers.iter().zip([
        ("#1f77b4", false),
        ("#ff7f0e", false),
        ("#999", true),
        ("#2ca02c", true),
    ]) {
        let points: Vec<(f64, f64)> = router
            .curve
            .iter()
            .map(|p| (p.cloud_share, p.accuracy))
            .collect();
        plot.line(&points, colour, dashed, 0.0);
        let label = match (router.apgr, router.cpt50) {
            (Some(a), Some(c)) => {
                format!("{}: APGR {:.2}, CPT(50%) {:.0}%", router.name, a, 100.0 * c)
            }
            (Some(a), None) => format!("{}: APGR {:.2}", router.name, a),
            _ => router.name.clone(),
        };
        let mid = &router.curve[router.curve.len() / 2];
        plot.mark(mid.cloud_share, mid.accuracy, colour, &label);
    }
    plot.mark(
        l.held_out.cloud_share,
        l.held_out.accuracy,
        "#d62728",
        "learned at the target (held-out)",
    );
    plot.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_ranked_curve_runs_from_the_first_model_to_the_cloud() {
        // Two questions the cloud fixes, one it breaks, one both get right.
        let local = [false, false, true, true];
        let cloud = [true, true, false, true];
        let c = ranked_curve(&[0.9, 0.8, 0.1, 0.2], &local, &cloud);
        let acc: Vec<f64> = c.iter().map(|p| p.accuracy).collect();
        assert_eq!(acc, vec![0.5, 0.75, 1.0, 1.0, 0.75]);
        assert!(close(c.last().unwrap().cloud_share, 1.0));
        // Ties go together: one step over all four.
        let flat = ranked_curve(&[0.5; 4], &local, &cloud);
        assert_eq!(flat.len(), 2);
        assert!(close(flat[1].accuracy, 0.75));
    }

    #[test]
    fn gap_figures_of_the_random_and_a_perfect_router() {
        let random = [
            Point {
                cloud_share: 0.0,
                accuracy: 0.4,
            },
            Point {
                cloud_share: 1.0,
                accuracy: 0.8,
            },
        ];
        assert!(close(
            cloud_share_to_recover(&random, 0.4, 0.8, 0.5).unwrap(),
            0.5
        ));
        assert!(close(
            cloud_share_to_recover(&random, 0.4, 0.8, 0.8).unwrap(),
            0.8
        ));
        assert!(close(
            average_gap_recovered(&random, 0.4, 0.8).unwrap(),
            0.5
        ));
        // The whole gap at 20%: CPT(80%) is 16%, and the area nearly 0.9.
        let perfect = [
            random[0],
            Point {
                cloud_share: 0.2,
                accuracy: 0.8,
            },
            random[1],
        ];
        assert!(close(
            cloud_share_to_recover(&perfect, 0.4, 0.8, 0.8).unwrap(),
            0.16
        ));
        assert!(close(
            average_gap_recovered(&perfect, 0.4, 0.8).unwrap(),
            0.9
        ));
        // No gap, no figures.
        assert_eq!(average_gap_recovered(&random, 0.8, 0.8), None);
        assert_eq!(cloud_share_to_recover(&random, 0.4, 0.8, 1.5), None);
    }

    #[test]
    fn letter_priors_average_each_models_letter_distributions() {
        use crate::measuring::measure::fixtures;
        let mut records = Vec::new();
        for i in 0..20 {
            let mut a = fixtures::answer("a", "C", 0.5, false, 1.0);
            a.options = Some(if i % 2 == 0 {
                vec![0.1, 0.1, 0.7, 0.1]
            } else {
                vec![0.3, 0.1, 0.5, 0.1]
            });
            let b = fixtures::answer("b", "C", 0.5, false, 1.0);
            records.push(fixtures::record(&format!("q{i}"), vec![a, b], false));
        }
        let priors = letter_priors(&records);
        assert_eq!(priors[0], ("a".to_string(), Some(vec![0.2, 0.1, 0.6, 0.1])));
        // No letters named: no prior.
        assert_eq!(priors[1], ("b".to_string(), None));
        let text = "[[models]]\nname = \"a\"\npath = \"x.gguf\"\n\n[[models]]\nname = \"b\"\npath = \"y.gguf\"\n";
        let written = with_letter_priors(text, &priors).unwrap();
        let doc: toml::Table = toml::from_str(&written).unwrap();
        let models = doc["models"].as_array().unwrap();
        assert_eq!(models[0]["letter_prior"].as_array().unwrap().len(), 4);
        assert!(models[1].get("letter_prior").is_none());
    }

    #[test]
    fn each_form_of_question_gets_the_target_share() {
        // 60 free-form and 20 multiple-choice questions; the choice ones look
        // far more doubtful, so one cut over all would send mostly them.
        let n = 80;
        let mut x = Vec::new();
        let mut helps = Vec::new();
        for i in 0..n {
            let choice = i >= 60;
            let doubt = (i % 20) as f32 / 20.0 + if choice { 0.5 } else { 0.0 };
            let mut row = vec![0.0; FEATURES.len()];
            row[0] = 1.0 - doubt / 1.5; // min_prob
            row[offers_options_index()] = choice as u8 as f32;
            x.push(row);
            helps.push((i * 7) % 10 < 3 || doubt > 1.0);
        }
        let forced = vec![false; n];
        let opts = FitOptions {
            l2: 0.01,
            steps: 500,
        };
        // How many of `among` the router fitted on `idx` sends to the cloud.
        let sent = |idx: &[usize], among: std::ops::Range<usize>| {
            let (model, cut) = fit_router(idx, &x, &helps, &forced, 0.25, opts).unwrap();
            among.filter(|&i| model.predict(&x[i])[1] >= cut).count()
        };
        let all: Vec<usize> = (0..n).collect();
        assert_eq!(sent(&all, 0..60), 15);
        assert_eq!(sent(&all, 60..80), 5);
        // One form only: the plain cut.
        let free: Vec<usize> = (0..60).collect();
        assert_eq!(sent(&free, 0..60), 15);
    }

    #[test]
    fn the_cut_sends_the_target_share() {
        let s = [0.9, 0.1, 0.5, 0.7];
        let none = [false; 4];
        let cut = cut_for_share(&s, &none, 0.5);
        assert_eq!(s.iter().filter(|&&v| v >= cut).count(), 2);
        assert_eq!(cut_for_share(&s, &none, 0.0), 1.0);
        assert_eq!(cut_for_share(&s, &none, 1.0), 0.0);
        // A question the policy sends anyway (here the one scored 0.9) takes
        // one of the two places: the router sends only its best other one.
        let forced = [true, false, false, false];
        let cut = cut_for_share(&s, &forced, 0.5);
        let sent = |v: &f32, f: &bool| *f || *v >= cut;
        assert_eq!(s.iter().zip(&forced).filter(|(v, f)| sent(v, f)).count(), 2);
        assert!(cut > 0.5 && cut <= 0.7);
        // More forced than the share: the router sends none.
        assert_eq!(cut_for_share(&s, &[true, true, true, false], 0.5), 1.0);
    }
}
