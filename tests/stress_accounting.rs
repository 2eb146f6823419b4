//! Stress: exact accounting with real threads and the real lock-free rings.
//!
//! Many threads record fully instrumented requests into sections whose limits straddle the
//! attempts, each section with its own limit, round after round. Per section, retained =
//! min(attempts, limit) and retained + dropped = attempts; the limits-hit listener runs exactly
//! once when anything was dropped and never otherwise. Set `TAILTRIAGE_STRESS_SCALE` to run more
//! rounds.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use tailtriage_core::{CaptureLimits, DiscardSink, Run, Tailtriage};

const THREADS: usize = 6;

fn recorder(limits: CaptureLimits) -> Tailtriage {
    Tailtriage::builder("stress")
        .sink(DiscardSink)
        .capture_limits(limits)
        .build()
        .expect("a recorder with a service name builds")
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

/// Each section's name, retained events, dropped events, and limit.
fn sections(run: &Run, limits: CaptureLimits) -> [(&'static str, usize, u64, usize); 5] {
    let truncation = &run.truncation;
    [
        (
            "requests",
            run.requests.len(),
            truncation.dropped_requests,
            limits.max_requests,
        ),
        (
            "queues",
            run.queues.len(),
            truncation.dropped_queues,
            limits.max_queues,
        ),
        (
            "stages",
            run.stages.len(),
            truncation.dropped_stages,
            limits.max_stages,
        ),
        (
            "inflight",
            run.inflight.len(),
            truncation.dropped_inflight_snapshots,
            limits.max_inflight_snapshots,
        ),
        (
            "runtime",
            run.runtime_snapshots.len(),
            truncation.dropped_runtime_snapshots,
            limits.max_runtime_snapshots,
        ),
    ]
}

/// Checks one section: retained = min(attempts, limit), retained + dropped = attempts.
fn check_section(name: &str, retained: usize, dropped: u64, limit: usize, attempts: usize) {
    assert_eq!(
        retained,
        attempts.min(limit),
        "{name}: retained must be min(attempts {attempts}, limit {limit})"
    );
    assert_eq!(
        retained as u64 + dropped,
        attempts as u64,
        "{name}: retained ({retained}) + dropped ({dropped}) must equal attempts ({attempts})"
    );
}

#[test]
fn sections_with_different_limits_each_keep_exact_counts_and_the_listener_runs_once() {
    const PER_THREAD: usize = 400;
    let attempts = THREADS * PER_THREAD;

    for round in 0..support::rounds(32) {
        // Every section straddles the attempts differently; one of them keeps everything.
        let limits = CaptureLimits {
            max_requests: attempts / 2 + round,
            max_stages: attempts - 1 - round % 2,
            max_queues: attempts + round % 2,
            max_inflight_snapshots: 2 * attempts - 1 - round,
            max_runtime_snapshots: round % 3,
        };
        let run = recorder(limits);
        let calls = count_listener_calls(&run);
        let start = Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    start.wait();
                    for _ in 0..PER_THREAD {
                        let started = run.begin_request("/stress");
                        futures_executor::block_on(async {
                            started.handle.queue("pool").await_on(async {}).await;
                            started.handle.stage("work").await_value(async {}).await;
                        });
                        drop(started.handle.inflight("busy"));
                        run.record_runtime_snapshot(support::runtime_snapshot(0));
                        started.completion.finish_ok();
                    }
                });
            }
        });

        let snapshot = run.snapshot();
        for (name, retained, dropped, limit) in sections(&snapshot, limits) {
            let section_attempts = if name == "inflight" {
                2 * attempts
            } else {
                attempts
            };
            check_section(name, retained, dropped, limit, section_attempts);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the listener must run exactly once although several sections overflowed \
             (round {round})"
        );
        assert!(snapshot.truncation.limits_hit, "limits_hit must be set");
    }
}

#[test]
fn requests_refused_at_the_pending_bound_are_counted_once_and_never_overfill() {
    // Each thread holds several requests open before finishing them, so the pending bound
    // (the request limit) turns some away at begin while others finish.
    const HELD: usize = 4;
    const BATCHES: usize = 200;
    let attempts = THREADS * HELD * BATCHES;

    for round in 0..support::rounds(40) {
        let limit = [1, HELD, THREADS * HELD - 1, attempts / 2 + round][round % 4];
        let limits = CaptureLimits {
            max_requests: limit,
            ..CaptureLimits::default()
        };
        let run = recorder(limits);
        let calls = count_listener_calls(&run);
        let start = Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    start.wait();
                    for _ in 0..BATCHES {
                        let held: Vec<_> = (0..HELD).map(|_| run.begin_request("/held")).collect();
                        for started in held {
                            started.completion.finish_ok();
                        }
                    }
                });
            }
        });

        let snapshot = run.snapshot();
        let truncation = &snapshot.truncation;
        check_section(
            "requests",
            snapshot.requests.len(),
            truncation.dropped_requests,
            limit,
            attempts,
        );
        assert!(
            truncation.refused_pending_requests <= truncation.dropped_requests,
            "a request refused at the pending bound is one of the dropped requests \
             (refused {}, dropped {})",
            truncation.refused_pending_requests,
            truncation.dropped_requests
        );
        assert_eq!(
            snapshot.metadata.unfinished_requests.count, 0,
            "no refused request may linger as pending"
        );
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the listener must run exactly once (limit {limit})"
        );
    }
}

#[test]
fn a_listener_set_while_writers_overflow_runs_exactly_once_and_only_after_a_drop() {
    const PER_THREAD: usize = 400;

    for round in 0..support::rounds(500) {
        let limit = THREADS * PER_THREAD / 2;
        let run = recorder(CaptureLimits {
            max_requests: 0,
            max_runtime_snapshots: limit,
            ..CaptureLimits::default()
        });
        let start = Barrier::new(THREADS + 1);
        let calls = std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    start.wait();
                    for _ in 0..PER_THREAD {
                        run.record_runtime_snapshot(support::runtime_snapshot(0));
                    }
                });
            }
            start.wait();
            // Set the listener while the writers cross their limit, at a different moment
            // each round, then drop a request (the request limit is zero): that drop comes
            // after the listener was set.
            for _ in 0..(round % 50) * 20 {
                std::hint::spin_loop();
            }
            let calls = count_listener_calls(&run);
            run.begin_request("/setter").completion.finish_ok();
            calls
        });

        let snapshot = run.snapshot();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a drop made after the listener was set must run it exactly once, even while \
             other writers drop concurrently (round {round})"
        );
        check_section(
            "runtime",
            snapshot.runtime_snapshots.len(),
            snapshot.truncation.dropped_runtime_snapshots,
            limit,
            THREADS * PER_THREAD,
        );
    }
}

#[test]
fn writers_that_exactly_fill_every_section_never_run_the_listener() {
    const PER_THREAD: usize = 200;
    let attempts = THREADS * PER_THREAD;

    for _ in 0..support::rounds(16) {
        let limits = CaptureLimits {
            max_requests: attempts,
            max_stages: attempts,
            max_queues: attempts,
            max_inflight_snapshots: 2 * attempts,
            max_runtime_snapshots: attempts,
        };
        let run = recorder(limits);
        let calls = count_listener_calls(&run);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    for _ in 0..PER_THREAD {
                        let started = run.begin_request("/stress");
                        futures_executor::block_on(async {
                            started.handle.queue("pool").await_on(async {}).await;
                            started.handle.stage("work").await_value(async {}).await;
                        });
                        drop(started.handle.inflight("busy"));
                        run.record_runtime_snapshot(support::runtime_snapshot(0));
                        started.completion.finish_ok();
                    }
                });
            }
        });

        let snapshot = run.snapshot();
        for (name, retained, dropped, limit) in sections(&snapshot, limits) {
            check_section(name, retained, dropped, limit, limit);
        }
        assert_eq!(
            calls.load(Ordering::SeqCst),
            0,
            "the listener must never run when every event fit"
        );
        assert!(
            !snapshot.truncation.limits_hit,
            "limits_hit must stay false"
        );
    }
}
