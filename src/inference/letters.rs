//! Option letters: the tokens that spell them, a model's distribution over
//! them, and its letter bias (divided out of multiple-choice answers).

use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use crate::route::choice;

/// The letter bias divided out of the model's letter distributions
/// ([`choice::calibrate`]): the configured `letter_prior`, else its
/// distribution on a content-free question ([`choice::CONTENT_FREE_QUESTION`]),
/// read before the first question that offers options (not at load: start-up
/// stays as quick, which matters most on the slowest boards).
pub(super) enum LetterBias {
    Unread,
    /// The content-free question is in flight; questions with options wait.
    Reading,
    /// None when the content-free answer named no letter.
    Known(Option<Vec<f32>>),
}

/// Per option letter, the single tokens that spell it alone or after a space.
pub(super) fn letter_tokens(model: &LlamaModel) -> Vec<Vec<LlamaToken>> {
    let vocab = model.vocab();
    choice::LETTERS
        .iter()
        .map(|letter| {
            let mut tokens: Vec<LlamaToken> = [format!("{letter}"), format!(" {letter}")]
                .iter()
                .filter_map(
                    |text| match vocab.tokenize(text.as_bytes(), false, false)[..] {
                        [single] => Some(single),
                        _ => None,
                    },
                )
                .collect();
            tokens.dedup();
            tokens
        })
        .collect()
}

/// The distribution over the first `n` option letters in `logits`: each
/// letter's tokens' probabilities summed, then normalised over the letters.
pub(super) fn letter_distribution(
    logits: &[f32],
    letters: &[Vec<LlamaToken>],
    n: usize,
) -> Vec<f32> {
    let logit = |t: &LlamaToken| logits.get(t.0 as usize).copied();
    let max = letters[..n]
        .iter()
        .flatten()
        .filter_map(logit)
        .fold(f32::NEG_INFINITY, f32::max);
    let mass: Vec<f32> = letters[..n]
        .iter()
        .map(|ts| ts.iter().filter_map(logit).map(|l| (l - max).exp()).sum())
        .collect();
    let total: f32 = mass.iter().sum();
    mass.iter().map(|m| m / total).collect()
}
