//! The learned router: from what the first model's answer looks like, the
//! probability that sending the question to the cloud turns a wrong answer
//! into a right one (RouteLLM's framing: not only "is the local answer
//! wrong", since a question the cloud gets wrong too gains nothing from it).
//! Pure code; `calibrate --learn` fits it on records with k-fold
//! cross-validation and writes it into the config's `[policy.learned]`.
//!
//! The inputs are the first answer's token statistics, the question's
//! difficulty estimate and, for a multiple-choice question, the model's
//! letter distribution after its bias is divided out. Everything here is
//! known once the first model has answered, so the vote and the cloud are
//! only paid for where the score says they may help.

use serde::{Deserialize, Serialize};

use super::choice::OptionSignals;
use super::signals::Uncertainty;
use super::softmax::{FitOptions, Softmax, SoftmaxError};

/// The inputs, in order. A router fitted on other inputs is refused.
pub const FEATURES: [&str; 10] = [
    "min_prob",
    "low_quantile_prob",
    "mean_log_prob",
    "mean_entropy",
    "log_tokens",
    "difficulty",
    "offers_options",
    "option_top_prob",
    "option_margin",
    "option_entropy",
];

/// The classes of the fitted model: the second is "the cloud helps".
pub const CLASSES: [&str; 2] = ["keep", "cloud_helps"];

/// What the router reads: the first answer and the question.
#[derive(Debug, Clone, Copy)]
pub struct FirstAnswer<'a> {
    pub uncertainty: &'a Uncertainty,
    pub difficulty: f32,
    /// The calibrated letter distribution, for a multiple-choice question
    /// whose answer named a letter.
    pub options: Option<&'a [f32]>,
}

impl FirstAnswer<'_> {
    /// The inputs in [`FEATURES`] order. Without options the option inputs
    /// are those of a uniform distribution, and `offers_options` is 0.
    pub fn features(&self) -> Vec<f32> {
        let u = self.uncertainty;
        let options = self.options.and_then(OptionSignals::of);
        vec![
            u.min_prob,
            u.low_quantile_prob,
            u.mean_log_prob.max(-20.0),
            u.mean_entropy,
            (1.0 + u.tokens as f32).ln(),
            self.difficulty,
            options.is_some() as u8 as f32,
            options.map_or(0.0, |o| o.top_prob),
            options.map_or(0.0, |o| o.margin),
            options.map_or(1.0, |o| o.entropy),
        ]
    }
}

/// The fitted router and its thresholds on the score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnedRouter {
    /// The inputs it was fitted on; must equal [`FEATURES`].
    pub features: Vec<String>,
    /// A score at or above this sends the question to the cloud.
    #[serde(serialize_with = "crate::route::f32_as_written")]
    pub cloud_at: f32,
    /// A score at or above this (and below `cloud_at`) asks the swarm; below
    /// it the first answer is kept. Equal to `cloud_at`: no vote.
    #[serde(serialize_with = "crate::route::f32_as_written")]
    pub vote_at: f32,
    pub model: Softmax,
}

impl LearnedRouter {
    /// Fits the model on examples (`features` rows in [`FEATURES`] order)
    /// labelled with whether the cloud turned a wrong answer right.
    pub fn fit(
        x: &[Vec<f32>],
        cloud_helps: &[bool],
        opts: FitOptions,
    ) -> Result<Softmax, SoftmaxError> {
        let y: Vec<usize> = cloud_helps.iter().map(|&h| h as usize).collect();
        let w = vec![1.0; x.len()];
        Softmax::fit(
            CLASSES.iter().map(|c| c.to_string()).collect(),
            x,
            &y,
            &w,
            opts,
        )
    }

    /// The probability that the cloud helps on this question.
    pub fn score(&self, first: &FirstAnswer) -> f32 {
        self.model.predict(&first.features())[1]
    }

    pub fn validate(&self, key: &str) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if self.features != FEATURES {
            v.push((
                format!("{key}.features"),
                format!(
                    "fitted on {:?}, but this version reads {FEATURES:?}: fit it again with `swarm-llm calibrate --learn`",
                    self.features
                ),
            ));
        }
        for (name, x) in [("cloud_at", self.cloud_at), ("vote_at", self.vote_at)] {
            if !(0.0..=1.0).contains(&x) {
                v.push((format!("{key}.{name}"), "must be between 0 and 1".into()));
            }
        }
        if self.vote_at > self.cloud_at {
            v.push((
                format!("{key}.vote_at"),
                "must not be above cloud_at".into(),
            ));
        }
        if let Err(e) = self.model.check() {
            v.push((format!("{key}.model"), e.to_string()));
        } else if self.model.features() != FEATURES.len() || self.model.classes != CLASSES {
            v.push((
                format!("{key}.model"),
                format!(
                    "has {} inputs and classes {:?}; expected {} and {CLASSES:?}",
                    self.model.features(),
                    self.model.classes,
                    FEATURES.len()
                ),
            ));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unsure(p: f32) -> Uncertainty {
        Uncertainty::from_tokens(&[p; 2], &[1.0 - p; 2])
    }

    /// Unsure answers are wrong and the cloud fixes them; sure ones are right.
    fn fitted() -> LearnedRouter {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for i in 0..200 {
            let p = 0.2 + 0.75 * (i as f32 / 199.0);
            let u = unsure(p);
            x.push(
                FirstAnswer {
                    uncertainty: &u,
                    difficulty: 0.1,
                    options: None,
                }
                .features(),
            );
            y.push(p < 0.5);
        }
        LearnedRouter {
            features: FEATURES.iter().map(|f| f.to_string()).collect(),
            cloud_at: 0.5,
            vote_at: 0.5,
            model: LearnedRouter::fit(&x, &y, FitOptions::default()).unwrap(),
        }
    }

    #[test]
    fn features_come_in_the_declared_order() {
        let u = unsure(0.5);
        let plain = FirstAnswer {
            uncertainty: &u,
            difficulty: 0.3,
            options: None,
        }
        .features();
        assert_eq!(plain.len(), FEATURES.len());
        assert_eq!(plain[5], 0.3);
        assert_eq!((plain[6], plain[9]), (0.0, 1.0));
        let choice = FirstAnswer {
            options: Some(&[0.7, 0.1, 0.1, 0.1]),
            ..FirstAnswer {
                uncertainty: &u,
                difficulty: 0.3,
                options: None,
            }
        }
        .features();
        assert_eq!(choice[6], 1.0);
        assert!((choice[7] - 0.7).abs() < 1e-6 && (choice[8] - 0.6).abs() < 1e-6);
    }

    #[test]
    fn the_score_learns_where_the_cloud_helps() {
        let r = fitted();
        assert!(r.validate("policy.learned").is_empty());
        let score = |p| {
            r.score(&FirstAnswer {
                uncertainty: &unsure(p),
                difficulty: 0.1,
                options: None,
            })
        };
        assert!(score(0.25) > 0.8, "{}", score(0.25));
        assert!(score(0.9) < 0.2, "{}", score(0.9));
    }

    #[test]
    fn a_router_for_other_inputs_or_thresholds_is_refused() {
        let mut r = fitted();
        r.features.pop();
        r.vote_at = 0.9;
        r.model.bias.pop();
        let keys: Vec<String> = r
            .validate("policy.learned")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(
            keys,
            vec![
                "policy.learned.features",
                "policy.learned.vote_at",
                "policy.learned.model"
            ]
        );
    }
}
