//! A bound on the refusal log.
//!
//! The plugin's stderr ends up in a file on the host, and a tenant can send refused requests
//! as fast as dockerd forwards them: unbounded, one line per refusal would let them fill the
//! host's disk. So refusal lines are counted in fixed windows (10 s, from the first refusal
//! after the previous window ended) and at most 20 are written per window; what was dropped is
//! summed up in one line when logging resumes, so a window holds at most 21 lines. Without a
//! timer, that summary waits for the next refusal: after a flood that simply stopped, it comes
//! with the next refusal, however late.

use std::time::{Duration, Instant};

/// Refusal lines written per window at most.
pub(crate) const REFUSAL_LINES_PER_WINDOW: usize = 20;

/// The length of a window.
pub(crate) const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// Counts refusal lines per window. Pure: the caller passes the time, so tests need no clock.
#[derive(Debug)]
pub(crate) struct RefusalLogLimiter {
    max_lines: usize,
    window: Duration,
    /// When the current window began; `None` before the first refusal.
    window_start: Option<Instant>,
    logged_in_window: usize,
    /// Refusals dropped since the last line written.
    not_logged: u64,
}

/// What to do with one refusal line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogDecision {
    /// Write the line, after the summary line for `not_logged_before` dropped ones when that
    /// is not zero.
    Write { not_logged_before: u64 },
    /// Drop it: this window's lines are used up.
    Drop,
}

impl RefusalLogLimiter {
    pub(crate) const fn new(max_lines: usize, window: Duration) -> Self {
        Self {
            max_lines,
            window,
            window_start: None,
            logged_in_window: 0,
            not_logged: 0,
        }
    }

    /// Decides about one refusal line at `now` and counts it.
    pub(crate) fn decide(&mut self, now: Instant) -> LogDecision {
        let window_over = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.window);
        if window_over {
            self.window_start = Some(now);
            self.logged_in_window = 0;
        }
        if self.logged_in_window >= self.max_lines {
            self.not_logged = self.not_logged.saturating_add(1);
            return LogDecision::Drop;
        }
        self.logged_in_window += 1;
        LogDecision::Write {
            not_logged_before: std::mem::take(&mut self.not_logged),
        }
    }

    /// The summary line for `count` dropped refusals. They were dropped in the window before
    /// the current one; with refusals coming steadily, that is the last 10 s.
    pub(crate) fn not_logged_line(&self, count: u64) -> String {
        format!(
            "{count} refusals not logged in the last {} s",
            self.window.as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter() -> RefusalLogLimiter {
        RefusalLogLimiter::new(REFUSAL_LINES_PER_WINDOW, REFUSAL_LOG_WINDOW)
    }

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn writes_twenty_lines_per_window_then_drops() {
        let start = Instant::now();
        let mut limiter = limiter();
        for index in 0..20 {
            assert_eq!(
                limiter.decide(at(start, index * 10)),
                LogDecision::Write {
                    not_logged_before: 0
                },
                "line {index}"
            );
        }
        for index in 20..100 {
            assert_eq!(limiter.decide(at(start, index * 10)), LogDecision::Drop);
        }
        // Still inside the window that began with the first line.
        assert_eq!(limiter.decide(at(start, 9_999)), LogDecision::Drop);
    }

    #[test]
    fn the_next_window_writes_again_and_reports_what_was_dropped() {
        let start = Instant::now();
        let mut limiter = limiter();
        for index in 0..25 {
            limiter.decide(at(start, index));
        }
        assert_eq!(
            limiter.decide(at(start, 10_000)),
            LogDecision::Write {
                not_logged_before: 5
            }
        );
        // Reported once only.
        assert_eq!(
            limiter.decide(at(start, 10_001)),
            LogDecision::Write {
                not_logged_before: 0
            }
        );
    }

    #[test]
    fn a_window_begins_with_the_first_refusal_after_the_last_one_ended() {
        let start = Instant::now();
        let mut limiter = limiter();
        for _ in 0..21 {
            limiter.decide(start);
        }
        // A quiet hour, then a burst: its window starts at its first refusal.
        let later = at(start, 3_600_000);
        assert_eq!(
            limiter.decide(later),
            LogDecision::Write {
                not_logged_before: 1
            }
        );
        for index in 1..20 {
            assert!(matches!(
                limiter.decide(at(later, index)),
                LogDecision::Write { .. }
            ));
        }
        assert_eq!(limiter.decide(at(later, 9_999)), LogDecision::Drop);
        assert_eq!(
            limiter.decide(at(later, 10_000)),
            LogDecision::Write {
                not_logged_before: 1
            }
        );
    }

    #[test]
    fn a_sustained_flood_writes_at_most_twenty_lines_and_one_summary_per_window() {
        let start = Instant::now();
        let mut limiter = limiter();
        let mut lines_per_window = [0usize; 6];
        let mut summaries_per_window = [0usize; 6];
        // 1000 refusals a second for a minute.
        for millis in 0..60_000u64 {
            let window = usize::try_from(millis / 10_000).unwrap();
            if let LogDecision::Write { not_logged_before } = limiter.decide(at(start, millis)) {
                lines_per_window[window] += 1;
                if not_logged_before > 0 {
                    summaries_per_window[window] += 1;
                    assert_eq!(not_logged_before, 10_000 - 20);
                }
            }
        }
        assert_eq!(lines_per_window, [20; 6]);
        assert_eq!(summaries_per_window, [0, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn a_clock_that_goes_backwards_does_not_open_a_window() {
        let start = Instant::now();
        let later = at(start, 5_000);
        let mut limiter = limiter();
        for _ in 0..20 {
            limiter.decide(later);
        }
        assert_eq!(limiter.decide(start), LogDecision::Drop);
    }

    #[test]
    fn the_summary_line_names_the_count_and_window() {
        let limiter = limiter();
        assert_eq!(
            limiter.not_logged_line(37),
            "37 refusals not logged in the last 10 s"
        );
    }
}
