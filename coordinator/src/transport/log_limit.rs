//! Rate-limited warnings about what clients did wrong: each refusal is
//! worth a line, but a hostile client must not be able to fill the log (or
//! spend the node's time writing it) by sending refusals in a loop.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lines one limiter lets through per window.
const LINES_PER_WINDOW: u32 = 10;

/// The window.
const WINDOW: Duration = Duration::from_secs(1);

/// What the caller should log for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogVerdict {
    /// Log this event; `suppressed` events of the previous window were not
    /// logged (say so if more than 0).
    Log {
        /// Events not logged since the last line.
        suppressed: u64,
    },
    /// Too many this window: count it, do not log it.
    Suppress,
}

/// Lets through at most [`LINES_PER_WINDOW`] lines per [`WINDOW`] and
/// counts the rest, reported with the next line that gets through.
#[derive(Debug)]
pub struct LogLimiter {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    window_start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter {
            state: Mutex::new(State {
                window_start: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }
}

impl LogLimiter {
    /// Logs `what` as a warning unless too many were logged this window;
    /// the first line of the next window says how many were not.
    pub fn warn(&self, what: std::fmt::Arguments<'_>) {
        match self.check(Instant::now()) {
            LogVerdict::Log { suppressed: 0 } => tracing::warn!("{what}"),
            LogVerdict::Log { suppressed } => {
                tracing::warn!("{what} ({suppressed} more like it were not logged)")
            }
            LogVerdict::Suppress => {}
        }
    }

    /// Whether an event at `now` is logged.
    pub fn check(&self, now: Instant) -> LogVerdict {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = state
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= WINDOW);
        if fresh {
            state.window_start = Some(now);
            state.logged = 0;
        }
        if state.logged < LINES_PER_WINDOW {
            state.logged += 1;
            let suppressed = std::mem::take(&mut state.suppressed);
            LogVerdict::Log { suppressed }
        } else {
            state.suppressed += 1;
            LogVerdict::Suppress
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_cut_to_the_window_and_the_rest_is_counted_in_the_next_line() {
        let limiter = LogLimiter::default();
        let start = Instant::now();
        let verdicts: Vec<LogVerdict> = (0..25).map(|_| limiter.check(start)).collect();
        let logged = verdicts
            .iter()
            .filter(|v| matches!(v, LogVerdict::Log { .. }))
            .count();
        assert_eq!(logged, LINES_PER_WINDOW as usize);
        assert_eq!(verdicts[0], LogVerdict::Log { suppressed: 0 });
        assert_eq!(verdicts[24], LogVerdict::Suppress);
        // The next window logs again and reports what was dropped.
        let later = start + WINDOW;
        assert_eq!(limiter.check(later), LogVerdict::Log { suppressed: 15 });
        assert_eq!(limiter.check(later), LogVerdict::Log { suppressed: 0 });
    }
}
