//! Multiple-choice questions: their options, which option an answer picks,
//! and the signals a model's probabilities over the option letters give.
//! Pure code.
//!
//! A question offers options when it has lines `A.` (or `A)`), `B.`, ... in
//! order. A model's answer to it is mostly one letter, so the distribution
//! over the letters at the token that names the option is a far better
//! confidence than token statistics over a one-token answer. Small models
//! also favour some letters whatever the question (one picks "C" for over
//! half of everything): contextual calibration (Zhao et al. 2021) measures
//! that bias on a content-free question and divides it out.

/// Option letters, in order; a question may offer the first two to five.
pub const LETTERS: [char; 5] = ['A', 'B', 'C', 'D', 'E'];

/// A question with no content in the shape of a four-option question, read
/// once per model to measure its letter bias.
pub const CONTENT_FREE_QUESTION: &str =
    "N/A\nA. N/A\nB. N/A\nC. N/A\nD. N/A\nAnswer with the letter.";

/// The options' texts, in letter order, when `question` offers at least two.
pub fn options(question: &str) -> Vec<&str> {
    let mut found = Vec::new();
    for line in question.lines() {
        let line = line.trim();
        let Some(&letter) = LETTERS.get(found.len()) else {
            break;
        };
        let mut chars = line.chars();
        if chars.next() == Some(letter) && matches!(chars.next(), Some('.') | Some(')')) {
            found.push(chars.as_str().trim());
        }
    }
    if found.len() >= 2 {
        found
    } else {
        Vec::new()
    }
}

/// The index of the letter `s` starts with among `n` options: one capital
/// letter, possibly in brackets, followed by nothing or punctuation (or by a
/// space, where `space_ends` because a cue came before: "answer is C because").
fn letter_at(s: &str, n: usize, space_ends: bool) -> Option<usize> {
    let s = s.trim_start_matches(['(', '[', '*', ' ']);
    let mut chars = s.chars();
    let c = chars.next()?;
    let index = LETTERS[..n].iter().position(|&l| l == c)?;
    match chars.next() {
        None => Some(index),
        Some('.' | ')' | ']' | ':' | ',' | ';' | '*') => Some(index),
        Some(next) if space_ends && next.is_whitespace() => Some(index),
        _ => None,
    }
}

fn normalise(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
        .trim_end_matches('.')
        .to_string()
}

/// Which option `answer` picks among `options`: the letter standing alone or
/// leading the answer ("C", "C. Incandescent", "(C)"), a letter after "answer
/// is", "answer:" or "option" ("The answer is C"), or else the text of
/// exactly one option. A leading article is not a letter: "A lamp with ..."
/// picks nothing by its first word.
pub fn picked(answer: &str, options: &[&str]) -> Option<usize> {
    let n = options.len();
    if n < 2 {
        return None;
    }
    let answer = answer.trim();
    if let Some(i) = letter_at(answer, n, false) {
        return Some(i);
    }
    // ASCII lowercasing keeps every byte offset of the original.
    let lower = answer.to_ascii_lowercase();
    for cue in ["answer is", "answer:", "option", "choice"] {
        if let Some(at) = lower.find(cue) {
            let rest = answer[at + cue.len()..].trim_start();
            if let Some(i) = letter_at(rest, n, true) {
                return Some(i);
            }
        }
    }
    let said = normalise(answer);
    let mut matching = options
        .iter()
        .enumerate()
        .filter(|(_, o)| {
            let o = normalise(o);
            !o.is_empty() && said.contains(&o)
        })
        .map(|(i, _)| i);
    match (matching.next(), matching.next()) {
        (Some(i), None) => Some(i),
        _ => None,
    }
}

/// Divides a letter distribution by the model's letter bias and normalises:
/// a letter the model favours on a content-free question counts for less.
/// A bias of the wrong length, or with a zero, leaves `probs` as they are.
pub fn calibrate(probs: &[f32], bias: &[f32]) -> Vec<f32> {
    if bias.len() < probs.len() || bias[..probs.len()].iter().any(|&b| b <= 0.0) {
        return probs.to_vec();
    }
    let divided: Vec<f32> = probs.iter().zip(bias).map(|(p, b)| p / b).collect();
    let total: f32 = divided.iter().sum();
    if total > 0.0 && total.is_finite() {
        divided.iter().map(|p| p / total).collect()
    } else {
        probs.to_vec()
    }
}

/// The answer to give instead of `answer` when the calibrated distribution
/// over the question's options puts another option first: that option's
/// letter and text. None when the answer already picks it (or the
/// distribution does not fit the question's options).
pub fn calibrated_answer(question: &str, answer: &str, calibrated: &[f32]) -> Option<String> {
    let options = options(question);
    if options.len() != calibrated.len() {
        return None;
    }
    let top = OptionSignals::of(calibrated)?.top;
    (picked(answer, &options) != Some(top)).then(|| format!("{}. {}", LETTERS[top], options[top]))
}

/// How sure a distribution over the options is.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptionSignals {
    /// The most likely option.
    pub top: usize,
    /// Its probability.
    pub top_prob: f32,
    /// Its lead over the second most likely.
    pub margin: f32,
    /// Entropy over the options, divided by its maximum (ln n): 0 is certain, 1 uniform.
    pub entropy: f32,
}

impl OptionSignals {
    /// None for fewer than two options.
    pub fn of(probs: &[f32]) -> Option<Self> {
        if probs.len() < 2 {
            return None;
        }
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let entropy: f32 = probs
            .iter()
            .filter(|&&p| p > 0.0)
            .map(|&p| -p * p.ln())
            .sum();
        Some(Self {
            top: order[0],
            top_prob: probs[order[0]],
            margin: probs[order[0]] - probs[order[1]],
            entropy: (entropy / (probs.len() as f32).ln()).clamp(0.0, 1.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: &str = "Which lamp is least efficient?\nA. LED\nB. Fluorescent\nC. Incandescent\nD. Sodium\nAnswer with the letter.";

    #[test]
    fn options_are_read_in_letter_order() {
        assert_eq!(
            options(Q),
            vec!["LED", "Fluorescent", "Incandescent", "Sodium"]
        );
        assert_eq!(options("A) yes\nB) no"), vec!["yes", "no"]);
        // One option, or letters out of order, is no choice.
        assert!(options("A. only one").is_empty());
        assert!(options("B. first\nA. second").is_empty());
        assert!(options("What is the capital of Australia").is_empty());
        assert_eq!(options(CONTENT_FREE_QUESTION).len(), 4);
    }

    #[test]
    fn answers_pick_by_letter_cue_or_text() {
        let o = options(Q);
        for (answer, want) in [
            ("C", Some(2)),
            ("C. Incandescent", Some(2)),
            ("(C)", Some(2)),
            ("**B**", Some(1)),
            ("The answer is C", Some(2)),
            ("The correct answer is (D).", Some(3)),
            ("Answer: B", Some(1)),
            ("Option A is right", Some(0)),
            ("Incandescent lamps waste most energy as heat", Some(2)),
            ("A lamp with a filament", None),
            ("E", None),
            ("I do not know", None),
            // Two options' texts: no single pick.
            ("LED or Sodium", None),
        ] {
            assert_eq!(picked(answer, &o), want, "{answer}");
        }
        assert_eq!(picked("C", &[]), None);
    }

    #[test]
    fn calibration_divides_out_the_bias() {
        let biased = [0.1, 0.1, 0.7, 0.1];
        // A model that says C with 0.7 on a content-free question and 0.7 here says nothing.
        let flat = calibrate(&[0.1, 0.1, 0.7, 0.1], &biased);
        for p in &flat {
            assert!((p - 0.25).abs() < 1e-6, "{flat:?}");
        }
        // Its 0.4 for B against 0.3 for C becomes a clear B.
        let c = calibrate(&[0.2, 0.4, 0.3, 0.1], &biased);
        assert_eq!(OptionSignals::of(&c).unwrap().top, 1);
        assert!((c.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        // No usable bias: unchanged.
        assert_eq!(calibrate(&[0.6, 0.4], &[0.5]), vec![0.6, 0.4]);
        assert_eq!(calibrate(&[0.6, 0.4], &[0.0, 1.0]), vec![0.6, 0.4]);
    }

    #[test]
    fn the_calibrated_pick_replaces_another_answer() {
        let cal = [0.1, 0.2, 0.6, 0.1];
        assert_eq!(
            calibrated_answer(Q, "A", &cal).as_deref(),
            Some("C. Incandescent")
        );
        assert_eq!(
            calibrated_answer(Q, "I am not sure", &cal).as_deref(),
            Some("C. Incandescent")
        );
        assert_eq!(calibrated_answer(Q, "(C)", &cal), None);
        // A distribution over other options, or no options at all: unchanged.
        assert_eq!(calibrated_answer(Q, "A", &[0.4, 0.6]), None);
        assert_eq!(calibrated_answer("What is 2+2", "4", &[0.4, 0.6]), None);
    }

    #[test]
    fn option_signals_span_certain_to_uniform() {
        let certain = OptionSignals::of(&[0.0, 1.0, 0.0, 0.0]).unwrap();
        assert_eq!(
            (certain.top, certain.top_prob, certain.margin),
            (1, 1.0, 1.0)
        );
        assert!(certain.entropy.abs() < 1e-6);
        let uniform = OptionSignals::of(&[0.25; 4]).unwrap();
        assert!((uniform.entropy - 1.0).abs() < 1e-5 && uniform.margin == 0.0);
        assert!(OptionSignals::of(&[1.0]).is_none());
    }
}
