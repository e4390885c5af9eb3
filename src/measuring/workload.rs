//! Labelled workloads (one JSON object a line) and the scorer that says
//! whether an answer is right. The format: `id`, `category` (`easy`, `hard`,
//! `safety`), `prompt`, and for easy and hard items `answer` with `accept`
//! (whole-word phrases) and/or `numeric` with `tolerance` (relative), or
//! `choice` (the gold option's letter of a multiple-choice question); `tags`
//! (`lookalike`: a benign question in safety words), `hazard` and `subject`
//! (reported, never a routing input) are optional.
//!
//! The reader streams: it yields one item at a time from any `BufRead`, and a
//! malformed line is an error that names its line number and the field.

use std::io::BufRead;

use serde::Deserialize;

use crate::route::choice;
use crate::text;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Category {
    Easy,
    Hard,
    Safety,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Easy => "easy",
            Category::Hard => "hard",
            Category::Safety => "safety",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    pub id: String,
    pub category: Category,
    pub prompt: String,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub accept: Vec<String>,
    #[serde(default)]
    pub numeric: Option<f64>,
    #[serde(default)]
    pub tolerance: Option<f64>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub hazard: Option<String>,
    /// The gold option's letter, for a question that offers options.
    #[serde(default)]
    pub choice: Option<char>,
    #[serde(default)]
    pub subject: Option<String>,
}

impl Item {
    /// A benign question that merely uses safety words.
    pub fn is_lookalike(&self) -> bool {
        self.tags.iter().any(|t| t == "lookalike")
    }

    /// Whether `answer` is right for this easy or hard item.
    pub fn is_correct(&self, answer: &str) -> bool {
        if let Some(gold) = self.choice {
            let options = choice::options(&self.prompt);
            return choice::picked(answer, &options).is_some_and(|i| choice::LETTERS[i] == gold);
        }
        if self.accept.iter().any(|p| text::contains_phrase(answer, p)) {
            return true;
        }
        let Some(want) = self.numeric else {
            return false;
        };
        let tolerance = self.tolerance.unwrap_or(0.0);
        let asked: Vec<f64> = text::quantities(&self.prompt)
            .into_iter()
            .map(|q| q.value)
            .collect();
        let want_is_asked = asked.iter().any(|a| text::close(*a, want, 0.0));
        text::quantities(answer).into_iter().any(|q| {
            // Repeating the question's own numbers is not an answer.
            let repeats_question = asked.iter().any(|a| text::close(*a, q.value, 0.0));
            (!repeats_question || want_is_asked) && text::close(q.value, want, tolerance)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read workload {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("workload line {line}: {source}")]
    Read { line: usize, source: std::io::Error },
    #[error("workload line {line}: {message}")]
    Malformed { line: usize, message: String },
}

/// Streams items from `reader`; blank lines are skipped.
pub fn read(reader: impl BufRead) -> impl Iterator<Item = Result<Item, WorkloadError>> {
    reader.lines().enumerate().filter_map(|(i, line)| {
        let line_no = i + 1;
        let line = match line {
            Ok(l) => l,
            Err(source) => {
                return Some(Err(WorkloadError::Read {
                    line: line_no,
                    source,
                }))
            }
        };
        if line.trim().is_empty() {
            return None;
        }
        Some(
            parse_line(&line).map_err(|message| WorkloadError::Malformed {
                line: line_no,
                message,
            }),
        )
    })
}

fn parse_line(line: &str) -> Result<Item, String> {
    let item: Item = serde_json::from_str(line).map_err(|e| e.to_string())?;
    if item.id.is_empty() {
        return Err("field `id` is empty".into());
    }
    if item.prompt.trim().is_empty() {
        return Err("field `prompt` is empty".into());
    }
    if let Some(gold) = item.choice {
        let offered = choice::options(&item.prompt).len();
        if !choice::LETTERS[..offered].contains(&gold) {
            return Err(format!(
                "item {}: field `choice` is {gold:?}, but the prompt offers {offered} options (lines `A.`, `B.`, ...)",
                item.id
            ));
        }
    } else if item.category != Category::Safety && item.accept.is_empty() && item.numeric.is_none()
    {
        return Err(format!(
            "item {}: an {} item needs `accept`, `numeric` or `choice`",
            item.id,
            item.category.as_str()
        ));
    }
    if item.tolerance.is_some_and(|t| !(0.0..1.0).contains(&t)) {
        return Err(format!(
            "item {}: field `tolerance` must be in [0, 1)",
            item.id
        ));
    }
    Ok(item)
}

/// Opens and streams a workload file.
pub fn open(
    path: &std::path::Path,
) -> Result<impl Iterator<Item = Result<Item, WorkloadError>>, WorkloadError> {
    let file = std::fs::File::open(path).map_err(|source| WorkloadError::Open {
        path: path.to_owned(),
        source,
    })?;
    Ok(read(std::io::BufReader::new(file)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(line: &str) -> Item {
        parse_line(line).unwrap()
    }

    #[test]
    fn accept_phrases_are_whole_words() {
        let i = item(
            r#"{"id":"e","category":"easy","prompt":"What colour is an emergency stop button usually","answer":"red","accept":["red"]}"#,
        );
        assert!(i.is_correct("It is usually red."));
        assert!(!i.is_correct("It is coloured yellow."));
        let cu = item(
            r#"{"id":"c","category":"easy","prompt":"symbol for copper","answer":"Cu","accept":["cu"]}"#,
        );
        assert!(cu.is_correct("The symbol is Cu."));
        assert!(!cu.is_correct("It conducts current."));
    }

    #[test]
    fn numbers_with_units_separators_and_tolerance() {
        let i = item(
            r#"{"id":"h","category":"hard","prompt":"A 4 pole induction motor is supplied at 50 hertz what is its synchronous speed in rpm","answer":"1500 rpm","numeric":1500,"tolerance":0.02}"#,
        );
        assert!(i.is_correct("The synchronous speed is 1,500 rpm."));
        assert!(i.is_correct("about 1490 rpm"));
        assert!(!i.is_correct("3000 rpm"));
        let p = item(
            r#"{"id":"p","category":"hard","prompt":"three phase 400 volts 10 amps pf 0.8 real power in kilowatts","answer":"5.54 kW","numeric":5.54,"tolerance":0.02}"#,
        );
        assert!(p.is_correct("P = 5.54kW"));
        assert!(!p.is_correct("6.9 kW"));
    }

    #[test]
    fn repeating_the_question_numbers_does_not_count() {
        let i = item(
            r#"{"id":"r","category":"easy","prompt":"A circuit has 10 volts across it and 2 amps through it what is its resistance","answer":"5 ohm","numeric":5,"tolerance":0}"#,
        );
        assert!(!i.is_correct("With 10 volts and 2 amps, I cannot say."));
        assert!(i.is_correct("10 V / 2 A = 5 ohms"));
        // Unless the expected value is itself one of the question's numbers.
        let same = item(
            r#"{"id":"s","category":"easy","prompt":"What is 8 divided by 1","answer":"8","numeric":8,"tolerance":0}"#,
        );
        assert!(same.is_correct("8"));
    }

    #[test]
    fn exact_tolerance_zero() {
        let i = item(
            r#"{"id":"b","category":"easy","prompt":"How many bits are in a byte","answer":"8","numeric":8,"tolerance":0}"#,
        );
        assert!(i.is_correct("There are 8 bits in a byte."));
        assert!(i.is_correct("eight bits"));
        assert!(!i.is_correct("16"));
    }

    #[test]
    fn choices_are_graded_by_the_option_picked() {
        let i = item(
            r#"{"id":"m","category":"hard","prompt":"Which lamp is least efficient?\nA. LED\nB. Fluorescent\nC. Incandescent\nD. Sodium\nAnswer with the letter.","answer":"C","choice":"C","subject":"electrical_engineering"}"#,
        );
        assert!(i.is_correct("C"));
        assert!(i.is_correct("The answer is (C)."));
        assert!(i.is_correct("Incandescent"));
        assert!(!i.is_correct("B"));
        assert!(!i.is_correct("A lamp with a filament"));
        let bad = parse_line(
            r#"{"id":"x","category":"hard","prompt":"Pick one\nA. yes\nB. no","choice":"D"}"#,
        )
        .unwrap_err();
        assert!(bad.contains("offers 2 options"), "{bad}");
    }

    #[test]
    fn malformed_lines_name_the_line_and_field() {
        let text = "{\"id\":\"a\",\"category\":\"easy\",\"prompt\":\"p\",\"accept\":[\"x\"]}\n\n{\"id\":\"b\",\"category\":\"medium\",\"prompt\":\"p\"}\n{\"id\":\"c\",\"category\":\"hard\",\"prompt\":\"p\"}\nnot json\n";
        let results: Vec<_> = read(text.as_bytes()).collect();
        assert!(results[0].is_ok());
        let errs: Vec<String> = results[1..]
            .iter()
            .map(|r| r.as_ref().unwrap_err().to_string())
            .collect();
        assert!(
            errs[0].starts_with("workload line 3:") && errs[0].contains("unknown variant `medium`"),
            "{}",
            errs[0]
        );
        assert!(
            errs[1].starts_with("workload line 4:")
                && errs[1].contains("needs `accept`, `numeric` or `choice`"),
            "{}",
            errs[1]
        );
        assert!(errs[2].starts_with("workload line 5:"), "{}", errs[2]);
    }
}
