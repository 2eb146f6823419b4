//! Wall-clock helpers and the run clock.
//!
//! The artifact stores instants as milliseconds since the Unix epoch and durations as
//! microseconds. Reading the wall clock on every event would add a system-time read per instant
//! to the hot path, so a run reads the wall clock once, at build, and derives every later instant
//! from the monotonic counter it must read anyway to time durations:
//!
//! ```text
//! unix_ms(instant) = (origin_unix_us + nanos(instant - origin) / 1000) / 1000
//! ```
//!
//! The counter is the CPU's invariant time-stamp counter, read raw on the hot path and scaled
//! to nanoseconds only when a run is drained.
//!
//! Consequences a reader should know: instants within a run never go backwards even if the
//! system clock is stepped, and they agree with the wall clock as of the moment the run was
//! built.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

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

/// The process's calibrated cycle counter, shared by every run (calibration takes a few
/// milliseconds, so it happens once).
fn counter() -> &'static quanta::Clock {
    static COUNTER: OnceLock<quanta::Clock> = OnceLock::new();
    COUNTER.get_or_init(quanta::Clock::new)
}

/// Maps the instants of one run to wall-clock milliseconds and durations to microseconds.
///
/// Instants are raw readings of the CPU's invariant time-stamp counter (through `quanta`),
/// which cost a fraction of a system monotonic-clock read; they are scaled to nanoseconds only
/// when a run is drained. Where the processor has no usable invariant counter, `quanta` falls
/// back to the system's monotonic clock, so readings stay monotonic either way.
#[derive(Debug, Clone)]
pub(crate) struct RunClock {
    /// The calibrated counter.
    counter: quanta::Clock,
    /// The raw reading at build; every event instant is measured from it.
    origin: u64,
    /// Microseconds since the Unix epoch at `origin`, read once from the wall clock.
    origin_unix_us: u64,
}

impl RunClock {
    /// Reads both clocks once.
    pub(crate) fn start() -> Self {
        let counter = counter().clone();
        let origin_unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since_epoch| saturating_u64(since_epoch.as_micros()));
        Self {
            origin: counter.raw(),
            counter,
            origin_unix_us,
        }
    }

    /// The current instant: the one counter read an instant costs.
    pub(crate) fn now(&self) -> Tick {
        Tick(self.counter.raw())
    }

    /// Nanoseconds from the run's origin to `tick` (zero for readings before the origin).
    fn nanos_since_origin(&self, tick: Tick) -> u64 {
        self.nanos_between(Tick(self.origin), tick)
    }

    /// Nanoseconds from `earlier` to `later`, zero if `later` is not after `earlier`.
    fn nanos_between(&self, earlier: Tick, later: Tick) -> u64 {
        if later.0 <= earlier.0 {
            return 0;
        }
        self.counter.delta_as_nanos(earlier.0, later.0)
    }

    /// Whole microseconds from `earlier` to `later`, zero if `later` is not after `earlier`.
    pub(crate) fn micros_between(&self, earlier: Tick, later: Tick) -> u64 {
        self.nanos_between(earlier, later) / 1_000
    }

    /// Wall-clock milliseconds since the Unix epoch of an instant of this run.
    pub(crate) fn unix_ms(&self, tick: Tick) -> u64 {
        self.origin_unix_us
            .saturating_add(self.nanos_since_origin(tick) / 1_000)
            / 1_000
    }

    /// Wall-clock milliseconds since the Unix epoch now, by the run clock.
    pub(crate) fn now_unix_ms(&self) -> u64 {
        self.unix_ms(self.now())
    }
}

/// An instant of one run: a raw counter reading, meaningful only through its [`RunClock`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(u64);

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
        assert_eq!(clock.micros_between(first, first), 0);
        assert_eq!(
            clock.micros_between(second, first),
            0,
            "earlier end saturates at zero"
        );
    }

    #[test]
    fn run_clock_measures_durations_like_the_system_clock() {
        let clock = RunClock::start();
        let started = clock.now();
        let system_started = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let micros = clock.micros_between(started, clock.now());
        let system_micros = u64::try_from(system_started.elapsed().as_micros()).unwrap();
        assert!(micros >= 19_000, "measured {micros} us for a 20 ms sleep");
        assert!(
            micros.abs_diff(system_micros) < 2_000,
            "counter {micros} us vs system {system_micros} us"
        );
    }
}
