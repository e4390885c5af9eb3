//! Reading short answers: numbers with their units, and words. Pure code,
//! shared by the vote (which groups answers that say the same thing) and the
//! workload scorer (which checks an answer against a reference), so both read
//! "1,500 rpm", "3.0 A" and "three amps" the same way.

/// A number found in text, with the unit written after it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub value: f64,
    /// Canonical unit symbol (`A`, `V`, `W`, `kW`, `ohm`, ...), when one follows.
    pub unit: Option<&'static str>,
}

/// Unit spellings and their canonical symbol. Matched case-insensitively on
/// the word that follows a number, except the one-letter symbols, which must
/// match in case (`m` metre vs `M`, `s` second).
const UNITS: &[(&str, &str)] = &[
    ("a", "A"),
    ("amp", "A"),
    ("amps", "A"),
    ("ampere", "A"),
    ("amperes", "A"),
    ("ma", "mA"),
    ("milliamp", "mA"),
    ("milliamps", "mA"),
    ("milliamperes", "mA"),
    ("v", "V"),
    ("volt", "V"),
    ("volts", "V"),
    ("vac", "V"),
    ("vdc", "V"),
    ("mv", "mV"),
    ("kv", "kV"),
    ("w", "W"),
    ("watt", "W"),
    ("watts", "W"),
    ("kw", "kW"),
    ("kilowatt", "kW"),
    ("kilowatts", "kW"),
    ("kwh", "kWh"),
    ("kilowatt-hours", "kWh"),
    ("kilowatt-hour", "kWh"),
    ("ohm", "ohm"),
    ("ohms", "ohm"),
    ("Ω", "ohm"),
    ("kohm", "kohm"),
    ("kω", "kohm"),
    ("hz", "Hz"),
    ("hertz", "Hz"),
    ("khz", "kHz"),
    ("mhz", "MHz"),
    ("ghz", "GHz"),
    ("rpm", "rpm"),
    ("s", "s"),
    ("sec", "s"),
    ("secs", "s"),
    ("second", "s"),
    ("seconds", "s"),
    ("ms", "ms"),
    ("millisecond", "ms"),
    ("milliseconds", "ms"),
    ("min", "min"),
    ("minute", "min"),
    ("minutes", "min"),
    ("h", "h"),
    ("hr", "h"),
    ("hrs", "h"),
    ("hour", "h"),
    ("hours", "h"),
    ("m", "m"),
    ("metre", "m"),
    ("metres", "m"),
    ("meter", "m"),
    ("meters", "m"),
    ("bar", "bar"),
    ("bars", "bar"),
    ("psi", "psi"),
    ("pa", "Pa"),
    ("kpa", "kPa"),
    ("°c", "degC"),
    ("c", "degC"),
    ("celsius", "degC"),
    ("degrees", "deg"),
    ("bit", "bit"),
    ("bits", "bit"),
    ("byte", "byte"),
    ("bytes", "byte"),
    ("uf", "uF"),
    ("µf", "uF"),
    ("microfarad", "uF"),
    ("microfarads", "uF"),
    ("ah", "Ah"),
    ("amp-hours", "Ah"),
    ("m3/h", "m3/h"),
    ("m³/h", "m3/h"),
    ("l/min", "L/min"),
    ("litres", "L"),
    ("liters", "L"),
    ("%", "%"),
    ("percent", "%"),
];

const SMALL_NUMBERS: &[&str] = &[
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
    "twenty",
];

fn unit_of(word: &str) -> Option<&'static str> {
    let w = word.trim_end_matches(['.', ',', ';', ':', ')', '!', '?']);
    if w.is_empty() {
        return None;
    }
    // Single letters are too ambiguous in lower case ("a" article, "s" plural).
    if w.chars().count() == 1 {
        return match w {
            "A" => Some("A"),
            "V" => Some("V"),
            "W" => Some("W"),
            "s" => Some("s"),
            "h" => Some("h"),
            "m" => Some("m"),
            "C" => Some("degC"),
            "Ω" => Some("ohm"),
            "%" => Some("%"),
            _ => None,
        };
    }
    let lower = w.to_lowercase();
    UNITS.iter().find(|(k, _)| *k == lower).map(|(_, u)| *u)
}

/// Every number in `text`, in order, with the unit that follows it. Reads
/// digits with `,` thousands separators and a `.` decimal point ("1,500.5"),
/// a unit glued on ("48W", "5.54kW") or as the next word, and the words
/// zero to twenty.
pub fn quantities(text: &str) -> Vec<Quantity> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let starts_number = c.is_ascii_digit()
            || (c == '-'
                && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
                && (i == 0 || !chars[i - 1].is_alphanumeric()))
            || (c == '.'
                && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
                && (i == 0 || !chars[i - 1].is_ascii_digit()));
        if starts_number && (i == 0 || !chars[i - 1].is_alphabetic() || c == '-') {
            let start = i;
            i += 1;
            while i < chars.len() {
                let d = chars[i];
                let next_digit = chars.get(i + 1).is_some_and(|x| x.is_ascii_digit());
                let sep = d == ','
                    && next_digit
                    && chars[i + 1..]
                        .iter()
                        .take_while(|x| x.is_ascii_digit())
                        .count()
                        == 3;
                if d.is_ascii_digit() || (d == '.' && next_digit) || sep {
                    i += 1;
                } else {
                    break;
                }
            }
            let digits: String = chars[start..i].iter().filter(|c| **c != ',').collect();
            let Ok(value) = digits.parse::<f64>() else {
                continue;
            };
            // A unit glued to the number, else the next word.
            let glued: String = chars[i..]
                .iter()
                .take_while(|c| !c.is_whitespace())
                .collect();
            let unit = if !glued.is_empty() && !glued.starts_with([',', '.', ';', ':', ')']) {
                unit_of(&glued)
            } else {
                let rest: String = chars[i..].iter().collect();
                rest.split_whitespace().next().and_then(unit_of)
            };
            out.push(Quantity { value, unit });
        } else if c.is_alphabetic() && (i == 0 || !chars[i - 1].is_alphanumeric()) {
            let start = i;
            while i < chars.len() && chars[i].is_alphabetic() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect::<String>().to_lowercase();
            if let Some(n) = SMALL_NUMBERS.iter().position(|w| *w == word) {
                let rest: String = chars[i..].iter().collect();
                let unit = rest.split_whitespace().next().and_then(unit_of);
                out.push(Quantity {
                    value: n as f64,
                    unit,
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Whether two values are equal within a relative tolerance (0: exactly, up to float noise).
pub fn close(a: f64, b: f64, rel_tolerance: f64) -> bool {
    let scale = a.abs().max(b.abs());
    (a - b).abs() <= (rel_tolerance * scale).max(1e-9 * scale.max(1.0))
}

/// Lower-case words of `text` (letters, digits, and `-` or `.` inside a word).
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '.' || c == '\''))
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Whether `phrase` appears in `text` as whole words, case-insensitively; the
/// last word may take a plural `s` or `es` ("red" matches "reds", not
/// "coloured"; "cu" does not match "current").
pub fn contains_phrase(text: &str, phrase: &str) -> bool {
    let text = text.to_lowercase();
    let phrase = phrase.to_lowercase();
    let bytes = text.as_bytes();
    let is_word = |b: u8| b.is_ascii_alphanumeric();
    let mut from = 0;
    while let Some(pos) = text[from..].find(&phrase) {
        let start = from + pos;
        let end = start + phrase.len();
        let left_ok = start == 0 || !is_word(bytes[start - 1]) || !is_word(phrase.as_bytes()[0]);
        let right_ok = [0usize, 1, 2].iter().any(|&extra| {
            let suffix = &text[end..(end + extra).min(text.len())];
            let plural_ok = match extra {
                0 => true,
                1 => suffix == "s",
                _ => suffix == "es",
            };
            let after = end + extra;
            plural_ok
                && suffix.len() == extra
                && (after >= bytes.len()
                    || !is_word(bytes[after])
                    || !is_word(*phrase.as_bytes().last().unwrap()))
        });
        if left_ok && right_ok {
            return true;
        }
        from = start + 1;
        while !text.is_char_boundary(from) {
            from += 1;
        }
    }
    false
}

/// FNV-1a, 64 bits: a hash that stays the same across runs, builds and
/// machines (std's is seeded), for data splits and prompt fingerprints.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a(*b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(*b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a(*b"foobar"), 0x85944171f73967e8);
    }

    fn q(value: f64, unit: Option<&'static str>) -> Quantity {
        Quantity { value, unit }
    }

    #[test]
    fn numbers_with_units_and_separators() {
        assert_eq!(quantities("The power is 48 W."), vec![q(48.0, Some("W"))]);
        assert_eq!(quantities("about 1,500 rpm"), vec![q(1500.0, Some("rpm"))]);
        assert_eq!(quantities("5.54kW"), vec![q(5.54, Some("kW"))]);
        assert_eq!(
            quantities("3 amps, 3.0 A or 30 A"),
            vec![q(3.0, Some("A")), q(3.0, Some("A")), q(30.0, Some("A"))]
        );
        assert_eq!(quantities("eight bits"), vec![q(8.0, Some("bit"))]);
        assert_eq!(quantities("-5 degrees"), vec![q(-5.0, Some("deg"))]);
        assert_eq!(quantities("0.125 m"), vec![q(0.125, Some("m"))]);
        assert_eq!(
            quantities("1, 2, 3"),
            vec![q(1.0, None), q(2.0, None), q(3.0, None)]
        );
    }

    #[test]
    fn words_are_not_numbers_unless_small_number_words() {
        assert_eq!(quantities("Canberra"), vec![]);
        assert_eq!(quantities("a slash 26 subnet"), vec![q(26.0, None)]);
        assert_eq!(
            quantities("IPv4 and MP3"),
            vec![],
            "digits inside words are not quantities"
        );
        assert_eq!(
            quantities("someone"),
            vec![],
            "number words only as whole words"
        );
    }

    #[test]
    fn one_letter_units_need_their_case() {
        assert_eq!(quantities("5 a day")[0].unit, None);
        assert_eq!(quantities("5 A")[0].unit, Some("A"));
    }

    #[test]
    fn closeness() {
        assert!(close(5.54, 5.6, 0.02));
        assert!(!close(5.54, 5.7, 0.02));
        assert!(close(1500.0, 1500.0, 0.0));
        assert!(!close(30.0, 3.0, 0.02));
        assert!(close(0.0, 0.0, 0.0));
    }

    #[test]
    fn phrases_match_whole_words_with_plurals() {
        assert!(contains_phrase("The button is Red.", "red"));
        assert!(contains_phrase("reds and blues", "red"));
        assert!(!contains_phrase("coloured", "red"));
        assert!(!contains_phrase("the current flows", "cu"));
        assert!(contains_phrase("Cu is copper", "cu"));
        assert!(contains_phrase(
            "a Programmable Logic Controller",
            "programmable logic controller"
        ));
        assert!(contains_phrase("switches", "switch"));
        assert!(contains_phrase("use qos 2 for that", "qos 2"));
        assert!(!contains_phrase("qos 20", "qos 2"));
        assert!(contains_phrase("255.255.255.224.", "255.255.255.224"));
    }

    #[test]
    fn words_split_and_lower() {
        assert_eq!(
            words("PLC stands for Programmable-Logic, Controller!"),
            vec!["plc", "stands", "for", "programmable-logic", "controller"]
        );
    }
}
