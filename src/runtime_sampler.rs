//! Periodic sampling of Tokio runtime metrics into a run.
//!
//! A [`RuntimeSampler`] is one Tokio task that wakes on a fixed cadence, reads the
//! runtime's metrics through [`capture_runtime_snapshot`] and hands the result to
//! [`Tailtriage::record_runtime_snapshot`]. Runtime snapshots let an analyzer tell
//! executor pressure (work piling up in the scheduler's queues) apart from queueing
//! inside the application and from slow downstream stages.
//!
//! # Configuration
//!
//! The sampler resolves its settings once, at start, in this order:
//!
//! 1. the mode inherited from the run ([`Tailtriage::selected_mode`]);
//! 2. an explicit mode from [`RuntimeSamplerBuilder::mode`], which wins over it;
//! 3. the cadence: [`RuntimeSamplerBuilder::interval`], else the resolved mode's default;
//! 4. the retention: [`RuntimeSamplerBuilder::max_runtime_snapshots`], else the resolved
//!    mode's default, then clamped to the run's own `max_runtime_snapshots` limit.
//!
//! The mode defaults are those of the published `tailtriage-tokio` 0.2 sampler (see
//! [`TokioSamplerModeDefaults`]), so artifacts from either sampler carry the same
//! `effective_tokio_sampler_config`. That configuration is written into the run's
//! metadata through the core's registration hook before the first snapshot is taken,
//! and the hook refuses a second sampler on the same run.
//!
//! # Lifecycle
//!
//! The first snapshot is taken as soon as the task first runs; later ones follow every
//! cadence. A tick missed because the runtime was too busy is skipped rather than
//! replayed in a burst, so snapshots stay evenly spread over the run.
//!
//! The task ends on the first of: the retention is used up, [`RuntimeSampler::shutdown`]
//! is called, or the [`RuntimeSampler`] is dropped. Dropping only signals the task; it
//! ends the next time the runtime polls it, without blocking the dropping thread.
//!
//! # Metrics
//!
//! `alive_tasks` and `global_queue_depth` come from Tokio's stable metrics and are
//! always filled. `local_queue_depth`, `blocking_queue_depth` and
//! `remote_schedule_count` need Tokio's unstable metrics: they are filled when the
//! crate is built with `RUSTFLAGS="--cfg tokio_unstable"` and are `None` otherwise.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::{
    unix_time_ms, CaptureMode, EffectiveTokioSamplerConfig, RuntimeSamplerRegistrationError,
    RuntimeSnapshot, Tailtriage,
};

/// Default cadence and retention of the sampler for one [`CaptureMode`].
///
/// | mode            | cadence | retention |
/// |-----------------|---------|-----------|
/// | `Light`         | 500 ms  | 5 000     |
/// | `Investigation` | 100 ms  | 50 000    |
///
/// These apply only to a started sampler; selecting a mode on the run never starts
/// one.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tailtriage_core::runtime_sampler::TokioSamplerModeDefaults;
/// use tailtriage_core::CaptureMode;
///
/// let light = TokioSamplerModeDefaults::for_mode(CaptureMode::Light);
/// assert_eq!(light.cadence, Duration::from_millis(500));
/// assert_eq!(light.max_runtime_snapshots, 5_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokioSamplerModeDefaults {
    /// Time between two snapshots.
    pub cadence: Duration,
    /// Most snapshots the sampler takes before it stops by itself.
    pub max_runtime_snapshots: usize,
}

impl TokioSamplerModeDefaults {
    /// Returns the defaults for `mode`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use tailtriage_core::runtime_sampler::TokioSamplerModeDefaults;
    /// use tailtriage_core::CaptureMode;
    ///
    /// let deep = TokioSamplerModeDefaults::for_mode(CaptureMode::Investigation);
    /// assert_eq!(deep.cadence, Duration::from_millis(100));
    /// assert_eq!(deep.max_runtime_snapshots, 50_000);
    /// ```
    #[must_use]
    pub const fn for_mode(mode: CaptureMode) -> Self {
        match mode {
            CaptureMode::Light => Self {
                cadence: Duration::from_millis(500),
                max_runtime_snapshots: 5_000,
            },
            CaptureMode::Investigation => Self {
                cadence: Duration::from_millis(100),
                max_runtime_snapshots: 50_000,
            },
        }
    }
}

/// Why a sampler could not start.
///
/// A failed start leaves the run untouched: no configuration is registered and no
/// task is spawned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SamplerStartError {
    /// The resolved cadence is zero; give a positive [`RuntimeSamplerBuilder::interval`].
    ZeroInterval,
    /// No Tokio runtime was given and the calling thread is not inside one; start
    /// from within the runtime or pass its handle to
    /// [`RuntimeSamplerBuilder::runtime_handle`].
    MissingRuntime,
    /// A sampler was already started for this run; keep using that one.
    DuplicateStart,
}

impl fmt::Display for SamplerStartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ZeroInterval => f.write_str("the runtime sampling interval must not be zero"),
            Self::MissingRuntime => f.write_str(
                "runtime sampling needs a Tokio runtime: start it inside one or pass a handle",
            ),
            Self::DuplicateStart => {
                f.write_str("this run already has a runtime sampler; only one is allowed")
            }
        }
    }
}

impl std::error::Error for SamplerStartError {}

/// A running sampler that records Tokio runtime snapshots into one run.
///
/// Create one with [`RuntimeSampler::builder`]. Stop it with
/// [`shutdown`](Self::shutdown), which waits for the task, or by dropping it, which
/// does not.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use tailtriage_core::runtime_sampler::RuntimeSampler;
/// use tailtriage_core::{MemorySink, Tailtriage};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let sink = MemorySink::new();
/// let run = Arc::new(Tailtriage::builder("checkout").sink(sink.clone()).build()?);
///
/// let sampler = RuntimeSampler::builder(Arc::clone(&run))
///     .interval(Duration::from_millis(10))
///     .start()?;
/// tokio::time::sleep(Duration::from_millis(35)).await;
/// sampler.shutdown().await;
/// run.shutdown()?;
///
/// let artifact = sink.last_run().expect("the run was written");
/// assert!(!artifact.runtime_snapshots.is_empty());
/// assert_eq!(
///     artifact.metadata.effective_tokio_sampler_config.map(|c| c.resolved_sampler_cadence_ms),
///     Some(10)
/// );
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RuntimeSampler {
    /// Tells the task to stop, by a send or by being dropped; `None` once used.
    stop: Option<oneshot::Sender<()>>,
    /// The sampling task; `None` once awaited by `shutdown`.
    task: Option<JoinHandle<()>>,
    /// The settings the sampler runs with, as registered in the run's metadata.
    config: EffectiveTokioSamplerConfig,
}

impl RuntimeSampler {
    /// Returns a builder that samples into `run`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tailtriage_core::runtime_sampler::RuntimeSampler;
    /// use tailtriage_core::{DiscardSink, Tailtriage};
    ///
    /// let run = Arc::new(Tailtriage::builder("checkout").sink(DiscardSink).build().unwrap());
    /// let builder = RuntimeSampler::builder(run).max_runtime_snapshots(100);
    /// # drop(builder);
    /// ```
    pub fn builder(run: Arc<Tailtriage>) -> RuntimeSamplerBuilder {
        RuntimeSamplerBuilder {
            run,
            mode: None,
            interval: None,
            max_runtime_snapshots: None,
            runtime: None,
        }
    }

    /// Starts a sampler on the current Tokio runtime with the given cadence and the
    /// run's mode defaults otherwise.
    ///
    /// Shorthand for `RuntimeSampler::builder(run).interval(interval).start()`.
    ///
    /// # Errors
    ///
    /// See [`RuntimeSamplerBuilder::start`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tailtriage_core::runtime_sampler::RuntimeSampler;
    /// use tailtriage_core::{DiscardSink, Tailtriage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let run = Arc::new(Tailtriage::builder("checkout").sink(DiscardSink).build().unwrap());
    /// let sampler = RuntimeSampler::start(run, Duration::from_millis(50)).unwrap();
    /// sampler.shutdown().await;
    /// # }
    /// ```
    pub fn start(run: Arc<Tailtriage>, interval: Duration) -> Result<Self, SamplerStartError> {
        Self::builder(run).interval(interval).start()
    }

    /// The settings this sampler runs with, as registered in the run's metadata.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tailtriage_core::runtime_sampler::RuntimeSampler;
    /// use tailtriage_core::{CaptureMode, DiscardSink, Tailtriage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let run = Arc::new(Tailtriage::builder("checkout").sink(DiscardSink).build().unwrap());
    /// let sampler = RuntimeSampler::builder(run).start().unwrap();
    /// assert_eq!(sampler.config().resolved_mode, CaptureMode::Light);
    /// assert_eq!(sampler.config().resolved_sampler_cadence_ms, 500);
    /// # }
    /// ```
    #[must_use]
    pub const fn config(&self) -> &EffectiveTokioSamplerConfig {
        &self.config
    }

    /// Returns `true` once the sampling task has ended, for example because its
    /// retention is used up.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tailtriage_core::runtime_sampler::RuntimeSampler;
    /// use tailtriage_core::{DiscardSink, Tailtriage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let run = Arc::new(Tailtriage::builder("checkout").sink(DiscardSink).build().unwrap());
    /// let sampler = RuntimeSampler::builder(run).max_runtime_snapshots(1).start().unwrap();
    /// while !sampler.is_finished() {
    ///     tokio::task::yield_now().await;
    /// }
    /// # }
    /// ```
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops sampling and waits until the task has ended.
    ///
    /// Snapshots already taken stay in the run. Safe to call after the task ended by
    /// itself.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tailtriage_core::runtime_sampler::RuntimeSampler;
    /// use tailtriage_core::{DiscardSink, Tailtriage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let run = Arc::new(Tailtriage::builder("checkout").sink(DiscardSink).build().unwrap());
    /// let sampler = RuntimeSampler::start(Arc::clone(&run), Duration::from_millis(1)).unwrap();
    /// sampler.shutdown().await;
    ///
    /// let taken = run.snapshot().runtime_snapshots.len();
    /// tokio::time::sleep(Duration::from_millis(5)).await;
    /// assert_eq!(run.snapshot().runtime_snapshots.len(), taken);
    /// # }
    /// ```
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if let Some(task) = self.task.take() {
            // The task never panics on its own; a join error can only mean its
            // runtime is shutting down, in which case it has stopped anyway.
            let _ = task.await;
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // A send error means the task already ended; nothing is left to stop.
            let _ = stop.send(());
        }
    }
}

impl Drop for RuntimeSampler {
    fn drop(&mut self) {
        self.signal_stop();
    }
}

/// Settings for a [`RuntimeSampler`], applied by [`start`](Self::start).
///
/// Every setting is optional; see the [module docs](self) for how they resolve.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until `start` is called"]
pub struct RuntimeSamplerBuilder {
    run: Arc<Tailtriage>,
    mode: Option<CaptureMode>,
    interval: Option<Duration>,
    max_runtime_snapshots: Option<usize>,
    runtime: Option<Handle>,
}

impl RuntimeSamplerBuilder {
    /// Uses the defaults of `mode` instead of the run's mode.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tailtriage_core::runtime_sampler::RuntimeSampler;
    /// use tailtriage_core::{CaptureMode, DiscardSink, Tailtriage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let run = Arc::new(Tailtriage::builder("checkout").sink(DiscardSink).build().unwrap());
    /// let sampler = RuntimeSampler::builder(run)
    ///     .mode(CaptureMode::Investigation)
    ///     .start()
    ///     .unwrap();
    /// assert_eq!(sampler.config().inherited_mode, CaptureMode::Light);
    /// assert_eq!(sampler.config().resolved_sampler_cadence_ms, 100);
    /// # }
    /// ```
    pub const fn mode(mut self, mode: CaptureMode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// Sets the time between two snapshots. It must not be zero.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tailtriage_core::runtime_sampler::{RuntimeSampler, SamplerStartError};
    /// use tailtriage_core::{DiscardSink, Tailtriage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let run = Arc::new(Tailtriage::builder("checkout").sink(DiscardSink).build().unwrap());
    /// let refused = RuntimeSampler::builder(run).interval(Duration::ZERO).start();
    /// assert_eq!(refused.unwrap_err(), SamplerStartError::ZeroInterval);
    /// # }
    /// ```
    pub const fn interval(mut self, interval: Duration) -> Self {
        self.interval = Some(interval);
        self
    }

    /// Sets how many snapshots the sampler takes at most before it stops by itself.
    ///
    /// The value is clamped to the run's `max_runtime_snapshots` limit.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tailtriage_core::runtime_sampler::RuntimeSampler;
    /// use tailtriage_core::{CaptureLimitsOverride, DiscardSink, Tailtriage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let limits = CaptureLimitsOverride {
    ///     max_runtime_snapshots: Some(20),
    ///     ..CaptureLimitsOverride::default()
    /// };
    /// let run = Tailtriage::builder("checkout")
    ///     .sink(DiscardSink)
    ///     .capture_limits_override(limits)
    ///     .build()
    ///     .unwrap();
    /// let sampler = RuntimeSampler::builder(Arc::new(run))
    ///     .max_runtime_snapshots(1_000)
    ///     .start()
    ///     .unwrap();
    /// assert_eq!(sampler.config().resolved_runtime_snapshot_retention, 20);
    /// # }
    /// ```
    pub const fn max_runtime_snapshots(mut self, max_runtime_snapshots: usize) -> Self {
        self.max_runtime_snapshots = Some(max_runtime_snapshots);
        self
    }

    /// Samples the runtime behind `handle` and spawns the task there, so that
    /// [`start`](Self::start) may be called from outside any runtime.
    ///
    /// Without it, `start` uses the runtime the calling thread is in.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tailtriage_core::runtime_sampler::RuntimeSampler;
    /// use tailtriage_core::{DiscardSink, Tailtriage};
    ///
    /// let runtime = tokio::runtime::Builder::new_multi_thread()
    ///     .worker_threads(1)
    ///     .enable_time()
    ///     .build()
    ///     .unwrap();
    /// let run = Arc::new(Tailtriage::builder("checkout").sink(DiscardSink).build().unwrap());
    ///
    /// // Called from a plain thread, not from inside the runtime.
    /// let sampler = RuntimeSampler::builder(run)
    ///     .runtime_handle(runtime.handle().clone())
    ///     .start()
    ///     .unwrap();
    /// runtime.block_on(sampler.shutdown());
    /// ```
    pub fn runtime_handle(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Resolves the settings, registers them in the run's metadata and spawns the
    /// sampling task.
    ///
    /// # Errors
    ///
    /// Checked in this order, each leaving the run untouched:
    ///
    /// - [`SamplerStartError::ZeroInterval`] when the resolved cadence is zero;
    /// - [`SamplerStartError::MissingRuntime`] when no handle was given and the calling
    ///   thread is not inside a Tokio runtime;
    /// - [`SamplerStartError::DuplicateStart`] when the run already has a sampler.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tailtriage_core::runtime_sampler::{RuntimeSampler, SamplerStartError};
    /// use tailtriage_core::{DiscardSink, Tailtriage};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let run = Arc::new(Tailtriage::builder("checkout").sink(DiscardSink).build().unwrap());
    /// let first = RuntimeSampler::builder(Arc::clone(&run)).start().unwrap();
    /// let second = RuntimeSampler::builder(Arc::clone(&run)).start();
    /// assert_eq!(second.unwrap_err(), SamplerStartError::DuplicateStart);
    /// first.shutdown().await;
    /// # }
    /// ```
    pub fn start(self) -> Result<RuntimeSampler, SamplerStartError> {
        let config = self.resolve()?;
        let cadence = self.interval.unwrap_or(self.defaults().cadence);

        let runtime = match self.runtime {
            Some(handle) => handle,
            None => Handle::try_current().map_err(|_| SamplerStartError::MissingRuntime)?,
        };

        // Registration is the last fallible step, so a refused start never leaves a
        // configuration behind without a sampler to match it.
        crate::__internal::register_tokio_runtime_sampler(&self.run, config).map_err(|error| {
            match error {
                RuntimeSamplerRegistrationError::DuplicateStart => {
                    SamplerStartError::DuplicateStart
                }
            }
        })?;

        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(sample(
            self.run,
            runtime.clone(),
            cadence,
            config.resolved_runtime_snapshot_retention,
            stopped,
        ));

        Ok(RuntimeSampler {
            stop: Some(stop),
            task: Some(task),
            config,
        })
    }

    fn defaults(&self) -> TokioSamplerModeDefaults {
        TokioSamplerModeDefaults::for_mode(self.mode.unwrap_or(self.run.selected_mode()))
    }

    fn resolve(&self) -> Result<EffectiveTokioSamplerConfig, SamplerStartError> {
        let inherited_mode = self.run.selected_mode();
        let resolved_mode = self.mode.unwrap_or(inherited_mode);
        let defaults = self.defaults();

        let cadence = self.interval.unwrap_or(defaults.cadence);
        if cadence.is_zero() {
            return Err(SamplerStartError::ZeroInterval);
        }

        // The run would drop anything past its own limit, so a larger retention would
        // only keep the task waking up for snapshots that are thrown away.
        let run_limit = self
            .run
            .effective_core_config()
            .capture_limits
            .max_runtime_snapshots;
        let retention = self
            .max_runtime_snapshots
            .unwrap_or(defaults.max_runtime_snapshots)
            .min(run_limit);

        Ok(EffectiveTokioSamplerConfig {
            inherited_mode,
            explicit_mode_override: self.mode,
            resolved_mode,
            resolved_sampler_cadence_ms: u64::try_from(cadence.as_millis()).unwrap_or(u64::MAX),
            resolved_runtime_snapshot_retention: retention,
        })
    }
}

/// The sampling task: at most `retention` snapshots, one per tick, until stopped.
async fn sample(
    run: Arc<Tailtriage>,
    runtime: Handle,
    cadence: Duration,
    retention: usize,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut ticker = tokio::time::interval(cadence);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);

    for _ in 0..retention {
        // `biased` checks the stop signal first, so a stopped sampler never takes one
        // more snapshot just because a tick was also due.
        tokio::select! {
            biased;
            _ = &mut stopped => return,
            _ = ticker.tick() => run.record_runtime_snapshot(capture_runtime_snapshot(&runtime)),
        }
    }
}

/// Reads one snapshot of the metrics of the runtime behind `handle`.
///
/// Stable metrics (`alive_tasks`, `global_queue_depth`) are always filled; the rest
/// need a build with `--cfg tokio_unstable` and are `None` otherwise.
///
/// # Examples
///
/// ```
/// use tailtriage_core::runtime_sampler::capture_runtime_snapshot;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let snapshot = capture_runtime_snapshot(&tokio::runtime::Handle::current());
/// assert!(snapshot.alive_tasks.is_some());
/// assert!(snapshot.global_queue_depth.is_some());
/// # }
/// ```
#[must_use]
pub fn capture_runtime_snapshot(handle: &Handle) -> RuntimeSnapshot {
    let metrics = handle.metrics();
    let unstable = UnstableMetrics::read(handle);

    RuntimeSnapshot {
        at_unix_ms: unix_time_ms(),
        alive_tasks: u64::try_from(metrics.num_alive_tasks()).ok(),
        global_queue_depth: u64::try_from(metrics.global_queue_depth()).ok(),
        local_queue_depth: unstable.local_queue_depth,
        blocking_queue_depth: unstable.blocking_queue_depth,
        remote_schedule_count: unstable.remote_schedule_count,
    }
}

/// The part of a snapshot that only Tokio's unstable metrics can provide.
#[derive(Default)]
struct UnstableMetrics {
    /// Tasks waiting in the workers' local run queues, summed over all workers.
    local_queue_depth: Option<u64>,
    /// Closures waiting for a thread of the blocking pool.
    blocking_queue_depth: Option<u64>,
    /// Tasks scheduled from outside the runtime since it started.
    remote_schedule_count: Option<u64>,
}

impl UnstableMetrics {
    #[cfg(tokio_unstable)]
    fn read(handle: &Handle) -> Self {
        let metrics = handle.metrics();
        let local_queue_depth = (0..metrics.num_workers()).try_fold(0_u64, |sum, worker| {
            sum.checked_add(u64::try_from(metrics.worker_local_queue_depth(worker)).ok()?)
        });

        Self {
            local_queue_depth,
            blocking_queue_depth: u64::try_from(metrics.blocking_queue_depth()).ok(),
            remote_schedule_count: Some(metrics.remote_schedule_count()),
        }
    }

    #[cfg(not(tokio_unstable))]
    fn read(_handle: &Handle) -> Self {
        Self::default()
    }
}
