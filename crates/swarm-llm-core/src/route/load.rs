//! Whether a model thread can still answer a question in time: its queue
//! and its recent job times against the question's deadline. Pure; the
//! pipeline reads the numbers off the model's handle.
//!
//! Under a burst the board's own queue grows while the cloud sits idle, and
//! a question whose deadline its turn would pass is lost either way: sent
//! where it can be answered in time, it is not.

use std::time::Duration;

/// A model thread's load as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    /// Jobs waiting for it or being decoded now.
    pub ahead: usize,
    /// Questions it decodes at once (`models[].parallel`).
    pub slots: usize,
    /// Its recent job time; None until it has finished one.
    pub typical_job: Option<Duration>,
}

impl Queue {
    /// When a job queued now would be done: the rounds of jobs ahead of it
    /// through its slots, and its own, at the typical job time. None while
    /// no job time is known.
    pub fn expected_finish(&self) -> Option<Duration> {
        let job = self.typical_job?;
        let rounds = (self.ahead + 1).div_ceil(self.slots.max(1));
        Some(job.saturating_mul(rounds as u32))
    }

    /// Whether a job queued now is expected to be done within `left`; yes
    /// while nothing is measured (there is nothing to go by).
    pub fn in_time(&self, left: Duration) -> bool {
        self.expected_finish().is_none_or(|f| f <= left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn queue(ahead: usize, slots: usize, job_s: Option<u64>) -> Queue {
        Queue {
            ahead,
            slots,
            typical_job: job_s.map(Duration::from_secs),
        }
    }

    #[test]
    fn the_queue_ahead_is_worked_off_through_the_slots() {
        assert_eq!(queue(0, 1, Some(2)).expected_finish(), Some(2 * SECOND));
        assert_eq!(queue(8, 1, Some(2)).expected_finish(), Some(18 * SECOND));
        assert_eq!(queue(3, 4, Some(2)).expected_finish(), Some(2 * SECOND));
        assert_eq!(queue(8, 4, Some(2)).expected_finish(), Some(6 * SECOND));
        assert!(!queue(8, 1, Some(2)).in_time(10 * SECOND));
        assert!(queue(8, 4, Some(2)).in_time(10 * SECOND));
    }

    #[test]
    fn an_unmeasured_model_is_taken_to_be_in_time() {
        assert_eq!(queue(100, 1, None).expected_finish(), None);
        assert!(queue(100, 1, None).in_time(Duration::ZERO));
    }

    proptest! {
        /// More work ahead never makes a model sooner; more slots never later.
        #[test]
        fn the_expected_finish_is_monotone(ahead in 0usize..100, slots in 1usize..8, job_ms in 1u64..10_000) {
            let job = Some(Duration::from_millis(job_ms));
            let at = |ahead, slots| Queue { ahead, slots, typical_job: job }.expected_finish().unwrap();
            prop_assert!(at(ahead, slots) <= at(ahead + 1, slots));
            prop_assert!(at(ahead, slots + 1) <= at(ahead, slots));
        }
    }
}
