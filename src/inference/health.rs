//! Whether a model thread is alive and well, read by the systemd watchdog
//! and by the swarm vote (which asks the quickest models first).

use super::*;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Whether a worker thread is alive and well: busy with a job, and when it
/// last made progress. The systemd watchdog reads it; the swarm vote asks
/// the cheapest models first by the typical job time.
#[derive(Debug, Default)]
pub struct WorkerHealth {
    /// Questions in flight.
    active: AtomicUsize,
    /// Milliseconds since [`epoch`] of the last progress.
    last_progress_ms: AtomicU64,
    /// Moving average of job times in microseconds (0: no job yet).
    typical_job_us: AtomicU64,
}

pub(super) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(super) fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

impl WorkerHealth {
    pub fn start_job(&self) {
        self.progress();
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    pub fn progress(&self) {
        self.last_progress_ms.store(now_ms(), Ordering::Release);
    }

    /// A job that took `took` is done.
    pub fn finish_job(&self, took: Duration) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        let took_us = took.as_micros() as u64 + 1;
        // Only the worker thread writes: a load and a store do not race.
        let typical = self.typical_job_us.load(Ordering::Acquire);
        let next = if typical == 0 {
            took_us
        } else {
            (typical * 4 + took_us) / 5
        };
        self.typical_job_us.store(next, Ordering::Release);
    }

    /// Questions in flight.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    /// The recent typical time of one job (None before the first).
    pub fn typical_job(&self) -> Option<Duration> {
        match self.typical_job_us.load(Ordering::Acquire) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Busy and no progress for at least `limit`.
    pub fn stalled_for(&self, limit: Duration) -> bool {
        self.active() > 0
            && now_ms().saturating_sub(self.last_progress_ms.load(Ordering::Acquire))
                >= limit.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_typical_job_time_follows_the_jobs() {
        let h = WorkerHealth::default();
        assert_eq!(h.typical_job(), None);
        h.start_job();
        h.finish_job(Duration::from_millis(20));
        let first = h.typical_job().unwrap();
        assert!(first >= Duration::from_millis(20), "{first:?}");
        // A quick job moves the average down, by a fifth of the difference.
        h.start_job();
        h.finish_job(Duration::ZERO);
        let second = h.typical_job().unwrap();
        assert!(
            second < first && second >= first * 3 / 4,
            "{first:?} {second:?}"
        );
        assert_eq!(h.active(), 0);
    }
}
