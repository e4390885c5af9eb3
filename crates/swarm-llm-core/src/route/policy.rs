//! The routing policy: which route answers a question, decided step by step
//! from the signals as they become available. Pure code; the router stage
//! follows these decisions and does the I/O.
//!
//! 1. Before generation: a safety-flagged question never gets a lone small
//!    model's answer. Where its category's action is `cloud`, it goes to the
//!    cloud behind our refusal and safety notice; where the action is
//!    `refuse`, or the cloud is not allowed (data residency) or not
//!    reachable, it is refused with the safe procedure.
//! 2. After the first model's answer: confident enough (and the question not
//!    too hard) -> `local`; hopeless -> `cloud`; in between -> a swarm vote.
//!    With a learned router (`[policy.learned]`), its score (how likely the
//!    cloud is to turn a wrong answer right) decides instead: below
//!    `vote_at` -> `local`, from `cloud_at` -> `cloud`, in between -> a vote.
//! 3. After the vote: agreement high enough -> `swarm`; else `cloud`.
//!
//! Without a usable cloud, steps 2 and 3 fall back to the best local answer,
//! marked degraded. Lower confidence never moves a question towards `local`.

use serde::{Deserialize, Serialize};

use super::harm::SafetyAction;
use super::learned::LearnedRouter;
use super::signals::Signal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// One local small model answered.
    Local,
    /// Several local small models voted.
    Swarm,
    /// The cloud model answered.
    Cloud,
    /// A safety refusal.
    Refuse,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Local => "local",
            Route::Swarm => "swarm",
            Route::Cloud => "cloud",
            Route::Refuse => "refuse",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Which token statistic is the answer's confidence (chosen by measurement:
    /// `swarm-llm signals`).
    pub signal: Signal,
    /// The first answer is kept when its confidence is at least this.
    #[serde(serialize_with = "crate::route::f32_as_written")]
    pub local_min_confidence: f32,
    /// ...and the question's difficulty estimate is below this.
    #[serde(serialize_with = "crate::route::f32_as_written")]
    pub local_max_difficulty: f32,
    /// A first answer less confident than this goes straight to the cloud,
    /// without a vote (0 disables the shortcut).
    #[serde(serialize_with = "crate::route::f32_as_written")]
    pub cloud_below_confidence: f32,
    /// Share of the (confidence-weighted) votes one answer needs for the swarm to answer.
    #[serde(serialize_with = "crate::route::f32_as_written")]
    pub swarm_min_agreement: f32,
    /// The learned router, which replaces the two confidence bars above when
    /// present (`swarm-llm calibrate --learn` writes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learned: Option<LearnedRouter>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            signal: Signal::LowQuantileProb,
            local_min_confidence: 0.5,
            local_max_difficulty: 1.0,
            cloud_below_confidence: 0.0,
            swarm_min_agreement: 0.6,
            learned: None,
        }
    }
}

impl Policy {
    /// The policy with the learned router's cut moved to `cloud_at` (the
    /// live cut of [`super::share`]); a vote band below it keeps its width.
    pub fn with_cloud_cut(&self, cloud_at: f32) -> Policy {
        let mut p = self.clone();
        if let Some(l) = &mut p.learned {
            let band = l.cloud_at - l.vote_at;
            l.cloud_at = cloud_at;
            l.vote_at = (cloud_at - band).max(0.0);
        }
        p
    }

    pub fn validate(&self, key: &str) -> Vec<(String, String)> {
        let mut v = Vec::new();
        for (name, x) in [
            ("local_min_confidence", self.local_min_confidence),
            ("local_max_difficulty", self.local_max_difficulty),
            ("cloud_below_confidence", self.cloud_below_confidence),
            ("swarm_min_agreement", self.swarm_min_agreement),
        ] {
            if !(0.0..=1.0).contains(&x) {
                v.push((
                    format!("{key}.{name}"),
                    "must be between 0 and 1".to_string(),
                ));
            }
        }
        if self.cloud_below_confidence > self.local_min_confidence {
            v.push((
                format!("{key}.cloud_below_confidence"),
                "must not be above local_min_confidence".to_string(),
            ));
        }
        if let Some(l) = &self.learned {
            v.extend(l.validate(&format!("{key}.learned")));
        }
        v
    }
}

/// What the question's context allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gates {
    /// What the safety check decided (`allow`: not flagged).
    pub safety: SafetyAction,
    /// Data residency allows this question to leave the board.
    pub cloud_allowed: bool,
    /// The cloud client would try now (configured, breaker closed, budget left).
    pub cloud_available: bool,
}

impl Gates {
    /// Whether the cloud may be asked: allowed for the question and available.
    pub fn cloud_usable(&self) -> bool {
        self.cloud_allowed && self.cloud_available
    }
}

/// Step 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeforeGeneration {
    Refuse,
    /// Our refusal and procedure, then the cloud's answer.
    SafetyCloud,
    /// The cloud's answer with a short safety notice, no refusal.
    NoticeCloud,
    /// Answered on the board (with a safety notice when the action is
    /// `notice` and the cloud cannot be used).
    AnswerLocally,
}

impl BeforeGeneration {
    /// The route this step sends a question on (`local`: the first model
    /// answers, and the later steps decide from its answer).
    pub fn route(self) -> Route {
        match self {
            BeforeGeneration::Refuse => Route::Refuse,
            BeforeGeneration::SafetyCloud | BeforeGeneration::NoticeCloud => Route::Cloud,
            BeforeGeneration::AnswerLocally => Route::Local,
        }
    }
}

pub fn before_generation(g: Gates) -> BeforeGeneration {
    match g.safety {
        SafetyAction::Allow => BeforeGeneration::AnswerLocally,
        SafetyAction::Notice if g.cloud_usable() => BeforeGeneration::NoticeCloud,
        SafetyAction::Notice => BeforeGeneration::AnswerLocally,
        SafetyAction::Cloud if g.cloud_usable() => BeforeGeneration::SafetyCloud,
        SafetyAction::Cloud | SafetyAction::Refuse => BeforeGeneration::Refuse,
    }
}

/// Step 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFirst {
    Accept,
    /// Keep the first answer, but it fell short and nothing better is possible.
    AcceptDegraded,
    Vote,
    Cloud,
}

/// `cloud_gain` is the learned router's score, when the policy has one;
/// `answered` whether the first answer says anything the question does not
/// already say ([`super::vote::answers`]).
pub fn after_first(
    confidence: f32,
    difficulty: f32,
    cloud_gain: Option<f32>,
    answered: bool,
    can_vote: bool,
    g: Gates,
    p: &Policy,
) -> AfterFirst {
    debug_assert!(
        g.safety <= SafetyAction::Notice,
        "only questions answered with a notice reach a local answer when flagged"
    );
    // An answer that only restates the question is no answer, however sure
    // the model was of its tokens (they were the question's own): someone
    // else answers.
    if !answered {
        return if g.cloud_usable() {
            AfterFirst::Cloud
        } else if can_vote {
            AfterFirst::Vote
        } else {
            AfterFirst::AcceptDegraded
        };
    }
    if let (Some(l), Some(gain)) = (&p.learned, cloud_gain) {
        return if gain < l.vote_at {
            AfterFirst::Accept
        } else if gain >= l.cloud_at && g.cloud_usable() {
            AfterFirst::Cloud
        } else if can_vote {
            AfterFirst::Vote
        } else if g.cloud_usable() {
            AfterFirst::Cloud
        } else {
            AfterFirst::AcceptDegraded
        };
    }
    if confidence >= p.local_min_confidence && difficulty < p.local_max_difficulty {
        AfterFirst::Accept
    } else if g.cloud_usable() && confidence < p.cloud_below_confidence {
        AfterFirst::Cloud
    } else if can_vote {
        AfterFirst::Vote
    } else if g.cloud_usable() {
        AfterFirst::Cloud
    } else {
        AfterFirst::AcceptDegraded
    }
}

/// Step 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterVote {
    Accept,
    AcceptDegraded,
    Cloud,
}

pub fn after_vote(agreed: bool, g: Gates) -> AfterVote {
    match (agreed, g.cloud_usable()) {
        (true, _) => AfterVote::Accept,
        (false, true) => AfterVote::Cloud,
        (false, false) => AfterVote::AcceptDegraded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::walk::{replay, FirstFacts, Known};
    use proptest::prelude::*;

    /// Everything the three steps read, known in advance.
    #[derive(Debug, Clone, Copy)]
    struct Facts {
        gates: Gates,
        confidence: f32,
        difficulty: f32,
        cloud_gain: Option<f32>,
        answered: bool,
        can_vote: bool,
        swarm_agrees: bool,
    }

    /// The route the walk ([`crate::route::walk`], the one the pipeline and
    /// the measurements take) reaches on these facts, the cloud answering
    /// when asked, and whether the answer is degraded.
    fn decide(f: &Facts, p: &Policy) -> (Route, bool) {
        let known = Known {
            gates: f.gates,
            can_vote: f.can_vote,
            first: Some(FirstFacts {
                confidence: f.confidence,
                difficulty: f.difficulty,
                cloud_gain: f.cloud_gain,
                answered: f.answered,
            }),
            swarm_agrees: f.swarm_agrees,
            cloud_answers: true,
            first_late: false,
        };
        let (outcome, _) = replay(&known, p);
        (outcome.route, outcome.degraded())
    }

    fn gates() -> impl Strategy<Value = Gates> {
        (
            prop_oneof![
                Just(SafetyAction::Allow),
                Just(SafetyAction::Notice),
                Just(SafetyAction::Cloud),
                Just(SafetyAction::Refuse)
            ],
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(safety, cloud_allowed, cloud_available)| Gates {
                safety,
                cloud_allowed,
                cloud_available,
            })
    }

    /// A learned router with these thresholds (the tests give its score directly).
    fn learned(vote_at: f32, cloud_at: f32) -> LearnedRouter {
        use crate::route::learned::{CLASSES, FEATURES};
        let d = FEATURES.len();
        LearnedRouter {
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            cloud_at,
            vote_at,
            model: crate::route::softmax::Softmax {
                classes: CLASSES.iter().map(|c| c.to_string()).collect(),
                mean: vec![0.0; d],
                scale: vec![1.0; d],
                weights: vec![vec![0.0; d]; 2],
                bias: vec![0.0; 2],
            },
        }
    }

    #[test]
    fn a_live_cut_moves_the_vote_band_with_it() {
        let p = Policy {
            learned: Some(learned(0.3, 0.4)),
            ..Policy::default()
        };
        let l = p.with_cloud_cut(0.6).learned.unwrap();
        assert_eq!(l.cloud_at, 0.6);
        assert!((l.vote_at - 0.5).abs() < 1e-6);
        assert_eq!(p.with_cloud_cut(0.05).learned.unwrap().vote_at, 0.0);
        assert_eq!(Policy::default().with_cloud_cut(0.6), Policy::default());
    }

    fn policy() -> impl Strategy<Value = Policy> {
        (
            0.0f32..=1.0,
            0.0f32..=1.0,
            0.0f32..=1.0,
            0.0f32..=1.0,
            proptest::option::of((0.0f32..=1.0, 0.0f32..=1.0)),
        )
            .prop_map(|(a, b, c, d, l)| Policy {
                signal: Signal::LowQuantileProb,
                local_min_confidence: a.max(c),
                local_max_difficulty: b,
                cloud_below_confidence: a.min(c),
                swarm_min_agreement: d,
                learned: l.map(|(x, y)| learned(x.min(y), x.max(y))),
            })
    }

    fn facts() -> impl Strategy<Value = Facts> {
        (
            gates(),
            0.0f32..=1.0,
            0.0f32..=1.0,
            proptest::option::of(0.0f32..=1.0),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(gates, confidence, difficulty, cloud_gain, answered, can_vote, swarm_agrees)| {
                    Facts {
                        gates,
                        confidence,
                        difficulty,
                        cloud_gain,
                        answered,
                        can_vote,
                        swarm_agrees,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn a_safety_flagged_question_is_never_answered_by_small_models(f in facts(), p in policy()) {
            let f = Facts { gates: Gates { safety: SafetyAction::Cloud, ..f.gates }, ..f };
            let (route, _) = decide(&f, &p);
            prop_assert!(route == Route::Cloud || route == Route::Refuse);
            if !(f.gates.cloud_allowed && f.gates.cloud_available) {
                prop_assert_eq!(route, Route::Refuse);
            }
        }

        #[test]
        fn a_notice_goes_to_the_cloud_when_usable_and_is_never_refused(f in facts(), p in policy()) {
            let f = Facts { gates: Gates { safety: SafetyAction::Notice, ..f.gates }, ..f };
            let (route, _) = decide(&f, &p);
            prop_assert_ne!(route, Route::Refuse);
            if f.gates.cloud_allowed && f.gates.cloud_available {
                prop_assert_eq!(route, Route::Cloud);
            } else {
                let allowed = Facts { gates: Gates { safety: SafetyAction::Allow, ..f.gates }, ..f };
                prop_assert_eq!(decide(&f, &p), decide(&allowed, &p));
            }
        }

        #[test]
        fn a_refuse_action_is_refused_whatever_the_cloud(f in facts(), p in policy()) {
            let f = Facts { gates: Gates { safety: SafetyAction::Refuse, ..f.gates }, ..f };
            prop_assert_eq!(decide(&f, &p), (Route::Refuse, false));
        }

        #[test]
        fn more_uncertainty_never_moves_towards_local(f in facts(), p in policy(), lower in 0.0f32..=1.0) {
            let f = Facts { gates: Gates { safety: SafetyAction::Allow, ..f.gates }, ..f };
            let less_sure = Facts { confidence: f.confidence.min(lower), ..f };
            prop_assert!(decide(&less_sure, &p).0 >= decide(&f, &p).0);
        }

        #[test]
        fn harder_questions_never_move_towards_local(f in facts(), p in policy(), harder in 0.0f32..=1.0) {
            let f = Facts { gates: Gates { safety: SafetyAction::Allow, ..f.gates }, ..f };
            let h = Facts { difficulty: f.difficulty.max(harder), ..f };
            prop_assert!(decide(&h, &p).0 >= decide(&f, &p).0);
        }

        #[test]
        fn a_higher_learned_score_never_moves_towards_local(f in facts(), p in policy(), higher in 0.0f32..=1.0) {
            let f = Facts { gates: Gates { safety: SafetyAction::Allow, ..f.gates }, ..f };
            let more = Facts { cloud_gain: Some(f.cloud_gain.unwrap_or(0.0).max(higher)), ..f };
            let f = Facts { cloud_gain: Some(f.cloud_gain.unwrap_or(0.0)), ..f };
            prop_assert!(decide(&more, &p).0 >= decide(&f, &p).0);
        }

        #[test]
        fn an_answer_that_restates_the_question_is_never_kept_as_it_is(f in facts(), p in policy()) {
            let f = Facts { gates: Gates { safety: SafetyAction::Allow, ..f.gates }, answered: false, ..f };
            let (route, degraded) = decide(&f, &p);
            prop_assert!(route != Route::Local || degraded);
            let usable = f.gates.cloud_allowed && f.gates.cloud_available;
            prop_assert_eq!(route == Route::Cloud, usable);
        }

        #[test]
        fn without_a_usable_cloud_nothing_goes_to_it(f in facts(), p in policy()) {
            let f = Facts { gates: Gates { cloud_available: false, ..f.gates }, ..f };
            prop_assert_ne!(decide(&f, &p).0, Route::Cloud);
        }

        #[test]
        fn only_fallbacks_are_degraded(f in facts(), p in policy()) {
            let (route, degraded) = decide(&f, &p);
            if degraded {
                prop_assert!(!(f.gates.cloud_allowed && f.gates.cloud_available));
                prop_assert!(route == Route::Local || route == Route::Swarm);
            }
        }
    }

    #[test]
    fn the_three_steps() {
        let g = Gates {
            safety: SafetyAction::Allow,
            cloud_allowed: true,
            cloud_available: true,
        };
        let p = Policy {
            local_min_confidence: 0.6,
            cloud_below_confidence: 0.1,
            ..Policy::default()
        };
        let f = |confidence, swarm_agrees| Facts {
            gates: g,
            confidence,
            difficulty: 0.0,
            cloud_gain: None,
            answered: true,
            can_vote: true,
            swarm_agrees,
        };
        assert_eq!(decide(&f(0.9, false), &p), (Route::Local, false));
        assert_eq!(decide(&f(0.3, true), &p), (Route::Swarm, false));
        assert_eq!(decide(&f(0.3, false), &p), (Route::Cloud, false));
        assert_eq!(decide(&f(0.05, true), &p), (Route::Cloud, false));
        let offline = Facts {
            gates: Gates {
                cloud_available: false,
                ..g
            },
            ..f(0.3, false)
        };
        assert_eq!(decide(&offline, &p), (Route::Swarm, true));
        let residency = Facts {
            gates: Gates {
                safety: SafetyAction::Cloud,
                cloud_allowed: false,
                ..g
            },
            ..f(0.9, true)
        };
        assert_eq!(decide(&residency, &p), (Route::Refuse, false));
    }

    #[test]
    fn the_learned_score_keeps_votes_or_sends() {
        let g = Gates {
            safety: SafetyAction::Allow,
            cloud_allowed: true,
            cloud_available: true,
        };
        let p = Policy {
            learned: Some(learned(0.2, 0.6)),
            ..Policy::default()
        };
        let f = |gain, swarm_agrees| Facts {
            gates: g,
            // A confidence the threshold policy would keep: the score decides.
            confidence: 0.99,
            difficulty: 0.0,
            cloud_gain: Some(gain),
            answered: true,
            can_vote: true,
            swarm_agrees,
        };
        assert_eq!(decide(&f(0.1, false), &p), (Route::Local, false));
        assert_eq!(decide(&f(0.4, true), &p), (Route::Swarm, false));
        assert_eq!(decide(&f(0.4, false), &p), (Route::Cloud, false));
        assert_eq!(decide(&f(0.7, true), &p), (Route::Cloud, false));
        // No score (a policy fitted for another input): the thresholds decide.
        assert_eq!(
            decide(
                &Facts {
                    cloud_gain: None,
                    ..f(0.7, true)
                },
                &p
            ),
            (Route::Local, false)
        );
        // Offline: the best local answer, marked degraded.
        let offline = Facts {
            gates: Gates {
                cloud_available: false,
                ..g
            },
            ..f(0.7, false)
        };
        assert_eq!(decide(&offline, &p), (Route::Swarm, true));
    }

    #[test]
    fn policy_values_are_checked() {
        let bad = Policy {
            local_min_confidence: 0.2,
            cloud_below_confidence: 0.5,
            swarm_min_agreement: 1.5,
            ..Policy::default()
        };
        let keys: Vec<String> = bad
            .validate("routing")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![
                "routing.swarm_min_agreement",
                "routing.cloud_below_confidence"
            ]
        );
    }
}
