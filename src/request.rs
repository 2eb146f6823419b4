//! Requests: what a caller begins, instruments through a handle, and finishes exactly once.
//!
//! Beginning a request creates one shared [`RequestState`] (a single allocation): the handle,
//! the completion, the pending registry and every event of the request point to it. Names and
//! ids are turned into the artifact's `String`s only when a run is drained, so the hot path
//! neither clones the request id per event nor formats a generated id.
//!
//! Routes, kinds, caller ids and queue and stage names are kept as `CompactString`s: a name of
//! at most 24 bytes is stored inline and the caller's `String` is freed at once. The
//! `impl Into<String>` signatures make the caller allocate each name; freeing it right away
//! keeps that allocation in the allocator's per-thread cache, where a name kept on the heap
//! for the life of the run would take fresh memory for every event (and hold about 32 bytes of
//! heap per event besides).

use std::fmt;
use std::sync::OnceLock;

use compact_str::CompactString;

use crate::clock::Tick;
use crate::pending::Lifecycle;
use crate::sync::Arc;
use crate::timers::{QueueTimer, StageTimer};
use crate::{InflightGuard, Tailtriage};

/// Optional settings for one request.
///
/// ```
/// use tailtriage_core::RequestOptions;
///
/// let options = RequestOptions::new().request_id("req-42").kind("http");
/// assert_eq!(options.request_id.as_deref(), Some("req-42"));
/// assert_eq!(options.kind.as_deref(), Some("http"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestOptions {
    /// The caller's id for the request; a unique id is generated when `None`.
    pub request_id: Option<String>,
    /// The kind of request (`"http"`, `"grpc"`, `"job"`, …).
    pub kind: Option<String>,
}

impl RequestOptions {
    /// No id and no kind.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses the caller's id; ids are kept as given, duplicates included.
    #[must_use]
    pub fn request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Sets the request kind.
    #[must_use]
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }
}

/// How a request ended.
///
/// ```
/// use tailtriage_core::Outcome;
///
/// assert_eq!(Outcome::Timeout.as_str(), "timeout");
/// assert_eq!(Outcome::Other("shed".into()).into_string(), "shed");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Succeeded (`"ok"`).
    Ok,
    /// Failed (`"error"`).
    Error,
    /// Timed out (`"timeout"`).
    Timeout,
    /// Abandoned by the caller (`"cancelled"`).
    Cancelled,
    /// Refused, for example by load shedding (`"rejected"`).
    Rejected,
    /// Any other label, kept as given.
    Other(String),
}

impl Outcome {
    /// The outcome's label in the artifact.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
            Self::Other(label) => label,
        }
    }

    /// The outcome's label in the artifact, by value.
    #[must_use]
    pub fn into_string(self) -> String {
        match self {
            Self::Other(label) => label,
            known => known.as_str().to_owned(),
        }
    }
}

/// How a request is identified in the artifact.
enum RequestId {
    /// The caller's id, kept as given.
    Given(CompactString),
    /// A generated id: the sanitized route and a number unique within the process, formatted
    /// the first time anyone reads it.
    Generated(OnceLock<String>),
}

/// Everything one request shares between its handle, completion, events and the pending
/// registry.
pub(crate) struct RequestState {
    /// A number unique within the process; the request's key in the pending registry.
    pub(crate) number: u64,
    /// The number of the thread that began the request; it picks the pending-count shard.
    pub(crate) thread: usize,
    id: RequestId,
    pub(crate) route: CompactString,
    pub(crate) kind: Option<CompactString>,
    /// When the request began, by the run clock.
    pub(crate) started: Tick,
    /// Whether the request finished, and which shutdown last counted it unfinished.
    pub(crate) lifecycle: Lifecycle,
}

impl RequestState {
    pub(crate) fn new(route: String, options: RequestOptions, started: Tick) -> Self {
        let number = next_request_number();
        Self {
            number,
            thread: crate::sync::thread_number(),
            id: options.request_id.map_or_else(
                || RequestId::Generated(OnceLock::new()),
                |id| RequestId::Given(id.into()),
            ),
            route: route.into(),
            kind: options.kind.map(CompactString::from),
            started,
            lifecycle: Lifecycle::new(),
        }
    }

    /// The request id, formatting a generated one on first use.
    pub(crate) fn id(&self) -> &str {
        match &self.id {
            RequestId::Given(id) => id,
            RequestId::Generated(text) => {
                text.get_or_init(|| generated_request_id(&self.route, self.number))
            }
        }
    }
}

impl fmt::Debug for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestState")
            .field("request_id", &self.id())
            .field("route", &self.route)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// `route` with every character that is not an ASCII letter or digit replaced by `_`, then
/// `-` and the request's process-unique number.
///
/// Built once per request with a generated id, when a drain first needs it; sized up front
/// because a large run formats one per retained request.
fn generated_request_id(route: &str, number: u64) -> String {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(number);
    let mut id = String::with_capacity(route.len() + 1 + digits.len());
    id.extend(
        route
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' }),
    );
    id.push('-');
    id.push_str(digits);
    id
}

/// Request numbers come in blocks of `1 << REQUEST_NUMBER_BLOCK_BITS`, each drawn by one
/// thread: numbers in one block were drawn by one thread.
pub(crate) const REQUEST_NUMBER_BLOCK_BITS: u32 = 10;

/// A number no other request of this process has drawn.
///
/// Threads take numbers in blocks from one global counter so that beginning a request does not
/// write a cache line shared with other threads.
fn next_request_number() -> u64 {
    use std::cell::Cell;
    use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};

    const BLOCK: u64 = 1 << REQUEST_NUMBER_BLOCK_BITS;
    // Not part of the recording protocol (any unique numbering is correct), so std even
    // under loom.
    static NEXT_BLOCK: StdAtomicU64 = StdAtomicU64::new(0);
    thread_local! {
        /// The next number of this thread's block and the end of the block.
        static BLOCK_RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }

    BLOCK_RANGE.with(|range| {
        let (mut next, mut end) = range.get();
        if next == end {
            next = NEXT_BLOCK.fetch_add(BLOCK, StdOrdering::Relaxed);
            end = next + BLOCK;
        }
        range.set((next + 1, end));
        next
    })
}

/// A request that has begun: a handle to instrument it and the completion that finishes it.
///
/// ```
/// use tailtriage_core::{Tailtriage, MemorySink};
///
/// let tailtriage = Tailtriage::builder("checkout").sink(MemorySink::new()).build()?;
/// let started = tailtriage.begin_request("/checkout");
/// let request = started.handle.clone();
/// assert_eq!(request.route(), "/checkout");
/// started.completion.finish_ok();
/// # Ok::<(), tailtriage_core::BuildError>(())
/// ```
#[must_use = "the completion must be finished explicitly"]
#[derive(Debug)]
pub struct StartedRequest<'a> {
    /// Instruments the request; clone it freely.
    pub handle: RequestHandle<'a>,
    /// Finishes the request exactly once.
    pub completion: RequestCompletion<'a>,
}

/// A request that has begun on an `Arc<Tailtriage>`; its parts own the recorder, so they can
/// move into spawned tasks.
#[must_use = "the completion must be finished explicitly"]
#[derive(Debug)]
pub struct OwnedStartedRequest {
    /// Instruments the request; clone it freely.
    pub handle: OwnedRequestHandle,
    /// Finishes the request exactly once.
    pub completion: OwnedRequestCompletion,
}

/// Instruments one request: queue waits, stages and in-flight gauges. It never finishes the
/// request.
#[derive(Debug, Clone)]
pub struct RequestHandle<'a> {
    recorder: &'a Tailtriage,
    request: Arc<RequestState>,
}

/// Instruments one request, owning a reference to the recorder. It never finishes the request.
#[derive(Debug, Clone)]
pub struct OwnedRequestHandle {
    recorder: std::sync::Arc<Tailtriage>,
    request: Arc<RequestState>,
}

/// Finishes one request exactly once.
///
/// Dropping it unfinished records nothing and leaves the request pending (reported as
/// unfinished at shutdown); in debug builds the drop panics unless the thread is already
/// panicking, to catch the forgotten `finish`.
#[must_use = "the completion must be finished explicitly"]
#[derive(Debug)]
pub struct RequestCompletion<'a> {
    recorder: &'a Tailtriage,
    /// The request, when it is tracked as pending (not turned away at begin), until it is
    /// finished.
    request: Option<Arc<RequestState>>,
    /// For a request turned away at begin, until it is finished: the number of the thread
    /// that counted it as unfinished. (Not the request itself, so that a leaked completion
    /// holds no memory.)
    untracked: Option<usize>,
    finished: bool,
}

/// Finishes one request exactly once, owning a reference to the recorder.
///
/// Dropping it unfinished records nothing; see [`RequestCompletion`].
#[must_use = "the completion must be finished explicitly"]
#[derive(Debug)]
pub struct OwnedRequestCompletion {
    recorder: std::sync::Arc<Tailtriage>,
    request: Option<Arc<RequestState>>,
    untracked: Option<usize>,
    finished: bool,
}

/// What a completion keeps of its request: the request itself while it is tracked, or, for a
/// request turned away at begin, only the number of the thread that counted it unfinished.
struct CompletionPart {
    request: Option<Arc<RequestState>>,
    untracked: Option<usize>,
}

/// Splits a new request between its handle and its completion. A turned-away request's state
/// moves into the handle whole, so that beginning it touches its reference count only once.
fn split_for_completion(
    request: Arc<RequestState>,
    tracked: bool,
) -> (Arc<RequestState>, CompletionPart) {
    let completion = CompletionPart {
        request: tracked.then(|| Arc::clone(&request)),
        untracked: (!tracked).then_some(request.thread),
    };
    (request, completion)
}

/// The name a timer keeps: none when its section is full, since the event will be dropped
/// anyway (this skips converting, and allocating, the caller's name).
fn name_unless_full(full: bool, name: impl Into<String>) -> CompactString {
    if full {
        CompactString::default()
    } else {
        CompactString::from(name.into())
    }
}

impl<'a> StartedRequest<'a> {
    pub(crate) fn new(recorder: &'a Tailtriage, request: Arc<RequestState>, tracked: bool) -> Self {
        let (request, completion) = split_for_completion(request, tracked);
        Self {
            handle: RequestHandle { recorder, request },
            completion: RequestCompletion {
                recorder,
                request: completion.request,
                untracked: completion.untracked,
                finished: false,
            },
        }
    }
}

impl OwnedStartedRequest {
    pub(crate) fn new(
        recorder: &std::sync::Arc<Tailtriage>,
        request: Arc<RequestState>,
        tracked: bool,
    ) -> Self {
        let (request, completion) = split_for_completion(request, tracked);
        Self {
            handle: OwnedRequestHandle {
                recorder: std::sync::Arc::clone(recorder),
                request,
            },
            completion: OwnedRequestCompletion {
                recorder: std::sync::Arc::clone(recorder),
                request: completion.request,
                untracked: completion.untracked,
                finished: false,
            },
        }
    }
}

/// The methods both handle types share, written once.
macro_rules! handle_methods {
    () => {
        /// The request id: the caller's, or the generated one.
        #[must_use]
        pub fn request_id(&self) -> &str {
            self.request.id()
        }

        /// The route the request was begun with.
        #[must_use]
        pub fn route(&self) -> &str {
            &self.request.route
        }

        /// The request kind, when given.
        #[must_use]
        pub fn kind(&self) -> Option<&str> {
            self.request.kind.as_deref()
        }

        /// Times a wait in the named queue; see [`QueueTimer`].
        #[must_use]
        pub fn queue(&self, queue: impl Into<String>) -> QueueTimer<'_> {
            let queue = name_unless_full(self.recorder.queues_full(), queue);
            QueueTimer::new(&self.recorder, &self.request, queue)
        }

        /// Times a named stage of the request; see [`StageTimer`].
        #[must_use]
        pub fn stage(&self, stage: impl Into<String>) -> StageTimer<'_> {
            let stage = name_unless_full(self.recorder.stages_full(), stage);
            StageTimer::new(&self.recorder, &self.request, stage)
        }

        /// Counts the request in the named in-flight gauge until the guard drops.
        #[must_use]
        pub fn inflight(&self, gauge: impl Into<String>) -> InflightGuard<'_> {
            InflightGuard::new(&self.recorder, gauge.into())
        }
    };
}

/// The methods both completion types share, written once.
macro_rules! completion_methods {
    () => {
        /// Finishes the request with `outcome`, recording one request event.
        pub fn finish(mut self, outcome: Outcome) {
            self.finished = true;
            if let Some(request) = self.request.take() {
                self.recorder.finish_request(&request, outcome);
            } else if let Some(thread) = self.untracked.take() {
                self.recorder.finish_untracked(thread);
            }
        }

        /// Finishes the request as `ok`.
        pub fn finish_ok(self) {
            self.finish(Outcome::Ok);
        }

        /// Finishes the request as `ok` or `error` by the result, and returns the result
        /// unchanged.
        ///
        /// # Errors
        ///
        /// Returns `result` itself, so an `Err` passes through.
        pub fn finish_result<T, E>(self, result: Result<T, E>) -> Result<T, E> {
            self.finish(if result.is_ok() {
                Outcome::Ok
            } else {
                Outcome::Error
            });
            result
        }
    };
}

/// Panics in debug builds when a completion is dropped without being finished.
fn check_finished(finished: bool) {
    debug_assert!(
        finished || std::thread::panicking(),
        "a tailtriage request completion was dropped without finish(), finish_ok() or \
         finish_result(); finish every request exactly once"
    );
}

impl RequestHandle<'_> {
    handle_methods!();
}

impl OwnedRequestHandle {
    handle_methods!();
}

impl RequestCompletion<'_> {
    completion_methods!();
}

impl OwnedRequestCompletion {
    completion_methods!();
}

impl Drop for RequestCompletion<'_> {
    fn drop(&mut self) {
        check_finished(self.finished);
    }
}

impl Drop for OwnedRequestCompletion {
    fn drop(&mut self) {
        check_finished(self.finished);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_start_with_the_sanitized_route() {
        assert_eq!(generated_request_id("/a/b-c é", 7), "_a_b_c__-7");
    }

    #[test]
    fn request_numbers_are_unique_across_threads() {
        let mut numbers: Vec<u64> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        (0..3_000)
                            .map(|_| next_request_number())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().unwrap())
                .collect()
        });
        let total = numbers.len();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), total, "no number is drawn twice");
    }
}
