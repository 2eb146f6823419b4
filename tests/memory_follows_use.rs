//! Memory follows use, not limits: building allocates little whatever the limits, and memory
//! grows with retained events only.
//!
//! An instrumented global allocator measures the bytes live in this test binary.

use std::alloc::System;
use std::sync::Mutex;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

use tailtriage_core::{DiscardSink, Tailtriage};

mod support;

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Serializes the tests of this binary so that they do not see each other's allocations.
static SERIAL: Mutex<()> = Mutex::new(());

/// Bytes currently live on the heap of this test binary.
fn live() -> isize {
    support::live_heap_bytes(&ALLOCATOR.stats())
}

/// Bytes live after building a run with `builder`, the run still alive.
fn bytes_added_by_build(builder: tailtriage_core::TailtriageBuilder) -> isize {
    let builder = builder.sink(DiscardSink);
    let before = live();
    let tailtriage = builder.build().expect("build succeeds");
    let added = live() - before;
    drop(tailtriage);
    added
}

/// The least that building a run with `make()` adds, over a few builds.
///
/// The counter is process-wide, so the harness thread (spawning the next test, buffering
/// output) can allocate inside a measuring window; it only ever adds to one reading, and the
/// least of several readings is the run's own cost.
fn least_added_by_build(make: impl Fn() -> tailtriage_core::TailtriageBuilder) -> isize {
    (0..5)
        .map(|_| bytes_added_by_build(make()))
        .min()
        .expect("five readings")
}

#[test]
fn building_allocates_little_whatever_the_limits() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The first run of a process also sets up what every later run shares (the calibrated
    // clock, thread numbering); that is a one-time cost, bounded here and excluded below.
    let first = bytes_added_by_build(Tailtriage::builder("svc").light());
    assert!(
        first < 64 * 1024,
        "the first build of a process added {first} bytes"
    );

    let light = least_added_by_build(|| Tailtriage::builder("svc").light());
    let investigation = least_added_by_build(|| Tailtriage::builder("svc").investigation());
    let huge = least_added_by_build(|| {
        Tailtriage::builder("svc").capture_limits(support::uniform_limits(usize::MAX))
    });
    let zero = least_added_by_build(|| {
        Tailtriage::builder("svc").capture_limits(support::uniform_limits(0))
    });
    for (name, bytes) in [
        ("light", light),
        ("investigation", investigation),
        ("usize::MAX", huge),
        ("zero", zero),
    ] {
        assert!(
            bytes < 64 * 1024,
            "{name} limits: build added {bytes} bytes"
        );
    }
    for (name, bytes) in [
        ("investigation", investigation),
        ("usize::MAX", huge),
        ("zero", zero),
    ] {
        assert!(
            (bytes - light).abs() < 4 * 1024,
            "limits do not change what build allocates: light {light}, {name} {bytes}"
        );
    }
}

#[test]
fn memory_grows_with_retained_events_and_stops_at_the_limit() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let tailtriage = Tailtriage::builder("svc")
        .sink(DiscardSink)
        .capture_limits(support::uniform_limits(2_000))
        .build()
        .expect("build succeeds");
    let record = |count: usize| {
        for _ in 0..count {
            tailtriage.begin_request("/r").completion.finish_ok();
        }
    };

    let start = live();
    record(1_000);
    let at_half = live() - start;
    record(1_000);
    let at_limit = live() - start;
    record(10_000);
    let past_limit = live() - start;

    assert!(
        at_half > 0 && at_limit > at_half,
        "memory grows with retained events"
    );
    assert!(
        past_limit - at_limit < 16 * 1024,
        "dropped events cost no memory: {at_limit} at the limit, {past_limit} after 10 000 more"
    );
    drop(tailtriage);
}

#[test]
fn frequent_snapshots_do_not_multiply_what_retained_events_cost() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let limit = 20_000;
    // Heap held by a run after recording `limit` requests, with a snapshot after every
    // `every` requests (the snapshots themselves are dropped at once).
    let held_after = |every: Option<usize>| {
        let tailtriage = Tailtriage::builder("svc")
            .sink(DiscardSink)
            .capture_limits(support::uniform_limits(limit))
            .build()
            .expect("build succeeds");
        let start = live();
        for i in 1..=limit {
            tailtriage.begin_request("/r").completion.finish_ok();
            if every.is_some_and(|every| i % every == 0) {
                drop(tailtriage.snapshot());
            }
        }
        let held = live() - start;
        drop(tailtriage);
        held
    };
    let quiet = held_after(None);
    let watched = held_after(Some(300));
    assert!(
        watched < quiet + quiet / 2,
        "snapshots every 300 requests: {watched} bytes held, against {quiet} without"
    );
}
