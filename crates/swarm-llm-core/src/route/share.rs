//! The cloud share the operator sets (`routing.cloud_share`), held online
//! whatever the mix of questions. Pure: the router tells it what each
//! question did and asks it for the learned router's cut; the time comes in
//! as an argument.
//!
//! A cut fitted offline is a promise about one test set: on another mix the
//! same cut sends another share (fitted for 30%, the shipped cut sent 44% of
//! a fresh set of plant questions). So the cut follows the questions:
//!
//! - **A window of recent scores.** The cut is the score above which the
//!   aimed share of the last `window` scored questions lies: when the mix
//!   moves, the cut moves with the window.
//! - **An integral term on what was sent.** The aimed share starts at the
//!   target and moves by `STEP` after every counted question, down after a
//!   cloud call, up after a question kept on the board. Calls the score did
//!   not decide (safety escalations, answers that only restate the question)
//!   count like any other, so they push the score's share down; and however
//!   the window lags a shift, the calls over any stretch of `n` questions
//!   differ from `target * n` by at most the aim's movement over it divided
//!   by `STEP`.
//! - **Paced budget.** With an hourly budget, calls drain a bucket that
//!   refills at a little under the budget's rate; as it runs below half, the
//!   target falls with it, so the cut rises smoothly instead of the cloud
//!   vanishing once the hour's budget is spent. A bucket that fits inside
//!   the budget means the hard limit is seldom reached.
//! - **Start.** Until the window holds `WARMUP` scores the fitted cut
//!   serves. The state is saved in the journal's folder, so a restart keeps
//!   both the window and the aim ([`Saved`]).
//!
//! Questions the cloud could not take (not allowed for the topic, breaker
//! open, no cloud) are not counted: they would only wind the aim up.

use std::collections::VecDeque;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Counted questions the share is measured over and scored ones the cut
/// follows: long enough for a quantile that does not jump, short enough to
/// follow a shift within an hour of a busy board's questions.
pub const WINDOW: usize = 300;
/// How far the aimed share moves per counted question.
pub const STEP: f32 = 0.1;
/// How far the aim may go: outside 0..1 the cut lies beyond the window's
/// scores (so that a shift the window has not caught up with is held).
const AIM_RANGE: (f32, f32) = (-1.0, 2.0);
/// Scores needed before the window's cut replaces the fitted one.
pub const WARMUP: usize = 50;
/// The share of the hourly budget the bucket holds at most; it refills at
/// the rest of the budget per hour, so a full bucket plus an hour's refill
/// is exactly the budget.
const BURST: f64 = 0.1;

/// What one counted question did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// The learned router's score, when the first answer was scored.
    pub score: Option<f32>,
    /// Whether it was sent to the cloud (for any reason).
    pub cloud: bool,
}

/// The controller's state.
#[derive(Debug, Clone)]
pub struct CloudShare {
    target: f32,
    window: usize,
    fitted_cut: f32,
    /// Recent scores in arrival order, and the same sorted.
    scores: VecDeque<f32>,
    sorted: Vec<f32>,
    /// Recent counted questions: sent to the cloud or not.
    sent: VecDeque<bool>,
    /// The share of the window's scores the cut aims to leave above it
    /// (outside 0..1: how far beyond the window's scores it goes).
    aim: f32,
    pacer: Option<Pacer>,
}

/// The hourly budget's pacing bucket.
#[derive(Debug, Clone)]
struct Pacer {
    capacity: f64,
    per_second: f64,
    tokens: f64,
    at: Instant,
}

impl Pacer {
    fn new(calls_per_hour: u32, now: Instant) -> Self {
        let budget = f64::from(calls_per_hour);
        Self {
            capacity: (budget * BURST).max(1.0),
            per_second: budget * (1.0 - BURST) / 3600.0,
            tokens: (budget * BURST).max(1.0),
            at: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// 1 while the bucket is at least half full, falling to 0 when empty.
    fn allowance(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        let tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        (2.0 * tokens / self.capacity).clamp(0.0, 1.0)
    }
}

/// What is kept across restarts (postcard, in the journal's folder).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The target it was aiming for; a changed target restarts the aim.
    pub target: f32,
    pub scores: Vec<f32>,
    pub sent: Vec<bool>,
    pub aim: f32,
}

/// Where it stands, for metrics and the retained status.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ShareStatus {
    /// The share set (`routing.cloud_share`).
    pub target: f32,
    /// The share aimed at now: the target, lower while the budget's pace holds it back.
    pub target_now: f32,
    /// The share sent over the window of counted questions (None before any).
    pub recent: Option<f32>,
    /// The learned router's cut in force.
    pub cut: f32,
    /// Questions the window holds.
    pub counted: usize,
}

impl CloudShare {
    /// `fitted_cut`: the learned router's `cloud_at`; `calls_per_hour`: the
    /// cloud's hourly budget, paced when given.
    pub fn new(
        target: f32,
        window: usize,
        fitted_cut: f32,
        calls_per_hour: Option<u32>,
        now: Instant,
    ) -> Self {
        Self {
            target,
            window: window.max(1),
            fitted_cut,
            scores: VecDeque::new(),
            sorted: Vec::new(),
            sent: VecDeque::new(),
            aim: target,
            pacer: calls_per_hour.map(|n| Pacer::new(n, now)),
        }
    }

    /// Takes up a saved state; a state for another target keeps the window
    /// but aims afresh.
    pub fn restore(&mut self, saved: Saved) {
        let keep = |n: usize| n.saturating_sub(self.window);
        self.scores = saved
            .scores
            .iter()
            .copied()
            .skip(keep(saved.scores.len()))
            .collect();
        self.scores.retain(|s| s.is_finite());
        self.sorted = self.scores.iter().copied().collect();
        self.sorted.sort_by(f32::total_cmp);
        self.sent = saved
            .sent
            .iter()
            .copied()
            .skip(keep(saved.sent.len()))
            .collect();
        if saved.target == self.target && (AIM_RANGE.0..=AIM_RANGE.1).contains(&saved.aim) {
            self.aim = saved.aim;
        }
    }

    pub fn saved(&self) -> Saved {
        Saved {
            target: self.target,
            scores: self.scores.iter().copied().collect(),
            sent: self.sent.iter().copied().collect(),
            aim: self.aim,
        }
    }

    /// The share aimed at now: the target, times the budget's allowance.
    pub fn target_now(&self, now: Instant) -> f32 {
        let allowance = self.pacer.as_ref().map_or(1.0, |p| p.allowance(now));
        (f64::from(self.target) * allowance) as f32
    }

    /// The learned router's cut for the next question: a score at or above
    /// it goes to the cloud.
    pub fn cut(&self) -> f32 {
        let n = self.sorted.len();
        if n < WARMUP {
            return self.fitted_cut;
        }
        let (lowest, highest) = (self.sorted[0], self.sorted[n - 1]);
        let spread = highest - lowest;
        if self.aim <= 0.0 {
            // Beyond the window's highest score, in proportion to their spread:
            // after a shift towards higher scores, none of the window's
            // scores is high enough to leave only the target above it.
            return next_above(highest) - self.aim * spread;
        }
        if self.aim >= 1.0 {
            return (lowest - (self.aim - 1.0) * spread).max(0.0);
        }
        let k = (self.aim * n as f32).round() as usize;
        if k == 0 {
            return next_above(highest);
        }
        if k >= n {
            return lowest;
        }
        // Midway between the k-th highest and the one below it, so exactly
        // k of the window lie at or above.
        (self.sorted[n - k - 1] + self.sorted[n - k]) / 2.0
    }

    /// Records a counted question (the cloud could take it when it was routed).
    pub fn observe(&mut self, o: Observed, now: Instant) {
        let target = self.target_now(now);
        if let Some(p) = &mut self.pacer {
            p.refill(now);
            if o.cloud {
                p.tokens = (p.tokens - 1.0).max(0.0);
            }
        }
        if self.sorted.len() >= WARMUP {
            // While the fitted cut serves, its misses are not the window's to make up.
            self.aim =
                (self.aim + STEP * (target - o.cloud as u8 as f32)).clamp(AIM_RANGE.0, AIM_RANGE.1);
        }
        self.sent.push_back(o.cloud);
        if self.sent.len() > self.window {
            self.sent.pop_front();
        }
        if let Some(s) = o.score.filter(|s| s.is_finite()) {
            self.scores.push_back(s);
            let at = self.sorted.partition_point(|x| *x < s);
            self.sorted.insert(at, s);
            if self.scores.len() > self.window {
                let old = self
                    .scores
                    .pop_front()
                    .expect("over the window, so not empty");
                let at = self.sorted.partition_point(|x| *x < old);
                self.sorted.remove(at);
            }
        }
    }

    pub fn status(&self, now: Instant) -> ShareStatus {
        let counted = self.sent.len();
        ShareStatus {
            target: self.target,
            target_now: self.target_now(now),
            recent: (counted > 0)
                .then(|| self.sent.iter().filter(|s| **s).count() as f32 / counted as f32),
            cut: self.cut(),
            counted,
        }
    }
}

/// The smallest score above `x` (a cut there sends nothing that scored `x`).
fn next_above(x: f32) -> f32 {
    if x >= 1.0 {
        1.0 + f32::EPSILON
    } else {
        f32::from_bits(x.max(0.0).to_bits() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use std::time::Duration;

    /// Routes `scores` as the router does (at or above the cut: cloud),
    /// one question per `gap`; returns what each did.
    fn route(share: &mut CloudShare, scores: &[f32], start: Instant, gap: Duration) -> Vec<bool> {
        let mut sent = Vec::new();
        for (i, &s) in scores.iter().enumerate() {
            let cloud = s >= share.cut();
            share.observe(
                Observed {
                    score: Some(s),
                    cloud,
                },
                start + gap * i as u32,
            );
            sent.push(cloud);
        }
        sent
    }

    fn uniform(n: usize, lo: f32, hi: f32, seed: u64) -> Vec<f32> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(lo..hi)).collect()
    }

    fn share_of(sent: &[bool]) -> f32 {
        sent.iter().filter(|s| **s).count() as f32 / sent.len() as f32
    }

    #[test]
    fn the_fitted_cut_serves_until_the_window_has_enough_scores() {
        let now = Instant::now();
        let mut share = CloudShare::new(0.25, 300, 0.42, None, now);
        for _ in 0..WARMUP - 1 {
            share.observe(
                Observed {
                    score: Some(0.9),
                    cloud: true,
                },
                now,
            );
        }
        assert_eq!(share.cut(), 0.42);
        share.observe(
            Observed {
                score: Some(0.9),
                cloud: true,
            },
            now,
        );
        assert_ne!(share.cut(), 0.42);
    }

    #[test]
    fn the_share_holds_when_the_mix_shifts() {
        // Scores around 0.3, then around 0.6: the fitted cut (0.45) would
        // send almost none of the first half and almost all of the second.
        let now = Instant::now();
        let mut share = CloudShare::new(0.25, 300, 0.45, None, now);
        let mut scores = uniform(600, 0.1, 0.5, 1);
        scores.extend(uniform(600, 0.4, 0.8, 2));
        let sent = route(&mut share, &scores, now, Duration::ZERO);
        for w in (200..=1000).step_by(50) {
            let s = share_of(&sent[w..w + 200]);
            assert!((s - 0.25).abs() <= 0.04, "questions {w}..{}: {s}", w + 200);
        }
    }

    #[test]
    fn calls_the_score_did_not_decide_count_in_the_share() {
        // Every tenth question goes to the cloud whatever its score (a
        // safety escalation): the score sends fewer, so the total holds.
        let now = Instant::now();
        let mut share = CloudShare::new(0.25, 300, 0.5, None, now);
        let scores = uniform(2000, 0.0, 1.0, 3);
        let mut sent = Vec::new();
        for (i, &s) in scores.iter().enumerate() {
            let forced = i % 10 == 0;
            let cloud = forced || s >= share.cut();
            share.observe(
                Observed {
                    score: (!forced).then_some(s),
                    cloud,
                },
                now,
            );
            sent.push(cloud);
        }
        assert!(
            (share_of(&sent[500..]) - 0.25).abs() < 0.01,
            "{}",
            share_of(&sent[500..])
        );
    }

    #[test]
    fn the_budget_is_spent_across_the_hour_not_in_its_first_part() {
        // A budget of 100 calls an hour, 300 questions an hour, half of
        // them worth the cloud: unpaced, the budget would be gone 40
        // minutes in.
        let start = Instant::now();
        let mut share = CloudShare::new(0.5, 300, 0.5, Some(100), start);
        let scores = uniform(600, 0.0, 1.0, 4);
        let sent = route(&mut share, &scores, start, Duration::from_secs(12));
        let calls = |from: usize, to: usize| sent[from..to].iter().filter(|s| **s).count();
        // The second hour, by quarter: each gets about a quarter of the budget.
        for q in 0..4 {
            let n = calls(300 + q * 75, 375 + q * 75);
            assert!((18..=32).contains(&n), "quarter {q}: {n} calls");
        }
        assert!(calls(300, 600) <= 100, "{}", calls(300, 600));
        let status = share.status(start + Duration::from_secs(12 * 600));
        assert!(status.target_now < 0.45, "{status:?}");
    }

    #[test]
    fn a_restart_keeps_the_window_and_the_aim_unless_the_target_changed() {
        let now = Instant::now();
        let mut share = CloudShare::new(0.25, 300, 0.45, None, now);
        route(&mut share, &uniform(400, 0.0, 1.0, 5), now, Duration::ZERO);
        let saved = share.saved();
        let mut again = CloudShare::new(0.25, 300, 0.45, None, now);
        again.restore(saved.clone());
        assert_eq!(again.cut(), share.cut());
        assert_eq!(again.status(now), share.status(now));
        let mut smaller = CloudShare::new(0.25, 100, 0.45, None, now);
        smaller.restore(saved.clone());
        assert_eq!(smaller.status(now).counted, 100);
        let mut other = CloudShare::new(0.1, 300, 0.45, None, now);
        other.restore(saved);
        assert_eq!(other.aim, 0.1);
    }

    #[test]
    fn the_cut_sends_nothing_or_everything_at_the_ends() {
        let now = Instant::now();
        let mut share = CloudShare::new(0.0, 100, 0.5, None, now);
        for s in uniform(100, 0.0, 1.0, 6) {
            share.observe(
                Observed {
                    score: Some(s),
                    cloud: false,
                },
                now,
            );
        }
        share.aim = 0.0;
        assert!(share.sorted.iter().all(|s| *s < share.cut()));
        share.aim = 1.0;
        assert!(share.sorted.iter().all(|s| *s >= share.cut()));
    }

    proptest! {
        /// However the scores run, the calls after the warm-up miss the
        /// target by no more than the aim moved over them, divided by STEP
        /// (the aim is the running sum of the misses), as long as it stayed
        /// inside its range.
        #[test]
        fn calls_track_the_target(
            target in 0.05f32..0.6,
            window in 50usize..400,
            scores in proptest::collection::vec(0.0f32..1.0, 300..1500),
        ) {
            let now = Instant::now();
            let mut share = CloudShare::new(target, window, 0.5, None, now);
            route(&mut share, &scores[..WARMUP], now, Duration::ZERO);
            let from = share.aim;
            let mut sent = Vec::new();
            for &s in &scores[WARMUP..] {
                let cloud = s >= share.cut();
                share.observe(Observed { score: Some(s), cloud }, now);
                prop_assume!(share.aim > AIM_RANGE.0 && share.aim < AIM_RANGE.1);
                sent.push(cloud);
            }
            let calls = sent.iter().filter(|s| **s).count() as f32;
            let miss = calls - target * sent.len() as f32;
            prop_assert!((miss + (share.aim - from) / STEP).abs() < 0.5, "{miss}");
            prop_assert!(miss.abs() <= 1.0 / STEP, "{calls} of {}", sent.len());
        }
    }
}
