//! Client for a large model behind any OpenAI-compatible
//! `/v1/chat/completions` endpoint (reqwest with rustls).
//!
//! It is built for a link that fails: connect and request timeouts bounded by
//! the question's own deadline; bounded retries with jittered exponential
//! backoff on 429 and 5xx, honouring `Retry-After`; a circuit breaker that stops
//! calling a cloud that keeps failing and tries again after a cool-down; and an
//! hourly call budget. The router asks [`CloudClient::available`] before
//! planning a cloud route, and falls back to the best local answer (marked
//! degraded) when a call fails anyway.
//!
//! The API key comes from a systemd credential file or the environment, never
//! from the config file, and is never logged or put in a reply.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::breaker::Breaker;

/// How many of a judged token's likeliest entries are asked for: the most
/// OpenAI's API gives.
const JUDGE_TOP_LOGPROBS: u32 = 20;

/// Environment variable with the cloud API key.
pub const API_KEY_ENV: &str = "SWARM_LLM_CLOUD_API_KEY";
/// The systemd credential with the key: `swarm-llm.cloud-api-key`.
pub const API_KEY_CREDENTIAL: &str = "cloud-api-key";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CloudConfig {
    /// Base URL of the API, up to and including `/v1`.
    pub url: String,
    pub model: String,
    pub connect_timeout_ms: u64,
    /// Whole-request limit for one attempt (the question's deadline may cut it shorter).
    pub request_timeout_ms: u64,
    /// Attempts after the first, on 429, 5xx, timeouts and connection errors.
    pub max_retries: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Calls allowed in any hour; past it the cloud counts as unavailable.
    pub calls_per_hour: u32,
    /// Consecutive failed calls that open the circuit breaker.
    pub breaker_failures: u32,
    /// How long an open breaker keeps the cloud unavailable.
    pub breaker_cooldown_ms: u64,
    pub max_tokens: u32,
}

impl Default for CloudConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8080/v1".into(),
            model: "cloud".into(),
            connect_timeout_ms: 2_000,
            request_timeout_ms: 60_000,
            max_retries: 2,
            retry_base_ms: 500,
            retry_max_ms: 10_000,
            calls_per_hour: 600,
            breaker_failures: 3,
            breaker_cooldown_ms: 30_000,
            max_tokens: 128,
        }
    }
}

impl CloudConfig {
    pub fn validate(&self, key: &str) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            v.push((
                format!("{key}.url"),
                "must start with http:// or https://".into(),
            ));
        }
        if self.model.is_empty() {
            v.push((format!("{key}.model"), "must not be empty".into()));
        }
        if self.connect_timeout_ms == 0 || self.request_timeout_ms == 0 {
            v.push((
                format!("{key}.request_timeout_ms"),
                "timeouts must be above 0".into(),
            ));
        }
        if self.retry_base_ms == 0 || self.retry_base_ms > self.retry_max_ms {
            v.push((
                format!("{key}.retry_base_ms"),
                "must be above 0 and not above retry_max_ms".into(),
            ));
        }
        if self.breaker_failures == 0 {
            v.push((format!("{key}.breaker_failures"), "must be above 0".into()));
        }
        if self.max_tokens == 0 {
            v.push((format!("{key}.max_tokens"), "must be above 0".into()));
        }
        v
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CloudError {
    #[error("no cloud is configured")]
    NotConfigured,
    #[error("the cloud circuit breaker is open after repeated failures")]
    BreakerOpen,
    #[error("the hourly cloud call budget is spent")]
    BudgetSpent,
    #[error("no time left before the question's deadline")]
    NoTime,
    #[error("cloud call timed out")]
    Timeout,
    #[error("cloud connection failed: {0}")]
    Connect(String),
    #[error("cloud answered HTTP {status}")]
    Status { status: u16 },
    #[error("cloud answer is not a chat completion: {0}")]
    Malformed(String),
}

impl CloudError {
    fn retryable(&self) -> bool {
        match self {
            CloudError::Timeout | CloudError::Connect(_) => true,
            CloudError::Status { status } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// A cloud answer and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CloudAnswer {
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Request bytes sent, all attempts.
    pub bytes_sent: u64,
    pub attempts: u32,
    /// The answer's first token's likeliest entries (token text, log
    /// probability), when asked for ([`CloudClient::judge`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub first_token_top: Vec<(String, f32)>,
}

/// Running totals since start, for the status and the logs.
#[derive(Debug, Default)]
pub struct CloudCounters {
    pub calls: AtomicU64,
    pub failures: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub bytes_sent: AtomicU64,
}

#[derive(Debug)]
struct Health {
    breaker: Breaker,
    /// Start times of the calls in the last hour.
    calls: std::collections::VecDeque<Instant>,
}

pub struct CloudClient {
    config: CloudConfig,
    http: reqwest::Client,
    api_key: Option<String>,
    health: Mutex<Health>,
    pub counters: CloudCounters,
}

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: [Message<'a>; 2],
    max_tokens: u32,
    temperature: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<u32>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

#[derive(Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
    #[serde(default)]
    logprobs: Option<ChoiceLogprobs>,
}

#[derive(Deserialize)]
struct ChoiceLogprobs {
    #[serde(default)]
    content: Vec<TokenLogprobs>,
}

#[derive(Deserialize)]
struct TokenLogprobs {
    #[serde(default)]
    top_logprobs: Vec<TopLogprob>,
}

#[derive(Deserialize)]
struct TopLogprob {
    token: String,
    logprob: f32,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// Reads the API key: the systemd credential if present, else the environment.
pub fn api_key_from_environment() -> Option<String> {
    crate::systemd::credential(API_KEY_CREDENTIAL)
        .or_else(|| std::env::var(API_KEY_ENV).ok().filter(|k| !k.is_empty()))
}

impl CloudClient {
    pub fn new(config: CloudConfig, api_key: Option<String>) -> Result<Self, CloudError> {
        crate::tls::install_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .build()
            .map_err(|e| CloudError::Connect(e.to_string()))?;
        let breaker = Breaker::new(
            config.breaker_failures,
            Duration::from_millis(config.breaker_cooldown_ms),
        );
        Ok(Self {
            config,
            http,
            api_key,
            health: Mutex::new(Health {
                breaker,
                calls: Default::default(),
            }),
            counters: CloudCounters::default(),
        })
    }

    pub fn config(&self) -> &CloudConfig {
        &self.config
    }

    /// Whether a call would be attempted now (breaker closed or cooled down,
    /// budget left). Planning uses this; [`CloudClient::ask`] checks again.
    /// The hourly budget of calls (`cloud.calls_per_hour`).
    pub fn calls_per_hour(&self) -> u32 {
        self.config.calls_per_hour
    }

    pub fn available(&self) -> Result<(), CloudError> {
        let mut h = self.health.lock().expect("cloud health lock");
        self.check(&mut h, Instant::now())
    }

    fn check(&self, h: &mut Health, now: Instant) -> Result<(), CloudError> {
        if h.breaker.is_open(now.into_std()) {
            return Err(CloudError::BreakerOpen);
        }
        while h
            .calls
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(3600))
        {
            h.calls.pop_front();
        }
        if h.calls.len() >= self.config.calls_per_hour as usize {
            return Err(CloudError::BudgetSpent);
        }
        Ok(())
    }

    /// Asks the cloud model, retrying within `deadline`.
    pub async fn ask(
        &self,
        system: &str,
        question: &str,
        max_tokens: u32,
        deadline: Instant,
    ) -> Result<CloudAnswer, CloudError> {
        self.call(system, question, max_tokens, None, deadline)
            .await
    }

    /// Asks for a one-token verdict and the likeliest entries of that token
    /// (OpenAI's `logprobs` and `top_logprobs`), in `first_token_top`.
    pub async fn judge(
        &self,
        system: &str,
        question: &str,
        deadline: Instant,
    ) -> Result<CloudAnswer, CloudError> {
        self.call(system, question, 1, Some(JUDGE_TOP_LOGPROBS), deadline)
            .await
    }

    async fn call(
        &self,
        system: &str,
        question: &str,
        max_tokens: u32,
        top_logprobs: Option<u32>,
        deadline: Instant,
    ) -> Result<CloudAnswer, CloudError> {
        {
            let mut h = self.health.lock().expect("cloud health lock");
            self.check(&mut h, Instant::now())?;
            h.calls.push_back(Instant::now());
        }
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::to_vec(&ChatRequest {
            model: &self.config.model,
            messages: [
                Message {
                    role: "system",
                    content: system,
                },
                Message {
                    role: "user",
                    content: question,
                },
            ],
            max_tokens: max_tokens.min(self.config.max_tokens),
            temperature: 0.0,
            logprobs: top_logprobs.map(|_| true),
            top_logprobs,
        })
        .expect("request serialises");
        let mut bytes_sent = 0u64;
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break Err(CloudError::NoTime);
            }
            bytes_sent += body.len() as u64;
            let timeout = left.min(Duration::from_millis(self.config.request_timeout_ms));
            let (outcome, retry_after) = self.attempt(&body, timeout).await;
            match outcome {
                // Cut short by the question's own deadline, not the cloud's
                // limit: the question ran out of time, which says nothing
                // of the cloud's health (a burst of late questions must not
                // open the breaker for the ones that have time).
                Err(CloudError::Timeout)
                    if timeout < Duration::from_millis(self.config.request_timeout_ms) =>
                {
                    break Err(CloudError::NoTime);
                }
                Ok(mut answer) => {
                    answer.bytes_sent = bytes_sent;
                    answer.attempts = attempt;
                    break Ok(answer);
                }
                Err(e) if e.retryable() && attempt <= self.config.max_retries => {
                    let delay = retry_after
                        .unwrap_or_else(|| self.backoff(attempt))
                        .min(Duration::from_millis(self.config.retry_max_ms));
                    if Instant::now() + delay >= deadline {
                        break Err(e);
                    }
                    tracing::warn!(attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "cloud call failed; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => break Err(e),
            }
        };
        self.counters
            .bytes_sent
            .fetch_add(bytes_sent, Ordering::Relaxed);
        self.record(&result);
        result
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .config
            .retry_base_ms
            .saturating_mul(1 << (attempt - 1).min(16));
        let capped = base.min(self.config.retry_max_ms);
        Duration::from_millis(rand::rng().random_range(capped / 2..=capped))
    }

    fn record(&self, result: &Result<CloudAnswer, CloudError>) {
        let mut h = self.health.lock().expect("cloud health lock");
        match result {
            Ok(a) => {
                h.breaker.success();
                self.counters
                    .prompt_tokens
                    .fetch_add(a.prompt_tokens, Ordering::Relaxed);
                self.counters
                    .completion_tokens
                    .fetch_add(a.completion_tokens, Ordering::Relaxed);
            }
            Err(CloudError::NoTime) => {}
            Err(e) => {
                self.counters.failures.fetch_add(1, Ordering::Relaxed);
                if h.breaker.failure(Instant::now().into_std()) {
                    tracing::error!(error = %e, cooldown_ms = self.config.breaker_cooldown_ms, "cloud circuit breaker open");
                }
            }
        }
    }

    /// One HTTP attempt; on failure also the server's Retry-After, if any.
    async fn attempt(
        &self,
        body: &[u8],
        timeout: Duration,
    ) -> (Result<CloudAnswer, CloudError>, Option<Duration>) {
        let url = format!("{}/chat/completions", self.config.url.trim_end_matches('/'));
        let mut req = self
            .http
            .post(url)
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key);
        }
        let map_err = |e: reqwest::Error| {
            if e.is_timeout() {
                CloudError::Timeout
            } else {
                // Without the URL: it may carry credentials in some deployments.
                CloudError::Connect(e.without_url().to_string())
            }
        };
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (Err(map_err(e)), None),
        };
        let status = resp.status();
        if !status.is_success() {
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return (
                Err(CloudError::Status {
                    status: status.as_u16(),
                }),
                retry_after,
            );
        }
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return (Err(map_err(e)), None),
        };
        (parse_completion(&bytes), None)
    }
}

fn parse_completion(bytes: &[u8]) -> Result<CloudAnswer, CloudError> {
    let r: ChatResponse =
        serde_json::from_slice(bytes).map_err(|e| CloudError::Malformed(e.to_string()))?;
    let choice = r
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| CloudError::Malformed("no choices[0]".into()))?;
    let first_token_top = choice
        .logprobs
        .and_then(|l| l.content.into_iter().next())
        .map(|t| {
            t.top_logprobs
                .into_iter()
                .map(|e| (e.token, e.logprob))
                .collect()
        })
        .unwrap_or_default();
    let text = choice
        .message
        .content
        .ok_or_else(|| CloudError::Malformed("no choices[0].message.content".into()))?;
    let usage = r.usage.unwrap_or(Usage {
        prompt_tokens: 0,
        completion_tokens: 0,
    });
    Ok(CloudAnswer {
        text: text.trim().to_string(),
        prompt_tokens: usage.prompt_tokens,
        completion_tokens: usage.completion_tokens,
        bytes_sent: 0,
        attempts: 0,
        first_token_top,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_are_parsed_and_wrong_shapes_refused() {
        let ok = br#"{"choices":[{"message":{"role":"assistant","content":" Canberra. "}}],"usage":{"prompt_tokens":20,"completion_tokens":3}}"#;
        let a = parse_completion(ok).unwrap();
        assert_eq!(
            (a.text.as_str(), a.prompt_tokens, a.completion_tokens),
            ("Canberra.", 20, 3)
        );
        assert!(a.first_token_top.is_empty());
        let judged = br#"{"choices":[{"message":{"content":"unsafe"},"logprobs":{"content":[{"token":"unsafe","logprob":-0.1,"top_logprobs":[{"token":"unsafe","logprob":-0.1},{"token":"safe","logprob":-2.4}]}]}}]}"#;
        let a = parse_completion(judged).unwrap();
        assert_eq!(
            a.first_token_top,
            vec![("unsafe".to_string(), -0.1), ("safe".to_string(), -2.4)]
        );
        assert!(matches!(
            parse_completion(b"{not json"),
            Err(CloudError::Malformed(_))
        ));
        assert!(matches!(
            parse_completion(br#"{"choices":[]}"#),
            Err(CloudError::Malformed(_))
        ));
        assert!(matches!(
            parse_completion(br#"{"result":"Canberra"}"#),
            Err(CloudError::Malformed(_))
        ));
    }

    #[test]
    fn which_failures_are_retried() {
        assert!(CloudError::Status { status: 429 }.retryable());
        assert!(CloudError::Status { status: 503 }.retryable());
        assert!(!CloudError::Status { status: 401 }.retryable());
        assert!(CloudError::Timeout.retryable());
        assert!(!CloudError::Malformed("x".into()).retryable());
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_repeated_failures_and_cools_down() {
        let config = CloudConfig {
            breaker_failures: 2,
            breaker_cooldown_ms: 1000,
            ..CloudConfig::default()
        };
        let c = CloudClient::new(config, None).unwrap();
        c.record(&Err(CloudError::Timeout));
        assert_eq!(c.available(), Ok(()));
        c.record(&Err(CloudError::Status { status: 500 }));
        assert_eq!(c.available(), Err(CloudError::BreakerOpen));
        tokio::time::advance(Duration::from_millis(1001)).await;
        assert_eq!(c.available(), Ok(()), "half-open after the cool-down");
        c.record(&Err(CloudError::Timeout));
        assert_eq!(
            c.available(),
            Err(CloudError::BreakerOpen),
            "one failure when half-open re-opens it"
        );
        tokio::time::advance(Duration::from_millis(1001)).await;
        c.record(&Ok(CloudAnswer {
            text: "x".into(),
            prompt_tokens: 1,
            completion_tokens: 1,
            bytes_sent: 0,
            attempts: 1,
            first_token_top: vec![],
        }));
        c.record(&Err(CloudError::Timeout));
        assert_eq!(c.available(), Ok(()), "a success closes it");
    }

    #[tokio::test(start_paused = true)]
    async fn the_hourly_budget_slides() {
        let c = CloudClient::new(
            CloudConfig {
                calls_per_hour: 2,
                ..CloudConfig::default()
            },
            None,
        )
        .unwrap();
        for _ in 0..2 {
            c.health.lock().unwrap().calls.push_back(Instant::now());
            tokio::time::advance(Duration::from_secs(600)).await;
        }
        assert_eq!(c.available(), Err(CloudError::BudgetSpent));
        tokio::time::advance(Duration::from_secs(2401)).await;
        assert_eq!(c.available(), Ok(()), "the first call left the window");
    }
}
