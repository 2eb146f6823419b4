//! In-flight gauges: named counts of work in progress, and the guard that holds one unit.
//!
//! # Counting
//!
//! Each gauge is a cell with an atomic count, found by name in a concurrent map (`DashMap`).
//! Creating a guard increments the count *while the map entry is read-locked*, and the guard
//! keeps the cell, so dropping it decrements without any lookup. Both record an
//! [`InFlightSnapshot`](crate::InFlightSnapshot) with the count their own atomic operation
//! produced, so every recorded count is one the gauge really held. The decrement saturates at
//! zero.
//!
//! # Bounding the names
//!
//! Gauge names may come from user input, so distinct gauges are bounded by the run's in-flight
//! snapshot limit. Cells whose count fell back to zero stay in the map (so a gauge that goes
//! up and down costs no allocation) until the map reaches its bound; then cells at zero are
//! swept out. A sweep write-locks each map shard, and increments happen under the read lock,
//! so a sweep can never remove a cell between a lookup and its increment. Sweeps are spaced so
//! that their cost stays proportional to the new names seen: a sweep waits for half the bound
//! of new names (created or refused) since the previous one. A guard for a new gauge that
//! finds no room is refused: it counts nothing, each of its two snapshots is counted as
//! dropped, and the run's `refused_gauges` counter grows. Room is missing when every tracked
//! gauge is live, and also, for at most half the bound of new names, when idle cells wait for
//! the next sweep: the price of keeping sweeps amortized.

use crate::sync::{Arc, AtomicU64, AtomicUsize, ConcurrentMap, Ordering};
use crate::Tailtriage;

/// One named gauge.
#[derive(Debug)]
pub(crate) struct Gauge {
    /// The gauge name, shared by every snapshot of it (a plain `Arc`: names are not part of
    /// the protocol the loom models check).
    pub(crate) name: std::sync::Arc<str>,
    /// The current count.
    count: AtomicU64,
}

/// The live gauges of a run.
#[derive(Debug)]
pub(crate) struct Gauges {
    /// Gauges by name; cells at zero may linger until a sweep.
    by_name: ConcurrentMap<String, Arc<Gauge>>,
    /// Entries in `by_name`, counting slots reserved by insertions in progress.
    tracked: AtomicUsize,
    /// The most distinct gauges tracked at once.
    bound: usize,
    /// New names (gauges created, and names refused at the bound) since the last sweep; a
    /// sweep waits until it reaches half the bound.
    new_names_since_sweep: AtomicUsize,
    /// Guards for new names refused for want of room (see the module docs).
    refused: AtomicU64,
}

impl Gauges {
    pub(crate) fn new(bound: usize) -> Self {
        Self {
            by_name: ConcurrentMap::new(),
            tracked: AtomicUsize::new(0),
            bound,
            new_names_since_sweep: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Guards refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Adds one to the named gauge; returns its cell and the count after the increment, or
    /// `None` when the gauge cannot be tracked.
    fn increment(&self, name: String) -> Option<(Arc<Gauge>, u64)> {
        let bump = |gauge: &Arc<Gauge>| {
            (
                Arc::clone(gauge),
                gauge.count.fetch_add(1, Ordering::AcqRel) + 1,
            )
        };

        // The common case: the gauge exists; increment under its shard's read lock.
        if let Some(found) = self.by_name.read(name.as_str(), bump) {
            return Some(found);
        }

        // A new name: reserve a slot under the bound, sweeping idle gauges if it is reached.
        if !self.reserve_slot() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut inserted = false;
        let shared_name: std::sync::Arc<str> = std::sync::Arc::from(name.as_str());
        let make = || {
            inserted = true;
            Arc::new(Gauge {
                name: shared_name,
                count: AtomicU64::new(0),
            })
        };
        let found = self.by_name.upsert(name, make, bump);
        if !inserted {
            // Another thread inserted the same name first; give the slot back.
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
        Some(found)
    }

    /// Reserves room for one more gauge, sweeping idle gauges when the bound is reached.
    fn reserve_slot(&self) -> bool {
        if self.tracked.fetch_add(1, Ordering::Relaxed) < self.bound {
            self.new_names_since_sweep.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.tracked.fetch_sub(1, Ordering::Relaxed);

        // Sweep only after enough new names that its cost is amortized over them. A name met
        // at the bound counts even if it is refused: were only creations counted, a sweep that
        // found every gauge live would stop all creation, the count would never grow again,
        // and new names would be refused forever, even after every gauge went idle.
        let new_names = self.new_names_since_sweep.fetch_add(1, Ordering::Relaxed) + 1;
        let due = new_names >= (self.bound / 2).max(1);
        if due {
            self.new_names_since_sweep.store(0, Ordering::Relaxed);
            self.by_name.retain(|_, gauge| {
                let idle = gauge.count.load(Ordering::Acquire) == 0;
                if idle {
                    self.tracked.fetch_sub(1, Ordering::Relaxed);
                }
                !idle
            });
            if self.tracked.fetch_add(1, Ordering::Relaxed) < self.bound {
                self.new_names_since_sweep.fetch_add(1, Ordering::Relaxed);
                return true;
            }
            self.tracked.fetch_sub(1, Ordering::Relaxed);
        }
        false
    }
}

/// Holds one unit of a named in-flight gauge; dropping it gives the unit back.
///
/// Creating the guard records an [`InFlightSnapshot`](crate::InFlightSnapshot) with the count
/// after the increment; dropping it records the count after the decrement.
///
/// ```
/// use tailtriage_core::{MemorySink, Tailtriage};
///
/// let tailtriage = Tailtriage::builder("checkout").sink(MemorySink::new()).build()?;
/// let started = tailtriage.begin_request("/checkout");
/// {
///     let _guard = started.handle.inflight("checkout_inflight");
///     // ... the request's work ...
/// }
/// started.completion.finish_ok();
/// let counts: Vec<u64> = tailtriage.snapshot().inflight.iter().map(|s| s.count).collect();
/// assert_eq!(counts, [1, 0]);
/// # Ok::<(), tailtriage_core::BuildError>(())
/// ```
#[derive(Debug)]
pub struct InflightGuard<'a> {
    recorder: &'a Tailtriage,
    /// The gauge this guard holds a unit of; `None` when the gauge was refused.
    gauge: Option<Arc<Gauge>>,
}

impl<'a> InflightGuard<'a> {
    pub(crate) fn new(recorder: &'a Tailtriage, name: String) -> Self {
        let gauges = recorder.gauges();
        let gauge = if let Some((gauge, count)) = gauges.increment(name) {
            recorder.record_inflight(&gauge.name, count);
            Some(gauge)
        } else {
            recorder.count_dropped_inflight();
            None
        };
        Self { recorder, gauge }
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        let Some(gauge) = self.gauge.take() else {
            self.recorder.count_dropped_inflight();
            return;
        };
        let previous = gauge
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                Some(count.saturating_sub(1))
            })
            .unwrap_or(0);
        self.recorder
            .record_inflight(&gauge.name, previous.saturating_sub(1));
    }
}
