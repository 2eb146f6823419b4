//! Model: the limits-hit listener runs once, on the first dropped event after it was set.
//!
//! Writers overflow different sections at once (runtime snapshots and requests, both with a
//! zero limit); the listener must run exactly once, whichever writer wins the transition. When
//! the listener is set while another writer is already dropping, a drop made after setting it
//! still runs it exactly once. And when every event fits, it never runs.
#![cfg(loom)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use loom::thread;
use tailtriage_core::{CaptureLimits, Tailtriage};
use tailtriage_loom_tests::{event, model, recorder};

/// Limits with `requests` completed requests and `runtime_snapshots` runtime snapshots.
fn limits(requests: usize, runtime_snapshots: usize) -> CaptureLimits {
    CaptureLimits {
        max_requests: requests,
        max_runtime_snapshots: runtime_snapshots,
        ..CaptureLimits::default()
    }
}

/// Sets a listener that counts its calls, and returns the count.
fn count_listener_calls(run: &Tailtriage) -> Arc<AtomicUsize> {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    run.set_limits_hit_listener(Some(Arc::new(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    })));
    calls
}

/// Begins and finishes one request.
fn one_request(run: &Tailtriage) {
    run.begin_request("/model").completion.finish_ok();
}

#[test]
fn writers_overflowing_different_sections_run_the_listener_exactly_once() {
    model("limits hit, two sections overflow", || {
        let (run, _sink) = recorder(limits(0, 0));
        let calls = count_listener_calls(&run);

        let snapshots = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.record_runtime_snapshot(event(1)))
        };
        let requests = {
            let run = Arc::clone(&run);
            thread::spawn(move || one_request(&run))
        };
        run.record_runtime_snapshot(event(2));
        snapshots.join().expect("the snapshot writer finishes");
        requests.join().expect("the request writer finishes");

        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the listener must run exactly once when three writers drop events at once"
        );
        let truncation = run.snapshot().truncation;
        assert!(
            truncation.limits_hit,
            "a run that dropped events must say limits were hit"
        );
        assert_eq!(
            (
                truncation.dropped_requests,
                truncation.dropped_runtime_snapshots
            ),
            (1, 2),
            "every dropped event must be counted in its own section"
        );
    });
}

#[test]
fn a_drop_after_setting_the_listener_runs_it_exactly_once_while_others_drop() {
    model("limits hit, listener set during drops", || {
        let (run, _sink) = recorder(limits(0, 0));

        let early = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.record_runtime_snapshot(event(1)))
        };
        let calls = count_listener_calls(&run);
        one_request(&run);
        early.join().expect("the early writer finishes");

        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a drop made after the listener was set must run it exactly once, even while \
             another writer drops concurrently"
        );
    });
}

#[test]
fn writers_that_exactly_fill_their_sections_never_run_the_listener() {
    model("limits hit, sections filled exactly", || {
        let (run, _sink) = recorder(limits(1, 2));
        let calls = count_listener_calls(&run);

        let snapshots = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.record_runtime_snapshot(event(1)))
        };
        let requests = {
            let run = Arc::clone(&run);
            thread::spawn(move || one_request(&run))
        };
        run.record_runtime_snapshot(event(2));
        snapshots.join().expect("the snapshot writer finishes");
        requests.join().expect("the request writer finishes");

        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "the listener must never run when nothing was dropped"
        );
        let snapshot = run.snapshot();
        assert!(
            !snapshot.truncation.limits_hit,
            "a run that kept every event must not say limits were hit"
        );
        assert_eq!(
            (snapshot.requests.len(), snapshot.runtime_snapshots.len()),
            (1, 2),
            "every event of a section filled exactly to its limit must be kept"
        );
    });
}
