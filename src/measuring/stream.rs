//! Recorded questions replayed in order, as one stream, through the same
//! walk the pipeline takes ([`measure::replay_one`]), with the learned
//! router's cut either fixed or held by the cloud share controller
//! ([`crate::route::share`]): what share the cloud gets over every window
//! of the stream and what accuracy that buys, side by side; and, on a clock,
//! how the hourly budget is spent with and without pacing.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::measuring::measure::{self, Record};
use crate::route::harm::SafetyAction;
use crate::route::policy::{Policy, Route};
use crate::route::share::{self, CloudShare, Observed};

/// How the cut is chosen for each question.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cut {
    Fixed(f32),
    /// Held by the controller at this share, from the policy's fitted cut.
    Online(f32),
}

/// Questions arriving one every `gap`, under a budget of `calls_per_hour`
/// that the cloud client enforces as it does (a sliding hour); `paced`:
/// whether the controller paces it too.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub gap: Duration,
    pub calls_per_hour: u32,
    pub paced: bool,
}

/// What each question of the stream did.
#[derive(Debug, Clone, Default)]
pub struct StreamRun {
    /// Sent to the cloud.
    pub sent: Vec<bool>,
    /// Whether its answer was right (None: a safety question, not scored).
    pub right: Vec<Option<bool>>,
}

impl StreamRun {
    pub fn share(&self) -> f64 {
        self.sent.iter().filter(|s| **s).count() as f64 / self.sent.len().max(1) as f64
    }

    /// (right, scored).
    pub fn accuracy(&self) -> (usize, usize) {
        let scored = self.right.iter().flatten();
        (scored.clone().filter(|r| **r).count(), scored.count())
    }

    /// The cloud share of every window of `len` questions that starts at or
    /// after `from` (one per start).
    pub fn window_shares(&self, from: usize, len: usize) -> Vec<f64> {
        if self.sent.len() < from + len {
            return vec![];
        }
        let mut calls = self.sent[from..from + len].iter().filter(|s| **s).count();
        let mut shares = vec![calls as f64 / len as f64];
        for end in from + len..self.sent.len() {
            calls += self.sent[end] as usize;
            calls -= self.sent[end - len] as usize;
            shares.push(calls as f64 / len as f64);
        }
        shares
    }

    /// Cloud calls in each stretch of `per` questions.
    pub fn calls_per(&self, per: usize) -> Vec<usize> {
        self.sent
            .chunks(per)
            .map(|c| c.iter().filter(|s| **s).count())
            .collect()
    }
}

/// The learned router's score of a record whose first answer it would
/// read: answered on the board, the answer saying more than the question.
fn scored(r: &Record, policy: &Policy) -> Option<f32> {
    let l = policy.learned.as_ref()?;
    (r.safety_action == SafetyAction::Allow && !r.answers.is_empty() && r.first_answers_question())
        .then(|| l.score(&measure::first_answer(r)))
}

/// Replays the records in order. `weights`: the recorded models' vote weights.
pub fn run(
    records: &[Record],
    policy: &Policy,
    weights: &[f32],
    cut: Cut,
    clock: Option<Clock>,
) -> StreamRun {
    let start = Instant::now();
    let fitted = policy.learned.as_ref().map_or(1.0, |l| l.cloud_at);
    let mut online = match cut {
        Cut::Online(target) => Some(CloudShare::new(
            target,
            share::WINDOW,
            fitted,
            clock.filter(|c| c.paced).map(|c| c.calls_per_hour),
            start,
        )),
        Cut::Fixed(_) => None,
    };
    let mut calls: VecDeque<Duration> = VecDeque::new();
    let mut out = StreamRun::default();
    for (i, r) in records.iter().enumerate() {
        let at = clock.map_or(Duration::ZERO, |c| c.gap * i as u32);
        let available = match clock {
            Some(c) => {
                while calls
                    .front()
                    .is_some_and(|t| at - *t >= Duration::from_secs(3600))
                {
                    calls.pop_front();
                }
                calls.len() < c.calls_per_hour as usize
            }
            None => true,
        };
        let cut_now = match (&online, cut) {
            (Some(s), _) => s.cut(),
            (None, Cut::Fixed(c)) => c,
            (None, Cut::Online(_)) => unreachable!("an online cut has its controller"),
        };
        let view = measure::swarm_view(r, policy.signal, policy.swarm_min_agreement, weights);
        let replay = measure::replay_one(r, &view, &policy.with_cloud_cut(cut_now), available);
        let sent = replay.route == Route::Cloud;
        if sent {
            calls.push_back(at);
        }
        if let Some(s) = online.as_mut().filter(|_| available) {
            s.observe(
                Observed {
                    score: scored(r, policy),
                    cloud: sent,
                },
                start + at,
            );
        }
        out.sent.push(sent);
        out.right.push(replay.correct);
    }
    out
}

/// The fixed cut that sends `share` of the stream, found by bisection (the
/// share falls as the cut rises): the offline router at the same share, in
/// hindsight.
pub fn fixed_cut_for_share(
    records: &[Record],
    policy: &Policy,
    weights: &[f32],
    share: f64,
) -> f32 {
    let (mut lo, mut hi) = (0.0f32, 1.0f32);
    for _ in 0..30 {
        let mid = (lo + hi) / 2.0;
        if run(records, policy, weights, Cut::Fixed(mid), None).share() > share {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// Moves the records whose id starts with one of `prefixes` behind the
/// others, each part in its order: the stream's mix shifts to them.
pub fn shift_to(records: Vec<Record>, prefixes: &[String]) -> Vec<Record> {
    let later = |r: &Record| prefixes.iter().any(|p| r.id.starts_with(p.as_str()));
    let (mut first, then): (Vec<Record>, Vec<Record>) =
        records.into_iter().partition(|r| !later(r));
    first.extend(then);
    first
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measuring::measure::fixtures;

    /// A learned router whose score falls as the first answer's 10th
    /// percentile token probability rises (0.5 at 0.5), with a cut of 0.5.
    fn reading_low_quantile() -> Policy {
        use crate::route::learned::{LearnedRouter, CLASSES, FEATURES};
        use crate::route::softmax::Softmax;
        let d = FEATURES.len();
        let mut weights = vec![vec![0.0; d]; 2];
        weights[1][1] = -10.0;
        Policy {
            learned: Some(LearnedRouter {
                features: FEATURES.iter().map(|f| f.to_string()).collect(),
                cloud_at: 0.5,
                vote_at: 0.5,
                model: Softmax {
                    classes: CLASSES.iter().map(|c| c.to_string()).collect(),
                    mean: vec![0.0; d],
                    scale: vec![1.0; d],
                    weights,
                    bias: vec![0.0, 5.0],
                },
            }),
            ..Policy::default()
        }
    }

    /// A stream whose first answers get less sure halfway, so that the
    /// router scores the second half higher.
    fn shifting_stream() -> Vec<Record> {
        (0..800)
            .map(|i| {
                let base = if i < 400 { 0.9 } else { 0.5 };
                let p = base - 0.4 * ((i * 37 % 100) as f32 / 100.0);
                let first = fixtures::answer("m", "42 A", p, i % 3 != 0, 10.0);
                fixtures::record(&format!("q{i:03}"), vec![first], true)
            })
            .collect()
    }

    #[test]
    fn the_online_cut_holds_the_share_where_a_fixed_one_drifts() {
        let (records, policy) = (shifting_stream(), reading_low_quantile());
        let fixed = run(&records, &policy, &[1.0], Cut::Fixed(0.5), None);
        let halves = fixed.calls_per(400);
        assert!(halves[1] > 2 * halves[0] + 40, "{halves:?}");
        let online = run(&records, &policy, &[1.0], Cut::Online(0.25), None);
        for s in online.window_shares(200, 200) {
            assert!((s - 0.25).abs() <= 0.04, "{s}");
        }
        let same = fixed_cut_for_share(&records, &policy, &[1.0], online.share());
        let hindsight = run(&records, &policy, &[1.0], Cut::Fixed(same), None);
        assert!((hindsight.share() - online.share()).abs() < 0.01);
    }

    #[test]
    fn windows_and_stretches_count_the_calls() {
        let run = StreamRun {
            sent: vec![true, false, false, true, true, false],
            right: vec![Some(true), None, Some(false), Some(true), None, None],
        };
        assert_eq!(
            run.window_shares(1, 3),
            vec![1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0]
        );
        assert_eq!(run.calls_per(4), vec![2, 1]);
        assert_eq!(run.accuracy(), (2, 3));
        assert!(run.window_shares(4, 3).is_empty());
    }

    #[test]
    fn the_shift_moves_the_named_questions_behind_in_order() {
        let ids = ["a1", "b1", "a2", "c1", "b2"];
        let records = ids
            .iter()
            .map(|id| fixtures::record(id, vec![], true))
            .collect();
        let shifted = shift_to(records, &["b".to_string()]);
        let order: Vec<&str> = shifted.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(order, ["a1", "a2", "c1", "b1", "b2"]);
    }
}
