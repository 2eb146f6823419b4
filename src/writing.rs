//! The writing lock: shutdowns reach their sinks one at a time, in the order they drained.
//!
//! A shutdown holds this lock from before its drain until its sink returns, so the last
//! artifact written is the newest. It is always taken before the lifecycle lock, never while
//! holding it, so a sink that reads the run (a snapshot) cannot deadlock with a concurrent
//! shutdown.
//!
//! A shutdown started on the thread that already holds the lock (a sink's `write` that shuts
//! the run down, or records an event whose drop runs a limits-hit listener that does) would
//! wait for itself forever. The lock therefore remembers which thread holds it, and such a
//! shutdown fails at once with an error of kind [`io::ErrorKind::Deadlock`] instead.
//!
//! # Invariant
//!
//! `holder` is `0` or the number (plus one) of the thread holding the lock: only the holder
//! writes its own number, and it clears it before unlocking. A thread therefore reads its own
//! number there exactly when it holds the lock, whatever other threads do, so the check needs
//! no ordering beyond a thread seeing its own writes. (The field uses std's atomic even under
//! loom, like thread numbering: it is not part of any protocol between threads.)

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sync::{lock, thread_number, Mutex, MutexGuard};
use crate::SinkError;

/// The lock and the thread holding it.
#[derive(Debug)]
pub(crate) struct WritingLock {
    lock: Mutex<()>,
    /// `thread_number() + 1` of the holder, or 0.
    holder: AtomicUsize,
}

/// Proof that the calling thread holds the writing lock; releases it on drop.
pub(crate) struct Writing<'a> {
    holder: &'a AtomicUsize,
    _guard: MutexGuard<'a, ()>,
}

impl WritingLock {
    pub(crate) fn new() -> Self {
        Self {
            lock: Mutex::new(()),
            holder: AtomicUsize::new(0),
        }
    }

    /// Waits for the lock; fails at once if this thread already holds it.
    pub(crate) fn acquire(&self) -> Result<Writing<'_>, SinkError> {
        let me = thread_number().wrapping_add(1);
        if self.holder.load(Ordering::Relaxed) == me {
            return Err(SinkError::Io(io::Error::new(
                io::ErrorKind::Deadlock,
                "shutdown was called on a thread that is already shutting this run down (from \
                 inside a sink's write, or from a limits-hit listener that the write set off); \
                 it would wait for itself, so nothing was written",
            )));
        }
        let guard = lock(&self.lock);
        self.holder.store(me, Ordering::Relaxed);
        Ok(Writing {
            holder: &self.holder,
            _guard: guard,
        })
    }
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        // Before the guard field unlocks: the next holder never sees this thread's number.
        self.holder.store(0, Ordering::Relaxed);
    }
}
