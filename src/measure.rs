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
use crate::route::policy::{self, Facts, Gates, Policy, Route};
use crate::route::safety::SafetyClassifier;
use crate::route::signals::{auroc, prompt_difficulty, Signal, Uncertainty};
use crate::route::vote::{self, Ballot, Outcome, Tally};
use crate::workload::{Category, Item};

/// One model's answer to one question.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelAnswer {
    pub model: String,
    pub text: String,
    pub uncertainty: Uncertainty,
    pub correct: bool,
    pub latency_ms: f64,
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
    pub safety_reasons: Vec<String>,
    pub difficulty: f32,
    /// Local models' answers, in the config's model order (easy and hard only).
    pub answers: Vec<ModelAnswer>,
    /// The cloud's answer (easy and hard only, when a cloud is configured).
    pub cloud: Option<ModelAnswer>,
    pub cloud_tokens: u64,
}

/// Runs the workload through every model and the cloud. `progress` is called
/// after each question with (done, total).
pub async fn collect(
    config: &Config,
    items: &[Item],
    models: &[ModelHandle],
    cloud: Option<&CloudClient>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<Record>, crate::route::safety::SafetyError> {
    let safety = SafetyClassifier::new(&config.safety)?;
    let never = CancellationToken::new();
    let mut records = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let a = safety.assess(&item.prompt);
        let mut record = Record {
            id: item.id.clone(),
            category: item.category,
            lookalike: item.is_lookalike(),
            prompt: item.prompt.clone(),
            safety_score: a.score,
            safety_flagged: a.flagged,
            safety_reasons: a.reasons.iter().map(|r| r.rule.clone()).collect(),
            difficulty: prompt_difficulty(&item.prompt),
            answers: vec![],
            cloud: None,
            cloud_tokens: 0,
        };
        if item.category != Category::Safety {
            for m in models {
                let started = Instant::now();
                let deadline = started + Duration::from_millis(config.limits.default_deadline_ms);
                let (text, uncertainty) = match m
                    .generate(item.prompt.clone(), None, deadline, never.clone())
                    .await
                {
                    Ok(g) => (
                        g.text.clone(),
                        Uncertainty::from_tokens(&g.token_probs, &g.token_entropies),
                    ),
                    Err(e) => (
                        format!("(no answer: {e})"),
                        Uncertainty::from_tokens(&[], &[]),
                    ),
                };
                record.answers.push(ModelAnswer {
                    model: m.info.name.clone(),
                    correct: item.is_correct(&text),
                    text,
                    uncertainty,
                    latency_ms: crate::protocol::millis(started.elapsed()),
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
                record.cloud = Some(ModelAnswer {
                    model: "cloud".into(),
                    correct: item.is_correct(&text),
                    text,
                    uncertainty: Uncertainty::from_tokens(&[], &[]),
                    latency_ms: crate::protocol::millis(started.elapsed()),
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

/// AUROC of every candidate signal for every model, as printable rows:
/// (model, accuracy, [(signal name, auroc)]).
pub fn signal_table(records: &[Record]) -> Vec<(String, f64, Vec<(String, Option<f64>)>)> {
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
}

/// Replays the policy on the records: the first model is `first`, the swarm is
/// every recorded model in order with `weights`; `cloud_allowed` and
/// `cloud_available` are the gates every question sees.
pub fn simulate(
    records: &[Record],
    policy: &Policy,
    weights: &[f32],
    cloud_available: bool,
) -> Vec<Replay> {
    records
        .iter()
        .map(|r| {
            let gates = Gates {
                safety_flagged: r.safety_flagged,
                cloud_allowed: true,
                cloud_available,
            };
            let replay = |route, degraded, answer: Option<&ModelAnswer>, cloud_tokens| Replay {
                id: r.id.clone(),
                category: r.category,
                route,
                degraded,
                correct: answer.map(|a| a.correct),
                safety_flagged: r.safety_flagged,
                lookalike: r.lookalike,
                answer: answer.map_or_else(String::new, |a| a.text.clone()),
                cloud_tokens,
            };
            if r.answers.is_empty() {
                // Safety items: only the gates matter.
                let route = match policy::before_generation(gates) {
                    policy::BeforeGeneration::Refuse => Route::Refuse,
                    policy::BeforeGeneration::SafetyCloud => Route::Cloud,
                    policy::BeforeGeneration::AnswerLocally => Route::Local,
                };
                return replay(route, false, None, 0);
            }
            let confidence = policy.signal.confidence(&r.answers[0].uncertainty);
            let mut tally = Tally::default();
            for (a, w) in r.answers.iter().zip(weights) {
                let c = policy.signal.confidence(&a.uncertainty);
                tally.add(
                    Ballot {
                        model: a.model.clone(),
                        answer: a.text.clone(),
                        confidence: c,
                        weight: *w,
                    },
                    &r.prompt,
                );
            }
            let outcome = tally.outcome(0.0, policy.swarm_min_agreement);
            let facts = Facts {
                gates,
                confidence,
                difficulty: r.difficulty,
                can_vote: r.answers.len() > 1,
                swarm_agrees: matches!(outcome, Outcome::Agreed { .. }),
            };
            let (route, degraded) = policy::decide(&facts, policy);
            let group = match outcome {
                Outcome::Agreed { group, .. } => group,
                _ => tally.leader().map_or(0, |l| l.0),
            };
            let swarm_pick = tally.representative(group);
            let swarm_answer = r
                .answers
                .iter()
                .find(|a| a.model == swarm_pick.model && a.text == swarm_pick.answer);
            match route {
                Route::Local => replay(route, degraded, Some(&r.answers[0]), 0),
                Route::Swarm => replay(route, degraded, swarm_answer, 0),
                Route::Cloud => replay(route, degraded, r.cloud.as_ref(), r.cloud_tokens),
                Route::Refuse => replay(route, degraded, None, 0),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(model: &str, text: &str, p: f32, correct: bool) -> ModelAnswer {
        ModelAnswer {
            model: model.into(),
            text: text.into(),
            uncertainty: Uncertainty::from_tokens(&[p; 3], &[0.1; 3]),
            correct,
            latency_ms: 1.0,
        }
    }

    fn record(id: &str, answers: Vec<ModelAnswer>, cloud_correct: bool) -> Record {
        Record {
            id: id.into(),
            category: Category::Hard,
            lookalike: false,
            prompt: "What current does it draw".into(),
            safety_score: 0.0,
            safety_flagged: false,
            safety_reasons: vec![],
            difficulty: 0.0,
            answers,
            cloud: Some(answer("cloud", "3 A", 1.0, cloud_correct)),
            cloud_tokens: 40,
        }
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
