//! Exact accounting under concurrency: per section, retained = min(attempts, limit) and
//! retained + dropped = attempts; the limits-hit listener runs at most once per run.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use tailtriage_core::{CaptureLimits, DiscardSink, Tailtriage};

const THREADS: usize = 8;
const REQUESTS_PER_THREAD: usize = 300;
const ROUNDS: usize = 12;

/// Runs one round: `THREADS` threads released together, each recording `REQUESTS_PER_THREAD`
/// fully instrumented requests against limits that straddle the attempts.
fn round(limit: usize) {
    let tailtriage = Tailtriage::builder("stress")
        .sink(DiscardSink)
        .capture_limits(support::uniform_limits(limit))
        .build()
        .expect("build succeeds");
    let listener_calls = Arc::new(AtomicUsize::new(0));
    let calls = Arc::clone(&listener_calls);
    tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
        calls.fetch_add(1, Ordering::SeqCst);
    })));
    let start = Barrier::new(THREADS);

    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                start.wait();
                for _ in 0..REQUESTS_PER_THREAD {
                    let started = tailtriage.begin_request("/stress");
                    futures_executor::block_on(async {
                        started.handle.queue("q").await_on(async {}).await;
                        started.handle.stage("s").await_value(async {}).await;
                    });
                    drop(started.handle.inflight("g"));
                    tailtriage.record_runtime_snapshot(support::runtime_snapshot(0));
                    started.completion.finish_ok();
                }
            });
        }
    });

    let run = tailtriage.snapshot();
    let attempts = THREADS * REQUESTS_PER_THREAD;
    let sections = [
        (
            "requests",
            run.requests.len(),
            run.truncation.dropped_requests,
            attempts,
        ),
        (
            "queues",
            run.queues.len(),
            run.truncation.dropped_queues,
            attempts,
        ),
        (
            "stages",
            run.stages.len(),
            run.truncation.dropped_stages,
            attempts,
        ),
        (
            "inflight",
            run.inflight.len(),
            run.truncation.dropped_inflight_snapshots,
            2 * attempts,
        ),
        (
            "runtime",
            run.runtime_snapshots.len(),
            run.truncation.dropped_runtime_snapshots,
            attempts,
        ),
    ];
    for (name, retained, dropped, attempts) in sections {
        assert_eq!(
            retained,
            attempts.min(limit),
            "{name}: retained must be min(attempts, limit) (limit {limit})"
        );
        assert_eq!(
            retained as u64 + dropped,
            attempts as u64,
            "{name}: retained + dropped must equal attempts (limit {limit})"
        );
    }
    // The in-flight section sees two attempts per request, so it is the last to fill.
    let expected_calls = usize::from(limit < 2 * attempts);
    assert_eq!(
        listener_calls.load(Ordering::SeqCst),
        expected_calls,
        "the listener runs once when anything was dropped, never otherwise (limit {limit})"
    );
    assert_eq!(run.truncation.limits_hit, limit < 2 * attempts);
}

#[test]
fn saturation_keeps_exact_drop_counts_across_threads_and_rounds() {
    let attempts = THREADS * REQUESTS_PER_THREAD;
    for round_index in 0..ROUNDS {
        // Limits on both sides of the attempts, and exactly at them.
        let limit = match round_index % 4 {
            0 => attempts / 3 + round_index,
            1 => attempts - 1,
            2 => attempts,
            _ => 1 + round_index,
        };
        round(limit);
    }
}

#[test]
fn a_run_with_room_for_everything_keeps_everything_across_threads() {
    round(usize::MAX);
}

#[test]
fn writers_racing_at_the_capacity_boundary_never_overfill_a_section() {
    // Tight loops on every core make the boundary crossing itself contended, round after
    // round; a reservation that checked before it incremented would overfill here.
    const WRITERS: usize = 4;
    const PER_WRITER: usize = 500;
    for round_index in 0..2_000 {
        let limit = WRITERS * PER_WRITER / 2 + round_index % 64;
        let tailtriage = Tailtriage::builder("boundary")
            .sink(DiscardSink)
            .capture_limits(CaptureLimits {
                max_runtime_snapshots: limit,
                ..CaptureLimits::default()
            })
            .build()
            .expect("build succeeds");
        let start = Barrier::new(WRITERS);
        std::thread::scope(|scope| {
            for _ in 0..WRITERS {
                scope.spawn(|| {
                    start.wait();
                    for _ in 0..PER_WRITER {
                        tailtriage.record_runtime_snapshot(support::runtime_snapshot(0));
                    }
                });
            }
        });
        let run = tailtriage.snapshot();
        assert_eq!(
            run.runtime_snapshots.len(),
            limit,
            "retained must equal the limit exactly (round {round_index})"
        );
        assert_eq!(
            run.truncation.dropped_runtime_snapshots,
            (WRITERS * PER_WRITER - limit) as u64,
            "every refused snapshot must be counted once (round {round_index})"
        );
    }
}

#[test]
fn requests_racing_for_the_last_pending_place_are_not_both_turned_away() {
    // A limit of two, one request pending: of two requests begun at once, exactly one fits.
    let mut short = Vec::new();
    for round in 0..support::rounds(10_000) {
        let tailtriage = Tailtriage::builder("stress")
            .sink(DiscardSink)
            .capture_limits(support::uniform_limits(2))
            .build()
            .expect("build succeeds");
        let first = tailtriage.begin_request("/first");
        let start = Barrier::new(2);
        let racers: Vec<_> = std::thread::scope(|scope| {
            let racers: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        tailtriage.begin_request("/racer").completion
                    })
                })
                .collect();
            racers
                .into_iter()
                .map(|racer| racer.join().expect("a racer panicked"))
                .collect()
        });
        first.completion.finish_ok();
        for completion in racers {
            completion.finish_ok();
        }
        let run = tailtriage.snapshot();
        assert_eq!(
            run.requests.len() + usize::try_from(run.truncation.dropped_requests).expect("fits"),
            3
        );
        if run.requests.len() != 2 {
            short.push(round);
        }
    }
    assert!(
        short.is_empty(),
        "retained must be min(3 attempts, limit 2) = 2; it was 1 in rounds {short:?}"
    );
}
