//! The limits-hit transition: the listener that runs once, on the first dropped event.
//!
//! # Protocol
//!
//! * `armed` is true while a listener is set; `fired` becomes true exactly once per run.
//! * Setting a listener stores it, then raises `armed` (release); clearing lowers `armed`.
//! * Every dropped event checks `armed` (acquire) and `fired` with plain loads, which keeps a
//!   saturated section cheap, and only then races on `fired` with a `swap`: the single winner
//!   reads the listener and runs it, outside any lock.
//!
//! Hence the listener runs at most once per run, never when nothing was dropped, and exactly
//! once when anything is dropped after it was set (drops that happened before it was set do
//! not consume the transition).

use crate::recorder::run_guarded;
use crate::sync::{lock, AtomicBool, Mutex, Ordering};

/// A callback run on the limits-hit transition.
type Listener = std::sync::Arc<dyn Fn() + Send + Sync>;

/// The once-per-run limits-hit transition.
pub(crate) struct LimitsHit {
    /// True while a listener is set.
    armed: AtomicBool,
    /// True once a listener ran (or began to run); never lowered.
    fired: AtomicBool,
    /// The listener; read only by the single winner of the transition.
    listener: Mutex<Option<Listener>>,
}

impl std::fmt::Debug for LimitsHit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimitsHit")
            .field("armed", &self.armed)
            .field("fired", &self.fired)
            .finish_non_exhaustive()
    }
}

impl LimitsHit {
    pub(crate) fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            fired: AtomicBool::new(false),
            listener: Mutex::new(None),
        }
    }

    /// Sets or clears the listener.
    pub(crate) fn set_listener(&self, listener: Option<Listener>) {
        let armed = listener.is_some();
        *lock(&self.listener) = listener;
        self.armed.store(armed, Ordering::Release);
    }

    /// Called after every dropped event. Runs the listener if this is the transition; returns
    /// a message when the listener panicked.
    #[inline]
    pub(crate) fn on_drop(&self) -> Option<String> {
        if !self.armed.load(Ordering::Acquire) || self.fired.load(Ordering::Relaxed) {
            return None;
        }
        self.fire()
    }

    /// Races for the transition and, if this thread wins, runs the listener.
    #[cold]
    fn fire(&self) -> Option<String> {
        if self.fired.swap(true, Ordering::AcqRel) {
            return None;
        }

        // The winner: run the listener outside the lock, so it may call back into the run.
        let listener = lock(&self.listener).clone();
        let listener = listener?;
        run_guarded(|| listener(), "the limits-hit listener")
    }

    /// Whether the listener ran (or began to run).
    #[cfg(any(test, loom))]
    #[allow(dead_code)]
    pub(crate) fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}
