//! The recorder: one run's sections, pending requests, gauges and lifecycle.
//!
//! Recording touches only the lock-free parts: the five [`Section`]s, the pending-request map
//! (one shard lock per begin and finish) and the gauge cells. The `lifecycle` mutex guards the
//! run's metadata and serializes the drains of `snapshot()` and `shutdown()` (so metadata and
//! events are of one moment). A shutdown takes the `writing` lock first and holds it through
//! its drain and its sink's write, but writes after releasing the lifecycle lock: snapshots are
//! never kept waiting by a slow sink, and shutdowns reach their sinks one at a time, in the
//! order they drained. The lock order is writing, then lifecycle. The recording path takes
//! the lifecycle lock only in the rare events that change metadata (a listener that
//! panicked), and never the writing lock.

use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::clock::{RunClock, Tick};
use crate::gauge::{GaugeHandle, Gauges};
use crate::limits_hit::LimitsHit;
use crate::pending::PendingRequests;
use crate::records::{InflightRecord, QueueRecord, RequestRecord, StageRecord};
use crate::request::{OwnedStartedRequest, RequestState, StartedRequest};
use crate::run_view::DrainedRun;
use crate::section::{Offer, Section};
use crate::sink::Destination;
use crate::sync::{lock, Arc, Mutex};
use crate::writing::WritingLock;
use crate::{
    BuildError, CaptureLimits, CaptureMode, EffectiveCoreConfig, EffectiveTokioSamplerConfig,
    Outcome, RequestOptions, Run, RunEndReason, RunMetadata, RunSink, RuntimeSnapshot, SinkError,
    TruncationSummary, UnfinishedRequests,
};

/// Records one run of a service: requests, queue waits, stages, in-flight gauges and runtime
/// snapshots, each bounded by its limit, and writes the run to its sink at shutdown.
///
/// Build it with [`Tailtriage::builder`]. It is `Send + Sync`: share it by reference or in an
/// `Arc` (for [`begin_request_owned`](Tailtriage::begin_request_owned)).
///
/// ```
/// use tailtriage_core::{MemorySink, RequestOptions, Tailtriage};
///
/// # futures_executor::block_on(async {
/// let sink = MemorySink::new();
/// let tailtriage = Tailtriage::builder("checkout").sink(sink.clone()).build()?;
///
/// let started = tailtriage
///     .begin_request_with("/checkout", RequestOptions::new().request_id("req-1").kind("http"));
/// let request = started.handle.clone();
/// request.queue("db_pool").await_on(async {}).await;
/// let _rows = request.stage("query").await_value(async { 3 }).await;
/// started.completion.finish_ok();
///
/// tailtriage.shutdown()?;
/// let run = sink.last_run().expect("shutdown wrote the run");
/// assert_eq!(run.requests[0].request_id, "req-1");
/// assert_eq!(run.stages[0].stage, "query");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct Tailtriage {
    clock: RunClock,
    config: EffectiveCoreConfig,
    sink: Destination,
    requests: Section<RequestRecord>,
    stages: Section<StageRecord>,
    queues: Section<QueueRecord>,
    inflight: Section<InflightRecord>,
    runtime_snapshots: Section<RuntimeSnapshot>,
    pending: PendingRequests,
    gauges: Gauges,
    limits_hit: LimitsHit,
    /// Requests refused at begin because the pending bound was reached.
    refused_pending: crate::sync::AtomicU64,
    lifecycle: Mutex<LifecycleState>,
    /// Held by a shutdown from before its drain until its sink returns (see the writing
    /// module).
    writing: WritingLock,
}

/// Metadata and shutdown bookkeeping, behind the lifecycle mutex.
#[derive(Debug)]
struct LifecycleState {
    metadata: RunMetadata,
    /// Shutdowns so far; the next shutdown uses the next epoch.
    shutdowns: u64,
}

/// Whether a new request is tracked as pending or turned away at begin.
enum Admission {
    Tracked,
    Refused,
}

/// What the builder resolved, handed to [`Tailtriage::from_parts`].
pub(crate) struct Parts {
    pub(crate) service_name: String,
    pub(crate) service_version: Option<String>,
    pub(crate) run_id: Option<String>,
    pub(crate) config: EffectiveCoreConfig,
    pub(crate) sink: Destination,
}

impl fmt::Debug for Tailtriage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tailtriage")
            .field("mode", &self.config.mode)
            .field("limits", &self.config.capture_limits)
            .field("strict_lifecycle", &self.config.strict_lifecycle)
            .finish_non_exhaustive()
    }
}

/// Shards per section: enough that each core's threads mostly write their own ring.
fn shard_count() -> usize {
    // Loom models must not depend on the machine, and every shard adds states to explore.
    if cfg!(loom) {
        return 2;
    }
    std::thread::available_parallelism()
        .map_or(4, std::num::NonZeroUsize::get)
        .saturating_mul(2)
        .next_power_of_two()
        .clamp(2, 64)
}

impl Tailtriage {
    /// Starts configuring a run for the named service.
    ///
    /// ```
    /// use tailtriage_core::{BuildError, Tailtriage};
    ///
    /// assert!(Tailtriage::builder("checkout").build().is_ok());
    /// assert_eq!(Tailtriage::builder("  ").build().unwrap_err(), BuildError::EmptyServiceName);
    /// ```
    #[must_use]
    pub fn builder(service_name: impl Into<String>) -> crate::TailtriageBuilder {
        crate::TailtriageBuilder::new(service_name.into())
    }

    pub(crate) fn from_parts(parts: Parts) -> Result<Self, BuildError> {
        if parts.service_name.trim().is_empty() {
            return Err(BuildError::EmptyServiceName);
        }

        let clock = RunClock::start();
        let now = clock.now_unix_ms();
        let limits = parts.config.capture_limits;
        let shards = shard_count();
        let metadata = RunMetadata {
            run_id: parts
                .run_id
                .unwrap_or_else(|| format!("run-{}", uuid::Uuid::new_v4())),
            service_name: parts.service_name,
            service_version: parts.service_version,
            started_at_unix_ms: now,
            finished_at_unix_ms: now,
            finalized_at_unix_ms: None,
            mode: parts.config.mode,
            effective_core_config: Some(parts.config),
            effective_tokio_sampler_config: None,
            host: host_name(),
            pid: Some(std::process::id()),
            lifecycle_warnings: Vec::new(),
            unfinished_requests: UnfinishedRequests::default(),
            run_end_reason: None,
        };

        Ok(Self {
            clock,
            config: parts.config,
            sink: parts.sink,
            requests: Section::new(limits.max_requests, shards),
            stages: Section::new(limits.max_stages, shards),
            queues: Section::new(limits.max_queues, shards),
            inflight: Section::new(limits.max_inflight_snapshots, shards),
            runtime_snapshots: Section::new(limits.max_runtime_snapshots, shards),
            pending: PendingRequests::new(limits.max_requests, shards),
            gauges: Gauges::new(limits.max_inflight_snapshots),
            limits_hit: LimitsHit::new(),
            refused_pending: crate::sync::AtomicU64::new(0),
            lifecycle: Mutex::new(LifecycleState {
                metadata,
                shutdowns: 0,
            }),
            writing: WritingLock::new(),
        })
    }

    /// The capture mode this run was built with.
    #[must_use]
    pub const fn selected_mode(&self) -> CaptureMode {
        self.config.mode
    }

    /// The mode, limits and strictness this run records with.
    #[must_use]
    pub const fn effective_core_config(&self) -> EffectiveCoreConfig {
        self.config
    }

    /// The limits this run records with.
    #[must_use]
    pub const fn capture_limits(&self) -> CaptureLimits {
        self.config.capture_limits
    }

    /// Begins a request on `route` with a generated id.
    pub fn begin_request(&self, route: impl Into<String>) -> StartedRequest<'_> {
        self.begin_request_with(route, RequestOptions::new())
    }

    /// Begins a request on `route` with the given options.
    pub fn begin_request_with(
        &self,
        route: impl Into<String>,
        options: RequestOptions,
    ) -> StartedRequest<'_> {
        let (request, admission) = self.start_request(route.into(), options);
        StartedRequest::new(self, request, matches!(admission, Admission::Tracked))
    }

    /// Begins a request whose handle and completion own a reference to the recorder.
    pub fn begin_request_owned(
        self: &std::sync::Arc<Self>,
        route: impl Into<String>,
    ) -> OwnedStartedRequest {
        self.begin_request_with_owned(route, RequestOptions::new())
    }

    /// Begins a request with options, whose parts own a reference to the recorder.
    pub fn begin_request_with_owned(
        self: &std::sync::Arc<Self>,
        route: impl Into<String>,
        options: RequestOptions,
    ) -> OwnedStartedRequest {
        let (request, admission) = self.start_request(route.into(), options);
        OwnedStartedRequest::new(self, request, matches!(admission, Admission::Tracked))
    }

    fn start_request(
        &self,
        route: String,
        options: RequestOptions,
    ) -> (Arc<RequestState>, Admission) {
        // A request that could never be retained is turned away now, without a clock read or
        // a registry entry; it is counted as dropped exactly once, here.
        if self.requests.is_full() {
            let request = Arc::new(RequestState::new(route, options, Tick::default()));
            self.pending.count_untracked(request.thread);
            self.note(self.requests.turn_away());
            return (request, Admission::Refused);
        }

        let request = Arc::new(RequestState::new(route, options, self.clock.now()));
        if self.pending.track(&request) {
            return (request, Admission::Tracked);
        }
        self.pending.count_untracked(request.thread);
        self.refused_pending
            .fetch_add(1, crate::sync::Ordering::Relaxed);
        self.note(self.requests.turn_away());
        (request, Admission::Refused)
    }

    /// Finishes a request that was turned away at begin: it records nothing (its drop was
    /// counted at begin), and it no longer counts as unfinished.
    pub(crate) fn finish_untracked(&self, thread: usize) {
        self.pending.finish_untracked(thread);
    }

    /// Finishes a tracked request (see the pending module for the shutdown protocol).
    pub(crate) fn finish_request(&self, request: &Arc<RequestState>, outcome: Outcome) {
        let unfinished_epoch = request.lifecycle.begin_finish();
        let offer = self.offer(&self.requests, |finished| RequestRecord {
            request: Arc::clone(request),
            finished,
            outcome,
            unfinished_epoch,
        });
        request.lifecycle.end_finish();
        self.pending.untrack(request);
        // Only now, with the request finished: the listener may call back into the run (a
        // shutdown waits for requests that are between their two finishing steps).
        self.note(offer);
    }

    /// Records one event into `section`, built by `make` from the instant it is recorded at.
    /// A full section reads no clock and builds nothing: it only counts the drop.
    fn record<E>(&self, section: &Section<E>, make: impl FnOnce(Tick) -> E) {
        let offer = self.offer(section, make);
        self.note(offer);
    }

    /// Offers one event to `section`, as [`record`](Self::record) does, but leaves reacting to
    /// a drop to the caller.
    fn offer<E>(&self, section: &Section<E>, make: impl FnOnce(Tick) -> E) -> Offer {
        if section.is_full() {
            section.turn_away()
        } else {
            let at = self.clock.now();
            section.offer(at, || make(at))
        }
    }

    /// Reads the run clock.
    pub(crate) fn now(&self) -> Tick {
        self.clock.now()
    }

    pub(crate) fn queues_full(&self) -> bool {
        self.queues.is_full()
    }

    pub(crate) fn stages_full(&self) -> bool {
        self.stages.is_full()
    }

    pub(crate) fn gauges(&self) -> &Gauges {
        &self.gauges
    }

    pub(crate) fn record_queue(
        &self,
        request: &Arc<RequestState>,
        queue: compact_str::CompactString,
        started: Option<Tick>,
        depth_at_start: Option<u64>,
        cancelled: bool,
    ) {
        self.record(&self.queues, |finished| QueueRecord {
            request: Arc::clone(request),
            queue,
            started: started.unwrap_or(finished),
            finished,
            depth_at_start,
            cancelled,
        });
    }

    pub(crate) fn record_stage(
        &self,
        request: &Arc<RequestState>,
        stage: compact_str::CompactString,
        started: Option<Tick>,
        success: bool,
        cancelled: bool,
    ) {
        self.record(&self.stages, |finished| StageRecord {
            request: Arc::clone(request),
            stage,
            started: started.unwrap_or(finished),
            finished,
            success,
            cancelled,
        });
    }

    /// Records a gauge's count; `gauge` hands over the handle for the record, and is called
    /// only if the record is kept.
    pub(crate) fn record_inflight(
        &self,
        gauge: impl FnOnce() -> std::sync::Arc<GaugeHandle>,
        count: u64,
    ) {
        self.record(&self.inflight, |at| InflightRecord {
            gauge: gauge(),
            at,
            count,
        });
    }

    /// Counts an in-flight snapshot of a refused gauge as dropped.
    pub(crate) fn count_dropped_inflight(&self) {
        self.note(self.inflight.turn_away());
    }

    /// Records a runtime snapshot, bounded by the runtime-snapshot limit like every section.
    pub fn record_runtime_snapshot(&self, snapshot: RuntimeSnapshot) {
        self.record(&self.runtime_snapshots, |_| snapshot);
    }

    /// Reacts to a dropped event: the first drop after a listener is set runs it.
    #[inline]
    fn note(&self, offer: Offer) {
        if offer == Offer::Dropped {
            if let Some(panic_message) = self.limits_hit.on_drop() {
                lock(&self.lifecycle)
                    .metadata
                    .lifecycle_warnings
                    .push(panic_message);
            }
        }
    }

    /// Sets or clears the function that runs once, on the first dropped event after it is set.
    ///
    /// It runs on the thread whose event was dropped, so keep it short (flip a flag, notify a
    /// task). A panic inside it is caught and noted in the run's lifecycle warnings.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// use tailtriage_core::{CaptureLimitsOverride, MemorySink, Tailtriage};
    ///
    /// let tailtriage = Tailtriage::builder("checkout")
    ///     .sink(MemorySink::new())
    ///     .capture_limits_override(CaptureLimitsOverride {
    ///         max_requests: Some(1),
    ///         ..Default::default()
    ///     })
    ///     .build()?;
    /// let calls = Arc::new(AtomicUsize::new(0));
    /// let counter = Arc::clone(&calls);
    /// tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
    ///     counter.fetch_add(1, Ordering::SeqCst);
    /// })));
    /// for _ in 0..3 {
    ///     tailtriage.begin_request("/checkout").completion.finish_ok();
    /// }
    /// assert_eq!(calls.load(Ordering::SeqCst), 1);
    /// assert_eq!(tailtriage.snapshot().truncation.dropped_requests, 2);
    /// # Ok::<(), tailtriage_core::BuildError>(())
    /// ```
    pub fn set_limits_hit_listener(
        &self,
        listener: Option<std::sync::Arc<dyn Fn() + Send + Sync>>,
    ) {
        self.limits_hit.set_listener(listener);
    }

    /// Records why the run ended, unless a reason is already recorded.
    pub fn set_run_end_reason_if_absent(&self, reason: RunEndReason) {
        lock(&self.lifecycle)
            .metadata
            .run_end_reason
            .get_or_insert(reason);
    }

    pub(crate) fn register_tokio_runtime_sampler(
        &self,
        config: EffectiveTokioSamplerConfig,
    ) -> Result<(), crate::RuntimeSamplerRegistrationError> {
        let mut state = lock(&self.lifecycle);
        if state.metadata.effective_tokio_sampler_config.is_some() {
            return Err(crate::RuntimeSamplerRegistrationError::DuplicateStart);
        }
        state.metadata.effective_tokio_sampler_config = Some(config);
        Ok(())
    }

    /// A copy of everything retained so far, truncation counters included.
    ///
    /// It consumes nothing: two snapshots in a row agree, and a later shutdown still writes
    /// every event. While the run is active, `finalized_at_unix_ms` is `None`.
    #[must_use]
    pub fn snapshot(&self) -> Run {
        let drained = {
            let state = lock(&self.lifecycle);
            self.drain(&state.metadata, u64::MAX)
        };
        drained.to_run(&self.clock)
    }

    /// Finalizes the run and writes it to the configured sink.
    ///
    /// Stamps `finished_at_unix_ms` and `finalized_at_unix_ms`; with requests still pending,
    /// adds a lifecycle warning and the unfinished count with up to five samples. The run stays
    /// usable: recording goes on, and a later shutdown writes everything retained by then.
    ///
    /// Concurrent shutdowns reach their sinks one at a time, in the order they drained, so the
    /// last run written is the newest. A shutdown called on the thread that is already
    /// writing this run (from a sink's `write`, or from a limits-hit listener that the write
    /// set off) fails at once with an I/O error of kind `Deadlock` instead of waiting for
    /// itself.
    ///
    /// # Errors
    ///
    /// [`SinkError::Lifecycle`] when strict lifecycle is on and requests are pending (nothing
    /// is written); [`SinkError::Io`] of kind `Deadlock` when called on a thread that is
    /// already writing this run; otherwise whatever the sink returns.
    pub fn shutdown(&self) -> Result<(), SinkError> {
        match &self.sink {
            // Encoded straight from the records into the file, with no lock held.
            Destination::Json(json) => {
                let _in_order = self.writing.acquire()?;
                let drained = self.finalize()?;
                json.write_with(|writer| {
                    drained.read(&self.clock, |view| json.encode_view(writer, view))
                })
            }
            Destination::Custom(sink) => self.shutdown_to(&**sink),
        }
    }

    /// Like [`shutdown`](Tailtriage::shutdown), but writes to `sink` instead of the configured
    /// one, for example to retry after the configured destination failed.
    ///
    /// ```
    /// use tailtriage_core::{MemorySink, Tailtriage};
    ///
    /// let tailtriage = Tailtriage::builder("checkout")
    ///     .output("/nonexistent-folder/run.json")
    ///     .build()?;
    /// tailtriage.begin_request("/checkout").completion.finish_ok();
    /// assert!(tailtriage.shutdown().is_err());
    ///
    /// let fallback = MemorySink::new();
    /// tailtriage.shutdown_to(&fallback)?;
    /// assert_eq!(fallback.last_run().unwrap().requests.len(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    ///
    /// As for [`shutdown`](Tailtriage::shutdown).
    pub fn shutdown_to(&self, sink: &dyn RunSink) -> Result<(), SinkError> {
        let _in_order = self.writing.acquire()?;
        let run = self.finalize()?.to_run(&self.clock);
        sink.write(&run)
    }

    /// Stamps the end of the run, counts what is unfinished, and drains the final run; with
    /// strict lifecycle and requests pending, stops before draining. Callers hold the writing
    /// lock from before this until their sink returns.
    fn finalize(&self) -> Result<DrainedRun, SinkError> {
        let mut state = lock(&self.lifecycle);
        state.shutdowns += 1;
        let epoch = state.shutdowns;
        let unfinished = self.pending.claim_unfinished(epoch);

        let now = self.clock.now_unix_ms();
        let metadata = &mut state.metadata;
        metadata.finished_at_unix_ms = now;
        metadata.finalized_at_unix_ms = Some(now);
        metadata.unfinished_requests = UnfinishedRequests {
            count: unfinished.count,
            sample: unfinished.sample,
        };
        if unfinished.count > 0 {
            let warning = format!(
                "{} unfinished request(s) remained at shutdown; they are reported here and not \
                 as completed requests",
                unfinished.count
            );
            if !metadata.lifecycle_warnings.contains(&warning) {
                metadata.lifecycle_warnings.push(warning);
            }
            if self.config.strict_lifecycle {
                return Err(SinkError::Lifecycle {
                    unfinished_count: usize::try_from(unfinished.count).unwrap_or(usize::MAX),
                });
            }
        }
        Ok(self.drain(&state.metadata, epoch))
    }

    /// Drains every section; request events counted unfinished by shutdown `epoch` or later
    /// will be left out (they stay retained for the next shutdown). Called under the lifecycle
    /// lock, so that the metadata and the events are of one moment.
    fn drain(&self, metadata: &RunMetadata, epoch: u64) -> DrainedRun {
        DrainedRun {
            metadata: metadata.clone(),
            epoch,
            requests: self.requests.drain(),
            stages: self.stages.drain(),
            queues: self.queues.drain(),
            inflight: self.inflight.drain(),
            runtime_snapshots: self.runtime_snapshots.drain(),
            truncation: self.truncation(),
        }
    }

    /// The truncation counters as of now.
    fn truncation(&self) -> TruncationSummary {
        let mut summary = TruncationSummary {
            limits_hit: false,
            dropped_requests: self.requests.dropped(),
            dropped_stages: self.stages.dropped(),
            dropped_queues: self.queues.dropped(),
            dropped_inflight_snapshots: self.inflight.dropped(),
            dropped_runtime_snapshots: self.runtime_snapshots.dropped(),
            refused_pending_requests: self.refused_pending.load(crate::sync::Ordering::Relaxed),
            refused_gauges: self.gauges.refused(),
        };
        summary.limits_hit = summary.is_truncated();
        summary
    }
}

/// The host name, trimmed, when it is valid UTF-8 and not blank.
fn host_name() -> Option<String> {
    normalize_host_name(hostname::get().ok()?)
}

fn normalize_host_name(host: std::ffi::OsString) -> Option<String> {
    let host = host.into_string().ok()?;
    let trimmed = host.trim();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// Runs a user callback, turning a panic into a message instead of unwinding into the caller.
pub(crate) fn run_guarded(callback: impl FnOnce(), what: &str) -> Option<String> {
    catch_unwind(AssertUnwindSafe(callback))
        .err()
        .map(|payload| {
            let detail = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            format!("{what} panicked: {detail}")
        })
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::normalize_host_name;
    use std::ffi::OsString;

    #[test]
    fn blank_host_names_are_absent_and_others_are_trimmed() {
        assert_eq!(normalize_host_name(OsString::from("  \n")), None);
        assert_eq!(
            normalize_host_name(OsString::from(" web-1 \n")),
            Some("web-1".to_owned())
        );
    }
}
