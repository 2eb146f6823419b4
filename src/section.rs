//! A section: the bounded, sharded store of one kind of event.
//!
//! A run has five sections (requests, stages, queues, in-flight snapshots, runtime snapshots).
//! Each keeps at most its limit of events and counts every event it turns away.
//!
//! # Recording
//!
//! ```text
//!                     permits: limit ──lease a batch──▶ credits of the writer's shard
//!  writer ──take a credit of its own shard──▶ granted ──▶ ring of the writer's shard
//!     │            │ none left anywhere                          │ full: spill
//!     │            └──▶ refused: +1 on the shard's drop tally    ▼
//!     │                                          open chunk ──sealed──▶ sealed chunks
//!  snapshot / shutdown ──drain rings, seal, share chunks, order references by key──▶ the run
//! ```
//!
//! 1. **Reserve.** The section starts with `limit` permits. A shard leases them in batches
//!    from the shared pool (`unleased`) and its writers take one credit each from the shard,
//!    so the shared pool is touched once per batch, not once per event, and threads on
//!    different shards never write the same cache line. When the pool is empty a writer takes
//!    a credit left on another shard; only when no permit is left anywhere is it refused, and
//!    from then on the section is *exhausted*: every later event costs one shared load and one
//!    add on the shard's tally (no clock read, no allocation).
//! 2. **Stage.** A granted event goes into the lock-free ring (crossbeam's `ArrayQueue`) of the
//!    writer's shard. Rings are allocated by their first writer and never grow.
//! 3. **Spill.** When the ring is full the writer takes the storage lock and moves the ring's
//!    events, then its own, into the *open chunk*. This happens once per ring's worth of
//!    events, never per event. A chunk is allocated with room for many spills and never grows:
//!    when it lacks room for one more ring it is *sealed* and the next chunk is allocated, twice
//!    as large (up to 65 536 events, and never larger than what the limit leaves). So chunks
//!    are allocated a logarithmic number of times (plus one per drain), and spilling never
//!    copies earlier events the way a growing `Vec` would. A sealed chunk gives back the room
//!    it did not use.
//! 4. **Drain.** `snapshot()` and `shutdown()` take the storage lock, move every ring's events
//!    into the open chunk, seal it, and take shared handles to every sealed chunk, then
//!    release the lock. Sealed chunks are immutable, so the drain orders references to their
//!    events by order key and reads them with no lock held: writers spilling meanwhile are
//!    never kept waiting by a slow reader (a large artifact being written, say). Storage is
//!    never consumed: later drains see everything earlier ones did.
//!
//! # Order
//!
//! Each event carries an order key: the instant it was recorded (a monotonic counter reading),
//! then the recording thread's number and its own count of events. Keys are unique and, within
//! one thread, increasing, so drains list each thread's events in program order and concurrent
//! events in one consistent order, by time.
//!
//! # Invariants
//!
//! * Permits are conserved: each of the `limit` permits is at every moment unleased, in flight
//!   inside a lease (between leaving the pool and reaching a shard's credits), a shard's
//!   credit, or consumed by exactly one granted event.
//! * A writer is refused only after it saw the pool empty, then, with no lease in flight and
//!   none started meanwhile, every shard without credits: at that moment every permit is
//!   consumed. Hence retained = `min(attempts, limit)`; every refused attempt adds exactly one
//!   to a tally, so retained + dropped = attempts, for every interleaving.
//! * Every granted event reaches storage, through a ring or a spill. An event whose `offer`
//!   returned before a drain took the storage lock is in storage after that drain: it is
//!   either in a ring (the drain pops it) or already spilled.
//! * Memory is the rings a writer touched plus the retained events: a limit is a ceiling, never
//!   an allocation. A ring never holds more than the limit allows, and chunks reserve room for
//!   at most the limit plus one ring's worth of events.

use crossbeam_utils::CachePadded;

use crate::clock::Tick;
use crate::sync::{
    lock, thread_sequence, yield_now, AtomicBool, AtomicU64, AtomicUsize, LazyRing, Mutex,
    Ordering, Ring,
};

/// Permits a shard leases from the shared pool at once.
const LEASE: usize = if cfg!(loom) { 2 } else { 64 };

/// Events a shard's ring holds before its writer spills them into run storage.
///
/// Under loom a ring holds a single event, so that models with a handful of events reach the
/// spill path and its races with drains.
pub(crate) const RING_CAPACITY: usize = if cfg!(loom) { 1 } else { 256 };

/// An event with its order key; drains order events by it.
#[derive(Debug)]
pub(crate) struct Sequenced<E> {
    /// When the event was recorded, then the recording thread's number and event count.
    pub(crate) key: (Tick, u64),
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

/// One shard: its leased credits, a lazily allocated ring and its writers' drop tally.
#[derive(Debug)]
struct Shard<E> {
    /// Permits leased by this shard and not yet taken by a writer.
    credits: AtomicUsize,
    /// Granted events waiting for the next spill or drain.
    ring: LazyRing<Sequenced<E>>,
    /// Events refused by this shard's writers; the section's total is the sum over shards.
    dropped: AtomicU64,
}

/// A bounded, sharded, lock-free store of one kind of event.
#[derive(Debug)]
pub(crate) struct Section<E> {
    /// Permits no shard has leased yet; starts at `limit` and only decreases.
    unleased: CachePadded<AtomicUsize>,
    /// Leases begun and finished; a lease in flight holds permits that are neither in the pool
    /// nor in a shard's credits. Touched once per lease, never per event.
    leases: CachePadded<LeaseCounts>,
    /// Set once every permit is consumed (seen by the writer that took the last one, or by the
    /// first writer refused); never cleared.
    exhausted: CachePadded<AtomicBool>,
    /// Per-shard rings and tallies; a thread always records into the same shard. Their number
    /// is a power of two.
    shards: Box<[CachePadded<Shard<E>>]>,
    /// The number of shards minus one: a thread's shard is its number masked with it.
    shard_mask: usize,
    /// Events moved out of the rings.
    storage: Mutex<Storage<E>>,
}

/// How many leases began and how many finished.
#[derive(Debug)]
struct LeaseCounts {
    started: AtomicUsize,
    finished: AtomicUsize,
}

/// Events moved out of the rings: sealed chunks, shared with drains, and the open chunk that
/// spills append to.
#[derive(Debug)]
struct Storage<E> {
    /// Chunks sealed so far. A sealed chunk never changes, so drains share it.
    chunks: Vec<Chunk<E>>,
    /// The chunk spills append to; sealed when full or when a drain needs it.
    open: Vec<Sequenced<E>>,
    /// The capacity of the next chunk: doubles from one ring's worth up to [`MAX_CHUNK`], so
    /// chunks are allocated a logarithmic number of times, not once per spill.
    next_chunk: usize,
    /// Events in sealed chunks.
    sealed_events: usize,
    /// The section's limit: storage never holds more, so no chunk is made larger than what
    /// the limit leaves.
    limit: usize,
}

/// The most events one chunk holds.
const MAX_CHUNK: usize = 1 << 16;

impl<E> Storage<E> {
    /// Makes room in the open chunk for `events` more events, sealing it when it lacks room.
    fn reserve(&mut self, events: usize) {
        if self.open.capacity() - self.open.len() >= events {
            return;
        }
        self.seal();
        let left = self.limit.saturating_sub(self.sealed_events);
        let capacity = self.next_chunk.min(left).max(events);
        self.next_chunk = (self.next_chunk * 2).min(MAX_CHUNK);
        self.open = Vec::with_capacity(capacity);
    }

    /// Files the open chunk, if it holds anything, among the sealed ones, giving back the room
    /// it did not use (a drain seals a chunk that spills filled only partly; without this,
    /// frequent snapshots would each keep up to a whole chunk of unused room).
    fn seal(&mut self) {
        if !self.open.is_empty() {
            let mut chunk = std::mem::take(&mut self.open);
            chunk.shrink_to_fit();
            self.sealed_events += chunk.len();
            self.chunks.push(std::sync::Arc::new(chunk));
        }
    }
}

/// A sealed chunk of events; immutable once sealed.
type Chunk<E> = std::sync::Arc<Vec<Sequenced<E>>>;

/// What a drain saw: every chunk sealed up to it. Holds no lock.
#[derive(Debug)]
pub(crate) struct Drained<E> {
    chunks: Vec<Chunk<E>>,
}

impl<E> Drained<E> {
    /// References to the drained events, in order-key order.
    pub(crate) fn ordered(&self) -> Vec<&Sequenced<E>> {
        // Order references, not the events themselves: events stay where their chunk holds
        // them, and sorting moves 8 bytes per event. A spill holds one shard's events, which
        // are mostly in order already (they interleave only where threads share the shard),
        // and a stable sort merges such runs in close to linear time.
        let mut ordered: Vec<&Sequenced<E>> =
            self.chunks.iter().flat_map(|chunk| chunk.iter()).collect();
        ordered.sort_by_key(|sequenced| sequenced.key);
        ordered
    }
}

impl<E> Section<E> {
    /// A section retaining at most `limit` events, spread over `shards` shards (rounded up to
    /// a power of two). Allocates only the shard table.
    pub(crate) fn new(limit: usize, shards: usize) -> Self {
        let ring_capacity = limit.clamp(1, RING_CAPACITY);
        let shard_count = shards.max(1).next_power_of_two();
        let shards = (0..shard_count)
            .map(|_| {
                CachePadded::new(Shard {
                    credits: AtomicUsize::new(0),
                    ring: LazyRing::new(ring_capacity),
                    dropped: AtomicU64::new(0),
                })
            })
            .collect();
        Self {
            unleased: CachePadded::new(AtomicUsize::new(limit)),
            leases: CachePadded::new(LeaseCounts {
                started: AtomicUsize::new(0),
                finished: AtomicUsize::new(0),
            }),
            exhausted: CachePadded::new(AtomicBool::new(limit == 0)),
            shards,
            shard_mask: shard_count - 1,
            storage: Mutex::new(Storage {
                chunks: Vec::new(),
                open: Vec::new(),
                next_chunk: ring_capacity + 1,
                sealed_events: 0,
                limit,
            }),
        }
    }

    /// True once every permit is consumed: the section will never retain another event.
    /// Callers use it to skip the clock reads of an event that would be dropped anyway, and to
    /// turn requests away at begin; `offer` decides.
    pub(crate) fn is_full(&self) -> bool {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Offers an event recorded at `at`, built by `make`, which runs only if the event will be
    /// retained.
    pub(crate) fn offer(&self, at: Tick, make: impl FnOnce() -> E) -> Offer {
        let index = self.shard_of_current_thread();
        let shard = &self.shards[index];
        if !self.reserve(index) {
            return Self::refuse(shard);
        }

        // Stage in this thread's ring; a full ring is spilled into storage first.
        let ring = shard.ring.get_or_alloc();
        let sequenced = Sequenced {
            key: (at, thread_sequence()),
            event: make(),
        };
        if let Err(sequenced) = ring.push(sequenced) {
            // Pop under the lock, so that a drain never misses events that have left the ring
            // but not yet reached storage.
            let mut storage = lock(&self.storage);
            storage.reserve(ring.capacity() + 1);
            pop_into(ring, &mut storage.open);
            storage.open.push(sequenced);
        }
        Offer::Kept
    }

    /// Consumes one permit for a writer on shard `index`; false when none is left anywhere.
    fn reserve(&self, index: usize) -> bool {
        if self.exhausted.load(Ordering::Relaxed) {
            return false;
        }
        let shard = &self.shards[index];

        // The common case: a credit this shard leased earlier. Then a batch from the pool
        // (one permit kept, the rest left as the shard's credits). Then, with the pool empty for
        // good, a credit left on any shard.
        let granted = take_credit(&shard.credits)
            || self.lease(&shard.credits)
            || self.take_leftover_credit();

        // Whoever may have taken the last permit checks whether it was the last, so that the
        // section reads as full from then on, not only after its first refusal.
        if granted
            && self.unleased.load(Ordering::Relaxed) == 0
            && shard.credits.load(Ordering::Relaxed) == 0
        {
            self.mark_exhausted_if_empty();
        }
        granted
    }

    /// Marks the section exhausted if, with the pool empty, no lease is in flight, none starts
    /// meanwhile, and no shard holds a credit: then every permit is consumed.
    fn mark_exhausted_if_empty(&self) {
        // Finished first, then started: if they match, no lease was in flight at the second
        // read (finished never exceeds started).
        let finished = self.leases.finished.load(Ordering::SeqCst);
        let started = self.leases.started.load(Ordering::SeqCst);
        if started != finished
            || self
                .shards
                .iter()
                .any(|shard| shard.credits.load(Ordering::SeqCst) > 0)
        {
            return;
        }
        // Credits only grow inside a lease, and none began during the scan.
        if self.leases.started.load(Ordering::SeqCst) == started {
            self.exhausted.store(true, Ordering::Relaxed);
        }
    }

    /// Moves up to [`LEASE`] permits from the pool to `credits`, keeping one for the caller;
    /// false when the pool was empty.
    fn lease(&self, credits: &AtomicUsize) -> bool {
        self.leases.started.fetch_add(1, Ordering::SeqCst);
        let taken = self
            .unleased
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| {
                (left > 0).then(|| left - left.min(LEASE))
            })
            .map_or(0, |left| left.min(LEASE));
        if taken > 1 {
            credits.fetch_add(taken - 1, Ordering::SeqCst);
        }
        self.leases.finished.fetch_add(1, Ordering::SeqCst);
        taken > 0
    }

    /// With the pool empty: takes a credit from any shard, or, once no permit is left
    /// anywhere, marks the section exhausted and returns false.
    ///
    /// Known limitation: this path is not lock-free. A writer that finds the pool empty while
    /// another thread's lease is in flight yields until that lease lands; if the leasing
    /// thread is descheduled, refusing writers wait for it. It happens only at the moment the
    /// section runs out, once per run, and recording with permits left never waits.
    fn take_leftover_credit(&self) -> bool {
        loop {
            // Finished first, then started: if they match, no lease was in flight at the
            // second read (finished never exceeds started).
            let finished = self.leases.finished.load(Ordering::SeqCst);
            let started = self.leases.started.load(Ordering::SeqCst);

            if self.shards.iter().any(|shard| take_credit(&shard.credits)) {
                return true;
            }

            // Credits only grow inside a lease; none was in flight before the scan and none
            // began during it, so every shard really was out of credits: all permits are
            // consumed.
            if started == finished && self.leases.started.load(Ordering::SeqCst) == started {
                self.exhausted.store(true, Ordering::Relaxed);
                return false;
            }

            // A lease is depositing credits; let its thread finish if it was preempted.
            yield_now();
        }
    }

    /// Counts a refused event on the writer's shard.
    fn refuse(shard: &Shard<E>) -> Offer {
        shard.dropped.fetch_add(1, Ordering::Relaxed);
        Offer::Dropped
    }

    /// Counts an event turned away without being offered (the section is full, or a request
    /// could not be tracked), so that it appears in this section's drop tally.
    pub(crate) fn turn_away(&self) -> Offer {
        Self::refuse(&self.shards[self.shard_of_current_thread()])
    }

    /// The shard the current thread records into.
    ///
    /// Threads are numbered in the order they first record and use the shard of their number
    /// modulo the shard count (a mask, since the count is a power of two), so that threads
    /// spread evenly and each keeps to one shard for its lifetime.
    fn shard_of_current_thread(&self) -> usize {
        crate::sync::thread_number() & self.shard_mask
    }

    /// Events this section refused so far.
    pub(crate) fn dropped(&self) -> u64 {
        self.shards
            .iter()
            .map(|shard| shard.dropped.load(Ordering::Relaxed))
            .fold(0, u64::saturating_add)
    }

    /// Drains every ring into storage and returns every chunk stored so far. Nothing is
    /// consumed; the storage lock is held only while rings are emptied and handles taken.
    pub(crate) fn drain(&self) -> Drained<E> {
        let mut storage = lock(&self.storage);
        for shard in &*self.shards {
            if let Some(ring) = shard.ring.get() {
                // The open chunk is not shared yet, so it may grow here if it must.
                pop_into(ring, &mut storage.open);
            }
        }
        storage.seal();
        Drained {
            chunks: storage.chunks.clone(),
        }
    }
}

/// Takes one credit from `credits`; false when there is none.
fn take_credit(credits: &AtomicUsize) -> bool {
    // A plain load first: an empty shard is the common case when stealing.
    credits.load(Ordering::Relaxed) > 0
        && credits
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_ok()
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn retained<E: Clone>(section: &Section<E>) -> Vec<E> {
        section
            .drain()
            .ordered()
            .iter()
            .map(|e| e.event.clone())
            .collect()
    }

    #[test]
    fn a_section_keeps_events_up_to_its_limit_and_counts_the_rest() {
        let section = Section::new(3, 4);
        let offers: Vec<Offer> = (0..5)
            .map(|i| section.offer(Tick::default(), || i))
            .collect();
        assert_eq!(offers.iter().filter(|o| **o == Offer::Kept).count(), 3);
        assert_eq!(retained(&section), vec![0, 1, 2]);
        assert_eq!(section.dropped(), 2);
        assert!(section.is_full());
    }

    #[test]
    fn a_zero_limit_section_retains_nothing_and_never_allocates_a_ring() {
        let section = Section::<u32>::new(0, 2);
        assert_eq!(section.offer(Tick::default(), || 1), Offer::Dropped);
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
            assert_eq!(section.offer(Tick::default(), || i), Offer::Kept);
        }
        assert_eq!(retained(&section), (0..total).collect::<Vec<_>>());
    }

    #[test]
    fn draining_twice_sees_the_same_events() {
        let section = Section::new(10, 2);
        for i in 0..4 {
            let _ = section.offer(Tick::default(), || i);
        }
        let first = retained(&section);
        let second = retained(&section);
        assert_eq!(first, second);
        let _ = section.offer(Tick::default(), || 99);
        assert_eq!(retained(&section), vec![0, 1, 2, 3, 99]);
    }

    #[test]
    fn spills_fill_chunks_that_double_in_size_and_never_outgrow_the_limit() {
        let limit = 40 * RING_CAPACITY;
        let section = Section::new(limit, 1);
        for i in 0..limit {
            assert_eq!(section.offer(Tick::default(), || i), Offer::Kept);
        }
        let drained = section.drain();
        let sizes: Vec<usize> = drained.chunks.iter().map(|chunk| chunk.len()).collect();
        assert_eq!(
            sizes.iter().sum::<usize>(),
            limit,
            "every event is stored once"
        );
        assert!(
            sizes.len() <= 8,
            "a logarithmic number of chunks, not one per spill: {sizes:?}"
        );
        let reserved: usize = drained.chunks.iter().map(|chunk| chunk.capacity()).sum();
        assert!(
            reserved <= limit + RING_CAPACITY + 1,
            "no chunk reserves room the limit cannot fill: {reserved} for a limit of {limit}"
        );
        assert_eq!(retained(&section), (0..limit).collect::<Vec<_>>());
    }

    #[test]
    fn a_drain_seals_the_open_chunk_and_later_spills_start_a_new_one() {
        let section = Section::new(usize::MAX, 1);
        let first = RING_CAPACITY * 2 + 3;
        for i in 0..first {
            let _ = section.offer(Tick::default(), || i);
        }
        let before = section.drain();
        let total = first + RING_CAPACITY * 2;
        for i in first..total {
            let _ = section.offer(Tick::default(), || i);
        }
        let held: Vec<usize> = before.ordered().iter().map(|e| e.event).collect();
        assert_eq!(
            held,
            (0..first).collect::<Vec<_>>(),
            "what a drain returned does not change"
        );
        assert_eq!(retained(&section), (0..total).collect::<Vec<_>>());
    }

    #[test]
    fn frequent_drains_reserve_no_more_room_than_the_limit_allows() {
        let limit = 100_000;
        let section = Section::new(limit, 1);
        let mut offered = 0;
        while offered < limit {
            for _ in 0..=RING_CAPACITY {
                let _ = section.offer(Tick::default(), || offered);
                offered += 1;
            }
            drop(section.drain());
        }
        let drained = section.drain();
        let reserved: usize = drained.chunks.iter().map(|chunk| chunk.capacity()).sum();
        let open = lock(&section.storage).open.capacity();
        assert!(
            reserved + open <= limit + RING_CAPACITY + 1,
            "a drain keeps only the room its chunk used: {} reserved for a limit of {limit}",
            reserved + open
        );
    }
}
