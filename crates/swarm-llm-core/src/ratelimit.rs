//! Per-asker rate limit: a token bucket per request topic. MQTT does not tell
//! a subscriber who published a message, so the asker is identified by the
//! topic it asks on (each gateway publishes on its own topic below the
//! request filter). Pure code; the caller passes the time.
//!
//! The number of buckets is bounded so that a flood of distinct topics cannot
//! grow memory: when full, buckets that have refilled completely (they carry
//! no state worth keeping) are dropped, and if none has, the new topic is
//! limited as if it shared one overflow bucket.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most distinct request topics tracked at once.
const MAX_BUCKETS: usize = 10_000;
const OVERFLOW: &str = "\0overflow";

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(per_minute: u32, burst: u32) -> Self {
        Self {
            per_second: f64::from(per_minute) / 60.0,
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `key`; Err(wait) says when the next one will be there.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(key) && self.buckets.len() >= MAX_BUCKETS {
            let (per_second, burst) = (self.per_second, self.burst);
            self.buckets.retain(|k, b| {
                k == OVERFLOW
                    || b.tokens + per_second * now.duration_since(b.at).as_secs_f64() < burst
            });
        }
        let key = if self.buckets.contains_key(key) || self.buckets.len() < MAX_BUCKETS {
            key
        } else {
            OVERFLOW
        };
        let bucket = self.buckets.entry(key.to_string()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        bucket.tokens = (bucket.tokens
            + self.per_second * now.duration_since(bucket.at).as_secs_f64())
        .min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_steady_rate() {
        let mut r = RateLimiter::new(60, 3); // one a second, bursts of three
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(r.check("gw1", t0), Ok(()));
        }
        let wait = r.check("gw1", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 1e-6, "{wait:?}");
        assert_eq!(r.check("gw1", t0 + Duration::from_millis(1000)), Ok(()));
        assert!(r.check("gw1", t0 + Duration::from_millis(1500)).is_err());
    }

    #[test]
    fn askers_are_limited_separately() {
        let mut r = RateLimiter::new(60, 1);
        let t0 = Instant::now();
        assert_eq!(r.check("gw1", t0), Ok(()));
        assert!(r.check("gw1", t0).is_err());
        assert_eq!(r.check("gw2", t0), Ok(()));
    }

    #[test]
    fn a_flood_of_topics_is_bounded() {
        let mut r = RateLimiter::new(60, 1);
        let t0 = Instant::now();
        for i in 0..MAX_BUCKETS {
            assert_eq!(r.check(&format!("t{i}"), t0), Ok(()));
        }
        // Every bucket is spent, so none can be dropped: newcomers share the overflow bucket.
        assert_eq!(r.check("new-a", t0), Ok(()));
        assert!(r.check("new-b", t0).is_err());
        assert!(r.buckets.len() <= MAX_BUCKETS + 1);
        // Once the old buckets have refilled they are dropped to make room.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(r.check("new-c", later), Ok(()));
        assert!(r.buckets.len() < 10);
    }
}
