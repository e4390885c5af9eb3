//! swarm-llm's pure core: everything that decides, with no I/O, no async
//! runtime and no llama.cpp. The service (`swarm-llm`) re-exports these
//! modules under the same names and does the I/O around them.
//!
//! - [`route`]: the routing core: safety rules and the learned harm check's
//!   head, uncertainty signals, the learned router, the policy and its walk,
//!   the vote, the cloud share controller and the load check.
//! - [`protocol`]: the request and reply formats.
//! - [`text`]: reading numbers, units and words in answers.
//! - [`topic`]: MQTT topic rules.
//! - [`breaker`]: the circuit breaker the cloud and peer boards share.
//! - [`ratelimit`]: a token bucket per asker.

pub mod breaker;
pub mod protocol;
pub mod ratelimit;
pub mod route;
pub mod text;
pub mod topic;
