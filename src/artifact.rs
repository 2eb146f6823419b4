//! The v1 run artifact: the JSON document a run writes and the published tools read.
//!
//! Field names, nesting and serde defaults are a compatibility contract with `tailtriage-core`
//! 0.2.0 and with the published `tailtriage-cli` and `tailtriage-analyzer`: an artifact written by
//! either crate loads into the other. Fields this crate adds are optional, default when absent
//! (so older artifacts load) and are left out while they hold their default (so older readers
//! see the same document). Unknown fields are ignored on input.
//!
//! All instants are milliseconds since the Unix epoch; all durations are microseconds.

use serde::{Deserialize, Serialize};

use crate::{CaptureMode, EffectiveCoreConfig};

/// The artifact schema version this crate writes.
pub const SCHEMA_VERSION: u64 = 1;

/// One captured run: metadata, the retained events of each section, and what was dropped.
///
/// ```
/// use tailtriage_core::{Run, Tailtriage};
///
/// let tailtriage = Tailtriage::builder("checkout").build()?;
/// let run: Run = tailtriage.snapshot();
/// let json = serde_json::to_string(&run)?;
/// let back: Run = serde_json::from_str(&json)?;
/// assert_eq!(back, run);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The artifact schema version, [`SCHEMA_VERSION`] for runs this crate builds.
    pub schema_version: u64,
    /// Who ran, when, and with which configuration.
    pub metadata: RunMetadata,
    /// Completed requests, in recording order.
    pub requests: Vec<RequestEvent>,
    /// Stage events, in recording order.
    pub stages: Vec<StageEvent>,
    /// Queue-wait events, in recording order.
    pub queues: Vec<QueueEvent>,
    /// In-flight gauge snapshots, in recording order.
    pub inflight: Vec<InFlightSnapshot>,
    /// Runtime snapshots, in recording order.
    pub runtime_snapshots: Vec<RuntimeSnapshot>,
    /// What each section dropped once it reached its limit.
    #[serde(default)]
    pub truncation: TruncationSummary,
}

impl Run {
    /// An empty run at [`SCHEMA_VERSION`] with the given metadata.
    #[must_use]
    pub fn new(metadata: RunMetadata) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            metadata,
            requests: Vec::new(),
            stages: Vec::new(),
            queues: Vec::new(),
            inflight: Vec::new(),
            runtime_snapshots: Vec::new(),
            truncation: TruncationSummary::default(),
        }
    }
}

/// Counters of what the run turned away once its sections were full.
///
/// Per section, retained + dropped equals the events offered to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TruncationSummary {
    /// True once any section dropped an event.
    #[serde(default)]
    pub limits_hit: bool,
    /// Requests not retained: past the request limit, or refused at begin.
    pub dropped_requests: u64,
    /// Stage events past the stage limit.
    pub dropped_stages: u64,
    /// Queue-wait events past the queue limit.
    pub dropped_queues: u64,
    /// In-flight snapshots past the snapshot limit or of refused gauges.
    pub dropped_inflight_snapshots: u64,
    /// Runtime snapshots past their limit.
    pub dropped_runtime_snapshots: u64,
    /// Requests that were not tracked as pending because as many requests as the request
    /// limit were already pending; each is also counted in `dropped_requests`. (A request
    /// begun once the request section is full is counted in `dropped_requests` only.) Absent
    /// in artifacts that refused none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused_pending_requests: u64,
    /// In-flight guards whose gauge was not tracked because as many distinct gauges as the
    /// snapshot limit were already tracked (live, or idle and not yet swept). Absent in
    /// artifacts that refused none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused_gauges: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(value: &u64) -> bool {
    *value == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
pub(crate) fn is_false(value: &bool) -> bool {
    !*value
}

impl TruncationSummary {
    /// True when the limits were hit or any counter is non-zero.
    ///
    /// ```
    /// use tailtriage_core::TruncationSummary;
    ///
    /// assert!(!TruncationSummary::default().is_truncated());
    /// let dropped = TruncationSummary { dropped_stages: 1, ..Default::default() };
    /// assert!(dropped.is_truncated());
    /// ```
    #[must_use]
    pub const fn is_truncated(&self) -> bool {
        self.limits_hit
            || self.dropped_requests > 0
            || self.dropped_stages > 0
            || self.dropped_queues > 0
            || self.dropped_inflight_snapshots > 0
            || self.dropped_runtime_snapshots > 0
            || self.refused_pending_requests > 0
            || self.refused_gauges > 0
    }
}

/// Who ran, when, and with which configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMetadata {
    /// The caller's run id, or `run-` followed by a UUID v4.
    pub run_id: String,
    /// The instrumented service.
    pub service_name: String,
    /// The service's version, when given.
    pub service_version: Option<String>,
    /// When the run was built.
    pub started_at_unix_ms: u64,
    /// When the run ended; equal to the start until `shutdown()` stamps it.
    pub finished_at_unix_ms: u64,
    /// When `shutdown()` finalized the run; `None` while the run is active.
    #[serde(default)]
    pub finalized_at_unix_ms: Option<u64>,
    /// The capture mode.
    pub mode: CaptureMode,
    /// The effective core configuration.
    #[serde(default)]
    pub effective_core_config: Option<EffectiveCoreConfig>,
    /// The configuration of the runtime sampler registered on this run, if any.
    #[serde(default)]
    pub effective_tokio_sampler_config: Option<EffectiveTokioSamplerConfig>,
    /// The host name, trimmed, when it is valid UTF-8 and not blank.
    pub host: Option<String>,
    /// The process id.
    pub pid: Option<u32>,
    /// Warnings about the run's lifecycle, such as requests left unfinished at shutdown.
    #[serde(default)]
    pub lifecycle_warnings: Vec<String>,
    /// Requests still pending at the last shutdown.
    #[serde(default)]
    pub unfinished_requests: UnfinishedRequests,
    /// Why the run ended, when an integration recorded it.
    #[serde(default)]
    pub run_end_reason: Option<RunEndReason>,
}

/// Why a run ended. Serialized in snake case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunEndReason {
    /// A controller disarmed the capture window.
    ManualDisarm,
    /// The service shut down.
    Shutdown,
    /// The run sealed itself when its limits were hit.
    AutoSealOnLimitsHit,
}

/// The resolved configuration of a runtime sampler, recorded in the run metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveTokioSamplerConfig {
    /// The mode of the run the sampler was attached to.
    pub inherited_mode: CaptureMode,
    /// The mode the sampler was explicitly given, if any.
    pub explicit_mode_override: Option<CaptureMode>,
    /// The mode the sampler used.
    pub resolved_mode: CaptureMode,
    /// Milliseconds between samples.
    pub resolved_sampler_cadence_ms: u64,
    /// How many runtime snapshots the run retains.
    pub resolved_runtime_snapshot_retention: usize,
}

/// The requests still pending when the run was shut down.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UnfinishedRequests {
    /// How many requests were pending.
    pub count: u64,
    /// Up to five of them.
    pub sample: Vec<UnfinishedRequestSample>,
}

/// One request that was pending at shutdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfinishedRequestSample {
    /// The request id.
    pub request_id: String,
    /// The request's route.
    pub route: String,
}

/// One completed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestEvent {
    /// The caller's id, or a generated one starting with the sanitized route.
    pub request_id: String,
    /// The route.
    pub route: String,
    /// The request kind (`"http"`, `"job"`, …), when given.
    pub kind: Option<String>,
    /// When the request began.
    pub started_at_unix_ms: u64,
    /// When it finished.
    pub finished_at_unix_ms: u64,
    /// Its latency, by the monotonic clock.
    pub latency_us: u64,
    /// The outcome label: `ok`, `error`, `timeout`, `cancelled`, `rejected` or a custom one.
    pub outcome: String,
}

/// One timed stage of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageEvent {
    /// The request the stage belongs to.
    pub request_id: String,
    /// The stage name.
    pub stage: String,
    /// When the stage began.
    pub started_at_unix_ms: u64,
    /// When it finished (or was abandoned).
    pub finished_at_unix_ms: u64,
    /// How long it ran.
    pub latency_us: u64,
    /// Whether the stage succeeded; false for a stage that did not complete.
    pub success: bool,
    /// True when the stage's future was dropped before it completed (a timeout, `select!`, a
    /// client gone, a panic); the latency is then the time spent until the drop. Absent (false)
    /// for stages that completed and in older artifacts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancelled: bool,
}

/// One timed wait in a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEvent {
    /// The request that waited.
    pub request_id: String,
    /// The queue name.
    pub queue: String,
    /// When the wait began.
    pub waited_from_unix_ms: u64,
    /// When it ended (or was abandoned).
    pub waited_until_unix_ms: u64,
    /// How long it waited.
    pub wait_us: u64,
    /// The queue depth when the wait began, when the caller supplied it.
    pub depth_at_start: Option<u64>,
    /// True when the wait's future was dropped before it completed; `wait_us` is then the time
    /// waited until the drop. Absent (false) for completed waits and in older artifacts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cancelled: bool,
}

/// The count of an in-flight gauge right after it changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InFlightSnapshot {
    /// The gauge name.
    pub gauge: String,
    /// When the count changed.
    pub at_unix_ms: u64,
    /// The count after the change.
    pub count: u64,
}

/// One sample of async runtime metrics; each metric is `None` when it was not available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeSnapshot {
    /// When the sample was taken.
    pub at_unix_ms: u64,
    /// Tasks alive in the runtime.
    pub alive_tasks: Option<u64>,
    /// Tasks waiting in the runtime's global queue.
    pub global_queue_depth: Option<u64>,
    /// Tasks waiting in the workers' local queues.
    pub local_queue_depth: Option<u64>,
    /// Tasks waiting for the blocking pool.
    pub blocking_queue_depth: Option<u64>,
    /// Tasks scheduled from outside the runtime.
    pub remote_schedule_count: Option<u64>,
}
