//! The swarm vote: group answers that say the same thing, weigh each by its
//! model's confidence, and decide, as early as possible, whether the swarm
//! agrees enough to answer. Pure code.
//!
//! Normalisation reads an answer the way a person comparing them would: the
//! first number that is not just repeated from the question, with its unit
//! ("3 A", "3 amps", "3.0 A" and "3000 mA" agree; "30 A" does not), or else
//! the content words left after dropping the question's own words and filler
//! ("The capital of Australia is Canberra." and "Canberra" agree). For a
//! multiple-choice question, the option an answer picks ("C", "(C)" and
//! "C. Incandescent" agree).

use std::collections::BTreeSet;

use serde::Serialize;

use super::choice;
use crate::text::{self, Quantity};

/// What an answer says, reduced for comparison.
#[derive(Debug, Clone, PartialEq)]
pub enum Key {
    /// A value in the unit's base (kW given as W, mA as A), with that base unit.
    Number {
        value: f64,
        unit: Option<&'static str>,
    },
    Words(BTreeSet<String>),
    /// The option picked, for a question that offers options.
    Choice(usize),
}

/// Prefixed units and their base unit and factor.
const SCALES: &[(&str, &str, f64)] = &[
    ("kW", "W", 1e3),
    ("mA", "A", 1e-3),
    ("kV", "V", 1e3),
    ("mV", "V", 1e-3),
    ("ms", "s", 1e-3),
    ("min", "s", 60.0),
    ("kohm", "ohm", 1e3),
    ("kHz", "Hz", 1e3),
    ("MHz", "Hz", 1e6),
    ("GHz", "Hz", 1e9),
    ("kPa", "Pa", 1e3),
];

const FILLER: &[&str] = &[
    "a",
    "an",
    "the",
    "is",
    "are",
    "was",
    "it",
    "its",
    "it's",
    "of",
    "for",
    "to",
    "in",
    "on",
    "and",
    "or",
    "that",
    "this",
    "which",
    "answer",
    "approximately",
    "about",
    "around",
    "roughly",
    "so",
    "be",
    "by",
    "with",
    "as",
    "at",
    "from",
    "usually",
    "typically",
    "generally",
    "called",
    "known",
    "stand",
    "stands",
];

fn base_unit(q: &Quantity) -> (f64, Option<&'static str>) {
    match q.unit.and_then(|u| SCALES.iter().find(|(p, _, _)| *p == u)) {
        Some((_, base, factor)) => (q.value * factor, Some(*base)),
        None => (q.value, q.unit),
    }
}

/// Crude stemming so that "stands"/"stand" and "controllers"/"controller" meet.
fn stem(w: &str) -> String {
    for suffix in ["ies", "es", "s"] {
        if w.len() > suffix.len() + 2 && w.ends_with(suffix) && !w.ends_with("ss") {
            return w[..w.len() - suffix.len()].to_string();
        }
    }
    w.to_string()
}

/// Reduces an answer to the key it is compared by.
pub fn normalise(answer: &str, question: &str) -> Key {
    if let Some(i) = choice::picked(answer, &choice::options(question)) {
        return Key::Choice(i);
    }
    let asked: Vec<f64> = text::quantities(question)
        .into_iter()
        .map(|q| q.value)
        .collect();
    if let Some(q) = text::quantities(answer)
        .into_iter()
        .find(|q| !asked.iter().any(|a| text::close(*a, q.value, 0.0)))
    {
        let (value, unit) = base_unit(&q);
        return Key::Number { value, unit };
    }
    let question_words: BTreeSet<String> = text::words(question).iter().map(|w| stem(w)).collect();
    let words = text::words(answer)
        .iter()
        .map(|w| stem(w))
        .filter(|w| !FILLER.contains(&w.as_str()) && !question_words.contains(w))
        .collect();
    Key::Words(words)
}

/// Whether an answer says anything the question does not already say: a
/// number of its own, an option picked, or a content word not in the
/// question. "Kill the frozen task on the line's HMI computer." says nothing
/// to "How do I kill the frozen task on the line's HMI computer".
pub fn answers(answer: &str, question: &str) -> bool {
    !says_nothing(&normalise(answer, question))
}

fn says_nothing(key: &Key) -> bool {
    matches!(key, Key::Words(w) if w.is_empty())
}

/// Whether two keys say the same thing.
pub fn agree(a: &Key, b: &Key) -> bool {
    match (a, b) {
        (Key::Number { value: x, unit: ux }, Key::Number { value: y, unit: uy }) => {
            let units_fit = ux.is_none() || uy.is_none() || ux == uy;
            units_fit && text::close(*x, *y, 0.005)
        }
        (Key::Words(x), Key::Words(y)) => {
            if x.is_empty() || y.is_empty() {
                return false;
            }
            let common = x.intersection(y).count();
            let smaller = x.len().min(y.len());
            // One answer's content inside the other's ("Canberra" in
            // "Canberra, in the ACT"), or mostly the same words.
            common == smaller || common * 2 >= x.union(y).count()
        }
        (Key::Choice(x), Key::Choice(y)) => x == y,
        _ => false,
    }
}

/// One model's vote.
#[derive(Debug, Clone, Serialize)]
pub struct Ballot {
    pub model: String,
    pub answer: String,
    /// The model's confidence in this answer, in [0, 1].
    pub confidence: f32,
    /// How much this model's votes count (from config), multiplies the confidence.
    pub weight: f32,
}

impl Ballot {
    fn vote(&self) -> f32 {
        (self.confidence * self.weight).max(0.0)
    }
}

/// The groups of agreeing answers so far.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub ballots: Vec<Ballot>,
    keys: Vec<Key>,
    /// Group index of each ballot.
    pub group_of: Vec<usize>,
    pub group_weight: Vec<f32>,
}

/// The vote's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// The group's share of the votes reached the threshold.
    Agreed { group: usize, share: f32 },
    /// No group can reach the threshold.
    Disagreed { best_share: f32 },
    /// The remaining models could still tip it.
    Open,
}

impl Tally {
    /// Adds a ballot, joining the first group whose representative it agrees with.
    pub fn add(&mut self, ballot: Ballot, question: &str) {
        let key = normalise(&ballot.answer, question);
        let group = (0..self.group_weight.len())
            .find(|&g| {
                let first = self
                    .group_of
                    .iter()
                    .position(|&x| x == g)
                    .expect("a group has a member");
                agree(&self.keys[first], &key)
            })
            .unwrap_or_else(|| {
                self.group_weight.push(0.0);
                self.group_weight.len() - 1
            });
        // A ballot that only restates the question is recorded but weighs
        // nothing: it cannot lead the vote nor dilute the answers that say something.
        if !says_nothing(&key) {
            self.group_weight[group] += ballot.vote();
        }
        self.group_of.push(group);
        self.keys.push(key);
        self.ballots.push(ballot);
    }

    fn cast(&self) -> f32 {
        self.group_weight.iter().sum()
    }

    /// The leading group and its weight.
    pub fn leader(&self) -> Option<(usize, f32)> {
        self.group_weight
            .iter()
            .copied()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    /// Decides if possible. `remaining` is the most weight the models yet to
    /// vote could add (each model's weight times a confidence of 1); the vote
    /// stops early once no remaining ballot can change the outcome.
    pub fn outcome(&self, remaining: f32, threshold: f32) -> Outcome {
        let cast = self.cast();
        let total = cast + remaining;
        if total <= 0.0 {
            return Outcome::Disagreed { best_share: 0.0 };
        }
        let (group, lead) = self.leader().unwrap_or((0, 0.0));
        // Even if every remaining vote went elsewhere, the leader keeps its share.
        if self.ballots.len() >= 2 && lead / total >= threshold {
            return Outcome::Agreed {
                group,
                share: lead / total,
            };
        }
        // Even if every remaining vote joined the leader, it falls short.
        if (lead + remaining) / total < threshold || remaining <= 0.0 {
            let share = if cast > 0.0 { lead / cast } else { 0.0 };
            return if remaining <= 0.0 && self.ballots.len() >= 2 && share >= threshold {
                Outcome::Agreed { group, share }
            } else {
                Outcome::Disagreed { best_share: share }
            };
        }
        Outcome::Open
    }

    /// The most confident answer of a group.
    pub fn representative(&self, group: usize) -> &Ballot {
        self.ballots
            .iter()
            .zip(&self.group_of)
            .filter(|(_, g)| **g == group)
            .map(|(b, _)| b)
            .max_by(|a, b| a.vote().total_cmp(&b.vote()))
            .expect("a group has a member")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(a: &str) -> Key {
        normalise(a, "What current does the heater draw")
    }

    #[test]
    fn an_answer_that_restates_the_question_answers_nothing() {
        let q = "How do I kill the frozen task on the line's HMI computer";
        assert!(!answers(
            "Kill the frozen task on the line's HMI computer.",
            q
        ));
        assert!(!answers("", q));
        assert!(answers("Open Task Manager and end the task.", q));
        let q = "What is the capital city of Australia?";
        assert!(!answers("The capital city of Australia.", q));
        assert!(answers("Canberra", q));
        let q = "How many usable host addresses are there in a slash 26 subnet";
        assert!(
            !answers("A slash 26 subnet.", q),
            "26 is the question's own number"
        );
        assert!(answers("62", q));
        let q =
            "Which lamp is least efficient?\nA. LED\nB. Fluorescent\nC. Incandescent\nD. Sodium";
        assert!(
            answers("C. Incandescent", q),
            "picking an option is an answer"
        );
    }

    #[test]
    fn a_ballot_that_restates_the_question_weighs_nothing() {
        let q = "How do I kill the frozen task on the line's HMI computer";
        let ballot = |model: &str, answer: &str, confidence| Ballot {
            model: model.into(),
            answer: answer.into(),
            confidence,
            weight: 1.0,
        };
        let mut t = Tally::default();
        t.add(
            ballot("a", "Kill the frozen task on the HMI computer.", 0.9),
            q,
        );
        t.add(ballot("b", "End it in Task Manager.", 0.4), q);
        assert_eq!(t.ballots.len(), 2, "the echo is still recorded");
        assert_eq!(t.leader().map(|l| l.0), Some(t.group_of[1]));
        assert_eq!(
            t.outcome(0.0, 0.5),
            Outcome::Agreed {
                group: t.group_of[1],
                share: 1.0
            }
        );
    }

    #[test]
    fn numbers_with_units_group_and_magnitudes_stay_apart() {
        let three = key("3 A");
        for same in ["3 amps", "3.0 A", "It draws 3 A.", "3000 mA", "3"] {
            assert!(agree(&three, &key(same)), "{same}");
        }
        for other in ["30 A", "3 V", "0.3 A", "Canberra"] {
            assert!(!agree(&three, &key(other)), "{other}");
        }
    }

    #[test]
    fn answers_to_a_choice_agree_by_the_option_picked() {
        let q =
            "Which lamp is least efficient?\nA. LED\nB. Fluorescent\nC. Incandescent\nD. Sodium";
        let c = normalise("C", q);
        assert_eq!(c, Key::Choice(2));
        for same in ["(C)", "C. Incandescent", "The answer is C", "Incandescent"] {
            assert!(agree(&c, &normalise(same, q)), "{same}");
        }
        for other in ["A", "B. Fluorescent", "I am not sure"] {
            assert!(!agree(&c, &normalise(other, q)), "{other}");
        }
    }

    #[test]
    fn numbers_repeated_from_the_question_are_not_the_answer() {
        let q = "A 24 volt supply drives 2 amps through a load what is the power in watts";
        assert_eq!(
            normalise("24 volts * 2 amps = 48 watts", q),
            Key::Number {
                value: 48.0,
                unit: Some("W")
            }
        );
        assert!(agree(
            &normalise("48 W", q),
            &normalise("The power is 48 watts.", q)
        ));
    }

    #[test]
    fn words_group_by_content_not_phrasing() {
        let q = "What is the capital city of Australia";
        let canberra = normalise("The capital city of Australia is Canberra.", q);
        assert_eq!(canberra, Key::Words(["canberra".to_string()].into()));
        assert!(agree(&canberra, &normalise("Canberra", q)));
        assert!(!agree(&canberra, &normalise("Sydney.", q)));
        let q = "What does PLC stand for in industrial automation";
        assert!(agree(
            &normalise("PLC stands for Programmable Logic Controller.", q),
            &normalise("programmable logic controllers", q)
        ));
        // An answer that only repeats the question agrees with nothing.
        assert!(!agree(
            &normalise("What does PLC stand for", q),
            &normalise("PLC", q)
        ));
    }

    fn ballot(model: &str, answer: &str, confidence: f32) -> Ballot {
        Ballot {
            model: model.into(),
            answer: answer.into(),
            confidence,
            weight: 1.0,
        }
    }

    #[test]
    fn votes_are_weighted_by_confidence() {
        let q = "What current does the heater draw";
        let mut t = Tally::default();
        t.add(ballot("a", "3 A", 0.9), q);
        t.add(ballot("b", "30 A", 0.2), q);
        t.add(ballot("c", "3 amps", 0.4), q);
        assert_eq!(t.group_of, vec![0, 1, 0]);
        assert!((t.group_weight[0] - 1.3).abs() < 1e-6 && (t.group_weight[1] - 0.2).abs() < 1e-6);
        match t.outcome(0.0, 0.6) {
            Outcome::Agreed { group, share } => {
                assert!(group == 0 && (share - 1.3 / 1.5).abs() < 1e-5)
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(t.representative(0).model, "a");
    }

    #[test]
    fn early_exit_when_the_rest_cannot_change_the_outcome() {
        let q = "What current does the heater draw";
        // Two confident agreeing answers: a third model (weight 1) cannot tip it.
        let mut t = Tally::default();
        t.add(ballot("a", "3 A", 0.95), q);
        assert_eq!(
            t.outcome(2.0, 0.6),
            Outcome::Open,
            "one ballot never decides"
        );
        t.add(ballot("b", "3 amps", 0.9), q);
        assert!(matches!(
            t.outcome(1.0, 0.6),
            Outcome::Agreed { group: 0, .. }
        ));
        // Two confident disagreeing answers: a third cannot lift either to 0.8.
        let mut t = Tally::default();
        t.add(ballot("a", "3 A", 0.9), q);
        t.add(ballot("b", "30 A", 0.9), q);
        assert!(matches!(t.outcome(1.0, 0.8), Outcome::Disagreed { .. }));
        // Weak agreement with a strong model still to vote: open.
        let mut t = Tally::default();
        t.add(ballot("a", "3 A", 0.3), q);
        t.add(ballot("b", "3 amps", 0.3), q);
        assert_eq!(t.outcome(1.0, 0.6), Outcome::Open);
    }

    #[test]
    fn a_single_voice_is_not_agreement() {
        let mut t = Tally::default();
        t.add(ballot("a", "3 A", 1.0), "q");
        assert!(matches!(t.outcome(0.0, 0.5), Outcome::Disagreed { .. }));
    }
}
