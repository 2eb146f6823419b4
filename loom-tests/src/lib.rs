//! Loom models of the recorder's concurrency protocol.
//!
//! Every file in `tests/` is one model: a named scenario of two or three threads that drives
//! the public API of [`Tailtriage`](tailtriage_core::Tailtriage) and checks one property of the
//! protocol underneath (reservation and tally, the limits-hit transition, drains against
//! snapshot and shutdown, finishing against shutdown, gauge counts, sampler registration).
//!
//! The models only exist when the workspace is built with `RUSTFLAGS="--cfg loom"`: the
//! recorder then takes its atomics, mutexes and `Arc`s from loom, and its rings and concurrent
//! map from model-checkable stand-ins with the same contracts as crossbeam's `ArrayQueue` and
//! `DashMap`. Built normally this crate is empty. The README says how to run the models and
//! how to explore them deeper than CI does.

#[cfg(loom)]
mod harness;

#[cfg(loom)]
pub use harness::*;
