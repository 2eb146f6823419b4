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
//! # Per-thread handles
//!
//! A shared gauge is written by every thread, so its count is the one contended line a guard
//! cannot avoid. Everything else stays on the recording thread: each thread keeps its last few
//! gauges in a small thread-local cache of *handles* (a handle is a reference-counted pointer
//! to the shared cell, owned by that thread). A guard and its two snapshots clone the thread's
//! handle, whose reference count lives on a line only that thread writes, and a cache hit
//! skips the map and its shard lock altogether. A cached cell may have been swept; sweeping
//! retires a cell by swapping its idle count for a *retired* mark, which an increment through a
//! handle refuses, so the thread drops that handle and looks the name up again. A retired cell
//! never counts again, so a name never has two live cells.
//!
//! # Bounding the names
//!
//! Gauge names may come from user input, so distinct gauges are bounded by the run's in-flight
//! snapshot limit. Cells whose count fell back to zero stay in the map (so a gauge that goes
//! up and down costs no allocation) until the map reaches its bound; then cells at zero are
//! swept out: a sweep write-locks each map shard and retires each cell at zero with a
//! compare-exchange, so a cell is removed only if no guard holds it and none can count on it
//! again. Sweeps are spaced so
//! that their cost stays proportional to the new names seen: a sweep waits for half the bound
//! of new names (created or refused) since the previous one. A guard for a new gauge that
//! finds no room is refused: it counts nothing, each of its two snapshots is counted as
//! dropped, and the run's `refused_gauges` counter grows. Room is missing when every tracked
//! gauge is live, and also, for at most half the bound of new names, when idle cells wait for
//! the next sweep: the price of keeping sweeps amortized.

use crate::sync::{Arc, AtomicU64, AtomicUsize, ConcurrentMap, Ordering};
use crate::Tailtriage;

/// The count of a cell that a sweep removed: no guard holds it, and none may count on it.
const RETIRED: u64 = u64::MAX;

/// One named gauge: the cell every thread counts on.
#[derive(Debug)]
pub(crate) struct Gauge {
    /// The gauge name.
    pub(crate) name: Box<str>,
    /// The current count, or [`RETIRED`].
    count: AtomicU64,
}

impl Gauge {
    /// Adds one unless the cell is retired; returns the count after the increment.
    fn try_increment(&self) -> Option<u64> {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count != RETIRED).then(|| count + 1)
            })
            .ok()
            .map(|previous| previous + 1)
    }

    /// Takes one away (never below zero); returns the count after the decrement. Only a
    /// guard's holder calls it, so the cell is live.
    fn decrement(&self) -> u64 {
        self.count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                Some(count.saturating_sub(1))
            })
            .map_or(0, |previous| previous.saturating_sub(1))
    }

    /// Retires an idle cell; false when it is counted on.
    fn retire_if_idle(&self) -> bool {
        self.count
            .compare_exchange(0, RETIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// A thread's own reference to a gauge cell; see the module docs.
#[derive(Debug)]
pub(crate) struct GaugeHandle {
    /// The run whose gauge this is.
    registry: u64,
    /// The shared cell.
    pub(crate) cell: Arc<Gauge>,
}

/// The live gauges of a run.
#[derive(Debug)]
pub(crate) struct Gauges {
    /// A number no other run's gauges share: thread caches hold handles of several runs.
    id: u64,
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
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
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

    /// Adds one to the named gauge; returns this thread's handle on it and the count after the
    /// increment, or `None` when the gauge cannot be tracked.
    fn increment(&self, name: String) -> Option<(std::sync::Arc<GaugeHandle>, u64)> {
        // The common case: this thread counted on the gauge recently.
        if let Some(handle) = recent::find(self.id, &name) {
            if let Some(count) = handle.cell.try_increment() {
                return Some((handle, count));
            }
            // Swept since: forget it and look the name up again.
            recent::forget(self.id, &name);
        }

        let (cell, count) = self.increment_in_map(name)?;
        let handle = std::sync::Arc::new(GaugeHandle {
            registry: self.id,
            cell,
        });
        recent::remember(&handle);
        Some((handle, count))
    }

    /// Adds one to the named gauge through the map, creating the cell when there is room.
    fn increment_in_map(&self, name: String) -> Option<(Arc<Gauge>, u64)> {
        // Cells in the map are never retired: sweeps retire and remove under the write lock.
        let bump = |gauge: &Arc<Gauge>| Some((Arc::clone(gauge), gauge.try_increment()?));

        // The gauge exists: increment under its shard's read lock.
        if let Some(found) = self.by_name.read(name.as_str(), bump).flatten() {
            return Some(found);
        }

        // A new name: reserve a slot under the bound, sweeping idle gauges if it is reached.
        if !self.reserve_slot() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let mut inserted = false;
        let shared_name: Box<str> = name.as_str().into();
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
        found
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
                let idle = gauge.retire_if_idle();
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
    /// This thread's handle on the gauge this guard holds a unit of; `None` when the gauge was
    /// refused.
    gauge: Option<std::sync::Arc<GaugeHandle>>,
}

impl<'a> InflightGuard<'a> {
    pub(crate) fn new(recorder: &'a Tailtriage, name: String) -> Self {
        let gauges = recorder.gauges();
        let gauge = if let Some((gauge, count)) = gauges.increment(name) {
            recorder.record_inflight(|| std::sync::Arc::clone(&gauge), count);
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
        let count = gauge.cell.decrement();
        // The guard's handle moves into the snapshot: no reference count is touched.
        self.recorder.record_inflight(move || gauge, count);
    }
}

/// The gauge table on its own, for the loom models of sweeping.
///
/// Through the public API a run's gauge bound is its in-flight snapshot limit, so a model that
/// fills the table to make a sweep happen has no snapshot room left to show what the sweep did
/// to the counts. These hooks drive the table directly. Compiled only under loom.
#[cfg(loom)]
pub mod model {
    use super::{GaugeHandle, Gauges, Ordering};

    /// A run's gauge table with its own bound.
    #[derive(Debug)]
    pub struct GaugeTable(Gauges);

    /// One unit of a gauge, held until [`Held::release`].
    #[derive(Debug)]
    pub struct Held(std::sync::Arc<GaugeHandle>);

    impl GaugeTable {
        /// A table tracking at most `bound` distinct gauges.
        #[must_use]
        pub fn new(bound: usize) -> Self {
            Self(Gauges::new(bound))
        }

        /// Adds one to gauge `name`, as a new guard does: the unit and the count after the
        /// increment, or `None` when the gauge is refused.
        #[must_use]
        pub fn acquire(&self, name: &str) -> Option<(Held, u64)> {
            self.0
                .increment(name.to_owned())
                .map(|(handle, count)| (Held(handle), count))
        }

        /// The count of the cell the table tracks for `name`, if it tracks one.
        #[must_use]
        pub fn tracked_count(&self, name: &str) -> Option<u64> {
            self.0
                .by_name
                .read(name, |gauge| gauge.count.load(Ordering::Acquire))
        }

        /// Gauges refused so far.
        #[must_use]
        pub fn refused(&self) -> u64 {
            self.0.refused()
        }
    }

    impl Held {
        /// Gives the unit back, as a dropped guard does; returns the count after the decrement.
        #[must_use]
        pub fn release(self) -> u64 {
            self.0.cell.decrement()
        }
    }
}

/// The thread-local cache of recently used gauge handles. Loom models use it too (with loom's
/// thread-locals), so that an increment through a cached handle races sweeps there as well.
mod recent {
    use std::cell::RefCell;
    use std::sync::Arc;

    use super::GaugeHandle;

    /// Handles a thread keeps; a linear scan of a few entries beats any map here.
    const CAPACITY: usize = 8;

    #[cfg(not(loom))]
    thread_local! {
        static RECENT: RefCell<Vec<Arc<GaugeHandle>>> = const { RefCell::new(Vec::new()) };
    }
    #[cfg(loom)]
    loom::thread_local! {
        static RECENT: RefCell<Vec<Arc<GaugeHandle>>> = RefCell::new(Vec::new());
    }

    // Every access goes through `try_with`: a guard created from another thread-local's
    // destructor may find this cache already destroyed, and then simply does without it.

    /// This thread's handle on gauge `name` of run `registry`, if it has one.
    pub(super) fn find(registry: u64, name: &str) -> Option<Arc<GaugeHandle>> {
        RECENT
            .try_with(|recent| {
                recent
                    .borrow()
                    .iter()
                    .find(|handle| handle.registry == registry && *handle.cell.name == *name)
                    .cloned()
            })
            .ok()
            .flatten()
    }

    /// Keeps `handle`, evicting the oldest handle when the cache is full.
    pub(super) fn remember(handle: &Arc<GaugeHandle>) {
        let _ = RECENT.try_with(|recent| {
            let mut recent = recent.borrow_mut();
            if recent.len() == CAPACITY {
                recent.remove(0);
            }
            recent.push(Arc::clone(handle));
        });
    }

    /// Drops this thread's handle on gauge `name` of run `registry`.
    pub(super) fn forget(registry: u64, name: &str) {
        let _ = RECENT.try_with(|recent| {
            recent
                .borrow_mut()
                .retain(|handle| !(handle.registry == registry && *handle.cell.name == *name));
        });
    }
}
