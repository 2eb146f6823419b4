//! A lock-free, sharded recorder for `tailtriage` runs: a drop-in for `tailtriage-core` 0.2.
//!
//! A service wraps each request: it begins the request, times queue waits and stages, tracks
//! in-flight gauges, finishes the request with an outcome, and at the end writes one bounded
//! JSON artifact that the published `tailtriage-cli` and `tailtriage-analyzer` turn into a
//! triage report (queueing? executor pressure? blocking pool? a slow downstream stage?).
//!
//! The public API and the artifact are those of `tailtriage-core` 0.2.0, so this crate can
//! replace it under the published ecosystem with `[patch.crates-io]`. What differs is the
//! inside: recording takes no lock on the hot path and scales with threads.
//!
//! ```
//! use tailtriage_core::{RequestOptions, Tailtriage};
//!
//! # futures_executor::block_on(async {
//! let folder = tempfile::tempdir()?;
//! let tailtriage = Tailtriage::builder("checkout-service")
//!     .output(folder.path().join("tailtriage-run.json"))
//!     .build()?;
//!
//! let started = tailtriage
//!     .begin_request_with("/checkout", RequestOptions::new().request_id("req-1").kind("http"));
//! let request = started.handle.clone();
//! let permit = request.queue("db_pool").await_on(async { "permit" }).await;
//! let rows: Result<u32, std::io::Error> = request.stage("query").await_on(async { Ok(3) }).await;
//! {
//!     let _inflight = request.inflight("checkout_inflight");
//!     // ... the request's work ...
//! }
//! started.completion.finish_result(rows)?;
//!
//! tailtriage.shutdown()?;
//! # let _ = permit;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! # Implementation notes
//!
//! Each section of the run (requests, stages, queues, in-flight snapshots, runtime snapshots)
//! is a bounded store split into shards. A section starts with as many permits as its limit;
//! shards lease them in batches and a recording thread takes one from its own shard, then
//! pushes the event into the lock-free ring of that shard. Full rings spill into chunks of run
//! storage; `snapshot()` and `shutdown()` drain the rings into storage, order it by (instant,
//! thread, per-thread count) without holding its lock, and build the artifact's strings only
//! then (the JSON sink writes the artifact straight from the records). Once a section is
//! full, an event costs one shared load and one add on a per-shard tally: no clock read, no
//! allocation. In the source repository, the module docs of `src/section.rs`, `src/pending.rs`,
//! `src/gauge.rs` and `src/limits_hit.rs` state the invariants, and `loom-tests/` holds the
//! models that check them.
//!
//! # Cargo features
//!
//! * `tokio`: `runtime_sampler`, which records Tokio runtime metrics into the run.
//! * `tower`: `http_layer`, a tower layer that records every HTTP request (with axum's route
//!   templates when present).
//!
//! Where this crate goes beyond 0.2.0, it does so additively: [`Tailtriage::shutdown_to`],
//! [`Tailtriage::capture_limits`], [`LocalJsonSink::pretty`], and optional artifact fields
//! (`cancelled` on stage and queue events, `refused_pending_requests` and `refused_gauges` in
//! the truncation summary) that are absent while they hold their default.

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod artifact;
mod builder;
mod clock;
mod config;
mod gauge;
mod json;
mod limits_hit;
mod pending;
mod recorder;
mod records;
mod request;
mod run_view;
mod section;
mod sink;
mod sync;
mod timers;
mod writing;

pub use artifact::{
    EffectiveTokioSamplerConfig, InFlightSnapshot, QueueEvent, RequestEvent, Run, RunEndReason,
    RunMetadata, RuntimeSnapshot, StageEvent, TruncationSummary, UnfinishedRequestSample,
    UnfinishedRequests, SCHEMA_VERSION,
};
pub use builder::TailtriageBuilder;
pub use clock::{system_time_to_unix_ms, unix_time_ms};
pub use config::{
    BuildError, CaptureLimits, CaptureLimitsOverride, CaptureMode, EffectiveCoreConfig,
};
pub use gauge::InflightGuard;
pub use recorder::Tailtriage;
pub use request::{
    Outcome, OwnedRequestCompletion, OwnedRequestHandle, OwnedStartedRequest, RequestCompletion,
    RequestHandle, RequestOptions, StartedRequest,
};
pub use sink::{DiscardSink, LocalJsonSink, MemorySink, RunSink, SinkError};
pub use timers::{QueueTimer, StageTimer};

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod http_layer;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod runtime_sampler;

/// Why a runtime sampler could not be registered on a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeSamplerRegistrationError {
    /// A sampler is already registered on this run; a run has at most one.
    DuplicateStart,
}

impl std::fmt::Display for RuntimeSamplerRegistrationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::DuplicateStart => {
                f.write_str("a runtime sampler is already registered on this run")
            }
        }
    }
}

impl std::error::Error for RuntimeSamplerRegistrationError {}

/// The gauge table on its own, for the loom models (see `loom-tests/`); loom builds only.
#[cfg(loom)]
#[doc(hidden)]
pub use gauge::model as __loom_gauges;

/// Hooks for integration crates; not a stable API.
#[doc(hidden)]
pub mod __internal {
    use crate::{EffectiveTokioSamplerConfig, RuntimeSamplerRegistrationError, Tailtriage};

    /// Registers a runtime sampler's configuration on a run; the first call wins.
    ///
    /// # Errors
    ///
    /// [`RuntimeSamplerRegistrationError::DuplicateStart`] when a sampler is already
    /// registered; the metadata is left unchanged.
    pub fn register_tokio_runtime_sampler(
        tailtriage: &Tailtriage,
        config: EffectiveTokioSamplerConfig,
    ) -> Result<(), RuntimeSamplerRegistrationError> {
        tailtriage.register_tokio_runtime_sampler(config)
    }
}
