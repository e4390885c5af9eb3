//! The service's stages. Each is one async task with the same shape: it owns
//! its inputs (a channel receiver, or the MQTT event loop), sends on bounded
//! channels, and ends when its input closes or shutdown asks it to. They are
//! joined in one place, [`crate::service`].

pub mod intake;
pub mod mqtt_in;
pub mod mqtt_out;
pub mod router;

use std::time::Instant;

use crate::protocol::{ReplyAddress, Request};

/// A request the service has taken responsibility for.
#[derive(Debug)]
pub struct Accepted {
    pub request: Request,
    pub received: Instant,
    /// Its journal sequence number; None when it is not in the journal.
    pub seq: Option<u64>,
}

/// A message for `mqtt_out` to publish.
#[derive(Debug)]
pub struct Outgoing {
    pub to: ReplyAddress,
    pub payload: Vec<u8>,
    /// The journal entry this reply settles, once the broker has it.
    pub seq: Option<u64>,
}

/// What mqtt_in, the only task that polls the connection, tells mqtt_out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkEvent {
    /// The broker acknowledged our outstanding publish; `refused` says why
    /// it did not take it (an MQTT 5 reason code, e.g. NotAuthorized).
    Acked { refused: Option<String> },
    /// We reconnected to a broker that no longer has our session: an
    /// unacknowledged publish is gone and must be sent again.
    SessionLost,
    /// The request subscription is granted (again): announce we are online.
    Subscribed,
}
