//! Model: guards on one in-flight gauge are created and dropped concurrently.
//!
//! Each guard records the count its own increment produced, and its drop records the count its
//! own decrement produced. Whatever the interleaving, every recorded count is one the gauge
//! really held (the recorded counts are those of some order of the increments and decrements
//! that respects each thread's program order), and once every guard is dropped the gauge is
//! back at zero: the next guard records a count of one. Two scenarios: threads racing to
//! create the gauge's cell, and threads joining a gauge another guard already holds.
#![cfg(loom)]

use loom::thread;
use tailtriage_core::{CaptureLimits, OwnedRequestHandle, Run, Tailtriage};
use tailtriage_loom_tests::{model, recorder};

/// The gauge every guard of the models holds.
const GAUGE: &str = "model_inflight";

/// Creates one guard on the gauge and drops it.
fn hold_once(request: &OwnedRequestHandle) {
    drop(request.inflight(GAUGE));
}

/// The counts recorded for the gauge, sorted.
fn counts(run: &Run) -> Vec<u64> {
    let mut counts: Vec<u64> = run
        .inflight
        .iter()
        .filter(|snapshot| snapshot.gauge == GAUGE)
        .map(|snapshot| snapshot.count)
        .collect();
    counts.sort_unstable();
    counts
}

/// Every sorted list of counts that `threads` threads, each incrementing then decrementing once,
/// can record, starting from `start` (an increment records the count after it, a decrement the
/// count after it), with `pending_decrements` more decrements interleaved anywhere.
fn possible_counts(threads: usize, pending_decrements: usize, start: u64) -> Vec<Vec<u64>> {
    fn explore(
        incs: usize,
        decs_ready: usize,
        loose_decs: usize,
        count: u64,
        recorded: &mut Vec<u64>,
        out: &mut Vec<Vec<u64>>,
    ) {
        if incs == 0 && decs_ready == 0 && loose_decs == 0 {
            let mut sorted = recorded.clone();
            sorted.sort_unstable();
            out.push(sorted);
            return;
        }
        if incs > 0 {
            recorded.push(count + 1);
            explore(
                incs - 1,
                decs_ready + 1,
                loose_decs,
                count + 1,
                recorded,
                out,
            );
            recorded.pop();
        }
        if decs_ready > 0 {
            recorded.push(count - 1);
            explore(incs, decs_ready - 1, loose_decs, count - 1, recorded, out);
            recorded.pop();
        }
        if loose_decs > 0 {
            recorded.push(count - 1);
            explore(incs, decs_ready, loose_decs - 1, count - 1, recorded, out);
            recorded.pop();
        }
    }
    let mut out = Vec::new();
    explore(
        threads,
        0,
        pending_decrements,
        start,
        &mut Vec::new(),
        &mut out,
    );
    out.sort();
    out.dedup();
    out
}

/// Checks the counts recorded so far, then that a new guard finds the gauge at zero.
fn check_counts(
    run: &Tailtriage,
    request: &OwnedRequestHandle,
    allowed: &[Vec<u64>],
    held_before: &[u64],
) {
    let recorded = counts(&run.snapshot());
    let concurrent: Vec<u64> = {
        let mut rest = recorded.clone();
        for held in held_before {
            let at = rest
                .iter()
                .position(|count| count == held)
                .expect("the count recorded before the threads started is still there");
            rest.remove(at);
        }
        rest
    };
    assert!(
        allowed.contains(&concurrent),
        "every recorded count must be one the gauge really held: recorded {concurrent:?}, \
         possible {allowed:?}"
    );

    hold_once(request);
    let after = counts(&run.snapshot());
    let mut expected = recorded.clone();
    expected.extend([0, 1]);
    expected.sort_unstable();
    assert_eq!(
        after, expected,
        "the gauge must be back at zero once every guard dropped: a new guard must record 1 \
         then 0 (counts before it: {recorded:?})"
    );
}

#[test]
fn guards_racing_to_create_a_gauge_leave_it_at_zero_with_true_counts() {
    model("gauge counts, racing creation", || {
        let (run, _sink) = recorder(CaptureLimits::default());
        let started = run.begin_request_owned("/model");

        let threads: Vec<_> = (0..2)
            .map(|_| {
                let request = started.handle.clone();
                thread::spawn(move || hold_once(&request))
            })
            .collect();
        for thread in threads {
            thread.join().expect("a guard holder finishes");
        }

        check_counts(&run, &started.handle, &possible_counts(2, 0, 0), &[]);
        started.completion.finish_ok();
    });
}

#[test]
fn guards_joining_a_held_gauge_leave_it_at_zero_with_true_counts() {
    model("gauge counts, joining a held gauge", || {
        let (run, _sink) = recorder(CaptureLimits::default());
        let started = run.begin_request_owned("/model");
        let held = started.handle.inflight(GAUGE);

        let threads: Vec<_> = (0..2)
            .map(|_| {
                let request = started.handle.clone();
                thread::spawn(move || hold_once(&request))
            })
            .collect();
        drop(held);
        for thread in threads {
            thread.join().expect("a guard holder finishes");
        }

        // The held guard recorded 1 before the threads started; its decrement races theirs.
        check_counts(&run, &started.handle, &possible_counts(2, 1, 1), &[1]);
        started.completion.finish_ok();
    });
}
