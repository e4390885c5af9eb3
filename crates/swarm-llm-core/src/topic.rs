//! MQTT topic rules the service relies on: validating names and filters,
//! matching, and deriving a default reply topic. Pure functions.
//!
//! A reply topic comes from outside (a payload's `reply_to` or an MQTT 5
//! Response Topic), so it is checked before we publish to it: a wildcard in a
//! PUBLISH topic is a protocol error that makes the broker drop our connection,
//! and a reply topic inside our own request filter would feed our answers back
//! to us as new questions.

/// Longest topic the protocol allows (a UTF-8 string with a 16-bit length).
const MAX_TOPIC_BYTES: usize = 65_535;

/// Checks a topic name we may publish to.
pub fn validate_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("topic must not be empty".into());
    }
    if topic.len() > MAX_TOPIC_BYTES {
        return Err(format!(
            "topic is {} bytes, the limit is {MAX_TOPIC_BYTES}",
            topic.len()
        ));
    }
    if topic.contains(['+', '#']) {
        return Err(format!("topic {topic:?} contains a wildcard ('+' or '#')"));
    }
    if topic.contains('\0') {
        return Err("topic contains a NUL character".into());
    }
    Ok(())
}

/// Checks a subscription filter: `#` only as the whole last level, `+` only as a whole level.
pub fn validate_filter(filter: &str) -> Result<(), String> {
    if filter.is_empty() || filter.len() > MAX_TOPIC_BYTES || filter.contains('\0') {
        return Err("filter must be 1 to 65535 bytes without NUL".into());
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        let wild = level.contains(['+', '#']);
        if wild && *level != "+" && *level != "#" {
            return Err(format!(
                "level {level:?} mixes a wildcard with other characters"
            ));
        }
        if *level == "#" && i != levels.len() - 1 {
            return Err("'#' must be the last level".into());
        }
    }
    Ok(())
}

/// Whether `topic` matches subscription `filter` (MQTT 3.1.1 section 4.7).
pub fn matches_filter(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return !topic.starts_with('$') || filter.starts_with('$'),
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) if fl == tl => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The reply topic for a request that names none: `prefix` followed by the
/// request topic's levels below the filter's leading literal levels.
/// `("swarm/query/#", "swarm/query/line3/plc7", "swarm/reply")` -> `swarm/reply/line3/plc7`.
pub fn default_reply_topic(filter: &str, request_topic: &str, prefix: &str) -> String {
    let fixed = filter
        .split('/')
        .take_while(|l| *l != "+" && *l != "#")
        .count();
    let rest: Vec<&str> = request_topic.split('/').skip(fixed).collect();
    if rest.is_empty() || rest.iter().all(|l| l.is_empty()) {
        prefix.to_string()
    } else {
        format!("{prefix}/{}", rest.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_refuse_wildcards_and_empty() {
        assert!(validate_topic("swarm/reply/a").is_ok());
        assert!(validate_topic("").is_err());
        assert!(validate_topic("a/+/b").is_err());
        assert!(validate_topic("a/#").is_err());
        assert!(validate_topic("a\0b").is_err());
        assert!(validate_topic(&"x".repeat(70_000)).is_err());
    }

    #[test]
    fn filters_follow_the_wildcard_rules() {
        for ok in ["swarm/query/#", "#", "+/x/+", "a/b"] {
            assert!(validate_filter(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/#/b", "a/b#", "a/+b", "a\0"] {
            assert!(validate_filter(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching() {
        assert!(matches_filter("swarm/query/#", "swarm/query/a/b"));
        assert!(matches_filter("swarm/query/#", "swarm/query"));
        assert!(matches_filter("swarm/+/x", "swarm/q/x"));
        assert!(!matches_filter("swarm/+/x", "swarm/q/y"));
        assert!(!matches_filter("swarm/query/#", "swarm/reply/a"));
        assert!(!matches_filter("#", "$SYS/broker"));
        assert!(matches_filter("a/b", "a/b"));
        assert!(!matches_filter("a/b", "a/b/c"));
    }

    #[test]
    fn default_reply_mirrors_the_request_suffix() {
        assert_eq!(
            default_reply_topic("swarm/query/#", "swarm/query/line3/plc7", "swarm/reply"),
            "swarm/reply/line3/plc7"
        );
        assert_eq!(
            default_reply_topic("swarm/query/#", "swarm/query", "swarm/reply"),
            "swarm/reply"
        );
        assert_eq!(
            default_reply_topic("site/+/ask", "site/7/ask", "r"),
            "r/7/ask"
        );
    }
}
