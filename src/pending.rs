//! Pending requests: begun and not yet finished, and the protocol that lets `shutdown()` count
//! them exactly while requests finish concurrently.
//!
//! # The registry
//!
//! Every tracked request sits in a concurrent map (`DashMap`, keyed by the request's
//! process-unique number) from `begin` until `finish`. The map is the one lock the recording
//! path takes: a shard write lock to insert at begin and to remove at finish. Its hasher
//! ([`ByNumberBlock`]) puts requests whose numbers one thread drew into one shard, so that
//! threads recording at once mostly lock different shards and do not pass a shard's lock and
//! table lines back and forth on every request. The number of
//! pending requests is bounded by the request limit (exactly with one recording thread, within
//! one and a half times it with several, see [`PendingRequests::track`]): a request over the
//! bound is refused at begin (counted as dropped and as refused), so leaked completions cannot
//! grow memory without bound. A request turned away at begin (the bound reached, or the request
//! section full) is not in the map but is counted, per shard, until it finishes: shutdown
//! reports it as unfinished, and strict lifecycle refuses to write while it runs. The counts of tracked requests are sharded like the sections, so
//! that threads do not share a counter line on every request.
//!
//! # Finishing against a concurrent shutdown
//!
//! Each request carries a [`Lifecycle`] word: a *finishing* bit, a *finished* bit and the epoch
//! of the last shutdown that counted the request as unfinished.
//!
//! * `finish` sets *finishing* with one `fetch_or` and reads the epoch in the same step, offers
//!   the request event tagged with that epoch, sets *finished*, and leaves the registry.
//! * `shutdown` (epoch `e`) visits every pending request. If *finishing* is set it waits for
//!   *finished* (a few instructions away), so the event is offered before the drain: the
//!   request is completed in this run. Otherwise it writes `e` into the word with a
//!   compare-exchange: the request is unfinished in this run, and if it finishes later its
//!   event carries tag `e`.
//! * The run written by shutdown `e` keeps request events whose tag is below `e`.
//!
//! Both sides modify one atomic word, so the modification order decides: either the finisher's
//! `fetch_or` came first (the request is completed and not counted) or the shutdown's
//! compare-exchange did (the request is counted and its event, whenever it comes, is left for
//! the next shutdown). A request finished while a shutdown runs is therefore in exactly one of
//! the run's requests and its unfinished count.

use crossbeam_utils::CachePadded;

use std::hash::{BuildHasher, Hasher};

use crate::request::{RequestState, REQUEST_NUMBER_BLOCK_BITS};
use crate::sync::Arc;
use crate::sync::{lock, yield_now, AtomicU64, AtomicUsize, ConcurrentMap, Mutex, Ordering};
use crate::UnfinishedRequestSample;

/// Set once `finish` has begun; never cleared.
const FINISHING: u64 = 1 << 63;
/// Set once the finished request's event has been offered; never cleared.
const FINISHED: u64 = 1 << 62;
/// The epoch of the last shutdown that counted the request unfinished (0: none did).
const EPOCH_MASK: u64 = FINISHED - 1;

/// How many unfinished requests a shutdown names in the artifact.
pub(crate) const UNFINISHED_SAMPLE_SIZE: usize = 5;

/// The lifecycle word of one request; see the module docs.
#[derive(Debug)]
pub(crate) struct Lifecycle(AtomicU64);

impl Lifecycle {
    pub(crate) fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    /// Marks the request as finishing; returns the epoch its event must carry.
    pub(crate) fn begin_finish(&self) -> u64 {
        self.0.fetch_or(FINISHING, Ordering::AcqRel) & EPOCH_MASK
    }

    /// Marks the finished request's event as offered.
    pub(crate) fn end_finish(&self) {
        self.0.fetch_or(FINISHED, Ordering::Release);
    }

    /// Counts the request unfinished for shutdown `epoch`, unless it is finishing, in which
    /// case waits for its event to be offered. Returns true when the request is unfinished.
    fn claim_unfinished(&self, epoch: u64) -> bool {
        let mut word = self.0.load(Ordering::Acquire);
        loop {
            if word & FINISHING != 0 {
                // The finisher is between its two steps; its event will be in the drain.
                while self.0.load(Ordering::Acquire) & FINISHED == 0 {
                    yield_now();
                }
                return false;
            }
            match self
                .0
                .compare_exchange_weak(word, epoch, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return true,
                Err(current) => word = current,
            }
        }
    }
}

/// What a shutdown found pending.
#[derive(Debug, Default)]
pub(crate) struct Unfinished {
    /// How many requests were pending.
    pub(crate) count: u64,
    /// Up to [`UNFINISHED_SAMPLE_SIZE`] of them.
    pub(crate) sample: Vec<UnfinishedRequestSample>,
}

/// Shards of the registry map: a power of two, enough that the threads' current number
/// blocks rarely share one.
const MAP_SHARDS: usize = 64;

/// Hashes request numbers for the registry map: well mixed, except for the bits `DashMap`
/// picks the shard from (the `log2(MAP_SHARDS)` bits below the top seven, which the table
/// inside a shard uses as tags), which hold the number's block. Numbers of one block were
/// drawn by one thread, so a thread's requests share a shard and two threads' current blocks
/// differ. (On 32-bit targets `DashMap` shards by the low bits; the map works the same, only
/// without the affinity.)
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ByNumberBlock;

impl BuildHasher for ByNumberBlock {
    type Hasher = NumberHasher;

    fn build_hasher(&self) -> NumberHasher {
        NumberHasher(0)
    }
}

/// The hasher [`ByNumberBlock`] builds.
#[derive(Debug)]
pub(crate) struct NumberHasher(u64);

impl Hasher for NumberHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; kept total for any other input.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, number: u64) {
        self.0 = number;
    }

    fn finish(&self) -> u64 {
        const SHARD_BITS: u32 = MAP_SHARDS.trailing_zeros();
        const SHARD_SHIFT: u32 = u64::BITS - 7 - SHARD_BITS;
        const SHARD_MASK: u64 = ((1 << SHARD_BITS) - 1) << SHARD_SHIFT;
        let number = self.0;
        // A multiply-xorshift mix (the finalizer of SplitMix64) for the table's bits.
        let mut mixed = (number ^ (number >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        mixed ^= mixed >> 31;
        let block = number >> REQUEST_NUMBER_BLOCK_BITS;
        (mixed & !SHARD_MASK) | ((block << SHARD_SHIFT) & SHARD_MASK)
    }
}

/// The registry of pending requests.
#[derive(Debug)]
pub(crate) struct PendingRequests {
    /// Tracked requests by number.
    requests: ConcurrentMap<u64, Arc<RequestState>, ByNumberBlock>,
    /// How many requests each shard tracks, by the thread that began them; a request is
    /// uncounted on the shard that counted it, wherever it finishes.
    tracked: Box<[CachePadded<AtomicUsize>]>,
    /// Requests turned away at begin (the request section was full, or the bound reached) and
    /// not finished yet, sharded the same way: not in the registry, but still unfinished, so
    /// shutdown counts them (and strict lifecycle refuses) as 0.2.0 does.
    untracked: Box<[CachePadded<AtomicU64>]>,
    /// Taken by the admissions that must sum the shards (near the bound), so that requests
    /// racing for the last places are decided one at a time and none is refused for a place
    /// another racer then gives back.
    near_bound: Mutex<()>,
    /// The most requests tracked at once: the run's request limit.
    bound: usize,
    /// A shard counting fewer than this admits on its own count: `bound / (2 × shards)`.
    comfortable: usize,
    /// The number of count shards (a power of two) minus one: the shard of a thread number is
    /// the number masked with it.
    shard_mask: usize,
}

impl PendingRequests {
    /// A registry of at most `bound` requests, counted on `shards` shards (rounded up to a
    /// power of two).
    pub(crate) fn new(bound: usize, shards: usize) -> Self {
        let shards = shards.max(1).next_power_of_two();
        Self {
            requests: ConcurrentMap::with_hasher_and_shards(ByNumberBlock, MAP_SHARDS),
            tracked: (0..shards)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
            untracked: (0..shards)
                .map(|_| CachePadded::new(AtomicU64::new(0)))
                .collect(),
            near_bound: Mutex::new(()),
            bound,
            comfortable: bound / (2 * shards),
            shard_mask: shards - 1,
        }
    }

    /// The counter of the shard that counts `request`.
    fn counter(&self, request: &RequestState) -> &AtomicUsize {
        &self.tracked[request.thread & self.shard_mask]
    }

    /// Tracks a request until it finishes; false when the bound is reached.
    ///
    /// While its own shard counts fewer than `bound / (2 × shards)`, a request is admitted on
    /// that count alone; past that, the shards are summed and the request is admitted only if
    /// the total stays within the bound. Shards admitting on their own count add less than
    /// half the bound in all, so the number tracked stays below one and a half times the
    /// bound (plus racing threads): a bound on memory without a shared counter written by
    /// every request. With one recording thread the bound is exact.
    ///
    /// Summing admissions take a lock, which recording far from the bound never touches.
    /// Without it, two requests racing for the last place could each count the other and
    /// both be refused. With it, the later decider sees the earlier one's increment or its
    /// withdrawal (each is made before the earlier decider releases the lock), so of
    /// racers for `n` places, `n` are admitted.
    pub(crate) fn track(&self, request: &Arc<RequestState>) -> bool {
        let counter = self.counter(request);
        let own = counter.fetch_add(1, Ordering::Relaxed);
        let comfortably_below = own < self.comfortable;
        if !comfortably_below {
            let _one_at_a_time = lock(&self.near_bound);
            let total = self
                .tracked
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .fold(0, usize::saturating_add);
            // `total` includes this request's own increment.
            if total > self.bound {
                counter.fetch_sub(1, Ordering::Relaxed);
                return false;
            }
        }
        self.requests.insert(request.number, Arc::clone(request));
        true
    }

    /// Counts a request that was turned away at begin on thread number `thread` as
    /// unfinished until it finishes.
    pub(crate) fn count_untracked(&self, thread: usize) {
        self.untracked[thread & self.shard_mask].fetch_add(1, Ordering::Relaxed);
    }

    /// Uncounts a turned-away request that finished; `thread` is the number it was counted
    /// with.
    pub(crate) fn finish_untracked(&self, thread: usize) {
        self.untracked[thread & self.shard_mask].fetch_sub(1, Ordering::Relaxed);
    }

    /// Stops tracking a finished request.
    pub(crate) fn untrack(&self, request: &RequestState) {
        if self.requests.remove(&request.number).is_some() {
            self.counter(request).fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Counts the pending requests for shutdown `epoch` (see the module docs).
    pub(crate) fn claim_unfinished(&self, epoch: u64) -> Unfinished {
        // Collect first so that no map lock is held while waiting for a finisher.
        let mut pending = Vec::new();
        self.requests
            .for_each(|_, request| pending.push(Arc::clone(request)));
        pending.sort_by_key(|request| request.number);

        // Turned-away requests count too, though only tracked ones can be named in the sample.
        // A request is uncounted on the shard that counted it, after it was counted, so no
        // shard's count ever reads below zero.
        let mut unfinished = Unfinished {
            count: self
                .untracked
                .iter()
                .map(|count| count.load(Ordering::Relaxed))
                .fold(0, u64::saturating_add),
            sample: Vec::new(),
        };
        for request in pending {
            if request.lifecycle.claim_unfinished(epoch) {
                unfinished.count += 1;
                if unfinished.sample.len() < UNFINISHED_SAMPLE_SIZE {
                    unfinished.sample.push(UnfinishedRequestSample {
                        request_id: request.id().to_owned(),
                        route: request.route.to_string(),
                    });
                }
            }
        }
        unfinished
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// The shard `DashMap` picks for `number` in a map of [`MAP_SHARDS`] shards.
    fn shard_of(number: u64) -> u64 {
        let hash = ByNumberBlock.hash_one(number);
        (hash << 7) >> (u64::BITS - MAP_SHARDS.trailing_zeros())
    }

    #[test]
    fn numbers_drawn_from_one_block_share_a_shard_and_neighbouring_blocks_do_not() {
        let block = 1_u64 << REQUEST_NUMBER_BLOCK_BITS;
        for start in [0, 7 * block, 1_000 * block] {
            let shard = shard_of(start);
            assert!(
                (start..start + block).all(|number| shard_of(number) == shard),
                "every number of the block starting at {start} goes to shard {shard}"
            );
            assert_ne!(
                shard_of(start + block),
                shard,
                "the next block goes to another shard"
            );
        }
    }

    #[test]
    fn hashes_of_one_block_differ_in_the_bits_the_table_uses() {
        let block = 1_u64 << REQUEST_NUMBER_BLOCK_BITS;
        let hashes: Vec<u64> = (0..block).map(|n| ByNumberBlock.hash_one(n)).collect();
        // Bucket index: the low bits; tag: the top seven.
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xFFFF).collect();
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(low.len() > 1_000, "low bits spread: {} distinct", low.len());
        assert_eq!(tags.len(), 128, "every tag value occurs");
    }
}
