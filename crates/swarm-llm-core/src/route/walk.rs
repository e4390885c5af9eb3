//! One routing walk for every caller: a stepper that, given what is known
//! so far, returns the next action (generate the first answer, ask the
//! swarm, ask the cloud, reply). The pipeline carries the actions out, the
//! measurements replay the same walk on recorded answers ([`replay`]), and
//! the property tests check it. Pure: the decisions are [`super::policy`]'s
//! three steps; this module only joins them.

use super::harm::SafetyAction;
use super::policy::{
    after_first, after_vote, before_generation, AfterFirst, AfterVote, BeforeGeneration, Gates,
    Policy, Route,
};

/// How the cloud is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudFraming {
    /// A flagged question whose category goes to the cloud: our refusal and
    /// procedure lead the reply, the cloud's text follows.
    BehindRefusal,
    /// A flagged question where a careful answer is the right one.
    Careful,
    /// A question the board could not answer well enough.
    Plain,
}

/// What the walk wants done next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Generate the first model's answer, then call [`Walk::first_answered`].
    GenerateFirst,
    /// Let the swarm vote, then call [`Walk::voted`].
    Vote,
    /// Ask the cloud, then call [`Walk::cloud_answered`] or [`Walk::cloud_failed`].
    AskCloud(CloudFraming),
    /// Done: reply with this.
    Reply(Outcome),
}

/// Whose text the reply carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Our refusal and procedure alone.
    Refusal,
    /// Our refusal and procedure, then the cloud's text.
    RefusalThenCloud,
    First,
    Swarm,
    Cloud,
}

impl Source {
    /// Whether our refusal leads the reply (it then carries the advice).
    pub fn refusal_leads(self) -> bool {
        matches!(self, Source::Refusal | Source::RefusalThenCloud)
    }
}

/// Why a reply is less than the walk wanted, or a refusal has nothing more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// The site's action for the category is to refuse.
    SiteRefuses,
    /// The cloud was needed but not allowed for the topic or not available.
    CloudUnusable,
    /// The cloud was asked and failed.
    CloudFailed,
}

/// The walk's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub source: Source,
    pub route: Route,
    /// Degraded answers and refusals say why; a full answer has none.
    pub shortfall: Option<Shortfall>,
}

impl Outcome {
    fn of(source: Source, route: Route, shortfall: Option<Shortfall>) -> Action {
        Action::Reply(Outcome {
            source,
            route,
            shortfall,
        })
    }

    /// Whether the reply is degraded: an answer that fell short (a
    /// refusal's reason is not a degradation).
    pub fn degraded(&self) -> bool {
        self.shortfall.is_some() && self.source != Source::Refusal
    }
}

/// What the first answer tells the policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FirstFacts {
    pub confidence: f32,
    pub difficulty: f32,
    /// The learned router's score, when the policy has one.
    pub cloud_gain: Option<f32>,
    /// Whether the answer says more than the question ([`super::vote::answers`]).
    pub answered: bool,
}

/// Where the walk is: what the last action asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Start,
    First,
    Vote,
    /// The cloud, asked under this framing; `fallback` answers if it fails.
    Cloud {
        framing: CloudFraming,
        fallback: Option<Source>,
    },
    Done,
}

/// One question's walk.
#[derive(Debug, Clone)]
pub struct Walk<'p> {
    gates: Gates,
    can_vote: bool,
    policy: &'p Policy,
    waiting: Waiting,
    first_late: bool,
}

impl<'p> Walk<'p> {
    /// `can_vote`: whether any other model or peer board could vote.
    pub fn new(gates: Gates, can_vote: bool, policy: &'p Policy) -> Self {
        Self {
            gates,
            can_vote,
            policy,
            waiting: Waiting::Start,
            first_late: false,
        }
    }

    /// The first model is not expected to answer before the deadline (its
    /// queue, [`super::load`]): a question the cloud may take goes there
    /// rather than wait its turn, and back to the first model if the cloud
    /// fails. Otherwise nothing changes.
    pub fn first_late(mut self, late: bool) -> Self {
        self.first_late = late;
        self
    }

    /// The gates as they stand now (a failed careful cloud answer closes
    /// the cloud for the rest of the walk).
    pub fn gates(&self) -> Gates {
        self.gates
    }

    /// Step 1, from the safety verdict and the gates.
    pub fn start(&mut self) -> Action {
        assert_eq!(self.waiting, Waiting::Start, "a walk starts once");
        match before_generation(self.gates) {
            BeforeGeneration::Refuse => {
                let why = if self.gates.safety == SafetyAction::Refuse {
                    Shortfall::SiteRefuses
                } else {
                    Shortfall::CloudUnusable
                };
                self.done(Outcome::of(Source::Refusal, Route::Refuse, Some(why)))
            }
            BeforeGeneration::SafetyCloud => self.ask_cloud(CloudFraming::BehindRefusal, None),
            BeforeGeneration::NoticeCloud => self.ask_cloud(CloudFraming::Careful, None),
            BeforeGeneration::AnswerLocally if self.first_late && self.gates.cloud_usable() => {
                self.ask_cloud(CloudFraming::Plain, None)
            }
            BeforeGeneration::AnswerLocally => self.generate_first(),
        }
    }

    /// Step 2, from the first answer.
    pub fn first_answered(&mut self, f: FirstFacts) -> Action {
        assert_eq!(
            self.waiting,
            Waiting::First,
            "the first answer was not asked for"
        );
        let step = after_first(
            f.confidence,
            f.difficulty,
            f.cloud_gain,
            f.answered,
            self.can_vote,
            self.gates,
            self.policy,
        );
        match step {
            AfterFirst::Accept => self.done(Outcome::of(Source::First, Route::Local, None)),
            AfterFirst::AcceptDegraded => self.done(Outcome::of(
                Source::First,
                Route::Local,
                Some(Shortfall::CloudUnusable),
            )),
            AfterFirst::Cloud => self.ask_cloud(CloudFraming::Plain, Some(Source::First)),
            AfterFirst::Vote => {
                self.waiting = Waiting::Vote;
                Action::Vote
            }
        }
    }

    /// Step 3, from the vote.
    pub fn voted(&mut self, agreed: bool) -> Action {
        assert_eq!(self.waiting, Waiting::Vote, "no vote was asked for");
        match after_vote(agreed, self.gates) {
            AfterVote::Accept => self.done(Outcome::of(Source::Swarm, Route::Swarm, None)),
            AfterVote::AcceptDegraded => self.done(Outcome::of(
                Source::Swarm,
                Route::Swarm,
                Some(Shortfall::CloudUnusable),
            )),
            AfterVote::Cloud => self.ask_cloud(CloudFraming::Plain, Some(Source::Swarm)),
        }
    }

    pub fn cloud_answered(&mut self) -> Action {
        let Waiting::Cloud { framing, .. } = self.waiting else {
            panic!("the cloud was not asked");
        };
        let source = match framing {
            CloudFraming::BehindRefusal => Source::RefusalThenCloud,
            CloudFraming::Careful | CloudFraming::Plain => Source::Cloud,
        };
        self.done(Outcome::of(source, Route::Cloud, None))
    }

    /// The cloud failed: a refusal stays a refusal, a careful question is
    /// answered on the board instead, and an answer the board already has
    /// is kept, degraded.
    pub fn cloud_failed(&mut self) -> Action {
        let Waiting::Cloud { framing, fallback } = self.waiting else {
            panic!("the cloud was not asked");
        };
        let failed = Some(Shortfall::CloudFailed);
        match (framing, fallback) {
            (CloudFraming::BehindRefusal, _) => {
                self.done(Outcome::of(Source::Refusal, Route::Refuse, failed))
            }
            (CloudFraming::Careful, _) => {
                self.gates.cloud_available = false;
                self.generate_first()
            }
            (CloudFraming::Plain, Some(source)) => {
                let route = if source == Source::Swarm {
                    Route::Swarm
                } else {
                    Route::Local
                };
                self.done(Outcome::of(source, route, failed))
            }
            // Sent for want of time before the first model answered: it
            // answers now, late as it may be, and the cloud is not asked twice.
            (CloudFraming::Plain, None) => {
                self.gates.cloud_available = false;
                self.generate_first()
            }
        }
    }

    fn generate_first(&mut self) -> Action {
        self.waiting = Waiting::First;
        Action::GenerateFirst
    }

    fn ask_cloud(&mut self, framing: CloudFraming, fallback: Option<Source>) -> Action {
        self.waiting = Waiting::Cloud { framing, fallback };
        Action::AskCloud(framing)
    }

    fn done(&mut self, reply: Action) -> Action {
        self.waiting = Waiting::Done;
        reply
    }
}

/// What a replay knows of a question in advance: its recorded answers.
#[derive(Debug, Clone, Copy)]
pub struct Known {
    pub gates: Gates,
    pub can_vote: bool,
    /// The first answer, when one was recorded (safety questions have none).
    pub first: Option<FirstFacts>,
    /// Whether the swarm agrees, if asked.
    pub swarm_agrees: bool,
    /// Whether the cloud answers, if asked.
    pub cloud_answers: bool,
    /// Whether the first model was expected to miss the deadline ([`Walk::first_late`]).
    pub first_late: bool,
}

/// The walk's end on recorded answers, and the actions taken on the way
/// (the measurements count the calls and their latency).
pub fn replay(k: &Known, policy: &Policy) -> (Outcome, Vec<Action>) {
    let mut walk = Walk::new(k.gates, k.can_vote, policy).first_late(k.first_late);
    let mut taken = Vec::new();
    let mut action = walk.start();
    loop {
        taken.push(action);
        action = match action {
            Action::Reply(outcome) => return (outcome, taken),
            Action::GenerateFirst => match k.first {
                Some(f) => walk.first_answered(f),
                // Nothing recorded to answer with: the walk stops here.
                None => Outcome::of(Source::First, Route::Local, None),
            },
            Action::Vote => walk.voted(k.swarm_agrees),
            Action::AskCloud(_) if k.cloud_answers => walk.cloud_answered(),
            Action::AskCloud(_) => walk.cloud_failed(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gates(safety: SafetyAction, cloud: bool) -> Gates {
        Gates {
            safety,
            cloud_allowed: true,
            cloud_available: cloud,
        }
    }

    fn unsure() -> FirstFacts {
        FirstFacts {
            confidence: 0.1,
            difficulty: 0.0,
            cloud_gain: None,
            answered: true,
        }
    }

    #[test]
    fn a_question_the_first_model_would_answer_too_late_goes_to_the_cloud_when_it_can() {
        let p = Policy::default();
        let mut w = Walk::new(gates(SafetyAction::Allow, true), false, &p).first_late(true);
        assert_eq!(w.start(), Action::AskCloud(CloudFraming::Plain));
        let Action::Reply(o) = w.cloud_answered() else {
            panic!("a reply")
        };
        assert_eq!(
            (o.source, o.route, o.shortfall),
            (Source::Cloud, Route::Cloud, None)
        );
        // The cloud fails: the first model answers after all.
        let mut w = Walk::new(gates(SafetyAction::Allow, true), false, &p).first_late(true);
        w.start();
        assert_eq!(w.cloud_failed(), Action::GenerateFirst);
        assert!(!w.gates().cloud_available);
        // No cloud to go to, or a flagged question: as before.
        let mut w = Walk::new(gates(SafetyAction::Allow, false), false, &p).first_late(true);
        assert_eq!(w.start(), Action::GenerateFirst);
        let mut w = Walk::new(gates(SafetyAction::Refuse, true), false, &p).first_late(true);
        assert!(matches!(w.start(), Action::Reply(o) if o.route == Route::Refuse));
    }

    #[test]
    fn a_careful_question_whose_cloud_fails_is_answered_on_the_board_with_the_cloud_closed() {
        let p = Policy::default();
        let mut w = Walk::new(gates(SafetyAction::Notice, true), false, &p);
        assert_eq!(w.start(), Action::AskCloud(CloudFraming::Careful));
        assert_eq!(w.cloud_failed(), Action::GenerateFirst);
        assert!(!w.gates().cloud_available);
        // Unsure, nobody to vote and the cloud closed: kept, degraded.
        let Action::Reply(o) = w.first_answered(unsure()) else {
            panic!("a reply")
        };
        assert_eq!((o.source, o.route), (Source::First, Route::Local));
        assert_eq!(o.shortfall, Some(Shortfall::CloudUnusable));
        assert!(o.degraded());
    }

    #[test]
    fn a_refusal_stays_a_refusal_when_the_cloud_behind_it_fails() {
        let p = Policy::default();
        let mut w = Walk::new(gates(SafetyAction::Cloud, true), true, &p);
        assert_eq!(w.start(), Action::AskCloud(CloudFraming::BehindRefusal));
        let Action::Reply(o) = w.cloud_failed() else {
            panic!("a reply")
        };
        assert_eq!((o.source, o.route), (Source::Refusal, Route::Refuse));
        assert!(o.source.refusal_leads() && !o.degraded());
        let mut w = Walk::new(gates(SafetyAction::Cloud, true), true, &p);
        w.start();
        let Action::Reply(o) = w.cloud_answered() else {
            panic!("a reply")
        };
        assert_eq!(
            (o.source, o.route),
            (Source::RefusalThenCloud, Route::Cloud)
        );
        let mut w = Walk::new(gates(SafetyAction::Refuse, true), true, &p);
        let Action::Reply(o) = w.start() else {
            panic!("a reply")
        };
        assert_eq!(o.shortfall, Some(Shortfall::SiteRefuses));
    }

    #[test]
    fn a_failed_cloud_keeps_the_swarms_answer_degraded() {
        let p = Policy::default();
        let mut w = Walk::new(gates(SafetyAction::Allow, true), true, &p);
        assert_eq!(w.start(), Action::GenerateFirst);
        assert_eq!(w.first_answered(unsure()), Action::Vote);
        assert_eq!(w.voted(false), Action::AskCloud(CloudFraming::Plain));
        let Action::Reply(o) = w.cloud_failed() else {
            panic!("a reply")
        };
        assert_eq!((o.source, o.route), (Source::Swarm, Route::Swarm));
        assert_eq!(o.shortfall, Some(Shortfall::CloudFailed));
    }

    #[test]
    #[should_panic(expected = "no vote was asked for")]
    fn an_event_the_walk_did_not_ask_for_is_a_bug() {
        let p = Policy::default();
        let mut w = Walk::new(gates(SafetyAction::Allow, true), true, &p);
        w.start();
        w.voted(true);
    }

    proptest! {
        /// Whatever is known, the walk replies within four actions, asks the
        /// cloud at most twice (a careful try, then never again once it
        /// failed) and the first model at most once, and never answers from
        /// the cloud when the cloud could not be used.
        #[test]
        fn every_walk_ends_soon_and_never_answers_from_a_closed_cloud(
            safety in prop_oneof![
                Just(SafetyAction::Allow),
                Just(SafetyAction::Notice),
                Just(SafetyAction::Cloud),
                Just(SafetyAction::Refuse)
            ],
            cloud_allowed: bool,
            cloud_available: bool,
            can_vote: bool,
            confidence in 0.0f32..1.0,
            answered: bool,
            swarm_agrees: bool,
            cloud_answers: bool,
            first_late: bool,
        ) {
            let k = Known {
                gates: Gates { safety, cloud_allowed, cloud_available },
                can_vote,
                first: Some(FirstFacts { confidence, difficulty: 0.0, cloud_gain: None, answered }),
                swarm_agrees,
                cloud_answers,
                first_late,
            };
            let (o, taken) = replay(&k, &Policy::default());
            prop_assert!(taken.len() <= 5, "{taken:?}");
            let asked = |a: fn(&Action) -> bool| taken.iter().filter(|x| a(x)).count();
            prop_assert!(asked(|a| matches!(a, Action::AskCloud(_))) <= 2);
            prop_assert!(asked(|a| *a == Action::GenerateFirst) <= 1);
            if !(cloud_allowed && cloud_available) {
                prop_assert!(asked(|a| matches!(a, Action::AskCloud(_))) == 0);
                prop_assert!(o.route != Route::Cloud);
            }
            if !cloud_answers {
                prop_assert!(o.route != Route::Cloud);
            }
            prop_assert_eq!(matches!(taken.last(), Some(Action::Reply(_))), true);
        }
    }
}
