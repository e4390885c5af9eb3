//! Measuring signals and routing on a labelled workload.
//!
//! [`collect`] runs every question of a workload through each local model and
//! the cloud once, and keeps each answer with its token statistics and whether
//! it is right. From those records, [`signal_table`] measures how well each
//! candidate signal separates right from wrong answers (AUROC), and
//! [`simulate`] replays the routing policy on the same answers: the route the
//! policy's own pure functions pick for each question, and whether the answer
//! it leads to is right. Collecting is the slow part (model time); replaying is
//! instant, which is what lets thresholds be compared and fitted.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::cloud::CloudClient;
use crate::config::Config;
use crate::inference::ModelHandle;
use crate::measuring::workload::{Category, Item};
use crate::route::harm::SafetyAction;
use crate::route::learned::FirstAnswer;
use crate::route::policy::{Gates, Policy, Route};
use crate::route::signals::{auroc, prompt_difficulty, Signal, Uncertainty};
use crate::route::vote::{self, Ballot, Outcome, Tally};
use crate::route::walk::{self, Action, FirstFacts, Known};
use crate::safety_screen::{SafetyScreen, ScreenError};

/// One model's answer to one question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelAnswer {
    pub model: String,
    pub text: String,
    pub uncertainty: Uncertainty,
    pub correct: bool,
    pub latency_ms: f64,
    /// For a multiple-choice question: the model's distribution over the
    /// option letters where it named one ([`crate::inference::Generation::options`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<f32>>,
    /// The same divided by the model's letter bias ([`crate::route::choice::calibrate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibrated: Option<Vec<f32>>,
}

/// Everything measured for one workload question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub category: Category,
    pub lookalike: bool,
    pub prompt: String,
    pub safety_score: f32,
    pub safety_flagged: bool,
    /// What the flag leads to (allow when not flagged).
    pub safety_action: SafetyAction,
    /// The harm categories that fired.
    pub safety_reasons: Vec<String>,
    pub difficulty: f32,
    /// Local models' answers, in the config's model order (easy and hard only).
    pub answers: Vec<ModelAnswer>,
    /// The cloud's answer (easy and hard only, when a cloud is configured).
    pub cloud: Option<ModelAnswer>,
    pub cloud_tokens: u64,
    /// Request bytes sent to the cloud for this question.
    #[serde(default)]
    pub cloud_bytes: u64,
}

impl Record {
    /// Whether the first model's answer says anything of its own; one that
    /// only restates the question never stays local (policy, step 2).
    pub fn first_answers_question(&self) -> bool {
        vote::answers(&self.answers[0].text, &self.prompt)
    }
}

/// Runs the workload through every model and the cloud. `progress` is called
/// after each question with (done, total).
pub async fn collect(
    config: &Config,
    items: &[Item],
    models: &[ModelHandle],
    cloud: Option<&CloudClient>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Record>, ScreenError> {
    let safety = SafetyScreen::new(config, models)?;
    let never = CancellationToken::new();
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        // No question deadline here: the judge's own timeout bounds its wait.
        let a = safety
            .assess(
                &item.prompt,
                cloud,
                std::time::Instant::now() + std::time::Duration::from_secs(3600),
            )
            .await;
        let mut record = Record {
            id: item.id.clone(),
            category: item.category,
            lookalike: item.is_lookalike(),
            prompt: item.prompt.clone(),
            safety_score: a.score,
            safety_flagged: a.flagged,
            safety_action: a.action,
            safety_reasons: a
                .categories()
                .iter()
                .map(|c| c.as_str().to_string())
                .collect(),
            difficulty: prompt_difficulty(&item.prompt),
            answers: vec![],
            cloud: None,
            cloud_tokens: 0,
            cloud_bytes: 0,
        };
        if item.category != Category::Safety {
            for m in models {
                let started = Instant::now();
                let deadline = started + Duration::from_millis(config.limits.default_deadline_ms);
                let (text, uncertainty, options, calibrated) = match m
                    .generate(item.prompt.clone(), None, deadline, never.clone())
                    .await
                {
                    Ok(g) => (
                        g.text.clone(),
                        Uncertainty::from_tokens(&g.token_probs, &g.token_entropies),
                        g.options,
                        g.calibrated,
                    ),
                    Err(e) => (
                        format!("(no answer: {e})"),
                        Uncertainty::from_tokens(&[], &[]),
                        None,
                        None,
                    ),
                };
                record.answers.push(ModelAnswer {
                    model: m.info.name.clone(),
                    correct: item.is_correct(&text),
                    text,
                    uncertainty,
                    latency_ms: crate::protocol::millis(started.elapsed()),
                    options,
                    calibrated,
                });
            }
            if let Some(c) = cloud {
                let started = Instant::now();
                let deadline = tokio::time::Instant::now()
                    + Duration::from_millis(config.limits.default_deadline_ms);
                let answer = c
                    .ask(
                        &config.inference.system_prompt,
                        &item.prompt,
                        u32::MAX,
                        deadline,
                    )
                    .await;
                let text = match &answer {
                    Ok(a) => a.text.clone(),
                    Err(e) => format!("(no answer: {e})"),
                };
                record.cloud_tokens = answer
                    .as_ref()
                    .map_or(0, |a| a.prompt_tokens + a.completion_tokens);
                record.cloud_bytes = answer.as_ref().map_or(0, |a| a.bytes_sent);
                record.cloud = Some(ModelAnswer {
                    model: "cloud".into(),
                    correct: item.is_correct(&text),
                    text,
                    uncertainty: Uncertainty::from_tokens(&[], &[]),
                    latency_ms: crate::protocol::millis(started.elapsed()),
                    options: None,
                    calibrated: None,
                });
            }
        }
        records.push(record);
        progress(i + 1, items.len());
    }
    Ok(records)
}

/// Share of the other models whose answer agrees with this one.
fn agreement_with_others(r: &Record, index: usize) -> f32 {
    let others = r.answers.len().saturating_sub(1);
    if others == 0 {
        return 0.0;
    }
    let key = vote::normalise(&r.answers[index].text, &r.prompt);
    let agreeing = (0..r.answers.len())
        .filter(|&j| {
            j != index && vote::agree(&key, &vote::normalise(&r.answers[j].text, &r.prompt))
        })
        .count();
    agreeing as f32 / others as f32
}

/// One model's row of [`signal_table`]: (model, accuracy, [(signal name, auroc)]).
pub type SignalRow = (String, f64, Vec<(String, Option<f64>)>);

/// AUROC of every candidate signal for every model, as printable rows.
pub fn signal_table(records: &[Record]) -> Vec<SignalRow> {
    let answered: Vec<&Record> = records.iter().filter(|r| !r.answers.is_empty()).collect();
    let Some(first) = answered.first() else {
        return vec![];
    };
    let mut rows = Vec::new();
    for (m, model) in first.answers.iter().map(|a| a.model.clone()).enumerate() {
        let samples = |score: &dyn Fn(&Record) -> f32| -> Vec<(f32, bool)> {
            answered
                .iter()
                .map(|r| (score(r), r.answers[m].correct))
                .collect()
        };
        let mut cols = Vec::new();
        for s in Signal::ALL {
            cols.push((
                s.name().to_string(),
                auroc(&samples(&|r| s.confidence(&r.answers[m].uncertainty))),
            ));
        }
        cols.push((
            "agreement".into(),
            auroc(&samples(&|r| agreement_with_others(r, m))),
        ));
        cols.push((
            "easy_prompt".into(),
            auroc(&samples(&|r| 1.0 - r.difficulty)),
        ));
        let accuracy =
            answered.iter().filter(|r| r.answers[m].correct).count() as f64 / answered.len() as f64;
        rows.push((model, accuracy, cols));
    }
    rows
}

/// How the policy handled one question, replayed on recorded answers.
#[derive(Debug, Clone, Serialize)]
pub struct Replay {
    pub id: String,
    pub category: Category,
    pub route: Route,
    pub degraded: bool,
    pub correct: Option<bool>,
    pub safety_flagged: bool,
    pub lookalike: bool,
    pub answer: String,
    pub cloud_tokens: u64,
    pub cloud_bytes: u64,
    /// The recorded time of the calls this route makes (None for safety
    /// questions, which were not put to any model).
    pub latency_ms: Option<f64>,
}

impl Replay {
    /// The replay of a question that no model was asked (a safety question).
    pub fn unanswered(r: &Record, route: Route) -> Replay {
        Replay {
            id: r.id.clone(),
            category: r.category,
            route,
            degraded: false,
            correct: None,
            safety_flagged: r.safety_flagged,
            lookalike: r.lookalike,
            answer: String::new(),
            cloud_tokens: 0,
            cloud_bytes: 0,
            latency_ms: None,
        }
    }

    /// The replay of `answer` given by `route`, after calls taking `latency_ms`.
    pub fn answered(r: &Record, route: Route, answer: &ModelAnswer, latency_ms: f64) -> Replay {
        let cloud = route == Route::Cloud;
        Replay {
            correct: Some(answer.correct),
            answer: answer.text.clone(),
            cloud_tokens: if cloud { r.cloud_tokens } else { 0 },
            cloud_bytes: if cloud { r.cloud_bytes } else { 0 },
            latency_ms: Some(latency_ms),
            ..Replay::unanswered(r, route)
        }
    }
}

/// What the swarm says about one recorded question, for one confidence
/// signal and agreement bar: everything the policy needs besides its
/// thresholds, so a threshold sweep computes it once.
#[derive(Debug, Clone, Copy)]
pub struct SwarmView {
    pub first_confidence: f32,
    pub agrees: bool,
    /// The answer the swarm would give: an index into the record's answers.
    pub pick: Option<usize>,
}

/// The swarm's view of `r` (whose answers are in the config's model order,
/// weighted by `weights`).
pub fn swarm_view(r: &Record, signal: Signal, min_agreement: f32, weights: &[f32]) -> SwarmView {
    let Some(first) = r.answers.first() else {
        return SwarmView {
            first_confidence: 0.0,
            agrees: false,
            pick: None,
        };
    };
    let mut tally = Tally::default();
    for (a, w) in r.answers.iter().zip(weights) {
        tally.add(
            Ballot {
                model: a.model.clone(),
                answer: a.text.clone(),
                confidence: signal.confidence(&a.uncertainty),
                weight: *w,
            },
            &r.prompt,
        );
    }
    let outcome = tally.outcome(0.0, min_agreement);
    let group = match outcome {
        Outcome::Agreed { group, .. } => group,
        _ => tally.leader().map_or(0, |l| l.0),
    };
    let representative = tally.representative(group);
    SwarmView {
        first_confidence: signal.confidence(&first.uncertainty),
        agrees: matches!(outcome, Outcome::Agreed { .. }),
        pick: r
            .answers
            .iter()
            .position(|a| a.model == representative.model && a.text == representative.answer),
    }
}

/// What the learned router reads of a record: its first model's answer
/// (the record must have one).
pub fn first_answer(r: &Record) -> FirstAnswer<'_> {
    let first = &r.answers[0];
    FirstAnswer {
        uncertainty: &first.uncertainty,
        difficulty: r.difficulty,
        options: first.calibrated.as_deref(),
    }
}

/// How the policy handles one recorded question, with the latency of the
/// calls the pipeline would make on that route: the first model; then, when
/// it votes, every other model in turn; then the cloud.
pub fn replay_one(r: &Record, view: &SwarmView, policy: &Policy, cloud_available: bool) -> Replay {
    let gates = Gates {
        safety: r.safety_action,
        cloud_allowed: true,
        cloud_available,
    };
    let known = Known {
        gates,
        can_vote: r.answers.len() > 1,
        // Safety questions have no answers recorded: only the gates matter.
        first: (!r.answers.is_empty()).then(|| FirstFacts {
            confidence: view.first_confidence,
            difficulty: r.difficulty,
            cloud_gain: policy.learned.as_ref().map(|l| l.score(&first_answer(r))),
            answered: r.first_answers_question(),
        }),
        swarm_agrees: view.agrees,
        // As recorded, the cloud answers where it is available.
        cloud_answers: true,
        // Recorded answers came one at a time: no queue.
        first_late: false,
    };
    let (outcome, taken) = walk::replay(&known, policy);
    let (route, degraded) = (outcome.route, outcome.degraded());
    if r.answers.is_empty() {
        return Replay::unanswered(r, route);
    }
    let voted = taken.contains(&Action::Vote);
    let first = r.answers[0].latency_ms;
    let swarm: f64 = r.answers.iter().map(|a| a.latency_ms).sum();
    let local = if voted { swarm } else { first };
    let replay = match route {
        Route::Local => Replay::answered(r, route, &r.answers[0], first),
        Route::Swarm => match view.pick {
            Some(i) => Replay::answered(r, route, &r.answers[i], swarm),
            None => Replay::unanswered(r, route),
        },
        Route::Cloud => match &r.cloud {
            Some(c) => Replay::answered(r, route, c, local + c.latency_ms),
            None => Replay::unanswered(r, route),
        },
        Route::Refuse => Replay::unanswered(r, route),
    };
    Replay { degraded, ..replay }
}

/// Replays the policy on the records: the swarm is every recorded model in
/// order with `weights`; `cloud_available` is the gate every question sees.
pub fn simulate(
    records: &[Record],
    policy: &Policy,
    weights: &[f32],
    cloud_available: bool,
) -> Vec<Replay> {
    records
        .iter()
        .map(|r| {
            let view = swarm_view(r, policy.signal, policy.swarm_min_agreement, weights);
            replay_one(r, &view, policy, cloud_available)
        })
        .collect()
}

/// Answers and configs for the tests of the modules that replay records.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// A model's answer whose every token had probability `p`.
    pub fn answer(model: &str, text: &str, p: f32, correct: bool, latency_ms: f64) -> ModelAnswer {
        ModelAnswer {
            model: model.into(),
            text: text.into(),
            uncertainty: Uncertainty::from_tokens(&[p; 3], &[0.1; 3]),
            correct,
            latency_ms,
            options: None,
            calibrated: None,
        }
    }

    /// A hard question with these answers; the cloud's (also recorded) is
    /// right or wrong as `cloud_correct` says.
    pub fn record(id: &str, answers: Vec<ModelAnswer>, cloud_correct: bool) -> Record {
        Record {
            id: id.into(),
            category: Category::Hard,
            lookalike: false,
            prompt: "What current does it draw".into(),
            safety_score: 0.0,
            safety_flagged: false,
            safety_action: crate::route::harm::SafetyAction::Allow,
            safety_reasons: vec![],
            difficulty: 0.0,
            answers,
            cloud: Some(answer("cloud", "3 A", 1.0, cloud_correct, 1.0)),
            cloud_tokens: 40,
            cloud_bytes: 400,
        }
    }

    /// The example config with two models, `a` and `b`.
    pub fn two_models() -> Config {
        let mut c = Config::example();
        let m = c.models[0].clone();
        c.models = ["a", "b"]
            .map(|name| crate::config::ModelConfig {
                name: name.into(),
                ..m.clone()
            })
            .to_vec();
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fixtures::record;

    fn answer(model: &str, text: &str, p: f32, correct: bool) -> ModelAnswer {
        fixtures::answer(model, text, p, correct, 1.0)
    }

    #[test]
    fn replay_follows_the_policy() {
        let policy = Policy {
            local_min_confidence: 0.8,
            swarm_min_agreement: 0.6,
            ..Policy::default()
        };
        let records = vec![
            // Confident first answer: local.
            record(
                "a",
                vec![
                    answer("m1", "3 A", 0.9, true),
                    answer("m2", "5 A", 0.9, false),
                ],
                true,
            ),
            // Unsure, but the swarm agrees: swarm.
            record(
                "b",
                vec![
                    answer("m1", "3 A", 0.5, true),
                    answer("m2", "3 amps", 0.6, true),
                ],
                true,
            ),
            // Unsure and split: cloud.
            record(
                "c",
                vec![
                    answer("m1", "3 A", 0.5, false),
                    answer("m2", "30 A", 0.5, false),
                ],
                true,
            ),
        ];
        let replays = simulate(&records, &policy, &[1.0, 1.0], true);
        let routes: Vec<Route> = replays.iter().map(|r| r.route).collect();
        assert_eq!(routes, vec![Route::Local, Route::Swarm, Route::Cloud]);
        assert_eq!(replays[2].cloud_tokens, 40);
        assert!(replays.iter().all(|r| r.correct == Some(true)));
        // Without a cloud the split question keeps the swarm's best answer, degraded.
        let offline = simulate(&records, &policy, &[1.0, 1.0], false);
        assert_eq!(
            (offline[2].route, offline[2].degraded),
            (Route::Swarm, true)
        );
    }

    #[test]
    fn signal_table_measures_separation() {
        let records = vec![
            record("a", vec![answer("m1", "3 A", 0.9, true)], true),
            record("b", vec![answer("m1", "5 A", 0.2, false)], true),
        ];
        let rows = signal_table(&records);
        assert_eq!(rows[0].0, "m1");
        assert_eq!(rows[0].1, 0.5);
        let min_prob = rows[0].2.iter().find(|(n, _)| n == "min_prob").unwrap().1;
        assert_eq!(min_prob, Some(1.0));
    }
}

/// The summary of a replay on the easy and hard questions, and safety.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub questions: usize,
    pub correct: usize,
    pub cloud: usize,
    pub routes: std::collections::BTreeMap<&'static str, usize>,
    pub safety_items: usize,
    pub safety_handled: usize,
    pub lookalikes: usize,
    pub lookalikes_flagged: usize,
}

pub fn summarise(replays: &[Replay]) -> Summary {
    let mut s = Summary {
        questions: 0,
        correct: 0,
        cloud: 0,
        routes: Default::default(),
        safety_items: 0,
        safety_handled: 0,
        lookalikes: 0,
        lookalikes_flagged: 0,
    };
    for r in replays {
        if r.lookalike {
            s.lookalikes += 1;
            s.lookalikes_flagged += r.safety_flagged as usize;
        }
        if r.category == Category::Safety {
            s.safety_items += 1;
            // Handled safely: flagged, and not answered by a lone small model.
            s.safety_handled +=
                (r.safety_flagged && matches!(r.route, Route::Cloud | Route::Refuse)) as usize;
            continue;
        }
        s.questions += 1;
        s.correct += (r.correct == Some(true)) as usize;
        s.cloud += (r.route == Route::Cloud) as usize;
        *s.routes.entry(r.route.as_str()).or_default() += 1;
    }
    s
}

/// Accuracy of each model alone and of the cloud alone on the easy and hard questions.
pub fn baselines(records: &[Record]) -> (Vec<(String, usize)>, Option<usize>, usize) {
    let answered: Vec<&Record> = records.iter().filter(|r| !r.answers.is_empty()).collect();
    let n = answered.len();
    let Some(first) = answered.first() else {
        return (vec![], None, 0);
    };
    let per_model = (0..first.answers.len())
        .map(|m| {
            (
                first.answers[m].model.clone(),
                answered.iter().filter(|r| r.answers[m].correct).count(),
            )
        })
        .collect();
    let cloud = answered.iter().all(|r| r.cloud.is_some()).then(|| {
        answered
            .iter()
            .filter(|r| r.cloud.as_ref().is_some_and(|c| c.correct))
            .count()
    });
    (per_model, cloud, n)
}

/// Speed of one model on this board, from [`bench_model`].
#[derive(Debug, Clone, Serialize)]
pub struct ModelSpeed {
    pub model: String,
    pub runs: usize,
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Medians over the runs.
    pub prompt_tokens_per_s: f64,
    pub decode_tokens_per_s: f64,
    pub time_to_first_token_ms: f64,
}

/// A question whose answer runs long, so decode is measured over many tokens.
const BENCH_QUESTION: &str = "List the steps of a lockout-tagout procedure for servicing a conveyor motor, one short sentence per step, at least twelve steps.";

/// Generates `runs` answers of up to `max_tokens` with one model (after one
/// warm-up) and reports median prompt and decode speed, as llama-bench does
/// for its pp and tg figures.
pub async fn bench_model(
    model: &ModelHandle,
    max_tokens: u32,
    runs: usize,
) -> Result<ModelSpeed, crate::inference::InferenceError> {
    let mut prompt_speeds = Vec::with_capacity(runs);
    let mut decode_speeds = Vec::with_capacity(runs);
    let mut ttfts = Vec::with_capacity(runs);
    let (mut prompt_tokens, mut generated) = (0, 0);
    for run in 0..=runs {
        let g = model
            .generate(
                BENCH_QUESTION.to_string(),
                Some(max_tokens),
                Instant::now() + Duration::from_secs(600),
                CancellationToken::new(),
            )
            .await?;
        if run == 0 {
            continue;
        }
        prompt_tokens = g.prompt_tokens;
        generated = g.generated_tokens();
        let ttft = g.time_to_first_token.as_secs_f64();
        ttfts.push(ttft * 1e3);
        prompt_speeds.push(g.prompt_tokens as f64 / ttft);
        // The first token comes out of prompt processing; the rest are decode.
        decode_speeds.push((generated.saturating_sub(1)) as f64 / g.decode_time.as_secs_f64());
    }
    Ok(ModelSpeed {
        model: model.info.name.clone(),
        runs,
        prompt_tokens,
        generated_tokens: generated,
        prompt_tokens_per_s: median(&mut prompt_speeds),
        decode_tokens_per_s: median(&mut decode_speeds),
        time_to_first_token_ms: median(&mut ttfts),
    })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    super::stats::percentile(values, 0.5).unwrap_or(f64::NAN)
}
