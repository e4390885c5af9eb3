//! A circuit breaker: after enough failures in a row, stop calling a
//! dependency (the cloud, a peer board) for a cool-down, so every question
//! does not pay its timeout. Pure code: the caller passes the clock.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct Breaker {
    failures_to_open: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

impl Breaker {
    /// `failures_to_open` must be at least 1.
    pub fn new(failures_to_open: u32, cooldown: Duration) -> Self {
        Self {
            failures_to_open: failures_to_open.max(1),
            cooldown,
            consecutive_failures: 0,
            open_until: None,
        }
    }

    /// True while cooling down: do not call.
    pub fn is_open(&self, now: Instant) -> bool {
        self.open_until.is_some_and(|t| now < t)
    }

    pub fn success(&mut self) {
        self.consecutive_failures = 0;
        self.open_until = None;
    }

    /// Counts a failure; true when it opened the breaker.
    pub fn failure(&mut self, now: Instant) -> bool {
        self.consecutive_failures += 1;
        if self.consecutive_failures < self.failures_to_open {
            return false;
        }
        self.open_until = Some(now + self.cooldown);
        // Half-open after the cool-down: one more failure opens it again.
        self.consecutive_failures = self.failures_to_open - 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_failures_in_a_row_and_half_opens_after_the_cooldown() {
        let t0 = Instant::now();
        let cool = Duration::from_secs(10);
        let mut b = Breaker::new(3, cool);
        assert!(!b.failure(t0));
        assert!(!b.failure(t0));
        assert!(!b.is_open(t0));
        assert!(b.failure(t0), "the third failure in a row opens it");
        assert!(b.is_open(t0 + cool / 2));
        assert!(!b.is_open(t0 + cool), "one trial call after the cool-down");
        assert!(
            b.failure(t0 + cool),
            "a failed trial opens it again at once"
        );
        assert!(b.is_open(t0 + cool + cool / 2));
    }

    #[test]
    fn a_success_closes_it_and_forgets_earlier_failures() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, Duration::from_secs(10));
        assert!(!b.failure(t0));
        b.success();
        assert!(!b.failure(t0), "failures must be in a row");
        assert!(b.failure(t0));
        b.success();
        assert!(!b.is_open(t0));
    }
}
