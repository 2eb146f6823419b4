//! Queue and stage timers: futures wrappers that time an await and record one event.
//!
//! A timer reads the run clock when the wrapped future is first polled and again when it
//! completes: the two monotonic reads no timing can avoid. When the target section is already
//! full, it reads no clock at all and only counts the dropped event.
//!
//! If the wrapped future is dropped before it completes (a timeout, a `select!` branch that
//! lost, a client that went away, a panic unwinding through it), the timer still records an
//! event, marked `cancelled`, with the time spent until the drop; a cancelled stage is never
//! successful. A wait or stage thus never vanishes from the run. That holds from the moment
//! `await_on` returns its future, not only from its first poll: a `select!` branch that never
//! got polled because another one won at once is recorded too, cancelled after no time.

use std::future::Future;

use compact_str::CompactString;

use crate::clock::Tick;
use crate::request::RequestState;
use crate::sync::Arc;
use crate::Tailtriage;

/// Times a wait in a named queue (a pool, a semaphore, a channel) for one request.
///
/// ```
/// use tailtriage_core::{MemorySink, Tailtriage};
///
/// # futures_executor::block_on(async {
/// let tailtriage = Tailtriage::builder("checkout").sink(MemorySink::new()).build()?;
/// let started = tailtriage.begin_request("/checkout");
/// let permit = started
///     .handle
///     .queue("db_pool")
///     .with_depth_at_start(3)
///     .await_on(async { "permit" })
///     .await;
/// assert_eq!(permit, "permit");
/// started.completion.finish_ok();
/// assert_eq!(tailtriage.snapshot().queues[0].depth_at_start, Some(3));
/// # Ok::<(), tailtriage_core::BuildError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct QueueTimer<'a> {
    recorder: &'a Tailtriage,
    /// Borrowed from the handle; the record takes its own reference only if it is kept.
    request: &'a Arc<RequestState>,
    queue: CompactString,
    depth_at_start: Option<u64>,
}

/// Times a named stage of one request (a downstream call, a query, a CPU step).
///
/// ```
/// use tailtriage_core::{MemorySink, Tailtriage};
///
/// # futures_executor::block_on(async {
/// let tailtriage = Tailtriage::builder("checkout").sink(MemorySink::new()).build()?;
/// let started = tailtriage.begin_request("/checkout");
/// let charged: Result<u32, &str> =
///     started.handle.stage("charge_card").await_on(async { Err("declined") }).await;
/// assert!(charged.is_err());
/// let total = started.handle.stage("price").await_value(async { 42 }).await;
/// assert_eq!(total, 42);
/// started.completion.finish_ok();
/// let run = tailtriage.snapshot();
/// assert!(!run.stages[0].success);
/// assert!(run.stages[1].success);
/// # Ok::<(), tailtriage_core::BuildError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct StageTimer<'a> {
    recorder: &'a Tailtriage,
    /// Borrowed from the handle; the record takes its own reference only if it is kept.
    request: &'a Arc<RequestState>,
    stage: CompactString,
}

impl<'a> QueueTimer<'a> {
    pub(crate) fn new(
        recorder: &'a Tailtriage,
        request: &'a Arc<RequestState>,
        queue: CompactString,
    ) -> Self {
        Self {
            recorder,
            request,
            queue,
            depth_at_start: None,
        }
    }

    /// Records the queue depth observed when the wait began.
    #[must_use]
    pub fn with_depth_at_start(mut self, depth_at_start: u64) -> Self {
        self.depth_at_start = Some(depth_at_start);
        self
    }

    /// Awaits `fut` and records one queue event with the time it waited.
    pub fn await_on<Fut, T>(self, fut: Fut) -> impl Future<Output = T> + use<'a, Fut, T>
    where
        Fut: Future<Output = T>,
    {
        // The watch exists before the first poll, so that dropping the future unpolled
        // records the wait too (see the module docs).
        let mut watch = Watch::new(Timed::Queue(self));
        async move {
            watch.start();
            let value = fut.await;
            watch.complete(true);
            value
        }
    }
}

impl<'a> StageTimer<'a> {
    pub(crate) fn new(
        recorder: &'a Tailtriage,
        request: &'a Arc<RequestState>,
        stage: CompactString,
    ) -> Self {
        Self {
            recorder,
            request,
            stage,
        }
    }

    /// Awaits a fallible `fut` and records one stage event, successful when it returns `Ok`.
    ///
    /// # Errors
    ///
    /// Returns the future's own error unchanged.
    pub fn await_on<Fut, T, E>(
        self,
        fut: Fut,
    ) -> impl Future<Output = Result<T, E>> + use<'a, Fut, T, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let mut watch = Watch::new(Timed::Stage(self));
        async move {
            watch.start();
            let value = fut.await;
            watch.complete(value.is_ok());
            value
        }
    }

    /// Awaits `fut` and records one successful stage event.
    pub fn await_value<Fut, T>(self, fut: Fut) -> impl Future<Output = T> + use<'a, Fut, T>
    where
        Fut: Future<Output = T>,
    {
        let mut watch = Watch::new(Timed::Stage(self));
        async move {
            watch.start();
            let value = fut.await;
            watch.complete(true);
            value
        }
    }
}

/// Which timer a watch belongs to.
enum Timed<'a> {
    Queue(QueueTimer<'a>),
    Stage(StageTimer<'a>),
}

/// A timer's watch, from the moment its future exists: records the event on completion, or
/// as cancelled if the future is dropped first.
struct Watch<'a> {
    recorder: &'a Tailtriage,
    /// The timer, until its event is recorded.
    timed: Option<Timed<'a>>,
    /// When the wait began; `None` before the first poll, and when the section was already
    /// full at the first poll (no clock read). An event recorded without it lasts no time.
    started: Option<Tick>,
}

impl<'a> Watch<'a> {
    /// A watch whose future has not been polled yet; it reads no clock.
    fn new(timed: Timed<'a>) -> Self {
        let recorder = match &timed {
            Timed::Queue(queue) => queue.recorder,
            Timed::Stage(stage) => stage.recorder,
        };
        Self {
            recorder,
            timed: Some(timed),
            started: None,
        }
    }

    /// Starts timing at the first poll, unless the section is already full.
    fn start(&mut self) {
        let full = match &self.timed {
            Some(Timed::Queue(_)) => self.recorder.queues_full(),
            Some(Timed::Stage(_)) => self.recorder.stages_full(),
            None => true,
        };
        if !full {
            self.started = Some(self.recorder.now());
        }
    }

    /// Records the event of a future that completed.
    fn complete(mut self, success: bool) {
        self.record(success, false);
    }

    fn record(&mut self, success: bool, cancelled: bool) {
        match self.timed.take() {
            Some(Timed::Queue(queue)) => self.recorder.record_queue(
                queue.request,
                queue.queue,
                self.started,
                queue.depth_at_start,
                cancelled,
            ),
            Some(Timed::Stage(stage)) => self.recorder.record_stage(
                stage.request,
                stage.stage,
                self.started,
                success,
                cancelled,
            ),
            None => {}
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        // Only reached with the timer still present when the future was dropped early.
        self.record(false, true);
    }
}
