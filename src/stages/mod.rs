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
}

/// A message for `mqtt_out` to publish.
#[derive(Debug)]
pub struct Outgoing {
    pub to: ReplyAddress,
    pub payload: Vec<u8>,
}
