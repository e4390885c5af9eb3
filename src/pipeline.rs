//! Answering one question: the routing walk's actions ([`crate::route::walk`],
//! the policy's steps joined) carried out with the local models and the
//! cloud. The router stage calls [`Pipeline::answer`] for each accepted
//! question; the measurement commands use the same code, and replay the same
//! walk on recorded answers.
//!
//! 1. Safety assessment before any generation: the plant rules and the
//!    learned harm check ([`crate::safety_screen`]). Flagged: our refusal
//!    with the safe procedure, followed by the cloud's answer where the
//!    category's action allows it.
//! 2. The first model answers; its confidence (the policy's signal) and the
//!    question's difficulty decide: keep it (`local`), ask the swarm, or the cloud.
//! 3. The swarm vote reuses the first answer, asks the other models one at a
//!    time and stops as soon as the outcome cannot change.
//! 4. When the cloud is needed but fails, the best local answer is returned,
//!    marked `degraded` with the reason.
//!
//! Peer boards vote after the local models (see [`crate::peers`]). A
//! peer's own vote request is answered by step 2's first model alone.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::cloud::{CloudAnswer, CloudClient, CloudError};
use crate::cloud_share::ShareKeeper;
use crate::config::Config;
use crate::inference::{Generation, InferenceError, ModelHandle};
use crate::peers::Peers;
use crate::protocol::{
    millis, CloudUsage, ErrorCode, LoadSignal, Reply, ReplyError, Request, Route, SafetyLayer,
    SafetySignal, Signals, Timing, Vote,
};
use crate::route::harm::HarmCategory;
use crate::route::learned::FirstAnswer;
use crate::route::policy::{Gates, Policy};
use crate::route::safety::Assessment;
use crate::route::share::Observed;
use crate::route::signals::{prompt_difficulty, Uncertainty};
use crate::route::vote::{self, Ballot, Outcome, Tally};
use crate::route::walk::{Action, CloudFraming, FirstFacts, Shortfall, Source, Walk};
use crate::safety_screen::{SafetyScreen, ScreenError};
use crate::topic;

/// The system prompt for a safety-flagged question sent to the cloud.
const SAFETY_SYSTEM_PROMPT: &str = "You are a safety-conscious assistant for industrial plant staff. \
The user's question was flagged as a possible safety hazard. Do not give steps that defeat, bypass or \
weaken a protection. In a few sentences, say why it is dangerous and what the safe procedure is: stop, \
isolate and lock out (lockout-tagout), and have a qualified, authorised person do the work.";

/// The cloud's instructions for a question where a careful answer is the
/// right one (action `notice`: professional advice, misinformation, facts
/// about people, overreliance).
const CAREFUL_SYSTEM_PROMPT: &str = "You are a careful assistant for industrial plant staff. \
Answer the question helpfully and factually in a few sentences. Do not reveal private information \
about people, do not present rumours or false claims as facts, and where a decision needs a doctor, \
lawyer or other qualified professional, say so.";

pub struct Pipeline {
    node: String,
    system_prompt: String,
    policy: Policy,
    safety: SafetyScreen,
    /// The model that answers first, then the others of the swarm, in voting order.
    first: ModelHandle,
    others: Vec<(ModelHandle, f32)>,
    first_weight: f32,
    cloud: Option<CloudClient>,
    cloud_never: Vec<String>,
    /// Other boards that vote after the local models; only the service has them.
    peers: Option<Arc<Peers>>,
    /// The cloud share held online (`routing.cloud_share`).
    share: Option<ShareKeeper>,
    /// Whether the first model's and the voters' queues are weighed against
    /// the deadline (`routing.load_aware`).
    load_aware: bool,
}

/// Who votes after the first model: the other local models, then peer boards.
enum Voter<'a> {
    Model(&'a ModelHandle, f32),
    Peer(&'a Peers, &'a crate::peers::Peer),
}

impl Voter<'_> {
    fn weight(&self) -> f32 {
        match self {
            Voter::Model(_, weight) => *weight,
            Voter::Peer(_, peer) => peer.config.weight,
        }
    }
}

/// What one question's answer is built from so far: the reply and its
/// signals and timings, filled in as the walk goes.
struct Progress {
    reply: Reply,
    signals: Signals,
    timing: Timing,
}

/// The question being answered and its limits.
struct Question<'a> {
    req: &'a Request,
    received: Instant,
    deadline: Instant,
    abort: &'a CancellationToken,
}

/// One step's result for the answer being built.
struct Answer {
    text: String,
    model: String,
    route: Route,
    degraded: Option<String>,
}

impl Pipeline {
    /// Builds the pipeline from the config and the loaded models.
    pub fn new(
        config: &Config,
        models: &[ModelHandle],
        cloud: Option<CloudClient>,
    ) -> Result<Self, ScreenError> {
        let by_name: HashMap<&str, &ModelHandle> =
            models.iter().map(|m| (m.info.name.as_str(), m)).collect();
        let weight = |name: &str| config.vote_weight(name);
        let first_name = config.default_model().name.clone();
        let others = config
            .swarm_models()
            .into_iter()
            .filter(|n| *n != first_name)
            .filter_map(|n| by_name.get(n).map(|m| ((*m).clone(), weight(n))))
            .collect();
        Ok(Self {
            node: config.node.clone(),
            system_prompt: config.inference.system_prompt.clone(),
            policy: config.policy.clone(),
            safety: SafetyScreen::new(config, models)?,
            first: by_name[first_name.as_str()].clone(),
            others,
            first_weight: weight(&first_name),
            cloud,
            cloud_never: config.routing.cloud_never.clone(),
            peers: None,
            share: ShareKeeper::from_config(config),
            load_aware: config.routing.load_aware,
        })
    }

    /// Lets peer boards vote in the swarm (they are reached over the service's MQTT connection).
    pub fn with_peers(mut self, peers: Arc<Peers>) -> Self {
        self.peers = Some(peers);
        self
    }

    fn peer_list(&self) -> &[crate::peers::Peer] {
        self.peers.as_deref().map_or(&[], Peers::list)
    }

    pub fn cloud(&self) -> Option<&CloudClient> {
        self.cloud.as_ref()
    }

    /// The cloud share controller, when `routing.cloud_share` is set.
    pub fn cloud_share(&self) -> Option<&ShareKeeper> {
        self.share.as_ref()
    }

    /// Whether this topic's questions may leave the board (data residency).
    fn cloud_allowed(&self, topic: &str) -> bool {
        !self
            .cloud_never
            .iter()
            .any(|f| topic::matches_filter(f, topic))
    }

    fn gates(&self, assessment: &Assessment, cloud_allowed: bool) -> Gates {
        Gates {
            safety: assessment.action,
            cloud_allowed,
            cloud_available: self.cloud.as_ref().is_some_and(|c| c.available().is_ok()),
        }
    }

    /// Why the cloud cannot help now, for a degraded answer.
    fn cloud_unusable_reason(&self, gates: Gates) -> String {
        if !gates.cloud_allowed {
            return "the cloud is not allowed for this topic (data residency)".into();
        }
        match &self.cloud {
            None => "no cloud is configured".into(),
            Some(c) => match c.available() {
                Err(e) => format!("cloud unavailable: {e}"),
                Ok(()) => "cloud unavailable".into(),
            },
        }
    }

    /// Answers one accepted question. Never fails: problems become error
    /// replies or degraded answers.
    pub async fn answer(
        &self,
        req: &Request,
        received: Instant,
        abort: &CancellationToken,
    ) -> Reply {
        let deadline = received + Duration::from_millis(req.deadline_ms);
        let screened = Instant::now();
        let cloud_allowed = self.cloud_allowed(&req.topic);
        let judge = self.cloud.as_ref().filter(|_| cloud_allowed);
        let assessment = self.safety.assess(&req.question, judge, deadline).await;
        let mut p = Progress {
            reply: Reply::empty(Some(req.id.clone()), &self.node),
            signals: Signals {
                confidence: None,
                uncertainty: None,
                difficulty: prompt_difficulty(&req.question),
                options: None,
                cloud_gain: None,
                restates_question: false,
                safety: safety_signal(&assessment),
                load: None,
            },
            timing: Timing {
                safety_ms: millis(screened.elapsed()),
                ..Timing::default()
            },
        };
        let q = Question {
            req,
            received,
            deadline,
            abort,
        };
        let answer = if req.vote {
            self.vote_for_peer(&q, &assessment, &mut p).await
        } else {
            let gates = self.gates(&assessment, cloud_allowed);
            self.walk(&q, &assessment, gates, &mut p).await
        };
        let Progress {
            mut reply,
            signals,
            timing,
        } = p;
        reply.latency_ms = millis(received.elapsed());
        reply.signals = Some(signals);
        match answer {
            Ok(a) => {
                tracing::info!(
                    route = a.route.as_str(),
                    model = %a.model,
                    degraded = a.degraded.is_some(),
                    safety_score = assessment.score,
                    latency_ms = reply.latency_ms,
                    "answered"
                );
                reply.answer = Some(a.text);
                reply.model = Some(a.model);
                reply.route = Some(a.route);
                reply.degraded = a.degraded;
                reply.timing = Some(timing);
            }
            Err(e) => {
                let code = match &e {
                    InferenceError::ContextOverflow { .. } => ErrorCode::ContextOverflow,
                    InferenceError::DeadlineExceeded { .. } => ErrorCode::DeadlineExceeded,
                    InferenceError::Cancelled => ErrorCode::ShuttingDown,
                    _ => ErrorCode::InferenceFailed,
                };
                tracing::warn!(code = ?code, error = %e, latency_ms = reply.latency_ms, "not answered");
                reply.error = Some(ReplyError::new(code, e.to_string()));
            }
        }
        reply
    }

    /// Carries out the routing walk's actions ([`crate::route::walk`]) until
    /// it replies, keeping what each produced for the reply.
    async fn walk(
        &self,
        q: &Question<'_>,
        assessment: &Assessment,
        gates: Gates,
        p: &mut Progress,
    ) -> Result<Answer, InferenceError> {
        let can_vote = !self.others.is_empty() || !self.peer_list().is_empty();
        let live_policy = self
            .share
            .as_ref()
            .map(|s| self.policy.with_cloud_cut(s.cut()));
        let left = q.deadline.saturating_duration_since(Instant::now());
        let queue = self.first.queue();
        let late = self.load_aware && !queue.in_time(left);
        if late {
            p.signals.load = queue.expected_finish().map(|f| LoadSignal {
                first_expected_ms: millis(f),
                left_ms: millis(left),
            });
        }
        let mut walk = Walk::new(
            gates,
            can_vote,
            live_policy.as_ref().unwrap_or(&self.policy),
        )
        .first_late(late);
        let mut asked_cloud = false;
        let mut first: Option<(Generation, f32)> = None;
        let mut swarm: Option<Answer> = None;
        let mut cloud: Result<Answer, String> = Err(String::new());
        let mut action = walk.start();
        let outcome = loop {
            action = match action {
                Action::Reply(outcome) => break outcome,
                Action::GenerateFirst => {
                    let (generation, facts) = self.first_answer(q, p).await?;
                    first = Some((generation, facts.confidence));
                    walk.first_answered(facts)
                }
                Action::Vote => {
                    let (generation, confidence) =
                        first.as_ref().expect("a vote follows the first answer");
                    let started = Instant::now();
                    let (answer, agreed) = self.swarm_answer(q, generation, *confidence, p).await;
                    p.timing.swarm_ms = Some(millis(started.elapsed()));
                    swarm = Some(answer);
                    walk.voted(agreed)
                }
                Action::AskCloud(framing) => {
                    asked_cloud = true;
                    let system = match framing {
                        CloudFraming::BehindRefusal => SAFETY_SYSTEM_PROMPT,
                        CloudFraming::Careful => CAREFUL_SYSTEM_PROMPT,
                        CloudFraming::Plain => &self.system_prompt,
                    };
                    cloud = self
                        .cloud_answer(system, q.req, q.deadline, p)
                        .await
                        .map_err(|e| e.to_string());
                    match &cloud {
                        Ok(_) => walk.cloud_answered(),
                        Err(e) => {
                            tracing::warn!(error = %e, ?framing, "the cloud failed; the walk goes on without it");
                            walk.cloud_failed()
                        }
                    }
                }
            };
        };
        if let Some(share) = self.share.as_ref().filter(|_| gates.cloud_usable()) {
            // Only questions the cloud could take count in its share.
            share.observe(Observed {
                score: p
                    .signals
                    .cloud_gain
                    .filter(|_| !p.signals.restates_question),
                cloud: asked_cloud,
            });
        }
        if assessment.flagged {
            p.reply.safety_notice =
                Some(safety_notice(assessment, !outcome.source.refusal_leads()));
        }
        let why = outcome.shortfall.map(|s| match s {
            Shortfall::SiteRefuses => {
                "this site answers such questions only with the safe procedure".to_string()
            }
            Shortfall::CloudUnusable => self.cloud_unusable_reason(walk.gates()),
            Shortfall::CloudFailed => format!(
                "the cloud failed: {}",
                cloud.as_ref().err().map_or("", String::as_str)
            ),
        });
        let taken = |a: Option<Answer>| a.expect("the walk replies with an answer it has");
        Ok(match outcome.source {
            Source::Refusal => refusal(assessment, why.as_deref()),
            Source::RefusalThenCloud => {
                // Our refusal and procedure lead; the cloud's text follows
                // and can never replace them.
                let cloud = taken(cloud.ok());
                Answer {
                    text: format!(
                        "{}\n\nMore from {}: {}",
                        refusal(assessment, None).text,
                        cloud.model,
                        cloud.text
                    ),
                    ..cloud
                }
            }
            Source::Cloud => taken(cloud.ok()),
            Source::First | Source::Swarm => {
                let local = if outcome.source == Source::First {
                    first.map(|(g, _)| Answer {
                        text: g.text,
                        model: g.model,
                        route: Route::Local,
                        degraded: None,
                    })
                } else {
                    swarm
                };
                Answer {
                    route: outcome.route,
                    degraded: why,
                    ..taken(local)
                }
            }
        })
    }

    /// The first model's answer and what it tells the policy, recorded in
    /// the reply.
    async fn first_answer(
        &self,
        q: &Question<'_>,
        p: &mut Progress,
    ) -> Result<(Generation, FirstFacts), InferenceError> {
        p.timing.queue_ms = millis(q.received.elapsed());
        let first = generate(&self.first, q.req, q.deadline, q.abort).await?;
        p.timing.prompt_ms = millis(first.time_to_first_token);
        p.timing.decode_ms = millis(first.decode_time);
        p.reply.tokens = first.generated_tokens() as u32;
        p.reply.prompt_tokens = first.prompt_tokens as u32;
        p.reply.finish = Some(first.finish.as_str().to_string());
        let s = &mut p.signals;
        let u = Uncertainty::from_tokens(&first.token_probs, &first.token_entropies);
        let confidence = self.policy.signal.confidence(&u);
        s.options = first.calibrated.clone();
        s.cloud_gain = self.policy.learned.as_ref().map(|l| {
            l.score(&FirstAnswer {
                uncertainty: &u,
                difficulty: s.difficulty,
                options: s.options.as_deref(),
            })
        });
        s.restates_question = !vote::answers(&first.text, &q.req.question);
        s.uncertainty = Some(u);
        s.confidence = Some(confidence);
        let facts = FirstFacts {
            confidence,
            difficulty: s.difficulty,
            cloud_gain: s.cloud_gain,
            answered: !s.restates_question,
        };
        Ok((first, facts))
    }

    /// The swarm's vote, recorded in the reply (its ballots and the leading
    /// group's share): the leading group's answer, and whether it agreed.
    async fn swarm_answer(
        &self,
        q: &Question<'_>,
        first: &Generation,
        confidence: f32,
        p: &mut Progress,
    ) -> (Answer, bool) {
        let (tally, outcome) = self
            .vote(q.req, first, confidence, q.deadline, q.abort)
            .await;
        p.reply.votes = Some(
            tally
                .ballots
                .iter()
                .zip(&tally.group_of)
                .map(|(b, g)| Vote {
                    model: b.model.clone(),
                    answer: b.answer.clone(),
                    confidence: b.confidence,
                    group: *g,
                })
                .collect(),
        );
        let leader = tally.leader().map_or(0, |l| l.0);
        let (agreed, share, group) = match outcome {
            Outcome::Agreed { group, share } => (true, share, group),
            Outcome::Disagreed { best_share } => (false, best_share, leader),
            // Every model has voted, so nothing is left open.
            Outcome::Open => (false, 0.0, leader),
        };
        p.reply.agreement = Some(share);
        let best = tally.representative(group);
        let answer = Answer {
            text: best.answer.clone(),
            model: best.model.clone(),
            route: Route::Swarm,
            degraded: None,
        };
        (answer, agreed)
    }

    /// A peer board's vote request: the first model's answer as it is, for
    /// the peer to weigh. The safety rules still come first, and a vote
    /// never calls the cloud or other boards (so two boards asking each
    /// other cannot loop).
    async fn vote_for_peer(
        &self,
        q: &Question<'_>,
        assessment: &Assessment,
        p: &mut Progress,
    ) -> Result<Answer, InferenceError> {
        if assessment.flagged {
            p.reply.safety_notice = Some(safety_notice(assessment, false));
            return Ok(refusal(
                assessment,
                Some("a peer's vote never goes to the cloud"),
            ));
        }
        let (first, _) = self.first_answer(q, p).await?;
        Ok(Answer {
            text: first.text,
            model: first.model,
            route: Route::Local,
            degraded: None,
        })
    }

    /// The swarm vote, starting from the first model's ballot.
    async fn vote(
        &self,
        req: &Request,
        first: &Generation,
        confidence: f32,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> (Tally, Outcome) {
        let threshold = self.policy.swarm_min_agreement;
        let mut tally = Tally::default();
        tally.add(
            Ballot {
                model: first.model.clone(),
                answer: first.text.clone(),
                confidence,
                weight: self.first_weight,
            },
            &req.question,
        );
        let peers = self.peers.as_deref().into_iter().flat_map(|boards| {
            boards
                .list()
                .iter()
                .map(move |peer| Voter::Peer(boards, peer))
        });
        // The cheapest models first (by their recent job times; config order
        // until measured): the vote often ends before the slow ones are asked.
        let mut models: Vec<&(ModelHandle, f32)> = self.others.iter().collect();
        models.sort_by_key(|(m, _)| m.health().typical_job().unwrap_or_default());
        let voters: Vec<Voter> = models
            .into_iter()
            .map(|(model, weight)| Voter::Model(model, *weight))
            .chain(peers)
            .collect();
        let mut remaining: f32 = voters.iter().map(Voter::weight).sum();
        for voter in &voters {
            if tally.outcome(remaining.max(0.0), threshold) != Outcome::Open {
                break;
            }
            remaining -= voter.weight();
            if let Voter::Model(model, _) = voter {
                // A ballot after the deadline counts for nothing and holds the question up.
                if self.load_aware
                    && !model
                        .queue()
                        .in_time(deadline.saturating_duration_since(Instant::now()))
                {
                    tracing::debug!(model = %model.info.name, "skipped: its queue would pass the deadline");
                    continue;
                }
            }
            if let Some(ballot) = self.ballot(voter, req, deadline, abort).await {
                tally.add(ballot, &req.question);
            }
        }
        let outcome = tally.outcome(remaining.max(0.0), threshold);
        (tally, outcome)
    }

    /// One voter's ballot; None (logged) when it gave none.
    async fn ballot(
        &self,
        voter: &Voter<'_>,
        req: &Request,
        deadline: Instant,
        abort: &CancellationToken,
    ) -> Option<Ballot> {
        match *voter {
            Voter::Model(model, weight) => match generate(model, req, deadline, abort).await {
                Ok(g) => {
                    let u = Uncertainty::from_tokens(&g.token_probs, &g.token_entropies);
                    Some(Ballot {
                        model: g.model,
                        answer: g.text,
                        confidence: self.policy.signal.confidence(&u),
                        weight,
                    })
                }
                Err(e) => {
                    tracing::warn!(model = %model.info.name, error = %e, "a swarm model did not answer");
                    None
                }
            },
            Voter::Peer(boards, peer) => {
                match boards
                    .ask(peer, &req.question, req.max_tokens, deadline, abort)
                    .await
                {
                    Ok(v) => Some(Ballot {
                        model: v.model,
                        answer: v.answer,
                        confidence: v.confidence,
                        weight: peer.config.weight,
                    }),
                    Err(e) => {
                        tracing::warn!(peer = %peer.config.name, error = %e, "a peer board did not vote");
                        None
                    }
                }
            }
        }
    }

    /// Asks the cloud, timing the call, as an answer of the `cloud` route.
    async fn cloud_answer(
        &self,
        system: &str,
        req: &Request,
        deadline: Instant,
        p: &mut Progress,
    ) -> Result<Answer, CloudError> {
        let started = Instant::now();
        let result = self.ask_cloud(system, req, deadline, &mut p.reply).await;
        p.timing.cloud_ms = Some(millis(started.elapsed()));
        result.map(|a| Answer {
            text: a.text,
            model: self.cloud_model(),
            route: Route::Cloud,
            degraded: None,
        })
    }

    fn cloud_model(&self) -> String {
        self.cloud
            .as_ref()
            .map_or_else(String::new, |c| format!("cloud:{}", c.config().model))
    }

    async fn ask_cloud(
        &self,
        system: &str,
        req: &Request,
        deadline: Instant,
        reply: &mut Reply,
    ) -> Result<CloudAnswer, CloudError> {
        let cloud = self.cloud.as_ref().ok_or(CloudError::NotConfigured)?;
        let max_tokens = req.max_tokens.unwrap_or(u32::MAX);
        let result = cloud
            .ask(system, &req.question, max_tokens, deadline.into())
            .await;
        if let Ok(a) = &result {
            reply.cloud = Some(CloudUsage {
                prompt_tokens: a.prompt_tokens,
                completion_tokens: a.completion_tokens,
                bytes_sent: a.bytes_sent,
                attempts: a.attempts,
            });
        }
        result
    }
}

async fn generate(
    model: &ModelHandle,
    req: &Request,
    deadline: Instant,
    abort: &CancellationToken,
) -> Result<Generation, InferenceError> {
    if abort.is_cancelled() {
        return Err(InferenceError::Cancelled);
    }
    let generation = model.generate(
        req.question.clone(),
        req.max_tokens,
        deadline,
        abort.clone(),
    );
    match tokio::time::timeout_at(deadline.into(), generation).await {
        Ok(r) => r,
        // Still queued behind other questions when time ran out.
        Err(_) => Err(InferenceError::DeadlineExceeded { generated: 0 }),
    }
}

/// What was flagged and why, and the advice where the answer does not give
/// it already (`with_advice`: a refusal carries its advice in its text, and
/// saying it twice buries the rest).
fn safety_notice(a: &Assessment, with_advice: bool) -> String {
    let reasons: Vec<&str> = a.reasons.iter().map(|r| r.reason.as_str()).collect();
    let categories: Vec<&str> = a.categories().iter().map(|c| c.as_str()).collect();
    let notice = format!(
        "Safety: this question was flagged as {} ({}).",
        categories.join(", "),
        reasons.join("; "),
    );
    if with_advice {
        format!("{notice} {}", advice_parts(a).join(" "))
    } else {
        notice
    }
}

/// One advice per harm category, the first reason's of that category, in
/// the order the reasons fired: a rule and the learned layer that both read
/// a plant hazard give two wordings of the same procedure, and one is enough.
fn advice_parts(a: &Assessment) -> Vec<&str> {
    let mut categories = Vec::new();
    let mut advice = Vec::new();
    for r in &a.reasons {
        if !categories.contains(&r.category) && !advice.contains(&r.advice.as_str()) {
            categories.push(r.category);
            advice.push(r.advice.as_str());
        }
    }
    advice
}

/// Our answer to a safety-flagged question: the refusal and the safe
/// procedure, and why nothing more follows where nothing does. Where
/// self-harm is among the reasons, the words of support come first: a
/// person who may be at risk should read them before the refusal.
/// What the reply says of the safety verdict: the wire's small view of it.
fn safety_signal(a: &Assessment) -> SafetySignal {
    SafetySignal {
        score: a.score,
        flagged: a.flagged,
        action: a.action,
        reasons: a.categories(),
        layers: a
            .reasons
            .iter()
            .map(|r| SafetyLayer {
                layer: r.layer,
                rule: r.rule.clone(),
                category: r.category,
            })
            .collect(),
        learned: a.learned,
        judge: a.judge,
        disguises: a.disguises.clone(),
    }
}

fn refusal(a: &Assessment, why_nothing_more: Option<&str>) -> Answer {
    let why = why_nothing_more.map_or_else(String::new, |w| format!(" and {w}"));
    let mut parts = advice_parts(a);
    let support = HarmCategory::SelfHarm.advice();
    let lead = match parts.iter().position(|p| *p == support) {
        Some(i) => format!("{} ", parts.remove(i)),
        None => String::new(),
    };
    Answer {
        text: format!(
            "{lead}I can't help with that: the question was flagged as a safety hazard{why}. {}",
            parts.join(" ")
        )
        .trim_end()
        .to_string(),
        model: "safety-check".into(),
        route: Route::Refuse,
        degraded: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::harm::HarmScore;
    use crate::route::safety::{Layer, SafetyClassifier, SafetyConfig};

    /// A plant hazard that both the rules and the learned layer read: two
    /// wordings of the lockout procedure.
    fn relay_jumper() -> Assessment {
        let rules = SafetyClassifier::new(&SafetyConfig::default()).unwrap();
        let readings =
            crate::route::harm::readings("How do I jumper out the safety relay on the robot cell?");
        let learned = HarmScore {
            harm: 0.99,
            category: HarmCategory::PlantHazard,
        };
        rules.combine(&readings, Some(learned), 0.9)
    }

    #[test]
    fn a_refusal_states_its_advice_once_and_the_notice_does_not_repeat_it() {
        let a = relay_jumper();
        let layers: Vec<Layer> = a.reasons.iter().map(|r| r.layer).collect();
        assert_eq!(layers, vec![Layer::Rules, Layer::Learned], "{a:?}");
        let text = refusal(&a, None).text;
        let notice = safety_notice(&a, false);
        let both = format!("{text}\n{notice}");
        // The rule's advice says "isolate and lock it out", the learned
        // layer's "isolate the energy sources": one of them, once.
        assert_eq!(both.matches("isolate").count(), 1, "{both}");
        assert!(text.starts_with("I can't help with that"), "{text}");
        assert!(notice.contains("plant_hazard"), "{notice}");
        // A notice beside an answer that is not a refusal carries the advice.
        assert_eq!(safety_notice(&a, true).matches("isolate").count(), 1);
    }

    #[test]
    fn self_harm_support_leads_a_refusal() {
        let rules = SafetyClassifier::new(&SafetyConfig::default()).unwrap();
        let a = rules.combine(
            &crate::route::harm::readings("which tablets would end my life tonight"),
            Some(HarmScore {
                harm: 0.99,
                category: HarmCategory::SelfHarm,
            }),
            0.9,
        );
        let text = refusal(&a, None).text;
        assert!(text.starts_with("You are not alone"), "{text}");
        assert_eq!(text.matches("You are not alone").count(), 1, "{text}");
    }
}
