//! Bounded retention: limits, exact drop counts and the limits-hit listener.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tailtriage_core::{CaptureLimitsOverride, MemorySink, Tailtriage};

fn limited(limit: usize) -> Tailtriage {
    Tailtriage::builder("checkout")
        .sink(MemorySink::new())
        .capture_limits(support::uniform_limits(limit))
        .build()
        .expect("build succeeds")
}

#[test]
fn saturation_keeps_exact_drop_counts_in_every_section() {
    let tailtriage = limited(3);
    for _ in 0..5 {
        let started = tailtriage.begin_request("/r");
        futures_executor::block_on(started.handle.queue("q").await_on(async {}));
        futures_executor::block_on(started.handle.stage("s").await_value(async {}));
        drop(started.handle.inflight("g"));
        started.completion.finish_ok();
        tailtriage.record_runtime_snapshot(support::runtime_snapshot(1));
    }
    let run = tailtriage.snapshot();
    assert_eq!(run.requests.len(), 3);
    assert_eq!(run.queues.len(), 3);
    assert_eq!(run.stages.len(), 3);
    assert_eq!(run.inflight.len(), 3);
    assert_eq!(run.runtime_snapshots.len(), 3);
    let truncation = &run.truncation;
    assert_eq!(truncation.dropped_requests, 2);
    assert_eq!(truncation.dropped_queues, 2);
    assert_eq!(truncation.dropped_stages, 2);
    assert_eq!(truncation.dropped_inflight_snapshots, 7);
    assert_eq!(truncation.dropped_runtime_snapshots, 2);
    assert!(truncation.limits_hit);
    assert!(truncation.is_truncated());
}

#[test]
fn a_run_within_its_limits_is_not_truncated() {
    let tailtriage = limited(10);
    tailtriage.begin_request("/r").completion.finish_ok();
    let truncation = tailtriage.snapshot().truncation;
    assert!(!truncation.limits_hit);
    assert!(!truncation.is_truncated());
}

#[test]
fn a_zero_limit_drops_everything_and_counts_it() {
    let tailtriage = limited(0);
    for _ in 0..4 {
        tailtriage.begin_request("/r").completion.finish_ok();
        tailtriage.record_runtime_snapshot(support::runtime_snapshot(2));
    }
    let run = tailtriage.snapshot();
    assert!(run.requests.is_empty() && run.runtime_snapshots.is_empty());
    assert_eq!(run.truncation.dropped_requests, 4);
    assert_eq!(run.truncation.dropped_runtime_snapshots, 4);
}

#[test]
fn the_limits_hit_listener_runs_once_on_the_first_drop_after_it_is_set() {
    let tailtriage = limited(1);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })));
    tailtriage.record_runtime_snapshot(support::runtime_snapshot(1));
    assert_eq!(calls.load(Ordering::SeqCst), 0, "nothing dropped yet");
    for _ in 0..10 {
        tailtriage.record_runtime_snapshot(support::runtime_snapshot(1));
        tailtriage.begin_request("/r").completion.finish_ok();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "runs at most once per run");
}

#[test]
fn a_listener_set_after_the_first_drop_still_runs_on_the_next_drop() {
    let tailtriage = limited(0);
    tailtriage.record_runtime_snapshot(support::runtime_snapshot(1));
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    tailtriage.record_runtime_snapshot(support::runtime_snapshot(1));
    tailtriage.record_runtime_snapshot(support::runtime_snapshot(1));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_cleared_listener_does_not_run() {
    let tailtriage = limited(0);
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })));
    tailtriage.set_limits_hit_listener(None);
    tailtriage.record_runtime_snapshot(support::runtime_snapshot(1));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_listener_may_call_back_into_the_run() {
    let tailtriage = Arc::new(limited(1));
    let inner = Arc::downgrade(&tailtriage);
    let seen = Arc::new(AtomicUsize::new(usize::MAX));
    let seen_by_listener = Arc::clone(&seen);
    tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
        if let Some(run) = inner.upgrade() {
            seen_by_listener.store(run.snapshot().requests.len(), Ordering::SeqCst);
        }
    })));
    for _ in 0..2 {
        tailtriage.begin_request("/r").completion.finish_ok();
    }
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[test]
fn a_full_request_section_turns_new_requests_away_and_counts_each_once() {
    let tailtriage = Tailtriage::builder("checkout")
        .sink(MemorySink::new())
        .capture_limits_override(CaptureLimitsOverride {
            max_requests: Some(2),
            ..CaptureLimitsOverride::default()
        })
        .build()
        .expect("build succeeds");
    for _ in 0..2 {
        tailtriage.begin_request("/r").completion.finish_ok();
    }
    let late = tailtriage.begin_request("/late");
    assert!(late.handle.request_id().starts_with("_late-"));
    late.completion.finish_ok();
    let run = tailtriage.snapshot();
    assert_eq!(run.requests.len(), 2);
    assert_eq!(run.truncation.dropped_requests, 1, "counted exactly once");
    assert_eq!(run.metadata.unfinished_requests.count, 0);
}
