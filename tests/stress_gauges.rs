//! Stress: in-flight gauges under concurrent guards.
//!
//! Threads create and drop guards on shared gauges, sometimes holding two at once. Every
//! recorded count must be one the gauge really held: the counts recorded by increments and
//! decrements must pair up as the steps of one walk that starts and ends at zero. Once every
//! guard is dropped, a new guard finds the gauge at zero. With a small bound on distinct
//! gauges, sweeps of idle gauges run under the guards and every snapshot is still accounted
//! for exactly. Set `TAILTRIAGE_STRESS_SCALE` to run more rounds.

mod support;

use std::collections::BTreeMap;
use std::sync::Barrier;

use tailtriage_core::{CaptureLimits, DiscardSink, Run, Tailtriage};

const THREADS: usize = 6;

fn recorder(max_inflight_snapshots: usize) -> Tailtriage {
    Tailtriage::builder("stress")
        .sink(DiscardSink)
        .capture_limits(CaptureLimits {
            max_inflight_snapshots,
            ..CaptureLimits::default()
        })
        .build()
        .expect("a recorder with a service name builds")
}

/// How many snapshots of `gauge` recorded each count.
fn count_histogram(run: &Run, gauge: &str) -> BTreeMap<u64, u64> {
    let mut histogram = BTreeMap::new();
    for snapshot in run.inflight.iter().filter(|s| s.gauge == gauge) {
        *histogram.entry(snapshot.count).or_insert(0) += 1;
    }
    histogram
}

/// Checks that the recorded counts are those of a walk of +1 and -1 steps from zero back to
/// zero: an increment to `v` is recorded as `v`, a decrement to `v` as `v`. Steps up to `v`
/// equal steps down from `v`, so with `down(v)` the decrements recorded as `v`,
/// `recorded(v) = down(v - 1) + down(v)`; solving from `v = 0` upwards, every `down(v)` must be
/// non-negative and the highest count must have no decrement to it.
fn assert_counts_are_a_walk_from_zero_to_zero(histogram: &BTreeMap<u64, u64>, what: &str) {
    let top = histogram.keys().next_back().copied().unwrap_or(0);
    let mut down_below: i128 = 0;
    for count in 0..=top {
        let recorded = i128::from(histogram.get(&count).copied().unwrap_or(0));
        let down_here = recorded - down_below;
        assert!(
            down_here >= 0,
            "{what}: every recorded count must be one the gauge really held, but count \
             {count} was recorded {recorded} times, fewer than the {down_below} steps up to \
             it need: {histogram:?}"
        );
        down_below = down_here;
    }
    assert_eq!(
        down_below, 0,
        "{what}: the recorded counts must end back at zero, but {down_below} decrements went \
         to the highest count {top}: {histogram:?}"
    );
}

#[test]
fn gauge_counts_return_to_zero_and_every_recorded_count_is_one_it_held() {
    const GUARDS_PER_THREAD: usize = 3_000;
    const GAUGES: [&str; 2] = ["shared_a", "shared_b"];

    for round in 0..support::rounds(8) {
        let tailtriage = recorder(usize::MAX);
        let start = Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (tailtriage, start) = (&tailtriage, &start);
                scope.spawn(move || {
                    let started = tailtriage.begin_request("/stress");
                    start.wait();
                    for index in 0..GUARDS_PER_THREAD {
                        let gauge = GAUGES[(thread + index) % GAUGES.len()];
                        let outer = started.handle.inflight(gauge);
                        if index % 3 == 0 {
                            // Hold a second unit of the same gauge across the first's drop.
                            let inner = started.handle.inflight(gauge);
                            drop(outer);
                            drop(inner);
                        } else {
                            drop(outer);
                        }
                    }
                    started.completion.finish_ok();
                });
            }
        });

        let run = tailtriage.snapshot();
        assert_eq!(
            run.truncation.dropped_inflight_snapshots, 0,
            "with no limit every snapshot is kept"
        );
        for gauge in GAUGES {
            let histogram = count_histogram(&run, gauge);
            let top = histogram.keys().next_back().copied().unwrap_or(0);
            assert!(
                top <= 2 * THREADS as u64,
                "{gauge}: no count may exceed the {} guards that can be live at once: \
                 {histogram:?}",
                2 * THREADS
            );
            assert_counts_are_a_walk_from_zero_to_zero(&histogram, gauge);

            let started = tailtriage.begin_request("/after");
            drop(started.handle.inflight(gauge));
            started.completion.finish_ok();
            let after: Vec<u64> = tailtriage
                .snapshot()
                .inflight
                .iter()
                .filter(|s| s.gauge == gauge)
                .map(|s| s.count)
                .collect();
            assert_eq!(
                after[after.len() - 2..],
                [1, 0],
                "{gauge}: once every guard dropped the gauge must be back at zero (round \
                 {round})"
            );
        }
    }
}

#[test]
fn gauge_sweeps_under_a_small_bound_keep_exact_snapshot_accounting() {
    // The in-flight limit bounds distinct gauges too: with more names than that, creating a
    // guard for a new name sweeps idle gauges, concurrently with guards on live ones.
    const BOUND: usize = 12;
    const GUARDS_PER_THREAD: usize = 2_000;
    const NAMES_PER_THREAD: usize = 5;

    for _ in 0..support::rounds(8) {
        let tailtriage = recorder(BOUND);
        let start = Barrier::new(THREADS);
        std::thread::scope(|scope| {
            for thread in 0..THREADS {
                let (tailtriage, start) = (&tailtriage, &start);
                scope.spawn(move || {
                    let started = tailtriage.begin_request("/stress");
                    start.wait();
                    let held = started.handle.inflight(format!("held-{thread}"));
                    for index in 0..GUARDS_PER_THREAD {
                        let name = format!("churn-{thread}-{}", index % NAMES_PER_THREAD);
                        drop(started.handle.inflight(name));
                    }
                    drop(held);
                    started.completion.finish_ok();
                });
            }
        });

        let run = tailtriage.snapshot();
        let attempts = 2 * THREADS * (GUARDS_PER_THREAD + 1);
        let truncation = &run.truncation;
        assert_eq!(
            run.inflight.len() as u64 + truncation.dropped_inflight_snapshots,
            attempts as u64,
            "kept ({}) + dropped ({}) snapshots must equal the two per guard ({attempts})",
            run.inflight.len(),
            truncation.dropped_inflight_snapshots
        );
        assert_eq!(
            run.inflight.len(),
            BOUND,
            "the section fills to its limit before any refusal could starve it"
        );
        assert!(
            truncation.refused_gauges <= (THREADS * (GUARDS_PER_THREAD + 1)) as u64,
            "a guard is refused at most once"
        );
        for snapshot in &run.inflight {
            assert!(
                snapshot.count <= 1,
                "each gauge has one holder at a time, so no count may exceed one: {snapshot:?}"
            );
        }
    }
}
