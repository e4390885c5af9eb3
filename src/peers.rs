//! Peer boards in the swarm vote. A peer is another swarm-llm board on the
//! same broker. This board publishes `{"id", "question", "reply_to",
//! "deadline_ms", "vote": true}` to the peer's request topic; the peer answers
//! with its first model alone (no swarm, no cloud, its safety rules still
//! first), and the answer with its confidence becomes one ballot here.
//!
//! Vote requests go out at QoS 0 and the votes come back on a QoS 0
//! subscription: a lost one costs only the wait (the vote goes on without
//! it), and neither sends a PUBACK that mqtt_out's stop-and-wait on the
//! replies it owes could mistake for its own. A peer that misses
//! [`BREAKER_FAILURES`] votes in a row is skipped for [`BREAKER_COOLDOWN`],
//! so a board that is down does not add its timeout to every question.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::breaker::Breaker;
use crate::config::PeerConfig;
use crate::mqtt::{Client, MqttError};
use crate::protocol::{Reply, RequestPayload, Route};

/// Votes missed in a row before a peer is skipped for a while.
pub const BREAKER_FAILURES: u32 = 3;
/// How long a peer that stopped voting is skipped; then one vote is tried.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no vote within {0} ms")]
    Timeout(u64),
    #[error("skipped: it missed {BREAKER_FAILURES} votes in a row")]
    BreakerOpen,
    #[error("shutting down")]
    Cancelled,
    #[error("cannot publish the vote request: {0}")]
    Publish(#[from] MqttError),
    #[error("it did not vote: {0}")]
    NoVote(String),
}

/// A peer's vote, as one ballot of the swarm.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerVote {
    /// `PEER:MODEL`.
    pub model: String,
    pub answer: String,
    pub confidence: f32,
}

/// One peer board and whether it has been answering.
pub struct Peer {
    pub config: PeerConfig,
    breaker: Mutex<Breaker>,
}

/// The vote requests in flight, and the connection to send them on.
pub struct Peers {
    peers: Vec<Peer>,
    /// Where peers send their votes; mqtt_in hands what arrives there to [`Peers::deliver`].
    vote_topic: String,
    client: Client,
    waiting: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
}

/// Forgets a vote request when its asker stops waiting, however it ends.
struct Waiting<'a> {
    peers: &'a Peers,
    id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.peers.waiting().remove(&self.id);
    }
}

impl Peers {
    pub fn new(peers: Vec<PeerConfig>, vote_topic: String, client: Client) -> Self {
        Self {
            peers: peers
                .into_iter()
                .map(|config| Peer {
                    config,
                    breaker: Mutex::new(Breaker::new(BREAKER_FAILURES, BREAKER_COOLDOWN)),
                })
                .collect(),
            vote_topic,
            client,
            waiting: Mutex::new(HashMap::new()),
        }
    }

    pub fn list(&self) -> &[Peer] {
        &self.peers
    }

    pub fn vote_topic(&self) -> &str {
        &self.vote_topic
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Reply>>> {
        self.waiting.lock().expect("peer votes lock")
    }

    /// Asks one peer for its vote, waiting at most its timeout, never past
    /// `deadline`, and not once `abort` (the end of the shutdown drain) fires.
    pub async fn ask(
        &self,
        peer: &Peer,
        question: &str,
        max_tokens: Option<u32>,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Result<PeerVote, PeerError> {
        if abort.is_cancelled() {
            return Err(PeerError::Cancelled);
        }
        let breaker = || peer.breaker.lock().expect("peer breaker lock");
        if breaker().is_open(Instant::now()) {
            return Err(PeerError::BreakerOpen);
        }
        let result = tokio::select! {
            r = self.request_vote(&peer.config, question, max_tokens, deadline) => r,
            _ = abort.cancelled() => Err(PeerError::Cancelled),
        };
        match &result {
            // It answered, even if with no vote: it is up.
            Ok(_) | Err(PeerError::NoVote(_)) => breaker().success(),
            // Nothing learnt about the peer.
            Err(PeerError::Timeout(0) | PeerError::BreakerOpen | PeerError::Cancelled) => {}
            Err(e) => {
                if breaker().failure(Instant::now()) {
                    tracing::error!(peer = %peer.config.name, error = %e, cooldown_s = BREAKER_COOLDOWN.as_secs(), "peer board skipped: it stopped voting");
                }
            }
        }
        result
    }

    async fn request_vote(
        &self,
        peer: &PeerConfig,
        question: &str,
        max_tokens: Option<u32>,
        deadline: Instant,
    ) -> Result<PeerVote, PeerError> {
        let wait = Duration::from_millis(peer.timeout_ms)
            .min(deadline.saturating_duration_since(Instant::now()));
        let wait_ms = wait.as_millis() as u64;
        if wait_ms == 0 {
            return Err(PeerError::Timeout(0));
        }
        let id = format!("vote-{:016x}", rand::random::<u64>());
        let (tx, rx) = oneshot::channel();
        self.waiting().insert(id.clone(), tx);
        let _waiting = Waiting {
            peers: self,
            id: id.clone(),
        };
        let request = RequestPayload {
            id: Some(id.clone()),
            question: question.to_string(),
            reply_to: Some(self.vote_topic.clone()),
            max_tokens,
            deadline_ms: Some(wait_ms),
            vote: true,
        };
        let payload = serde_json::to_vec(&request).expect("a vote request serialises");
        tracing::debug!(peer = %peer.name, %id, wait_ms, "asking a peer board for its vote");
        // The wait covers the publish too: with the broker away, the
        // client's request queue can be full.
        let vote = async {
            self.client
                .publish_at_most_once(&peer.topic, payload)
                .await?;
            rx.await.map_err(|_| PeerError::Timeout(wait_ms))
        };
        match tokio::time::timeout(wait, vote).await {
            Ok(Ok(reply)) => vote_from_reply(peer, reply),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(PeerError::Timeout(wait_ms)),
        }
    }

    /// A message that arrived on the vote topic. Never blocks: mqtt_in calls it.
    pub fn deliver(&self, payload: &[u8]) {
        let reply = match serde_json::from_slice::<Reply>(payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "a message on the peer vote topic is not a reply");
                return;
            }
        };
        let waiter = reply.id.as_ref().and_then(|id| self.waiting().remove(id));
        match waiter {
            Some(tx) => {
                let _ = tx.send(reply);
            }
            None => {
                tracing::debug!(id = ?reply.id, node = %reply.node, "a vote nobody waits for (it came too late)")
            }
        }
    }
}

/// The ballot in a peer's reply: only a lone model's answer with its
/// confidence counts (an error or a refusal is no vote).
pub fn vote_from_reply(peer: &PeerConfig, reply: Reply) -> Result<PeerVote, PeerError> {
    if let Some(e) = reply.error {
        return Err(PeerError::NoVote(e.message));
    }
    if reply.route != Some(Route::Local) {
        let route = reply.route.map_or("none", |r| r.as_str());
        return Err(PeerError::NoVote(format!("it answered by route {route}")));
    }
    let confidence = reply.signals.and_then(|s| s.confidence);
    match (reply.answer, confidence) {
        (Some(answer), Some(confidence)) => Ok(PeerVote {
            model: format!("{}:{}", peer.name, reply.model.unwrap_or_default()),
            answer,
            confidence,
        }),
        _ => Err(PeerError::NoVote(
            "the reply has no answer or no confidence".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorCode, ReplyError, SafetySignal, Signals};

    fn peer() -> PeerConfig {
        PeerConfig {
            name: "line2".into(),
            topic: "swarm/query/line2/votes".into(),
            weight: 1.0,
            timeout_ms: 1000,
        }
    }

    fn local_reply(answer: &str, confidence: f32) -> Reply {
        let mut r = Reply::empty(Some("vote-1".into()), "line2");
        r.answer = Some(answer.into());
        r.route = Some(Route::Local);
        r.model = Some("smollm2".into());
        r.signals = Some(Signals {
            confidence: Some(confidence),
            uncertainty: None,
            difficulty: 0.0,
            options: None,
            cloud_gain: None,
            restates_question: false,
            load: None,
            safety: SafetySignal {
                score: 0.0,
                flagged: false,
                action: crate::route::harm::SafetyAction::Allow,
                reasons: vec![],
                layers: vec![],
                learned: None,
                judge: None,
                disguises: vec![],
            },
        });
        r
    }

    #[test]
    fn a_local_answer_with_its_confidence_is_a_ballot_named_after_the_peer() {
        let v = vote_from_reply(&peer(), local_reply("Canberra", 0.7)).unwrap();
        assert_eq!(
            v,
            PeerVote {
                model: "line2:smollm2".into(),
                answer: "Canberra".into(),
                confidence: 0.7
            }
        );
    }

    #[test]
    fn errors_refusals_and_answers_without_confidence_are_no_votes() {
        let failed = Reply::failure(
            Some("vote-1".into()),
            "line2",
            ReplyError::new(ErrorCode::Busy, "at capacity"),
            1.0,
        );
        assert!(
            matches!(vote_from_reply(&peer(), failed), Err(PeerError::NoVote(m)) if m == "at capacity")
        );

        let mut refused = local_reply("I can't help with that here", 0.9);
        refused.route = Some(Route::Refuse);
        assert!(
            matches!(vote_from_reply(&peer(), refused), Err(PeerError::NoVote(m)) if m.contains("refuse"))
        );

        let mut bare = local_reply("Canberra", 0.7);
        bare.signals = None;
        assert!(vote_from_reply(&peer(), bare).is_err());
    }

    #[test]
    fn a_peer_decodes_the_vote_request_as_a_vote_with_our_reply_address() {
        let request = RequestPayload {
            id: Some("vote-1".into()),
            question: "Capital of Australia?".into(),
            reply_to: Some("swarm/reply/line1/votes".into()),
            max_tokens: Some(16),
            deadline_ms: Some(1000),
            vote: true,
        };
        let inbound = crate::protocol::Inbound {
            topic: peer().topic,
            payload: serde_json::to_vec(&request).unwrap(),
            ..Default::default()
        };
        let rules = crate::config::Config::example().decode_rules();
        let decoded = crate::protocol::decode(&inbound, &rules, "q").unwrap();
        assert!(decoded.vote);
        assert_eq!(
            (
                decoded.id.as_str(),
                decoded.reply.topic.as_str(),
                decoded.deadline_ms,
                decoded.max_tokens
            ),
            ("vote-1", "swarm/reply/line1/votes", 1000, Some(16))
        );
    }
}
