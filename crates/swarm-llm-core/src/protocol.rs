//! The wire format: decoding a request from an MQTT message and the JSON reply.
//! Pure code: no I/O, no clock (the caller passes what it needs).
//!
//! A request is a JSON object `{"id"?, "question", "reply_to"?, "max_tokens"?,
//! "deadline_ms"?, "vote"?}` or plain UTF-8 text taken as the question.
//! `"vote": true` is a peer board asking for this board's vote: the first
//! model's answer and confidence, with no swarm and no cloud. Where the reply
//! goes, in order: the MQTT 5 Response Topic (with its Correlation Data
//! echoed), the payload's `reply_to`, else the default reply topic derived
//! from the request topic. Because a default always exists, every message gets
//! an answer, a rejected one included.

use serde::{Deserialize, Serialize};

use crate::route::disguise::Disguise;
use crate::route::harm::{HarmCategory, HarmScore, SafetyAction};
use crate::route::safety::Layer;
use crate::route::signals::Uncertainty;
use crate::topic;

/// An MQTT message as the transport hands it over, whatever the protocol version.
#[derive(Debug, Clone, Default)]
pub struct Inbound {
    pub topic: String,
    pub payload: Vec<u8>,
    /// MQTT 5 Response Topic.
    pub response_topic: Option<String>,
    /// MQTT 5 Correlation Data, echoed verbatim in the reply.
    pub correlation_data: Option<Vec<u8>>,
    /// MQTT 5 Message Expiry Interval left when the broker delivered it.
    pub message_expiry_s: Option<u32>,
}

/// Where and how to publish the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAddress {
    pub topic: String,
    pub correlation_data: Option<Vec<u8>>,
}

/// A decoded, checked question.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: String,
    /// The topic it arrived on (data residency is decided per topic).
    pub topic: String,
    pub question: String,
    pub reply: ReplyAddress,
    /// The asker's cap on answer length; the model's own cap still applies.
    pub max_tokens: Option<u32>,
    /// Time allowed for the answer, from receipt.
    pub deadline_ms: u64,
    /// A peer board's request for this board's vote (see the module doc).
    pub vote: bool,
}

/// A message that cannot be answered, with what is known of where to reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub id: Option<String>,
    pub reply: ReplyAddress,
    pub error: ReplyError,
}

/// The limits and topics decoding needs (the service takes them from its
/// config: `Config::decode_rules`).
#[derive(Debug, Clone)]
pub struct DecodeRules {
    pub request_filter: String,
    pub reply_topic_prefix: String,
    pub max_payload_bytes: usize,
    pub max_question_bytes: usize,
    pub default_deadline_ms: u64,
    pub max_deadline_ms: u64,
}

/// Longest `id` we accept; it is echoed into replies and logs.
const MAX_ID_CHARS: usize = 128;

/// A request's JSON payload, as askers write it (`swarm-llm ask`, peer
/// boards asking for a vote) and [`decode`] reads it.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestPayload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub question: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vote: bool,
}

/// Decodes and checks one message. `fallback_id` names requests that bring
/// no id. The steps, in order: where the reply goes, the payload's size and
/// encoding, its fields (JSON or plain text), then each field's value; the
/// first that fails is the rejection, sent to the reply address known so far.
pub fn decode(msg: &Inbound, rules: &DecodeRules, fallback_id: &str) -> Result<Request, Rejection> {
    let mut reply = mqtt5_reply_address(msg, rules)?;
    let text = payload_text(msg, rules, &reply)?;
    let fields = read_fields(text, msg, rules, &mut reply)?;
    checked(fields, msg, rules, reply, fallback_id)
}

fn reject(id: Option<String>, reply: &ReplyAddress, code: ErrorCode, message: String) -> Rejection {
    Rejection {
        id,
        reply: reply.clone(),
        error: ReplyError::new(code, message),
    }
}

/// The default reply topic, or the MQTT 5 response topic: known before the
/// payload is read, so even an unreadable payload is answered.
fn mqtt5_reply_address(msg: &Inbound, rules: &DecodeRules) -> Result<ReplyAddress, Rejection> {
    let mut reply = ReplyAddress {
        topic: topic::default_reply_topic(
            &rules.request_filter,
            &msg.topic,
            &rules.reply_topic_prefix,
        ),
        correlation_data: msg.correlation_data.clone(),
    };
    if let Some(rt) = &msg.response_topic {
        match check_reply_topic(rt, rules) {
            Ok(()) => reply.topic = rt.clone(),
            Err(e) => {
                return Err(reject(
                    None,
                    &reply,
                    ErrorCode::InvalidReplyTopic,
                    format!("response topic: {e}"),
                ))
            }
        }
    }
    Ok(reply)
}

/// The payload as text: within the size limit and valid UTF-8.
fn payload_text<'m>(
    msg: &'m Inbound,
    rules: &DecodeRules,
    reply: &ReplyAddress,
) -> Result<&'m str, Rejection> {
    if msg.payload.len() > rules.max_payload_bytes {
        return Err(reject(
            None,
            reply,
            ErrorCode::PayloadTooLarge,
            format!(
                "payload is {} bytes, the limit is {}",
                msg.payload.len(),
                rules.max_payload_bytes
            ),
        ));
    }
    std::str::from_utf8(&msg.payload).map_err(|e| {
        reject(
            None,
            reply,
            ErrorCode::InvalidUtf8,
            format!(
                "payload is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// The request's fields: a JSON object, or plain text that is the question.
/// A JSON `reply_to` (without an MQTT 5 response topic) moves the reply
/// address, also for a request rejected here when its `reply_to` and `id`
/// can be salvaged, so the asker still hears why.
fn read_fields(
    text: &str,
    msg: &Inbound,
    rules: &DecodeRules,
    reply: &mut ReplyAddress,
) -> Result<RequestPayload, Rejection> {
    if !text.trim_start().starts_with('{') {
        return Ok(RequestPayload {
            question: text.to_string(),
            ..RequestPayload::default()
        });
    }
    let fields = match serde_json::from_str::<RequestPayload>(text) {
        Ok(fields) => fields,
        Err(e) => {
            let loose = loose_fields(text);
            if msg.response_topic.is_none() {
                if let Some(rt) = loose
                    .reply_to
                    .filter(|rt| check_reply_topic(rt, rules).is_ok())
                {
                    reply.topic = rt;
                }
            }
            let code = if e.is_syntax() || e.is_eof() {
                ErrorCode::MalformedJson
            } else {
                ErrorCode::InvalidRequest
            };
            return Err(reject(loose.id, reply, code, format!("request JSON: {e}")));
        }
    };
    if msg.response_topic.is_none() {
        if let Some(rt) = &fields.reply_to {
            match check_reply_topic(rt, rules) {
                Ok(()) => reply.topic = rt.clone(),
                Err(e) => {
                    return Err(reject(
                        fields.id,
                        reply,
                        ErrorCode::InvalidReplyTopic,
                        format!("reply_to: {e}"),
                    ))
                }
            }
        }
    }
    Ok(fields)
}

/// Checks each field's value and makes the request.
fn checked(
    fields: RequestPayload,
    msg: &Inbound,
    rules: &DecodeRules,
    reply: ReplyAddress,
    fallback_id: &str,
) -> Result<Request, Rejection> {
    let RequestPayload {
        id,
        question,
        max_tokens,
        deadline_ms,
        vote,
        reply_to: _,
    } = fields;
    let fail = |id: Option<String>, code, message: String| Err(reject(id, &reply, code, message));
    if let Some(given) = &id {
        if given.is_empty()
            || given.chars().count() > MAX_ID_CHARS
            || given.chars().any(char::is_control)
        {
            return fail(
                None,
                ErrorCode::InvalidRequest,
                format!("id must be 1 to {MAX_ID_CHARS} characters without control characters"),
            );
        }
    }
    let question = question.trim();
    if question.is_empty() {
        return fail(id, ErrorCode::EmptyQuestion, "the question is empty".into());
    }
    if question.len() > rules.max_question_bytes {
        return fail(
            id,
            ErrorCode::QuestionTooLong,
            format!(
                "question is {} bytes, the limit is {}",
                question.len(),
                rules.max_question_bytes
            ),
        );
    }
    if let Some(c) = question
        .chars()
        .find(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    {
        return fail(
            id,
            ErrorCode::InvalidRequest,
            format!("question contains the control character U+{:04X}", c as u32),
        );
    }
    if max_tokens == Some(0) {
        return fail(
            id,
            ErrorCode::InvalidRequest,
            "max_tokens must be above 0".into(),
        );
    }
    let deadline_ms = match deadline_ms {
        None => rules.default_deadline_ms,
        Some(d) if d > 0 && d <= rules.max_deadline_ms => d,
        Some(d) => {
            return fail(
                id,
                ErrorCode::InvalidRequest,
                format!("deadline_ms {d} is outside 1..={}", rules.max_deadline_ms),
            )
        }
    };
    // An MQTT 5 message expiry shortens the deadline: after it the asker has
    // stopped waiting, so the answer would be wasted work.
    let deadline_ms = match msg.message_expiry_s {
        Some(s) => deadline_ms.min(u64::from(s) * 1000),
        None => deadline_ms,
    };
    Ok(Request {
        id: id.unwrap_or_else(|| fallback_id.to_string()),
        topic: msg.topic.clone(),
        question: question.to_string(),
        reply,
        max_tokens,
        deadline_ms,
        vote,
    })
}

fn check_reply_topic(t: &str, rules: &DecodeRules) -> Result<(), String> {
    topic::validate_topic(t)?;
    if topic::matches_filter(&rules.request_filter, t) {
        return Err(format!(
            "{t:?} is inside the request filter {:?}; replying there would loop",
            rules.request_filter
        ));
    }
    Ok(())
}

#[derive(Default)]
struct LooseFields {
    id: Option<String>,
    reply_to: Option<String>,
}

fn loose_fields(text: &str) -> LooseFields {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return LooseFields::default();
    };
    let string = |k: &str| map.get(k).and_then(|v| v.as_str()).map(str::to_string);
    LooseFields {
        id: string("id").filter(|id| {
            !id.is_empty()
                && id.chars().count() <= MAX_ID_CHARS
                && !id.chars().any(char::is_control)
        }),
        reply_to: string("reply_to"),
    }
}

pub use crate::route::policy::Route;

/// Machine-readable reason a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    PayloadTooLarge,
    InvalidUtf8,
    MalformedJson,
    InvalidRequest,
    InvalidReplyTopic,
    EmptyQuestion,
    QuestionTooLong,
    /// The prompt does not fit in the model's context.
    ContextOverflow,
    /// The intake queue is full; retry after `retry_after_ms`.
    Busy,
    /// This asker (request topic) sent more than its rate; retry after `retry_after_ms`.
    RateLimited,
    DeadlineExceeded,
    /// The service is stopping and did not finish this question.
    ShuttingDown,
    InferenceFailed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyError {
    pub code: ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ReplyError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_ms: None,
        }
    }
}

/// The signals that chose the route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signals {
    /// The first model's confidence in its answer (the policy's signal), when it answered.
    pub confidence: Option<f32>,
    /// Token statistics of the first model's answer.
    pub uncertainty: Option<Uncertainty>,
    /// Difficulty estimated from the question alone, in [0, 1].
    pub difficulty: f32,
    /// For a multiple-choice question: the first model's distribution over
    /// the option letters, its letter bias divided out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<f32>>,
    /// The learned router's estimate that the cloud would turn a wrong
    /// answer right, when the policy has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_gain: Option<f32>,
    /// The first answer only restated the question (no word, number or
    /// option of its own), so it was not kept as it was.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub restates_question: bool,
    pub safety: SafetySignal,
    /// Present when the first model's queue would have answered past the
    /// deadline: the question went to the cloud where it could.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSignal>,
}

/// The first model's expected finish against the time the question had left.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoadSignal {
    /// When a job queued then would have been done (its queue through its
    /// slots at its recent job time).
    pub first_expected_ms: f64,
    /// The time left until the question's deadline.
    pub left_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetySignal {
    /// The rules' score or the learned probability of harm, whichever is higher.
    pub score: f32,
    pub flagged: bool,
    /// What the flag led to: `allow` (not flagged), `cloud` or `refuse`.
    #[serde(default = "allow")]
    pub action: SafetyAction,
    /// The harm categories that fired (e.g. `plant_hazard`, `self_harm`).
    pub reasons: Vec<HarmCategory>,
    /// Each reason with the layer that fired it: `rules` (with the rule's
    /// name), `learned` or `cloud_judge`.
    #[serde(default)]
    pub layers: Vec<SafetyLayer>,
    /// The learned layer's verdict, flagged or not, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learned: Option<HarmScore>,
    /// The cloud judge's probability of harm, flagged or not, when it was
    /// asked (the board was unsure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<f32>,
    /// The disguises undone to read the question, when it had any
    /// (`compatibility_forms`, `invisible_characters`, `lookalike_letters`,
    /// `spaced_letters`), flagged or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disguises: Vec<Disguise>,
}

fn allow() -> SafetyAction {
    SafetyAction::Allow
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SafetyLayer {
    pub layer: Layer,
    pub rule: String,
    pub category: HarmCategory,
}

/// One model's answer in a swarm vote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vote {
    pub model: String,
    pub answer: String,
    pub confidence: f32,
    /// Answers with the same group number were counted as the same answer.
    pub group: usize,
}

/// What a cloud call cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CloudUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub bytes_sent: u64,
    pub attempts: u32,
}

/// Where the time of an answered question went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// The safety check before generation (rules and the learned layer).
    #[serde(default)]
    pub safety_ms: f64,
    /// From receipt until the first model started on it (decoding, queues).
    pub queue_ms: f64,
    /// The first model's prompt processing: its time to first token.
    pub prompt_ms: f64,
    /// The first model's generation after the first token.
    pub decode_ms: f64,
    /// The other models of a swarm vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_ms: Option<f64>,
}

/// Milliseconds with two decimals, for replies and reports.
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 100_000.0).round() / 100.0
}

/// The JSON published back to the asker. `error` is null on success.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub id: Option<String>,
    pub answer: Option<String>,
    /// `local`, `swarm`, `cloud` or `refuse`; null on error.
    pub route: Option<Route>,
    /// The model whose answer this is.
    pub model: Option<String>,
    /// Why the answer is below the policy's bar (the cloud failed, was not
    /// allowed or not available); null when it is not.
    pub degraded: Option<String>,
    /// For safety-flagged questions: what was flagged and the safe procedure.
    pub safety_notice: Option<String>,
    /// From receipt of the request to its reply being handed to MQTT.
    pub latency_ms: f64,
    /// Tokens generated for the answer (end-of-generation included).
    pub tokens: u32,
    /// Tokens of the prompt the first model read (template and question).
    pub prompt_tokens: u32,
    /// Why the first model's generation ended: `eog`, `max_tokens`, `stop`.
    pub finish: Option<String>,
    pub signals: Option<Signals>,
    pub votes: Option<Vec<Vote>>,
    /// Share of the confidence-weighted votes behind the winning answer.
    pub agreement: Option<f32>,
    pub cloud: Option<CloudUsage>,
    pub timing: Option<Timing>,
    /// The board that answered.
    pub node: String,
    pub error: Option<ReplyError>,
}

impl Reply {
    /// A reply with nothing filled in yet.
    pub fn empty(id: Option<String>, node: &str) -> Self {
        Self {
            id,
            answer: None,
            route: None,
            model: None,
            degraded: None,
            safety_notice: None,
            latency_ms: 0.0,
            tokens: 0,
            prompt_tokens: 0,
            finish: None,
            signals: None,
            votes: None,
            agreement: None,
            cloud: None,
            timing: None,
            node: node.to_string(),
            error: None,
        }
    }

    pub fn failure(id: Option<String>, node: &str, error: ReplyError, latency_ms: f64) -> Self {
        Self {
            latency_ms,
            error: Some(error),
            ..Self::empty(id, node)
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a reply always serialises")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Decoding rules for tests: requests under `swarm/query/#`.
    pub(crate) fn rules() -> DecodeRules {
        DecodeRules {
            request_filter: "swarm/query/#".into(),
            reply_topic_prefix: "swarm/reply".into(),
            max_payload_bytes: 1024,
            max_question_bytes: 64,
            default_deadline_ms: 30_000,
            max_deadline_ms: 60_000,
        }
    }

    fn msg(payload: &[u8]) -> Inbound {
        Inbound {
            topic: "swarm/query/line1".into(),
            payload: payload.to_vec(),
            ..Default::default()
        }
    }

    fn code(r: Result<Request, Rejection>) -> ErrorCode {
        r.unwrap_err().error.code
    }

    #[test]
    fn plain_text_is_a_question_answered_on_the_default_topic() {
        let r = decode(&msg(b"  What is 2+2?  "), &rules(), "q-1").unwrap();
        assert_eq!(r.question, "What is 2+2?");
        assert_eq!(r.id, "q-1");
        assert_eq!(
            r.reply,
            ReplyAddress {
                topic: "swarm/reply/line1".into(),
                correlation_data: None
            }
        );
        assert_eq!(r.deadline_ms, 30_000);
    }

    #[test]
    fn json_request_with_all_fields() {
        let p = br#"{"id":"a1","question":"Capital of Australia?","reply_to":"gw/7/answers","max_tokens":16,"deadline_ms":5000,"vote":true}"#;
        let r = decode(&msg(p), &rules(), "q").unwrap();
        assert_eq!(
            (
                r.id.as_str(),
                r.reply.topic.as_str(),
                r.max_tokens,
                r.deadline_ms,
                r.vote
            ),
            ("a1", "gw/7/answers", Some(16), 5000, true)
        );
        let plain = decode(
            &msg(br#"{"question":"Capital of Australia?"}"#),
            &rules(),
            "q",
        );
        assert!(
            !plain.unwrap().vote,
            "a question is no vote unless it says so"
        );
    }

    #[test]
    fn v5_response_topic_wins_and_correlation_is_echoed() {
        let mut m = msg(br#"{"question":"q","reply_to":"ignored/topic"}"#);
        m.response_topic = Some("client/9/resp".into());
        m.correlation_data = Some(vec![0, 159, 146, 150]);
        let r = decode(&m, &rules(), "q").unwrap();
        assert_eq!(
            r.reply,
            ReplyAddress {
                topic: "client/9/resp".into(),
                correlation_data: Some(vec![0, 159, 146, 150])
            }
        );
    }

    #[test]
    fn malformed_json_still_gets_a_reply_address() {
        let rej = decode(&msg(br#"{"question": "x", "#), &rules(), "q").unwrap_err();
        assert_eq!(rej.error.code, ErrorCode::MalformedJson);
        assert_eq!(rej.reply.topic, "swarm/reply/line1");
    }

    #[test]
    fn unknown_field_is_rejected_but_reply_to_and_id_are_salvaged() {
        let rej = decode(
            &msg(br#"{"id":"z9","question":"x","reply_to":"gw/r","colour":"red"}"#),
            &rules(),
            "q",
        )
        .unwrap_err();
        assert_eq!(rej.error.code, ErrorCode::InvalidRequest);
        assert!(
            rej.error.message.contains("unknown field `colour`"),
            "{}",
            rej.error.message
        );
        assert_eq!(rej.reply.topic, "gw/r");
        assert_eq!(rej.id.as_deref(), Some("z9"));
    }

    #[test]
    fn duplicate_keys_wrong_types_and_missing_question_are_invalid() {
        assert_eq!(
            code(decode(
                &msg(br#"{"question":"a","question":"b"}"#),
                &rules(),
                "q"
            )),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(decode(&msg(br#"{"question":7}"#), &rules(), "q")),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(decode(&msg(br#"{"id":"x"}"#), &rules(), "q")),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(decode(
                &msg(br#"{"question":"a","max_tokens":0}"#),
                &rules(),
                "q"
            )),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(decode(
                &msg(br#"{"question":"a","deadline_ms":999999}"#),
                &rules(),
                "q"
            )),
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowing_the_stack() {
        let deep = format!("{{\"question\":{}{}}}", "[".repeat(500), "]".repeat(500));
        let mut r = rules();
        r.max_payload_bytes = 10_000;
        assert!(decode(&msg(deep.as_bytes()), &r, "q").is_err());
    }

    #[test]
    fn size_utf8_empty_and_control_characters() {
        assert_eq!(
            code(decode(&msg(&[b'a'; 2000]), &rules(), "q")),
            ErrorCode::PayloadTooLarge
        );
        assert_eq!(
            code(decode(&msg(&[b'a'; 100]), &rules(), "q")),
            ErrorCode::QuestionTooLong
        );
        assert_eq!(
            code(decode(&msg(b"caf\xc3\x28"), &rules(), "q")),
            ErrorCode::InvalidUtf8
        );
        assert_eq!(
            code(decode(&msg(b"   "), &rules(), "q")),
            ErrorCode::EmptyQuestion
        );
        assert_eq!(
            code(decode(&msg(br#"{"question":" "}"#), &rules(), "q")),
            ErrorCode::EmptyQuestion
        );
        assert_eq!(
            code(decode(&msg(b"why\x07 beep"), &rules(), "q")),
            ErrorCode::InvalidRequest
        );
        assert!(decode(&msg(b"line one\nline two"), &rules(), "q").is_ok());
    }

    #[test]
    fn reply_topics_with_wildcards_or_inside_the_filter_are_refused() {
        let rej = decode(
            &msg(br#"{"question":"a","reply_to":"gw/#"}"#),
            &rules(),
            "q",
        )
        .unwrap_err();
        assert_eq!(rej.error.code, ErrorCode::InvalidReplyTopic);
        assert_eq!(rej.reply.topic, "swarm/reply/line1");
        let rej = decode(
            &msg(br#"{"question":"a","reply_to":"swarm/query/loop"}"#),
            &rules(),
            "q",
        )
        .unwrap_err();
        assert_eq!(rej.error.code, ErrorCode::InvalidReplyTopic);
        let mut m = msg(b"hi");
        m.response_topic = Some("a/+/b".into());
        assert_eq!(
            code(decode(&m, &rules(), "q")),
            ErrorCode::InvalidReplyTopic
        );
    }

    #[test]
    fn mqtt5_message_expiry_shortens_the_deadline() {
        let mut m = msg(br#"{"question":"q","deadline_ms":20000}"#);
        m.message_expiry_s = Some(5);
        assert_eq!(decode(&m, &rules(), "q").unwrap().deadline_ms, 5000);
        m.message_expiry_s = Some(60);
        assert_eq!(decode(&m, &rules(), "q").unwrap().deadline_ms, 20000);
    }

    #[test]
    fn ids_are_checked() {
        assert_eq!(
            code(decode(&msg(br#"{"id":"","question":"a"}"#), &rules(), "q")),
            ErrorCode::InvalidRequest
        );
        let long = format!(r#"{{"id":"{}","question":"a"}}"#, "x".repeat(200));
        assert_eq!(
            code(decode(&msg(long.as_bytes()), &rules(), "q")),
            ErrorCode::InvalidRequest
        );
    }

    mod hostile {
        use super::*;
        use proptest::prelude::*;

        fn check(payload: &[u8], topic: &str) {
            let m = Inbound {
                topic: topic.into(),
                payload: payload.to_vec(),
                ..Default::default()
            };
            let reply_topic = match decode(&m, &rules(), "q") {
                Ok(r) => {
                    assert!(
                        !r.question.is_empty() && r.question.len() <= rules().max_question_bytes
                    );
                    r.reply.topic
                }
                Err(rej) => {
                    assert!(!rej.error.message.is_empty());
                    rej.reply.topic
                }
            };
            // Whatever came in, the reply goes somewhere we may publish.
            assert!(
                crate::topic::validate_topic(&reply_topic).is_ok(),
                "{reply_topic:?}"
            );
            assert!(!crate::topic::matches_filter(
                &rules().request_filter,
                &reply_topic
            ));
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_and_always_have_a_reply_address(payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
                check(&payload, "swarm/query/fuzz");
            }

            #[test]
            fn arbitrary_json_objects_never_panic(
                id in proptest::option::of(".{0,200}"),
                question in ".{0,300}",
                reply_to in proptest::option::of("[a-z/#+]{0,20}"),
                extra in proptest::option::of(("[a-z]{1,8}", ".{0,20}")),
            ) {
                let mut v = serde_json::json!({ "question": question });
                if let Some(id) = id { v["id"] = id.into(); }
                if let Some(r) = reply_to { v["reply_to"] = r.into(); }
                if let Some((k, x)) = extra { v[k] = x.into(); }
                check(v.to_string().as_bytes(), "swarm/query/fuzz/x");
            }
        }

        #[test]
        fn a_sample_of_hostile_payloads_is_each_refused() {
            let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
            let samples: Vec<Vec<u8>> = vec![
                vec![b'x'; 1_000_000],
                vec![0xff, 0xfe, 0x00, 0x80],
                format!("{{\"question\":{deep}}}").into_bytes(),
                br#"{"question":"a\u0000b"}"#.to_vec(),
                b"\x07\x1b[31mred".to_vec(),
                br#"{"question":"a","question":"b"}"#.to_vec(),
                br#"{"question":"a","id":"x","id":"y"}"#.to_vec(),
            ];
            let mut r = rules();
            r.max_payload_bytes = 300_000;
            for p in samples {
                let m = Inbound {
                    topic: "swarm/query/h".into(),
                    payload: p.clone(),
                    ..Default::default()
                };
                assert!(
                    decode(&m, &r, "q").is_err(),
                    "accepted {:?}",
                    String::from_utf8_lossy(&p[..p.len().min(40)])
                );
            }
        }
    }

    #[test]
    fn reply_json_has_the_documented_fields() {
        let r = Reply::failure(
            Some("a".into()),
            "edge-01",
            ReplyError::new(ErrorCode::Busy, "full"),
            3.0,
        );
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        for k in [
            "id",
            "answer",
            "route",
            "model",
            "latency_ms",
            "tokens",
            "error",
            "node",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["error"]["code"], "busy");
    }
}
