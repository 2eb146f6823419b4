//! Bounded live bookkeeping: requests that are never finished and gauges with ever new names
//! cannot grow memory without bound. Pending requests are bounded by the request limit and
//! distinct gauges by the in-flight snapshot limit; what is over the bound is refused without
//! breaking the caller, and every refusal is counted in the run.
//!
//! Memory is measured two ways in this test binary: the bytes live on the heap, through an
//! instrumented global allocator, and the resident set size from `/proc/self/status`. Each test
//! compares the growth while the bound fills with the growth over many times more traffic
//! after it is reached. The tests take one lock so that they never measure each other.

use std::alloc::System;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

use tailtriage_core::{CaptureLimitsOverride, MemorySink, Tailtriage};

mod support;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Serializes the tests of this binary: the allocator and the resident set are process-wide.
static SERIAL: Mutex<()> = Mutex::new(());

/// The bound under test: the request limit, or the in-flight snapshot limit.
const BOUND: usize = 10_000;

/// Traffic sent after the bound is reached: fifty times the bound.
const PAST_THE_BOUND: usize = 500_000;

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Bytes live on the heap of this process.
fn live_bytes() -> isize {
    support::live_heap_bytes(&ALLOCATOR.stats())
}

/// The resident set size of this process, in bytes (`VmRSS` of `/proc/self/status`).
fn resident_bytes() -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory at one moment, both ways.
#[derive(Debug, Clone, Copy)]
struct Memory {
    heap: isize,
    resident: Option<i64>,
}

impl Memory {
    fn now() -> Self {
        Self {
            heap: live_bytes(),
            resident: resident_bytes(),
        }
    }

    fn heap_since(self, earlier: Self) -> isize {
        self.heap - earlier.heap
    }

    fn resident_since(self, earlier: Self) -> Option<i64> {
        Some(self.resident? - earlier.resident?)
    }
}

/// Checks that memory stayed flat past the bound, from three measurements: when the traffic
/// began, when the bound was reached, and after each half of the traffic past it.
///
/// * The first half past the bound may cost at most what filling the bound cost (a hash
///   table whose idle entries are swept may double once); without the bound it would cost
///   twenty-five times that.
/// * The second half must cost less than a tenth of filling the bound: memory is flat.
/// * The resident set grows past the bound by less than filling the bound cost plus 8 MiB of
///   slack for the allocator; without the bound it would grow by well over 100 MiB.
fn assert_flat_past_the_bound(what: &str, start: Memory, at_bound: Memory, halves: [Memory; 2]) {
    let [half, past] = halves;
    let filling = at_bound.heap_since(start);
    let first_half = half.heap_since(at_bound);
    let second_half = past.heap_since(half);
    println!(
        "{what}: heap +{filling} B for the first {BOUND} (≈{} B each), then +{first_half} B \
         and +{second_half} B for two halves of {PAST_THE_BOUND} more; resident +{} KiB, \
         then +{} KiB",
        filling / isize::try_from(BOUND).expect("fits"),
        at_bound.resident_since(start).unwrap_or(-1) / 1024,
        past.resident_since(at_bound).unwrap_or(-1) / 1024,
    );
    assert!(
        filling >= isize::try_from(BOUND * 32).expect("fits"),
        "{what}: filling the bound should cost memory (else this test measures nothing): \
         {filling} B"
    );
    assert!(
        first_half < filling,
        "{what}: the heap should stay bounded past the bound: +{filling} B to fill it, then \
         +{first_half} B for {} more",
        PAST_THE_BOUND / 2
    );
    assert!(
        second_half < filling / 10,
        "{what}: the heap should stay flat past the bound: +{filling} B to fill it, then \
         +{second_half} B for the last {} of {PAST_THE_BOUND} more",
        PAST_THE_BOUND / 2
    );
    if let (Some(filling), Some(beyond)) = (
        at_bound.resident_since(start),
        past.resident_since(at_bound),
    ) {
        assert!(
            beyond < filling.max(0) + (8 << 20),
            "{what}: the resident set should stay flat past the bound: +{filling} B to fill \
             it, then +{beyond} B for {PAST_THE_BOUND} more"
        );
    }
}

/// Runs `traffic(from, count)` from the start, up to the bound, and over two halves past it;
/// returns the four measurements.
fn measure(mut traffic: impl FnMut(usize, usize)) -> (Memory, Memory, [Memory; 2]) {
    let start = Memory::now();
    traffic(0, BOUND);
    let at_bound = Memory::now();
    traffic(BOUND, PAST_THE_BOUND / 2);
    let half = Memory::now();
    traffic(BOUND + PAST_THE_BOUND / 2, PAST_THE_BOUND / 2);
    (start, at_bound, [half, Memory::now()])
}

/// A run whose limits are the mode defaults except the given override.
fn run_with(overrides: CaptureLimitsOverride) -> Tailtriage {
    Tailtriage::builder("hostile-traffic")
        .sink(MemorySink::new())
        .capture_limits_override(overrides)
        .build()
        .expect("a named service builds")
}

/// Begins `count` requests on ever new routes and never finishes them: release builds drop
/// the completions, as a cancelled task would; debug builds, where that drop panics to catch
/// the mistake, forget them.
fn leak_requests(tailtriage: &Tailtriage, from: usize, count: usize) {
    for i in from..from + count {
        let started = tailtriage.begin_request(format!("/users/{i}"));
        if cfg!(debug_assertions) {
            std::mem::forget(started.completion);
        } else {
            drop(started.completion);
        }
    }
}

#[test]
fn hundreds_of_thousands_of_leaked_requests_keep_memory_flat_past_the_request_limit() {
    let _serial = serial();
    let tailtriage = run_with(CaptureLimitsOverride {
        max_requests: Some(BOUND),
        ..CaptureLimitsOverride::default()
    });
    let listener_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&listener_calls);
    tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
        calls.fetch_add(1, Ordering::SeqCst);
    })));

    // One finished request first, so that the shard rings exist before measuring.
    tailtriage.begin_request("/warm-up").completion.finish_ok();

    let (start, at_bound, past) = measure(|from, count| leak_requests(&tailtriage, from, count));
    assert_flat_past_the_bound("leaked requests", start, at_bound, past);

    // Every refusal is visible, counted once, and the caller was never broken.
    let run = tailtriage.snapshot();
    let refused = u64::try_from(PAST_THE_BOUND).expect("fits");
    assert_eq!(run.truncation.refused_pending_requests, refused);
    assert_eq!(run.truncation.dropped_requests, refused);
    assert!(run.truncation.limits_hit);
    assert_eq!(run.requests.len(), 1, "the warm-up request is retained");
    assert_eq!(listener_calls.load(Ordering::SeqCst), 1);

    // Finished requests are still recorded: pending room is not needed to finish one, and a
    // request refused at begin finishes without a second count.
    let refused_one = tailtriage.begin_request("/refused");
    refused_one.completion.finish_ok();
    let run = tailtriage.snapshot();
    assert_eq!(run.truncation.dropped_requests, refused + 1);
    assert_eq!(run.requests.len(), 1);

    let sink = MemorySink::new();
    tailtriage.shutdown_to(&sink).expect("shutdown writes");
    let run = sink.last_run().expect("written");
    assert_eq!(
        run.metadata.unfinished_requests.count,
        u64::try_from(BOUND + PAST_THE_BOUND).expect("fits"),
        "every leaked request is unfinished, tracked or turned away at begin (the turned-away \
         ones are also counted as dropped, since none of them can be retained)"
    );
    assert_eq!(run.metadata.unfinished_requests.sample.len(), 5);
}

#[test]
fn finishing_pending_requests_makes_room_for_new_ones_and_counts_stay_exact() {
    let _serial = serial();
    let limit = 4;
    let tailtriage = run_with(CaptureLimitsOverride {
        max_requests: Some(limit),
        ..CaptureLimitsOverride::default()
    });

    let held: Vec<_> = (0..limit)
        .map(|i| tailtriage.begin_request(format!("/held/{i}")))
        .collect();
    let refused = tailtriage.begin_request("/refused");
    let instrumented = refused.handle.stage("still-timed");
    futures_executor::block_on(instrumented.await_value(async {}));
    refused.completion.finish_ok();

    let run = tailtriage.snapshot();
    assert_eq!(run.truncation.refused_pending_requests, 1);
    assert_eq!(run.truncation.dropped_requests, 1);
    assert!(
        run.requests.is_empty(),
        "a refused request is never retained"
    );
    assert_eq!(
        run.stages.len(),
        1,
        "a refused request can still be instrumented"
    );

    // Two finish: their events are retained, and two new requests fit in the freed room.
    let mut held = held.into_iter();
    for started in held.by_ref().take(2) {
        started.completion.finish_ok();
    }
    let admitted: Vec<_> = (0..2)
        .map(|i| tailtriage.begin_request(format!("/admitted/{i}")))
        .collect();
    let run = tailtriage.snapshot();
    assert_eq!(run.requests.len(), 2);
    assert_eq!(
        run.truncation.refused_pending_requests, 1,
        "the freed room was used"
    );

    for started in held.chain(admitted) {
        started.completion.finish_ok();
    }
    let run = tailtriage.snapshot();
    assert_eq!(
        run.requests.len(),
        limit,
        "the request section holds its limit"
    );
    assert_eq!(
        run.truncation.dropped_requests, 3,
        "1 refused at begin, 2 finished past the limit"
    );
    assert_eq!(run.truncation.refused_pending_requests, 1);
}

/// Creates `count` guards on ever new gauge names and leaks them: the gauges stay held.
fn hold_gauges(tailtriage: &Tailtriage, from: usize, count: usize) {
    let started = tailtriage.begin_request("/gauges");
    for i in from..from + count {
        std::mem::forget(started.handle.inflight(format!("tenant-{i}")));
    }
    started.completion.finish_ok();
}

#[test]
fn hundreds_of_thousands_of_held_gauges_with_distinct_names_keep_memory_flat() {
    let _serial = serial();
    let tailtriage = run_with(CaptureLimitsOverride {
        max_inflight_snapshots: Some(BOUND),
        ..CaptureLimitsOverride::default()
    });
    tailtriage.begin_request("/warm-up").completion.finish_ok();

    let (start, at_bound, past) = measure(|from, count| hold_gauges(&tailtriage, from, count));
    assert_flat_past_the_bound("held gauges", start, at_bound, past);

    let run = tailtriage.snapshot();
    let refused = u64::try_from(PAST_THE_BOUND).expect("fits");
    assert_eq!(run.truncation.refused_gauges, refused);
    assert_eq!(
        run.truncation.dropped_inflight_snapshots, refused,
        "each refused guard's snapshot is counted as dropped"
    );
    assert_eq!(run.inflight.len(), BOUND);
    assert!(run.inflight.iter().all(|snapshot| snapshot.count == 1));
}

#[test]
fn gauges_with_ever_new_names_that_come_and_go_keep_memory_flat_and_are_never_refused() {
    let _serial = serial();
    let tailtriage = run_with(CaptureLimitsOverride {
        max_inflight_snapshots: Some(BOUND),
        ..CaptureLimitsOverride::default()
    });
    let started = tailtriage.begin_request("/gauges");
    let come_and_go = |from: usize, count: usize| {
        for i in from..from + count {
            drop(started.handle.inflight(format!("session-{i}")));
        }
    };

    let (start, at_bound, past) = measure(come_and_go);
    started.completion.finish_ok();
    assert_flat_past_the_bound("idle gauges", start, at_bound, past);

    let run = tailtriage.snapshot();
    assert_eq!(
        run.truncation.refused_gauges, 0,
        "idle gauges are swept, so a new name always finds room"
    );
    let attempts = 2 * (BOUND + PAST_THE_BOUND);
    assert_eq!(run.inflight.len(), BOUND);
    assert_eq!(
        run.truncation.dropped_inflight_snapshots,
        u64::try_from(attempts - BOUND).expect("fits")
    );
}

#[test]
fn gauges_that_filled_the_bound_free_their_room_once_they_go_idle() {
    let _serial = serial();
    let bound = 1_000;
    let tailtriage = run_with(CaptureLimitsOverride {
        max_inflight_snapshots: Some(bound),
        ..CaptureLimitsOverride::default()
    });
    let started = tailtriage.begin_request("/gauges");
    let handle = &started.handle;
    let refused = || tailtriage.snapshot().truncation.refused_gauges;

    // Every tracked gauge is live: a new name is refused.
    let live: Vec<_> = (0..bound)
        .map(|i| handle.inflight(format!("first-{i}")))
        .collect();
    drop(handle.inflight("one-too-many"));
    assert_eq!(refused(), 1);

    // Once they are all idle, their room is reused: of twice the bound new names held, the
    // bound is accepted (and the rest refused, the room being full of live gauges again).
    drop(live);
    let second: Vec<_> = (0..2 * bound)
        .map(|i| handle.inflight(format!("second-{i}")))
        .collect();
    let refused_second = refused() - 1;
    assert_eq!(
        refused_second,
        u64::try_from(bound).expect("fits"),
        "idle gauges should make room for exactly the bound of new ones"
    );
    drop(second);
    started.completion.finish_ok();
}

#[test]
fn an_artifact_with_refusals_loads_into_the_published_0_2_0_run_with_the_drops_counted() {
    let _serial = serial();
    let tailtriage = run_with(CaptureLimitsOverride {
        max_requests: Some(2),
        max_inflight_snapshots: Some(2),
        ..CaptureLimitsOverride::default()
    });
    leak_requests(&tailtriage, 0, 5);
    hold_gauges(&tailtriage, 0, 5);
    let sink = MemorySink::new();
    tailtriage.shutdown_to(&sink).expect("shutdown writes");
    let ours = sink.last_run().expect("written");
    assert_eq!(ours.truncation.refused_pending_requests, 4);
    assert_eq!(ours.truncation.refused_gauges, 3);

    let json = serde_json::to_string(&ours).expect("serializes");
    assert!(json.contains("\"refused_pending_requests\":4"));
    assert!(json.contains("\"refused_gauges\":3"));
    let theirs: published::Run =
        serde_json::from_str(&json).expect("the published 0.2.0 Run reads the artifact");
    assert!(theirs.truncation.limits_hit);
    assert_eq!(
        theirs.truncation.dropped_requests, ours.truncation.dropped_requests,
        "older readers see every refused request as dropped"
    );
    assert_eq!(
        theirs.truncation.dropped_inflight_snapshots,
        ours.truncation.dropped_inflight_snapshots
    );
    assert_eq!(
        theirs.metadata.unfinished_requests.count, 5,
        "all five leaked requests are unfinished, as 0.2.0 would count them"
    );

    let quiet = run_with(CaptureLimitsOverride::default());
    let json = serde_json::to_string(&quiet.snapshot()).expect("serializes");
    assert!(
        !json.contains("refused_"),
        "the counters are absent while zero, so older readers see the same document"
    );
}
