//! Wall-clock helpers and the run clock.
//!
//! The artifact stores instants as milliseconds since the Unix epoch and durations as
//! microseconds. Reading the wall clock on every event would add a system-time read per instant
//! to the hot path, so a run reads the wall clock once, at build, and derives every later instant
//! from the monotonic clock it must read anyway to time durations:
//!
//! ```text
//! unix_ms(instant) = origin_unix_us / 1000 + (instant - origin_instant)
//! ```
//!
//! Consequences a reader should know: instants within a run never go backwards even if the
//! system clock is stepped, and they agree with the wall clock as of the moment the run was
//! built.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Converts a [`SystemTime`] to milliseconds since the Unix epoch.
///
/// Times before the epoch clamp to `0`; times too far in the future saturate at `u64::MAX`.
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// use tailtriage_core::system_time_to_unix_ms;
///
/// assert_eq!(system_time_to_unix_ms(UNIX_EPOCH + Duration::from_millis(1_500)), 1_500);
/// assert_eq!(system_time_to_unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
/// ```
#[must_use]
pub fn system_time_to_unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since_epoch| saturating_u64(since_epoch.as_millis()))
}

/// The current wall-clock time in milliseconds since the Unix epoch.
///
/// ```
/// let now = tailtriage_core::unix_time_ms();
/// assert!(now > 1_600_000_000_000, "the clock reads a time after 2020");
/// ```
#[must_use]
pub fn unix_time_ms() -> u64 {
    system_time_to_unix_ms(SystemTime::now())
}

fn saturating_u64(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// Maps monotonic instants of one run to wall-clock milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunClock {
    /// The monotonic instant read at build; every event instant is stored relative to it.
    origin: Instant,
    /// Microseconds since the Unix epoch at `origin`, read once from the wall clock.
    origin_unix_us: u64,
}

impl RunClock {
    /// Reads both clocks once.
    pub(crate) fn start() -> Self {
        let origin_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since_epoch| saturating_u64(since_epoch.as_micros()));
        Self {
            origin: Instant::now(),
            origin_unix_us,
        }
    }

    /// Nanoseconds from the run's origin to now: the one clock read an instant costs.
    pub(crate) fn now(&self) -> Tick {
        Tick(saturating_u64(self.origin.elapsed().as_nanos()))
    }

    /// Wall-clock milliseconds since the Unix epoch of a tick of this run.
    pub(crate) fn unix_ms(&self, tick: Tick) -> u64 {
        self.origin_unix_us.saturating_add(tick.0 / 1_000) / 1_000
    }

    /// Wall-clock milliseconds since the Unix epoch now, by the run clock.
    pub(crate) fn now_unix_ms(&self) -> u64 {
        self.unix_ms(self.now())
    }
}

/// A monotonic instant of one run: nanoseconds since the run's origin.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(u64);

impl Tick {
    /// Whole microseconds from `self` to `later` (zero if `later` is earlier).
    pub(crate) fn micros_until(self, later: Tick) -> u64 {
        later.0.saturating_sub(self.0) / 1_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_before_the_epoch_clamp_to_zero_and_huge_durations_saturate() {
        let before = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(system_time_to_unix_ms(before), 0);
        assert_eq!(system_time_to_unix_ms(UNIX_EPOCH), 0);
        assert_eq!(saturating_u64(u128::MAX), u64::MAX);
    }

    #[test]
    fn run_clock_agrees_with_the_wall_clock_and_never_goes_backwards() {
        let clock = RunClock::start();
        let first = clock.now();
        let second = clock.now();
        assert!(second >= first, "monotonic ticks never go backwards");
        let wall = unix_time_ms();
        let derived = clock.unix_ms(second);
        assert!(
            wall.abs_diff(derived) <= 5,
            "derived {derived} vs wall {wall}"
        );
        assert_eq!(first.micros_until(first), 0);
        assert_eq!(
            second.micros_until(first),
            0,
            "earlier end saturates at zero"
        );
    }
}
