//! Model: writers race at a section's capacity boundary.
//!
//! Three writers offer four events to a section whose limit is 0, 1 or 2. One writer offers two
//! events (under loom a shard's ring holds one event, so its second event may spill the ring
//! into run storage while the others reserve), the other two offer one each; two of the three
//! share a shard. Whatever the interleaving, the section keeps exactly `min(attempts, limit)` events and counts every other
//! attempt as dropped, and a writer's later event is never kept when its earlier one was not.
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use tailtriage_loom_tests::{event, model, occurrences, recorder, runtime_snapshot_limit, tags};

/// Events offered in each execution: two by one writer, one by each of the other two.
const ATTEMPTS: usize = 4;

fn writers_race_at_the_limit(limit: usize) {
    model(&format!("capacity boundary, limit {limit}"), move || {
        let (run, _sink) = recorder(runtime_snapshot_limit(limit));

        let twice = {
            let run = Arc::clone(&run);
            thread::spawn(move || {
                run.record_runtime_snapshot(event(1));
                run.record_runtime_snapshot(event(2));
            })
        };
        let once = {
            let run = Arc::clone(&run);
            thread::spawn(move || run.record_runtime_snapshot(event(3)))
        };
        run.record_runtime_snapshot(event(4));
        twice.join().expect("the first writer finishes");
        once.join().expect("the second writer finishes");

        let snapshot = run.snapshot();
        let kept = tags(&snapshot);
        let dropped = snapshot.truncation.dropped_runtime_snapshots;
        let expected = ATTEMPTS.min(limit);
        assert_eq!(
            kept.len(),
            expected,
            "a section with limit {limit} must keep exactly min({ATTEMPTS}, {limit}) events, \
             kept {kept:?}"
        );
        assert_eq!(
            kept.len() as u64 + dropped,
            ATTEMPTS as u64,
            "kept ({kept:?}) + dropped ({dropped}) must equal the {ATTEMPTS} attempts"
        );
        for tag in 1..=4 {
            assert!(
                occurrences(&kept, tag) <= 1,
                "an event must be kept at most once, kept {kept:?}"
            );
        }
        assert!(
            occurrences(&kept, 2) == 0 || occurrences(&kept, 1) == 1,
            "a writer's later event must not be kept when its earlier one was dropped, \
             kept {kept:?}"
        );
        if occurrences(&kept, 2) == 1 {
            assert!(
                kept.iter().position(|t| *t == 1) < kept.iter().position(|t| *t == 2),
                "a writer's events must stay in the order it recorded them, kept {kept:?}"
            );
        }
        assert_eq!(
            snapshot.truncation.limits_hit,
            limit < ATTEMPTS,
            "limits_hit must say whether anything was dropped"
        );
    });
}

#[test]
fn writers_racing_at_a_zero_limit_keep_nothing_and_count_every_attempt() {
    writers_race_at_the_limit(0);
}

#[test]
fn writers_racing_at_a_limit_of_one_keep_exactly_one_event() {
    writers_race_at_the_limit(1);
}

#[test]
fn writers_racing_at_a_limit_of_two_keep_exactly_two_events() {
    writers_race_at_the_limit(2);
}
