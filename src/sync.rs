//! The one place that chooses between real and model-checked primitives.
//!
//! Every other module takes its atomics, `Arc`, `Mutex`, rings and concurrent maps from here, so
//! the recording protocol (reservation, tally, limits-hit transition, drain, gauge counts, finish
//! exactly once) compiles unchanged against [loom] when the crate is built with
//! `RUSTFLAGS="--cfg loom"`.
//!
//! Two dependencies cannot run under loom: crossbeam's `ArrayQueue` and `DashMap`. Under loom they
//! are replaced by small stand-ins with the same contract, built on loom's `Mutex`:
//!
//! * [`Ring`]: a bounded multi-producer multi-consumer FIFO. `push` hands the value back when the
//!   ring is full; `pop` returns `None` when it is empty. Both are linearizable.
//! * [`ConcurrentMap`]: a map whose closures run while the entry's shard is locked (shared
//!   for reads, exclusive for writes), so that a reader of an entry excludes a writer that
//!   removes it but not another reader.
//! * [`LazyRing`]: a ring allocated on first use (a `OnceLock` in normal builds; eager under loom,
//!   where allocation is not what is being checked).
//!
//! The loom models therefore check *our* protocol around these structures, while the stress
//! tests in `tests/` exercise the real crossbeam and dashmap types.
//!
//! [loom]: https://docs.rs/loom

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    Arc, Mutex, MutexGuard,
};

/// Lets another thread run; used only by the rare waits of a drain, never while recording.
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// The number of the calling thread: threads are numbered 0, 1, 2, … in the order they first
/// ask, and keep their number for life. Sections pick a thread's shard from it.
///
/// Under loom the numbering restarts with every execution and follows loom's threads (which
/// share one OS thread), so a model's threads really record into different shards and every
/// execution of a model numbers its threads the same way for the same schedule.
pub(crate) fn thread_number() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize as StdAtomicUsize, Ordering as StdOrdering};

    // Numbering is not part of the protocol (any shard choice is correct), so it uses std's
    // atomics even under loom: the models need no extra interleavings for it.
    #[cfg(not(loom))]
    static NEXT_THREAD: StdAtomicUsize = StdAtomicUsize::new(0);
    #[cfg(loom)]
    loom::lazy_static! {
        static ref NEXT_THREAD: StdAtomicUsize = StdAtomicUsize::new(0);
    }
    #[cfg(not(loom))]
    thread_local! {
        static THREAD_NUMBER: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    #[cfg(loom)]
    loom::thread_local! {
        static THREAD_NUMBER: Cell<usize> = Cell::new(usize::MAX);
    }

    THREAD_NUMBER.with(|number| {
        if number.get() == usize::MAX {
            number.set(NEXT_THREAD.fetch_add(1, StdOrdering::Relaxed));
        }
        number.get()
    })
}

/// A key that orders the calling thread's events: the thread's number in the high 24 bits and
/// the count of the thread's earlier calls in the low 40, so keys are unique across threads
/// and increase within one.
pub(crate) fn thread_sequence() -> u64 {
    use std::cell::Cell;

    #[cfg(not(loom))]
    thread_local! {
        static CALLS: Cell<u64> = const { Cell::new(0) };
    }
    #[cfg(loom)]
    loom::thread_local! {
        static CALLS: Cell<u64> = Cell::new(0);
    }

    let calls = CALLS.with(|calls| {
        let current = calls.get();
        calls.set(current.wrapping_add(1));
        current
    });
    ((thread_number() as u64) << 40) | (calls & ((1 << 40) - 1))
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it.
///
/// Every critical section in the crate leaves its data consistent at each step, so a panic
/// elsewhere (a user sink, a listener) never makes the data behind the lock unusable.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(not(loom))]
mod real {
    use std::borrow::Borrow;
    use std::hash::{BuildHasher, Hash};
    use std::sync::OnceLock;

    use crossbeam_queue::ArrayQueue;
    use dashmap::DashMap;

    /// A bounded lock-free MPMC ring (crossbeam's `ArrayQueue`).
    #[derive(Debug)]
    pub(crate) struct Ring<T>(ArrayQueue<T>);

    impl<T> Ring<T> {
        /// Creates a ring holding at most `capacity` values (`capacity` must be non-zero).
        pub(crate) fn new(capacity: usize) -> Self {
            Self(ArrayQueue::new(capacity))
        }

        /// Appends a value, or hands it back when the ring is full.
        pub(crate) fn push(&self, value: T) -> Result<(), T> {
            self.0.push(value)
        }

        /// Removes the oldest value.
        pub(crate) fn pop(&self) -> Option<T> {
            self.0.pop()
        }

        /// The most values the ring holds at once.
        pub(crate) fn capacity(&self) -> usize {
            self.0.capacity()
        }
    }

    /// A ring allocated by the first thread that records into it.
    #[derive(Debug)]
    pub(crate) struct LazyRing<T> {
        capacity: usize,
        ring: OnceLock<Ring<T>>,
    }

    impl<T> LazyRing<T> {
        /// Describes a ring of `capacity` values without allocating it.
        pub(crate) const fn new(capacity: usize) -> Self {
            Self {
                capacity,
                ring: OnceLock::new(),
            }
        }

        /// The ring, allocating it on first use.
        pub(crate) fn get_or_alloc(&self) -> &Ring<T> {
            self.ring.get_or_init(|| Ring::new(self.capacity))
        }

        /// The ring if anything ever allocated it.
        pub(crate) fn get(&self) -> Option<&Ring<T>> {
            self.ring.get()
        }
    }

    /// A sharded concurrent hash map (`DashMap`), hashing with foldhash: keys are request
    /// numbers and gauge names, for which `SipHash`'s cost is not worth paying on every event.
    /// foldhash is seeded per map, so gauge names chosen by clients cannot aim at one shard.
    #[derive(Debug)]
    pub(crate) struct ConcurrentMap<
        K: Eq + Hash,
        V,
        S: BuildHasher + Clone = foldhash::fast::RandomState,
    >(DashMap<K, V, S>);

    impl<K: Eq + Hash, V> ConcurrentMap<K, V> {
        /// An empty map; allocates only its shard table.
        pub(crate) fn new() -> Self {
            Self(DashMap::with_hasher(foldhash::fast::RandomState::default()))
        }
    }

    impl<K: Eq + Hash, V, S: BuildHasher + Clone> ConcurrentMap<K, V, S> {
        /// An empty map of `shards` shards (a power of two) hashing with `hasher`, for keys
        /// whose hasher chooses the shard on purpose.
        pub(crate) fn with_hasher_and_shards(hasher: S, shards: usize) -> Self {
            Self(DashMap::with_hasher_and_shard_amount(hasher, shards))
        }

        /// Inserts or replaces an entry.
        pub(crate) fn insert(&self, key: K, value: V) {
            self.0.insert(key, value);
        }

        /// Removes an entry and returns its value.
        pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.remove(key).map(|(_, value)| value)
        }

        /// Runs `read` on the entry while its shard is read-locked.
        pub(crate) fn read<Q, R>(&self, key: &Q, read: impl FnOnce(&V) -> R) -> Option<R>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            self.0.get(key).map(|entry| read(entry.value()))
        }

        /// Runs `update` on the entry for `key`, inserting `make()` first when it is absent,
        /// while the entry's shard is write-locked.
        pub(crate) fn upsert<R>(
            &self,
            key: K,
            make: impl FnOnce() -> V,
            update: impl FnOnce(&V) -> R,
        ) -> R {
            let entry = self.0.entry(key).or_insert_with(make);
            update(entry.value())
        }

        /// Keeps only the entries for which `keep` returns true.
        pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
            self.0.retain(|key, value| keep(key, value));
        }

        /// Visits every entry; entries inserted or removed during the visit may or may not be
        /// seen.
        pub(crate) fn for_each(&self, mut visit: impl FnMut(&K, &V)) {
            for entry in &self.0 {
                visit(entry.key(), entry.value());
            }
        }
    }
}

#[cfg(loom)]
mod model {
    use std::borrow::Borrow;
    use std::collections::VecDeque;
    use std::hash::Hash;
    use std::sync::PoisonError;

    use loom::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

    use super::{lock, Mutex};

    /// Model-checkable stand-in for crossbeam's `ArrayQueue`: same contract, one loom mutex.
    #[derive(Debug)]
    pub(crate) struct Ring<T> {
        capacity: usize,
        values: Mutex<VecDeque<T>>,
    }

    impl<T> Ring<T> {
        pub(crate) fn new(capacity: usize) -> Self {
            assert!(capacity > 0, "a ring holds at least one value");
            Self {
                capacity,
                values: Mutex::new(VecDeque::new()),
            }
        }

        pub(crate) fn push(&self, value: T) -> Result<(), T> {
            let mut values = lock(&self.values);
            if values.len() == self.capacity {
                return Err(value);
            }
            values.push_back(value);
            Ok(())
        }

        pub(crate) fn pop(&self) -> Option<T> {
            lock(&self.values).pop_front()
        }

        pub(crate) fn capacity(&self) -> usize {
            self.capacity
        }
    }

    /// Under loom the ring is allocated eagerly: allocation is not part of the protocol.
    #[derive(Debug)]
    pub(crate) struct LazyRing<T>(Ring<T>);

    impl<T> LazyRing<T> {
        pub(crate) fn new(capacity: usize) -> Self {
            Self(Ring::new(capacity))
        }

        pub(crate) fn get_or_alloc(&self) -> &Ring<T> {
            &self.0
        }

        #[allow(
            clippy::unnecessary_wraps,
            reason = "the same signature as the real ring"
        )]
        pub(crate) fn get(&self) -> Option<&Ring<T>> {
            Some(&self.0)
        }
    }

    /// Model-checkable stand-in for `DashMap`: one shard behind one loom `RwLock`.
    ///
    /// Like a `DashMap` shard, `read` takes the lock shared, so that two readers of an entry
    /// (two guards incrementing one gauge through the map) really run at once in a model;
    /// everything else takes it exclusively.
    ///
    /// Entries are kept in insertion order rather than hashed, so that visiting them (which
    /// touches loom objects, for example when cloning a loom `Arc`) happens in the same order
    /// in every execution of a model; loom requires each execution to be deterministic.
    #[derive(Debug)]
    pub(crate) struct ConcurrentMap<K: Eq + Hash, V, S = ()>(
        RwLock<Vec<(K, V)>>,
        std::marker::PhantomData<fn() -> S>,
    );

    /// The entries, shared.
    fn shared<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
        lock.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The entries, exclusively.
    fn exclusive<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
        lock.write().unwrap_or_else(PoisonError::into_inner)
    }

    impl<K: Eq + Hash, V> ConcurrentMap<K, V> {
        pub(crate) fn new() -> Self {
            Self(RwLock::new(Vec::new()), std::marker::PhantomData)
        }
    }

    impl<K: Eq + Hash, V, S> ConcurrentMap<K, V, S> {
        /// The hasher and the shards are not part of the protocol; the stand-in has one shard.
        pub(crate) fn with_hasher_and_shards(_hasher: S, _shards: usize) -> Self {
            Self(RwLock::new(Vec::new()), std::marker::PhantomData)
        }

        pub(crate) fn insert(&self, key: K, value: V) {
            let mut entries = exclusive(&self.0);
            match entries.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => entries.push((key, value)),
            }
        }

        pub(crate) fn remove<Q>(&self, key: &Q) -> Option<V>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            let mut entries = exclusive(&self.0);
            let index = entries.iter().position(|(k, _)| k.borrow() == key)?;
            Some(entries.remove(index).1)
        }

        pub(crate) fn read<Q, R>(&self, key: &Q, read: impl FnOnce(&V) -> R) -> Option<R>
        where
            K: Borrow<Q>,
            Q: Hash + Eq + ?Sized,
        {
            let entries = shared(&self.0);
            entries
                .iter()
                .find(|(k, _)| k.borrow() == key)
                .map(|(_, value)| read(value))
        }

        pub(crate) fn upsert<R>(
            &self,
            key: K,
            make: impl FnOnce() -> V,
            update: impl FnOnce(&V) -> R,
        ) -> R {
            let mut entries = exclusive(&self.0);
            let index = entries
                .iter()
                .position(|(k, _)| *k == key)
                .unwrap_or_else(|| {
                    entries.push((key, make()));
                    entries.len() - 1
                });
            update(&entries[index].1)
        }

        pub(crate) fn retain(&self, mut keep: impl FnMut(&K, &V) -> bool) {
            exclusive(&self.0).retain(|(key, value)| keep(key, value));
        }

        pub(crate) fn for_each(&self, mut visit: impl FnMut(&K, &V)) {
            for (key, value) in shared(&self.0).iter() {
                visit(key, value);
            }
        }
    }
}

#[cfg(loom)]
pub(crate) use model::{ConcurrentMap, LazyRing, Ring};
#[cfg(not(loom))]
pub(crate) use real::{ConcurrentMap, LazyRing, Ring};
