//! A section: the bounded, sharded store of one kind of event.
//!
//! A run has five sections (requests, stages, queues, in-flight snapshots, runtime snapshots).
//! Each keeps at most its limit of events and counts every event it turns away.
//!
//! # Recording
//!
//! ```text
//!  writer ──reserve──▶ capacity counter ──granted (seq)──▶ ring of the writer's shard
//!     │                        │                                  │ full: spill
//!     │                        └─refused──▶ drop tally of shard   ▼
//!     │                                                 spilled batches (Vecs)
//!  snapshot / shutdown ──drain every ring──────────────────────────▲
//! ```
//!
//! 1. **Reserve.** A writer takes a ticket from the section's capacity counter with one
//!    `fetch_add`. Tickets below the limit are granted; the ticket is also the event's sequence
//!    number. A writer that sees the counter at the limit does not touch it at all, so a full
//!    section costs one shared load and one add on a per-shard tally.
//! 2. **Stage.** A granted event goes into the lock-free ring (crossbeam's `ArrayQueue`) of the
//!    writer's shard; a thread always uses the same shard, so its events stay in its program
//!    order. Rings are allocated by their first writer and never grow.
//! 3. **Spill.** When the ring is full the writer takes the storage lock, moves the ring's events
//!    into a new batch of exactly the ring's size, adds its own event and files the batch. This
//!    happens once per ring's worth of events, never per event; batches are small heap blocks,
//!    so spilling never copies earlier events the way a growing `Vec` would.
//! 4. **Drain.** `snapshot()` and `shutdown()` take the storage lock, move every ring's events
//!    and every batch into one list and sort it by sequence number. Storage is never consumed:
//!    later drains see everything earlier ones did.
//!
//! # Invariants
//!
//! * Granted tickets are exactly the first `min(attempts, limit)` tickets, and every granted
//!   event reaches storage (through a ring or a spill); every refused attempt adds exactly one
//!   to a tally. Hence retained = `min(attempts, limit)` and retained + dropped = attempts, for
//!   every interleaving.
//! * An event whose `offer` returned before a drain took the storage lock is in storage after
//!   that drain: it is either in a ring (the drain pops it) or already spilled.
//! * Memory is the rings a writer touched plus the retained events: a limit is a ceiling, never
//!   an allocation. A ring never holds more than the limit allows.
//!
//! The counter can pass the limit by the number of writers racing at the boundary, and after
//! `usize::MAX` attempts it would wrap; at a billion events per second that takes centuries.

use crossbeam_utils::CachePadded;

use crate::sync::{lock, AtomicU64, AtomicUsize, LazyRing, Mutex, Ordering, Ring};

/// Events a shard's ring holds before its writer spills them into run storage.
///
/// Under loom a ring holds a single event, so that models with a handful of events reach the
/// spill path and its races with drains.
pub(crate) const RING_CAPACITY: usize = if cfg!(loom) { 1 } else { 256 };

/// An event with the ticket its reservation drew; drains order events by it.
#[derive(Debug)]
pub(crate) struct Sequenced<E> {
    /// The ticket drawn from the section's capacity counter.
    pub(crate) seq: usize,
    /// The event.
    pub(crate) event: E,
}

/// What happened to an offered event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub(crate) enum Offer {
    /// The event is retained.
    Kept,
    /// The section was full; the event was counted and discarded.
    Dropped,
}

/// One shard: a lazily allocated ring and the tally of events its writers saw dropped.
#[derive(Debug)]
struct Shard<E> {
    /// Granted events waiting for the next spill or drain.
    ring: LazyRing<Sequenced<E>>,
    /// Events refused by this shard's writers; the section's total is the sum over shards.
    dropped: AtomicU64,
}

/// A bounded, sharded, lock-free store of one kind of event.
#[derive(Debug)]
pub(crate) struct Section<E> {
    /// The most events this section retains.
    limit: usize,
    /// Tickets handed out so far; a ticket below `limit` is a granted reservation. Only ever
    /// increases; read without modification once it reaches `limit`.
    reserved: CachePadded<AtomicUsize>,
    /// Per-shard rings and tallies; a thread always records into the same shard.
    shards: Box<[CachePadded<Shard<E>>]>,
    /// Events moved out of the rings.
    storage: Mutex<Storage<E>>,
}

/// Events moved out of the rings: what drains merged, and batches spilled since.
#[derive(Debug)]
struct Storage<E> {
    /// Every event drained so far, ordered by ticket.
    merged: Vec<Sequenced<E>>,
    /// Batches spilled by writers since the last drain.
    batches: Vec<Vec<Sequenced<E>>>,
}

impl<E> Section<E> {
    /// A section retaining at most `limit` events, spread over `shards` shards. Allocates only
    /// the shard table.
    pub(crate) fn new(limit: usize, shards: usize) -> Self {
        let ring_capacity = limit.clamp(1, RING_CAPACITY);
        let shards = (0..shards.max(1))
            .map(|_| {
                CachePadded::new(Shard {
                    ring: LazyRing::new(ring_capacity),
                    dropped: AtomicU64::new(0),
                })
            })
            .collect();
        Self {
            limit,
            reserved: CachePadded::new(AtomicUsize::new(0)),
            shards,
            storage: Mutex::new(Storage {
                merged: Vec::new(),
                batches: Vec::new(),
            }),
        }
    }

    /// True once the section cannot retain another event. Callers use it to skip the clock
    /// reads of an event that would be dropped anyway; it is a hint, `offer` decides.
    pub(crate) fn is_full(&self) -> bool {
        self.reserved.load(Ordering::Relaxed) >= self.limit
    }

    /// Offers an event built by `make`, which runs only if the event will be retained.
    pub(crate) fn offer(&self, make: impl FnOnce() -> E) -> Offer {
        let shard = &self.shards[shard_of_current_thread(self.shards.len())];

        // Reserve: a full section is never written to, so it stays cheap to read.
        if self.is_full() {
            return Self::refuse(shard);
        }
        let seq = self.reserved.fetch_add(1, Ordering::Relaxed);
        if seq >= self.limit {
            return Self::refuse(shard);
        }

        // Stage in this thread's ring; a full ring is spilled into storage first.
        let ring = shard.ring.get_or_alloc();
        let sequenced = Sequenced { seq, event: make() };
        if let Err(sequenced) = ring.push(sequenced) {
            // Allocate outside the lock; pop under it, so that a drain never misses events
            // that have left the ring but not yet reached storage.
            let mut batch = Vec::with_capacity(ring.capacity() + 1);
            let mut storage = lock(&self.storage);
            pop_into(ring, &mut batch);
            batch.push(sequenced);
            storage.batches.push(batch);
        }
        Offer::Kept
    }

    /// Counts a refused event on the writer's shard.
    fn refuse(shard: &Shard<E>) -> Offer {
        shard.dropped.fetch_add(1, Ordering::Relaxed);
        Offer::Dropped
    }

    /// Counts an event that was turned away before it was offered (for example a request that
    /// could not be tracked), so that it appears in this section's drop tally.
    pub(crate) fn count_dropped(&self) {
        let _ = Self::refuse(&self.shards[shard_of_current_thread(self.shards.len())]);
    }

    /// Events this section refused so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.dropped.load(Ordering::Relaxed))
            .fold(0, u64::saturating_add)
    }

    /// Drains every ring into storage, orders storage by ticket, and lets `read` see all the
    /// retained events. Nothing is consumed.
    pub(crate) fn drain_and_read<R>(&self, read: impl FnOnce(&[Sequenced<E>]) -> R) -> R {
        let mut storage = lock(&self.storage);
        let Storage { merged, batches } = &mut *storage;
        for batch in batches.drain(..) {
            merged.extend(batch);
        }
        for shard in &*self.shards {
            if let Some(ring) = shard.ring.get() {
                pop_into(ring, merged);
            }
        }

        // A sorted prefix followed by a few nearly sorted batches: a stable sort merges such
        // runs in close to linear time.
        merged.sort_by_key(|sequenced| sequenced.seq);
        read(merged)
    }
}

/// Moves the ring's events into `events`, at most one ring's worth so that busy writers cannot
/// keep the caller going.
fn pop_into<E>(ring: &Ring<Sequenced<E>>, events: &mut Vec<Sequenced<E>>) {
    for _ in 0..ring.capacity() {
        match ring.pop() {
            Some(event) => events.push(event),
            None => break,
        }
    }
}

/// The shard the current thread records into, out of `shards`.
///
/// Threads are numbered in the order they first record and use shard `number % shards`, so
/// that threads spread evenly and each keeps to one shard for its lifetime.
fn shard_of_current_thread(shards: usize) -> usize {
    crate::sync::thread_number() % shards
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn retained<E: Clone>(section: &Section<E>) -> Vec<E> {
        section.drain_and_read(|events| events.iter().map(|e| e.event.clone()).collect())
    }

    #[test]
    fn a_section_keeps_events_up_to_its_limit_and_counts_the_rest() {
        let section = Section::new(3, 4);
        let offers: Vec<Offer> = (0..5).map(|i| section.offer(|| i)).collect();
        assert_eq!(offers.iter().filter(|o| **o == Offer::Kept).count(), 3);
        assert_eq!(retained(&section), vec![0, 1, 2]);
        assert_eq!(section.dropped(), 2);
        assert!(section.is_full());
    }

    #[test]
    fn a_zero_limit_section_retains_nothing_and_never_allocates_a_ring() {
        let section = Section::<u32>::new(0, 2);
        assert_eq!(section.offer(|| 1), Offer::Dropped);
        assert!(section
            .shards
            .iter()
            .all(|shard| shard.ring.get().is_none()));
        assert_eq!(section.dropped(), 1);
    }

    #[test]
    fn spilling_past_a_full_ring_keeps_every_event_in_order() {
        let section = Section::new(usize::MAX, 1);
        let total = RING_CAPACITY * 3 + 7;
        for i in 0..total {
            assert_eq!(section.offer(|| i), Offer::Kept);
        }
        assert_eq!(retained(&section), (0..total).collect::<Vec<_>>());
    }

    #[test]
    fn draining_twice_sees_the_same_events() {
        let section = Section::new(10, 2);
        for i in 0..4 {
            let _ = section.offer(|| i);
        }
        let first = retained(&section);
        let second = retained(&section);
        assert_eq!(first, second);
        let _ = section.offer(|| 99);
        assert_eq!(retained(&section), vec![0, 1, 2, 3, 99]);
    }
}
