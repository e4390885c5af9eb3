//! Uncertainty signals from an answer's token probabilities, a difficulty
//! estimate from the question alone, and the AUROC that measures how well a
//! signal separates right answers from wrong ones. Pure code.
//!
//! The statistics are length-robust on purpose: the product of token
//! probabilities (the sequence probability) falls with every token, so it
//! punishes a long, correct answer more than a short, wrong one. A low
//! quantile of the chosen tokens' probabilities, their mean log probability
//! and the mean entropy do not depend on length that way.

use serde::{Deserialize, Serialize};

/// Summary of one answer's token-level certainty.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Uncertainty {
    pub tokens: usize,
    /// Lowest probability of a chosen token.
    pub min_prob: f32,
    /// 10th percentile of the chosen tokens' probabilities.
    pub low_quantile_prob: f32,
    /// Mean log probability of the chosen tokens (a length-normalised sequence probability).
    pub mean_log_prob: f32,
    /// Mean entropy of the next-token distributions, in nats.
    pub mean_entropy: f32,
}

/// The quantile used for [`Uncertainty::low_quantile_prob`].
pub const LOW_QUANTILE: f32 = 0.10;

impl Uncertainty {
    pub fn from_tokens(probs: &[f32], entropies: &[f32]) -> Self {
        if probs.is_empty() {
            return Self {
                tokens: 0,
                min_prob: 0.0,
                low_quantile_prob: 0.0,
                mean_log_prob: 0.0,
                mean_entropy: 0.0,
            };
        }
        let mut sorted = probs.to_vec();
        sorted.sort_by(f32::total_cmp);
        let n = sorted.len();
        let mean = |xs: &[f32]| {
            if xs.is_empty() {
                0.0
            } else {
                xs.iter().sum::<f32>() / xs.len() as f32
            }
        };
        Self {
            tokens: n,
            min_prob: sorted[0],
            low_quantile_prob: sorted[((n - 1) as f32 * LOW_QUANTILE).floor() as usize],
            mean_log_prob: probs.iter().map(|p| p.max(1e-12).ln()).sum::<f32>() / n as f32,
            mean_entropy: mean(entropies),
        }
    }
}

/// A candidate confidence signal; higher always means "more likely right".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    MinProb,
    LowQuantileProb,
    /// exp(mean log probability): the geometric mean token probability.
    GeoMeanProb,
    /// exp(-mean entropy), in (0, 1].
    Certainty,
}

impl Signal {
    pub const ALL: [Signal; 4] = [
        Signal::MinProb,
        Signal::LowQuantileProb,
        Signal::GeoMeanProb,
        Signal::Certainty,
    ];

    /// The confidence in [0, 1] this signal gives an answer.
    pub fn confidence(self, u: &Uncertainty) -> f32 {
        if u.tokens == 0 {
            return 0.0;
        }
        match self {
            Signal::MinProb => u.min_prob,
            Signal::LowQuantileProb => u.low_quantile_prob,
            Signal::GeoMeanProb => u.mean_log_prob.exp(),
            Signal::Certainty => (-u.mean_entropy).exp(),
        }
        .clamp(0.0, 1.0)
    }

    pub fn name(self) -> &'static str {
        match self {
            Signal::MinProb => "min_prob",
            Signal::LowQuantileProb => "low_quantile_prob",
            Signal::GeoMeanProb => "geo_mean_prob",
            Signal::Certainty => "certainty",
        }
    }
}

/// Words that announce a calculation or a conversion.
const CALC_WORDS: &[&str] = &[
    "calculate",
    "convert",
    "how many",
    "how much",
    "how long",
    "how fast",
    "what is the total",
    "equivalent",
    "in parallel",
    "in series",
    "per",
    "represent",
    "corresponds",
    "ratio",
    "rms",
    "broadcast address",
    "subnet",
    "mask",
    "usable",
    "synchronous",
    "time constant",
    "wavelength",
];

/// A difficulty estimate in [0, 1] from the question alone, before any
/// generation: calculations with several numbers and longer questions are
/// where small models fail most. Higher means harder.
pub fn prompt_difficulty(question: &str) -> f32 {
    let lower = question.to_lowercase();
    let numbers = crate::text::quantities(question).len() as f32;
    let calc = CALC_WORDS.iter().filter(|w| lower.contains(*w)).count() as f32;
    let words = question.split_whitespace().count() as f32;
    let raw = 0.25 * numbers.min(4.0) + 0.2 * calc.min(3.0) + 0.02 * (words - 8.0).max(0.0);
    raw.min(1.0)
}

/// Area under the ROC curve of `score` for telling `right` answers from
/// wrong ones: the probability that a random right answer scores above a
/// random wrong one (ties count half). 0.5 is chance. None without both kinds.
pub fn auroc(samples: &[(f32, bool)]) -> Option<f64> {
    let pos = samples.iter().filter(|s| s.1).count();
    let neg = samples.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    // Rank-sum (Mann-Whitney U) with average ranks for ties.
    let mut sorted: Vec<(f32, bool)> = samples.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let avg_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum_pos += avg_rank * sorted[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    let u = rank_sum_pos - (pos * (pos + 1)) as f64 / 2.0;
    Some(u / (pos * neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_of_token_probabilities() {
        let probs: Vec<f32> = (1..=10).map(|i| i as f32 / 10.0).collect();
        let u = Uncertainty::from_tokens(&probs, &[0.5; 10]);
        assert_eq!(u.tokens, 10);
        assert_eq!(u.min_prob, 0.1);
        assert_eq!(u.low_quantile_prob, 0.1);
        assert!((u.mean_entropy - 0.5).abs() < 1e-6);
        let geo = (probs.iter().map(|p| (*p as f64).ln()).sum::<f64>() / 10.0).exp();
        assert!((Signal::GeoMeanProb.confidence(&u) as f64 - geo).abs() < 1e-5);
    }

    #[test]
    fn statistics_do_not_punish_length_the_way_the_product_does() {
        let short = Uncertainty::from_tokens(&[0.9; 3], &[0.3; 3]);
        let long = Uncertainty::from_tokens(&[0.9; 60], &[0.3; 60]);
        for s in [
            Signal::LowQuantileProb,
            Signal::GeoMeanProb,
            Signal::Certainty,
        ] {
            assert!(
                (s.confidence(&short) - s.confidence(&long)).abs() < 1e-5,
                "{s:?}"
            );
        }
        let product = |n: i32| 0.9f32.powi(n);
        assert!(product(60) < 0.01 && product(3) > 0.7);
    }

    #[test]
    fn empty_answers_have_no_confidence_and_survive_json() {
        let u = Uncertainty::from_tokens(&[], &[]);
        for s in Signal::ALL {
            assert_eq!(s.confidence(&u), 0.0);
        }
        // Records of measurements are saved as JSON and read back.
        let back: Uncertainty = serde_json::from_str(&serde_json::to_string(&u).unwrap()).unwrap();
        assert_eq!(back, u);
    }

    #[test]
    fn auroc_extremes_chance_and_ties() {
        assert_eq!(auroc(&[(0.9, true), (0.8, true), (0.1, false)]), Some(1.0));
        assert_eq!(auroc(&[(0.1, true), (0.9, false)]), Some(0.0));
        assert_eq!(auroc(&[(0.5, true), (0.5, false)]), Some(0.5));
        assert_eq!(auroc(&[(0.5, true)]), None);
        // One of the four (right, wrong) pairs is ordered wrongly.
        assert_eq!(
            auroc(&[(0.9, true), (0.4, true), (0.5, false), (0.1, false)]),
            Some(0.75)
        );
    }

    #[test]
    fn difficulty_rises_with_numbers_and_calculation() {
        let easy = prompt_difficulty("What is the capital city of Japan");
        let hard = prompt_difficulty("A 6 ohm resistor and a 3 ohm resistor are connected in parallel what is the equivalent resistance");
        assert!(easy < 0.2 && hard > 0.6, "{easy} {hard}");
        assert!((0.0..=1.0).contains(&prompt_difficulty(
            &"1 2 3 4 5 6 how many convert ".repeat(20)
        )));
    }
}
