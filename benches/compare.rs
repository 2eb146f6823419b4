//! Side-by-side comparison of this recorder with its peers, in one process.
//!
//! Systems: `ours` (this crate), `published_0_2_0` and `published_0_3_0` (the
//! published `tailtriage-core`), `fastrace` (one span per event, reporter that
//! discards) and `floor` (per event two `Instant::now()` reads and one relaxed add
//! on a counter owned by the calling thread: the clock cost no recorder avoids).
//!
//! Every system runs the same request shape: begin, one queue wait, one stage
//! with `await_on`, one stage with `await_value`, one in-flight guard up and
//! down, `finish_ok` (six events). Futures are polled once with a no-op waker,
//! so no executor shows up in the figures.
//!
//! Scenarios: `lifecycle_1t`, `threads` (1, 2, 4, 8, 16 threads on one
//! recorder), `drop_path` (sections already saturated against sections with
//! room), `shutdown_100k` (drain, serialise and write 100 000 requests) and
//! `memory` (resident memory added by `build()`, resident bytes per retained
//! event). The systems take turns within each round and every figure is the
//! median over the rounds, so drift on a shared machine hits all of them alike.
//!
//! Memory is read from `VmRSS` in `/proc/self/status` inside a fresh child
//! process (this same binary, started with `COMPARE_MEMORY_CHILD` set), so
//! one measurement never inherits pages freed by another. A counting global
//! allocator would need `unsafe` (forbidden in this package) and would tax
//! every allocation in the timed scenarios.
//!
//! Environment:
//! - `BENCH_QUICK=1`: fewer rounds and smaller samples (the whole run stays
//!   well under three minutes);
//! - `BENCH_PROFILE=lifecycle_1t|threads|drop_path|shutdown_100k`: instead of
//!   comparing, run one system in a loop for profiling (`BENCH_PROFILE_SYSTEM`,
//!   default `ours`; `BENCH_PROFILE_SECS`, default 10, or
//!   `BENCH_PROFILE_CHUNKS` chunks of 50 000 requests or shutdowns for
//!   repeatable instruction counts; `BENCH_PROFILE_THREADS`, default 8).
//!
//! - `BENCH_ARTIFACT_DIR`: where `shutdown_100k` writes its artifacts (default
//!   `/dev/shm` where it exists, else the system's temporary folder);
//! - `BENCH_ONLY=drop_path,threads,...`: run only the named scenarios (the
//!   others print as `n/a`) and leave the summary file alone.
//!
//! Results: a table on stdout and `bench-summary.json` in the target folder
//! (`CARGO_TARGET_DIR` when set, else `target`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::hint::black_box;
use std::path::PathBuf;
use std::pin::pin;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Once};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use fastrace::collector::{Config as FastraceConfig, Reporter, SpanContext, SpanRecord};
use fastrace::local::LocalSpan;
use fastrace::Span;
use serde_json::{json, Map, Value};

const ROUTE: &str = "/checkout";
const QUEUE: &str = "ingress";
const STAGE_IO: &str = "db";
const STAGE_CPU: &str = "render";
const GAUGE: &str = "checkout_inflight";

/// Events recorded per request by the workload shape.
const EVENTS_PER_REQUEST: u32 = 6;

/// Thread counts of the `threads` scenario.
const THREAD_COUNTS: [usize; 5] = [1, 2, 4, 8, 16];

/// Requests in the artifact of the `shutdown_100k` and `memory` scenarios.
const ARTIFACT_REQUESTS: usize = 100_000;

/// Environment variable that turns this binary into a memory-measuring child.
const MEMORY_CHILD_ENV: &str = "COMPARE_MEMORY_CHILD";

// ---------------------------------------------------------------------------
// Systems and the workload shape

/// One system under comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum System {
    Ours,
    Published020,
    Published030,
    Fastrace,
    Floor,
}

impl System {
    const ALL: [System; 5] = [
        System::Ours,
        System::Published020,
        System::Published030,
        System::Fastrace,
        System::Floor,
    ];

    const fn name(self) -> &'static str {
        match self {
            System::Ours => "ours",
            System::Published020 => "published_0_2_0",
            System::Published030 => "published_0_3_0",
            System::Fastrace => "fastrace",
            System::Floor => "floor",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|system| system.name() == name)
    }
}

/// Something that records the workload shape, shared by every recording thread.
trait Recorder: Sync {
    /// Records `requests` fully instrumented requests on the calling thread.
    fn record_requests(&self, requests: usize);

    /// Finishes work the system defers to a background thread, inside the
    /// timed region (fastrace hands its spans to a collector thread).
    /// Systems that defer nothing have nothing to do.
    fn settle(&self) {}
}

/// Polls a future once with a no-op waker and returns its output.
fn poll_ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("the workload only wraps futures that are already ready"),
    }
}

/// Implements [`Recorder`] for a `Tailtriage` type; ours and the published
/// versions share the 0.2 API, so one body drives all of them.
macro_rules! tailtriage_recorder {
    ($tailtriage:ty) => {
        impl Recorder for $tailtriage {
            fn record_requests(&self, requests: usize) {
                for _ in 0..requests {
                    let started = self.begin_request(ROUTE);
                    poll_ready(started.handle.queue(QUEUE).await_on(std::future::ready(())));
                    let io = poll_ready(
                        started
                            .handle
                            .stage(STAGE_IO)
                            .await_on(std::future::ready(Ok::<u32, std::io::Error>(7))),
                    );
                    black_box(io.ok());
                    poll_ready(
                        started
                            .handle
                            .stage(STAGE_CPU)
                            .await_value(std::future::ready(())),
                    );
                    drop(started.handle.inflight(GAUGE));
                    started.completion.finish_ok();
                }
            }
        }
    };
}

tailtriage_recorder!(tailtriage_core::Tailtriage);
tailtriage_recorder!(published::Tailtriage);
tailtriage_recorder!(published_0_3::Tailtriage);

/// fastrace: the request is a root span, every other event a local span.
struct FastraceRecorder;

/// A fastrace reporter that drops every span it receives.
struct DiscardReporter;

impl Reporter for DiscardReporter {
    fn report(&mut self, spans: Vec<SpanRecord>) {
        black_box(spans.len());
    }
}

impl Recorder for FastraceRecorder {
    fn record_requests(&self, requests: usize) {
        for _ in 0..requests {
            let root = Span::root(ROUTE, SpanContext::random());
            let parent = root.set_local_parent();
            {
                let _span = LocalSpan::enter_with_local_parent(QUEUE);
                poll_ready(std::future::ready(()));
            }
            {
                let _span = LocalSpan::enter_with_local_parent(STAGE_IO);
                let io = poll_ready(std::future::ready(Ok::<u32, std::io::Error>(7)));
                black_box(io.ok());
            }
            {
                let _span = LocalSpan::enter_with_local_parent(STAGE_CPU);
                poll_ready(std::future::ready(()));
            }
            drop(LocalSpan::enter_with_local_parent("inflight_up"));
            drop(LocalSpan::enter_with_local_parent("inflight_down"));
            drop(parent);
            drop(root);
        }
    }

    fn settle(&self) {
        fastrace::flush();
    }
}

/// The floor: per event two clock reads and one relaxed add on a counter
/// that belongs to the calling thread alone.
struct FloorRecorder;

impl Recorder for FloorRecorder {
    fn record_requests(&self, requests: usize) {
        let counter = AtomicU64::new(0);
        for _ in 0..requests {
            for _ in 0..EVENTS_PER_REQUEST {
                let start = Instant::now();
                let end = Instant::now();
                let nanos = u64::try_from(end.duration_since(start).as_nanos()).unwrap_or(0);
                black_box(&counter).fetch_add(nanos, Ordering::Relaxed);
            }
        }
        black_box(counter.load(Ordering::Relaxed));
    }
}

/// Per-section limits, converted to each crate's own `CaptureLimits`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    requests: usize,
    stages: usize,
    queues: usize,
    inflight: usize,
}

impl Limits {
    /// Limits that retain every event of `requests` requests of the workload.
    const fn room_for(requests: usize) -> Self {
        Self {
            requests,
            stages: 2 * requests,
            queues: requests,
            inflight: 2 * requests,
        }
    }
}

macro_rules! build_tailtriage {
    ($krate:ident, $limits:expr) => {{
        let limits: Limits = $limits;
        $krate::Tailtriage::builder("compare-bench")
            .capture_limits($krate::CaptureLimits {
                max_requests: limits.requests,
                max_stages: limits.stages,
                max_queues: limits.queues,
                max_inflight_snapshots: limits.inflight,
                max_runtime_snapshots: 0,
            })
            .sink($krate::DiscardSink)
            .build()
            .expect("a non-empty service name builds")
    }};
}

/// Builds a fresh recorder of `system` with `limits`, hands it to `body`, and
/// drops it after `body` returns (outside any region `body` times).
fn with_recorder<T>(system: System, limits: Limits, body: impl FnOnce(&dyn Recorder) -> T) -> T {
    match system {
        System::Ours => body(&build_tailtriage!(tailtriage_core, limits)),
        System::Published020 => body(&build_tailtriage!(published, limits)),
        System::Published030 => body(&build_tailtriage!(published_0_3, limits)),
        System::Fastrace => {
            static REPORTER: Once = Once::new();
            REPORTER
                .call_once(|| fastrace::set_reporter(DiscardReporter, FastraceConfig::default()));
            body(&FastraceRecorder)
        }
        System::Floor => body(&FloorRecorder),
    }
}

/// Records `per_thread` requests on each of `threads` new threads at once and
/// returns the wall time from the first start to the last finish.
fn time_threads(recorder: &dyn Recorder, threads: usize, per_thread: usize) -> Duration {
    // Each thread reads the clock itself once released: on two cores the
    // thread that releases the others may be scheduled late, so the span runs
    // from the first thread's start to the last thread's finish.
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    recorder.record_requests(per_thread);
                    (start, Instant::now())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().expect("a recording thread panicked"))
            .collect()
    });
    let first_start = spans
        .iter()
        .map(|span| span.0)
        .min()
        .expect("at least one thread");
    let last_end = spans
        .iter()
        .map(|span| span.1)
        .max()
        .expect("at least one thread");
    last_end.duration_since(first_start) + time_settle(recorder)
}

/// Records `requests` requests on the calling thread and returns the time taken.
fn time_here(recorder: &dyn Recorder, requests: usize) -> Duration {
    let start = Instant::now();
    recorder.record_requests(requests);
    start.elapsed() + time_settle(recorder)
}

/// Time the system takes to finish the work it deferred.
fn time_settle(recorder: &dyn Recorder) -> Duration {
    let start = Instant::now();
    recorder.settle();
    start.elapsed()
}

#[allow(
    clippy::cast_precision_loss,
    reason = "request counts stay far below 2^52"
)]
fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

// ---------------------------------------------------------------------------
// Rounds and medians

/// Sample sizes and round counts.
#[derive(Debug, Clone, Copy)]
struct Plan {
    quick: bool,
    /// Scenarios to run (`BENCH_ONLY`, comma-separated); `None` runs them all
    /// and writes the summary file.
    only: Option<&'static [&'static str]>,
    rounds: usize,
    lifecycle_requests: usize,
    threads_requests: usize,
    drop_requests: usize,
    shutdown_rounds: usize,
    memory_repeats: usize,
}

impl Plan {
    fn from_env() -> Self {
        let quick = std::env::var("BENCH_QUICK").is_ok_and(|value| value != "0");
        let only = std::env::var("BENCH_ONLY").ok().map(|list| {
            let names: Vec<&'static str> = list
                .split(',')
                .map(|name| &*String::leak(name.trim().to_owned()))
                .collect();
            &*names.leak()
        });
        if quick {
            Self {
                quick,
                only,
                rounds: 5,
                lifecycle_requests: 50_000,
                threads_requests: 64_000,
                drop_requests: 50_000,
                shutdown_rounds: 3,
                memory_repeats: 3,
            }
        } else {
            Self {
                quick,
                only,
                rounds: 11,
                lifecycle_requests: 200_000,
                threads_requests: 192_000,
                drop_requests: 200_000,
                shutdown_rounds: 7,
                memory_repeats: 3,
            }
        }
    }

    /// Whether this run includes `scenario`.
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_none_or(|only| only.contains(&scenario))
    }
}

/// Samples by scenario key and system name.
#[derive(Default)]
struct Samples(BTreeMap<(String, String), Vec<f64>>);

impl Samples {
    fn push(&mut self, scenario: &str, system: &str, value: f64) {
        self.0
            .entry((scenario.to_owned(), system.to_owned()))
            .or_default()
            .push(value);
    }

    fn median(&self, scenario: &str, system: &str) -> f64 {
        let mut values = self
            .0
            .get(&(scenario.to_owned(), system.to_owned()))
            .cloned()
            .unwrap_or_default();
        median(&mut values)
    }
}

fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    }
}

/// The systems in the order they run in `round`: rotated each round so no
/// system always runs first or last.
fn rotated<T: Copy>(items: &[T], round: usize) -> Vec<T> {
    let mut order = items.to_vec();
    order.rotate_left(round % items.len());
    order
}

fn lifecycle_sample(system: System, requests: usize) -> f64 {
    with_recorder(system, Limits::room_for(requests), |recorder| {
        per_second(requests, time_here(recorder, requests))
    })
}

fn threads_sample(system: System, threads: usize, total_requests: usize) -> f64 {
    let per_thread = total_requests / threads;
    with_recorder(system, Limits::room_for(per_thread * threads), |recorder| {
        per_second(
            per_thread * threads,
            time_threads(recorder, threads, per_thread),
        )
    })
}

/// Events per second with every section full before the clock starts.
fn saturated_sample(system: System, requests: usize) -> f64 {
    const RETAINED: usize = 1_000;
    with_recorder(system, Limits::room_for(RETAINED), |recorder| {
        // Fill every section past its limit, so the timed requests only drop.
        recorder.record_requests(RETAINED + 10);
        let elapsed = time_here(recorder, requests);
        per_second(requests * EVENTS_PER_REQUEST as usize, elapsed)
    })
}

/// Events per second with room for every event.
fn recording_sample(system: System, requests: usize) -> f64 {
    with_recorder(system, Limits::room_for(requests), |recorder| {
        let elapsed = time_here(recorder, requests);
        per_second(requests * EVENTS_PER_REQUEST as usize, elapsed)
    })
}

/// A temporary folder for an artifact: in memory (`/dev/shm`) where there is one, so that a
/// disk shared with other work does not add its flush time to the recorder's; the folder
/// `BENCH_ARTIFACT_DIR` names when set.
fn artifact_folder() -> tempfile::TempDir {
    let base = std::env::var_os("BENCH_ARTIFACT_DIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from("/dev/shm")).filter(|shm| shm.is_dir()));
    match base {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("a temporary folder for the artifact")
}

/// Milliseconds `shutdown()` takes to write an artifact of
/// [`ARTIFACT_REQUESTS`] requests, and the artifact's size in bytes.
/// `pretty` asks ours for the indented artifact the published crate writes.
fn shutdown_sample(system: System, pretty: bool) -> (f64, u64) {
    let folder = artifact_folder();
    let path = folder.path().join("run.json");

    macro_rules! shutdown_with {
        ($krate:ident) => {
            shutdown_with!($krate, $krate::LocalJsonSink::new(&path))
        };
        ($krate:ident, $sink:expr) => {{
            let run = $krate::Tailtriage::builder("compare-bench")
                .sink($sink)
                .build()
                .expect("a non-empty service name builds");
            run.record_requests(ARTIFACT_REQUESTS);
            let start = Instant::now();
            run.shutdown().expect("the artifact is written");
            start.elapsed()
        }};
    }

    let elapsed = match system {
        System::Ours if pretty => {
            shutdown_with!(
                tailtriage_core,
                tailtriage_core::LocalJsonSink::new(&path).pretty()
            )
        }
        System::Ours => shutdown_with!(tailtriage_core),
        System::Published020 => shutdown_with!(published),
        System::Published030 => shutdown_with!(published_0_3),
        System::Fastrace | System::Floor => unreachable!("only tailtriage writes an artifact"),
    };
    let bytes = std::fs::metadata(&path).expect("the artifact exists").len();
    (elapsed.as_secs_f64() * 1e3, bytes)
}

// ---------------------------------------------------------------------------
// Memory, measured in child processes

/// Resident set size of this process in bytes, from `/proc/self/status`.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .expect("a VmRSS line in kB");
    kib * 1024
}

/// Runs one memory measurement in this process and prints it: the bytes of
/// resident memory one measured action added.
fn memory_child(task: &str) {
    macro_rules! build_growth {
        ($krate:ident, $mode:ident) => {{
            // A first run pages in the code and the allocator's bookkeeping; it
            // stays alive so the measured run cannot reuse its memory.
            let warm = $krate::Tailtriage::builder("compare-bench")
                .$mode()
                .sink($krate::DiscardSink)
                .build()
                .expect("builds");
            let before = resident_bytes();
            let run = $krate::Tailtriage::builder("compare-bench")
                .$mode()
                .sink($krate::DiscardSink)
                .build()
                .expect("builds");
            let after = resident_bytes();
            black_box((&warm, &run));
            after.saturating_sub(before)
        }};
    }

    macro_rules! event_growth {
        ($krate:ident) => {{
            let run = $krate::Tailtriage::builder("compare-bench")
                .light()
                .sink($krate::DiscardSink)
                .build()
                .expect("builds");
            let before = resident_bytes();
            run.record_requests(ARTIFACT_REQUESTS);
            let after = resident_bytes();
            black_box(&run);
            after.saturating_sub(before)
        }};
    }

    let bytes = match task {
        "build-light-ours" => build_growth!(tailtriage_core, light),
        "build-investigation-ours" => build_growth!(tailtriage_core, investigation),
        "build-light-published_0_2_0" => build_growth!(published, light),
        "build-investigation-published_0_2_0" => build_growth!(published, investigation),
        "events-ours" => event_growth!(tailtriage_core),
        "events-published_0_2_0" => event_growth!(published),
        "events-published_0_3_0" => event_growth!(published_0_3),
        other => panic!("unknown memory task {other:?}"),
    };
    println!("{bytes}");
}

/// Median over `repeats` fresh child processes of one memory task, in bytes.
#[allow(
    clippy::cast_precision_loss,
    reason = "byte counts stay far below 2^52"
)]
fn memory_sample(task: &str, repeats: usize) -> f64 {
    let exe = std::env::current_exe().expect("the path of this benchmark binary");
    let mut values: Vec<f64> = (0..repeats)
        .map(|_| {
            let output = Command::new(&exe)
                .env(MEMORY_CHILD_ENV, task)
                .output()
                .expect("the memory child starts");
            assert!(
                output.status.success(),
                "memory child {task} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let text = String::from_utf8_lossy(&output.stdout);
            text.trim()
                .parse::<u64>()
                .expect("the child prints a byte count") as f64
        })
        .collect();
    median(&mut values)
}

// ---------------------------------------------------------------------------
// The comparison

struct Results {
    samples: Samples,
    shutdown_bytes: BTreeMap<&'static str, u64>,
    memory: BTreeMap<&'static str, f64>,
}

/// A named `drop_path` case: events per second for a number of requests.
type DropCase = (&'static str, fn(usize) -> f64);

fn run_comparison(plan: Plan) -> Results {
    let mut samples = Samples::default();
    let mut shutdown_bytes = BTreeMap::new();
    let mut memory = BTreeMap::new();

    // Memory first, in children, before this process has done any work.
    eprintln!("memory ...");
    let memory_tasks = [
        "build-light-ours",
        "build-investigation-ours",
        "build-light-published_0_2_0",
        "build-investigation-published_0_2_0",
        "events-ours",
        "events-published_0_2_0",
        "events-published_0_3_0",
    ];
    for task in memory_tasks.into_iter().filter(|_| plan.runs("memory")) {
        memory.insert(task, memory_sample(task, plan.memory_repeats));
    }

    // One untimed pass pages in code and warms every system.
    for system in System::ALL {
        lifecycle_sample(system, plan.lifecycle_requests / 10);
    }

    eprintln!("lifecycle_1t ...");
    for round in (0..plan.rounds).filter(|_| plan.runs("lifecycle_1t")) {
        for system in rotated(&System::ALL, round) {
            let value = lifecycle_sample(system, plan.lifecycle_requests);
            samples.push("lifecycle_1t", system.name(), value);
        }
    }

    eprintln!("threads ...");
    for round in (0..plan.rounds).filter(|_| plan.runs("threads")) {
        for threads in THREAD_COUNTS {
            for system in rotated(&System::ALL, round + threads) {
                let value = threads_sample(system, threads, plan.threads_requests);
                samples.push(&format!("threads_{threads}"), system.name(), value);
            }
        }
    }

    eprintln!("drop_path ...");
    for round in (0..plan.rounds).filter(|_| plan.runs("drop_path")) {
        let cases: [DropCase; 3] = [
            ("ours", |n| saturated_sample(System::Ours, n)),
            ("ours_recording", |n| recording_sample(System::Ours, n)),
            ("published_0_2_0", |n| {
                saturated_sample(System::Published020, n)
            }),
        ];
        for (name, sample) in rotated(&cases, round) {
            samples.push("drop_path", name, sample(plan.drop_requests));
        }
    }

    eprintln!("shutdown_100k ...");
    let cases = [
        ("ours", System::Ours, false),
        ("ours_pretty", System::Ours, true),
        ("published_0_2_0", System::Published020, false),
    ];
    for round in (0..plan.shutdown_rounds).filter(|_| plan.runs("shutdown_100k")) {
        for (name, system, pretty) in rotated(&cases, round) {
            let (ms, bytes) = shutdown_sample(system, pretty);
            samples.push("shutdown_100k", name, ms);
            shutdown_bytes.insert(name, bytes);
        }
    }

    Results {
        samples,
        shutdown_bytes,
        memory,
    }
}

/// Rounds a figure for the summary file: whole units, or three decimals
/// below 1000.
fn figure(value: f64) -> Value {
    if value.abs() >= 1000.0 {
        json!(value.round())
    } else {
        json!((value * 1000.0).round() / 1000.0)
    }
}

fn summary(results: &Results) -> Value {
    let samples = &results.samples;
    let per_system = |scenario: &str| -> Value {
        let mut map = Map::new();
        for system in System::ALL {
            map.insert(
                system.name().into(),
                figure(samples.median(scenario, system.name())),
            );
        }
        Value::Object(map)
    };

    let mut threads = Map::new();
    for count in THREAD_COUNTS {
        threads.insert(count.to_string(), per_system(&format!("threads_{count}")));
    }

    #[allow(
        clippy::cast_precision_loss,
        reason = "byte counts stay far below 2^52"
    )]
    let shutdown_bytes = |name: &str| results.shutdown_bytes.get(name).copied().unwrap_or(0) as f64;
    let events = f64::from(EVENTS_PER_REQUEST) * 100_000.0;
    let memory = |task: &str| results.memory.get(task).copied().unwrap_or(f64::NAN);

    json!({
        "lifecycle_1t": per_system("lifecycle_1t"),
        "threads": Value::Object(threads),
        "drop_path": {
            "ours": figure(samples.median("drop_path", "ours")),
            "ours_recording": figure(samples.median("drop_path", "ours_recording")),
            "published_0_2_0": figure(samples.median("drop_path", "published_0_2_0")),
        },
        "shutdown_100k": {
            "ours_ms": figure(samples.median("shutdown_100k", "ours")),
            "published_0_2_0_ms": figure(samples.median("shutdown_100k", "published_0_2_0")),
            "ours_bytes": figure(shutdown_bytes("ours")),
            "published_0_2_0_bytes": figure(shutdown_bytes("published_0_2_0")),
        },
        "memory": {
            "ours_build_light_kib": figure(memory("build-light-ours") / 1024.0),
            "ours_build_investigation_kib": figure(memory("build-investigation-ours") / 1024.0),
            "ours_bytes_per_event": figure(memory("events-ours") / events),
            "published_0_2_0_bytes_per_event": figure(memory("events-published_0_2_0") / events),
        },
    })
}

// ---------------------------------------------------------------------------
// The printed table

fn number(value: &Value) -> f64 {
    value.as_f64().unwrap_or(f64::NAN)
}

fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".into();
    }
    format!("{:.0}k", value / 1000.0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one table after another, read top to bottom"
)]
fn report(results: &Results, summary: &Value) -> String {
    let mut out = String::new();
    let s = summary;
    let lifecycle = |name: &str| number(&s["lifecycle_1t"][name]);
    let threads = |count: usize, name: &str| number(&s["threads"][count.to_string()][name]);

    let _ = writeln!(
        out,
        "\n### lifecycle_1t: one thread, six events per request\n"
    );
    let _ = writeln!(
        out,
        "| system | requests/s | ns per request | ours ÷ system |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for system in System::ALL {
        let value = lifecycle(system.name());
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.2} |",
            system.name(),
            thousands(value),
            1e9 / value,
            lifecycle("ours") / value
        );
    }

    let _ = writeln!(
        out,
        "\n### threads: total requests/s, one shared recorder\n"
    );
    let mut header = String::from("| threads |");
    let mut rule = String::from("|---:|");
    for system in System::ALL {
        let _ = write!(header, " {} |", system.name());
        rule.push_str("---:|");
    }
    header.push_str(" ours ÷ 0.2.0 | ours ÷ floor |");
    rule.push_str("---:|---:|");
    let _ = writeln!(out, "{header}\n{rule}");
    for count in THREAD_COUNTS {
        let mut row = format!("| {count} |");
        for system in System::ALL {
            let _ = write!(row, " {} |", thousands(threads(count, system.name())));
        }
        let ours = threads(count, "ours");
        let _ = write!(
            row,
            " {:.2} | {:.2} |",
            ours / threads(count, "published_0_2_0"),
            ours / threads(count, "floor")
        );
        let _ = writeln!(out, "{row}");
    }

    let drop = |name: &str| number(&s["drop_path"][name]);
    let _ = writeln!(out, "\n### drop_path: events/s, one thread\n");
    let _ = writeln!(out, "| case | events/s | ns per event |");
    let _ = writeln!(out, "|---|---:|---:|");
    for (name, label) in [
        ("ours", "ours, every section saturated"),
        ("ours_recording", "ours, every section with room"),
        (
            "published_0_2_0",
            "published_0_2_0, every section saturated",
        ),
    ] {
        let value = drop(name);
        let _ = writeln!(
            out,
            "| {label} | {} | {:.1} |",
            thousands(value),
            1e9 / value
        );
    }

    let shutdown = |name: &str| number(&s["shutdown_100k"][name]);
    let _ = writeln!(
        out,
        "\n### shutdown_100k: drain, serialise, write 100 000 requests\n"
    );
    let _ = writeln!(out, "| system | ms | artifact bytes |");
    let _ = writeln!(out, "|---|---:|---:|");
    for name in ["ours", "published_0_2_0"] {
        let _ = writeln!(
            out,
            "| {name} (default sink) | {:.1} | {:.0} |",
            shutdown(&format!("{name}_ms")),
            shutdown(&format!("{name}_bytes"))
        );
    }
    // Not in the summary file: ours writing the indented artifact 0.2.0 writes.
    #[allow(
        clippy::cast_precision_loss,
        reason = "byte counts stay far below 2^52"
    )]
    let pretty_bytes = results
        .shutdown_bytes
        .get("ours_pretty")
        .copied()
        .unwrap_or(0) as f64;
    let _ = writeln!(
        out,
        "| ours, `LocalJsonSink::pretty()` | {:.1} | {pretty_bytes:.0} |",
        results.samples.median("shutdown_100k", "ours_pretty")
    );

    let memory = |task: &str| results.memory.get(task).copied().unwrap_or(f64::NAN);
    let events = f64::from(EVENTS_PER_REQUEST) * 100_000.0;
    let _ = writeln!(out, "\n### memory: resident growth in a fresh process\n");
    let _ = writeln!(out, "| figure | ours | published_0_2_0 | published_0_3_0 |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for (label, task) in [
        ("build(), Light defaults (KiB)", "build-light"),
        (
            "build(), Investigation defaults (KiB)",
            "build-investigation",
        ),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {:.0} | {:.0} | - |",
            memory(&format!("{task}-ours")) / 1024.0,
            memory(&format!("{task}-published_0_2_0")) / 1024.0
        );
    }
    let _ = writeln!(
        out,
        "| bytes per retained event, 100 000 requests | {:.0} | {:.0} | {:.0} |",
        memory("events-ours") / events,
        memory("events-published_0_2_0") / events,
        memory("events-published_0_3_0") / events
    );

    let floor_scaling = threads(2, "floor") / threads(1, "floor");
    let ours_scaling = threads(2, "ours") / threads(1, "ours");
    let mem = |key: &str| number(&s["memory"][key]);
    let targets: Vec<(String, f64, f64)> = vec![
        (
            "lifecycle_1t: ours ÷ published_0_2_0".into(),
            lifecycle("ours") / lifecycle("published_0_2_0"),
            2.5,
        ),
        (
            "lifecycle_1t: ours ÷ floor".into(),
            lifecycle("ours") / lifecycle("floor"),
            0.67,
        ),
        (
            "threads: ours 2t/1t scaling ÷ floor 2t/1t scaling".into(),
            ours_scaling / floor_scaling,
            0.9,
        ),
        (
            "threads: 8t ours ÷ published_0_2_0".into(),
            threads(8, "ours") / threads(8, "published_0_2_0"),
            3.0,
        ),
        (
            "threads: 8t ours ÷ floor".into(),
            threads(8, "ours") / threads(8, "floor"),
            0.6,
        ),
        (
            "drop_path: saturated ÷ with room".into(),
            drop("ours") / drop("ours_recording"),
            4.0,
        ),
        (
            "shutdown_100k: published_0_2_0 ms ÷ ours ms".into(),
            shutdown("published_0_2_0_ms") / shutdown("ours_ms"),
            2.0,
        ),
        (
            "memory: 2 MiB ÷ build() Light".into(),
            2048.0 / mem("ours_build_light_kib").max(1.0),
            1.0,
        ),
        (
            "memory: 2 MiB ÷ build() Investigation".into(),
            2048.0 / mem("ours_build_investigation_kib").max(1.0),
            1.0,
        ),
        (
            "memory: published_0_2_0 ÷ ours bytes per event".into(),
            mem("published_0_2_0_bytes_per_event") / mem("ours_bytes_per_event"),
            1.0,
        ),
    ];
    let _ = writeln!(out, "\n### targets (ratios from this run)\n");
    let _ = writeln!(out, "| target | measured | required | verdict |");
    let _ = writeln!(out, "|---|---:|---:|---|");
    for (label, measured, required) in targets {
        let _ = writeln!(
            out,
            "| {label} | {measured:.2} | ≥ {required:.2} | {} |",
            verdict(measured >= required)
        );
    }
    out
}

fn summary_path() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from("target"), PathBuf::from)
        .join("bench-summary.json")
}

// ---------------------------------------------------------------------------
// Profiling mode

/// Runs one system in one scenario in a loop, for a profiler to sample.
fn profile(scenario: &str) {
    let system_name = std::env::var("BENCH_PROFILE_SYSTEM").unwrap_or_else(|_| "ours".into());
    let system = System::parse(&system_name).expect("BENCH_PROFILE_SYSTEM names a system");
    let env_number = |key: &str, default: u64| -> u64 {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let seconds = env_number("BENCH_PROFILE_SECS", 10);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    // A fixed amount of work instead of a fixed time, for instruction counts
    // that repeat exactly (valgrind's callgrind).
    let chunks = std::env::var("BENCH_PROFILE_CHUNKS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let mut done = 0_u64;
    let mut more = || {
        done += 1;
        chunks.map_or_else(|| Instant::now() < deadline, |chunks| done <= chunks)
    };

    if scenario == "shutdown_100k" {
        let mut shutdowns = 0_u32;
        let mut busy = 0.0;
        while more() {
            busy += shutdown_sample(system, false).0;
            shutdowns += 1;
        }
        eprintln!(
            "profiled {system_name} in {scenario}: {:.1} ms per shutdown",
            busy / f64::from(shutdowns.max(1))
        );
        return;
    }

    if scenario == "drop_path" {
        let mut events_per_s = Vec::new();
        while more() {
            events_per_s.push(saturated_sample(system, 50_000));
        }
        eprintln!(
            "profiled {system_name} in {scenario}: {:.0} events/s",
            median(&mut events_per_s)
        );
        return;
    }

    let threads = match scenario {
        "lifecycle_1t" => 1,
        "threads" => usize::try_from(env_number("BENCH_PROFILE_THREADS", 8)).unwrap_or(8),
        other => {
            panic!("BENCH_PROFILE names lifecycle_1t, threads or shutdown_100k, not {other:?}")
        }
    };
    let chunk = 50_000;
    let mut requests = 0;
    let mut busy = Duration::ZERO;
    while more() {
        busy += with_recorder(system, Limits::room_for(chunk), |recorder| {
            if threads == 1 {
                time_here(recorder, chunk)
            } else {
                time_threads(recorder, threads, chunk / threads)
            }
        });
        requests += chunk / threads * threads;
    }
    eprintln!(
        "profiled {system_name} in {scenario} on {threads} thread(s): {:.0} requests/s",
        per_second(requests, busy)
    );
}

fn main() {
    if let Ok(task) = std::env::var(MEMORY_CHILD_ENV) {
        memory_child(&task);
        return;
    }
    if let Ok(scenario) = std::env::var("BENCH_PROFILE") {
        profile(&scenario);
        return;
    }
    // `cargo bench` passes `--bench`; a filter or a list request is not
    // supported by this harness, so run everything unless asked to list.
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }

    let plan = Plan::from_env();
    let started = Instant::now();
    let results = run_comparison(plan);
    let summary = summary(&results);
    print!("{}", report(&results, &summary));
    println!(
        "\n{} run, {} rounds, {:.0} s; median of the rounds\n",
        if plan.quick { "quick" } else { "full" },
        plan.rounds,
        started.elapsed().as_secs_f64()
    );

    if plan.only.is_some() {
        println!("BENCH_ONLY is set: the summary file is left as it was");
        return;
    }
    let path = summary_path();
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("the target folder can be created");
    }
    let text = serde_json::to_string_pretty(&summary).expect("the summary serialises");
    std::fs::write(&path, text + "\n").expect("the summary file is written");
    println!("summary written to {}", path.display());
}
