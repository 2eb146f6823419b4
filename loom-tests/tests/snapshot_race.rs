//! Model: a writer races `snapshot()`.
//!
//! One event is recorded before the threads start (it sits in shard 0); then a writer records
//! two more into its own shard (the second spills the shard's one-event ring into run storage)
//! while a reader takes two snapshots in a row. Whatever the interleaving:
//!
//! * an event whose record call returned before a snapshot began is in that snapshot;
//! * an event racing a snapshot is in it or in the next one, never in neither, never twice;
//! * snapshots do not consume: whatever one snapshot saw, every later one sees too;
//! * every snapshot lists events in the order they were recorded.
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use tailtriage_loom_tests::{event, model, occurrences, recorder, runtime_snapshot_limit, tags};

#[test]
fn an_event_racing_a_snapshot_is_in_it_or_the_next_and_never_consumed() {
    model("snapshot race", || {
        let (run, _sink) = recorder(runtime_snapshot_limit(usize::MAX));
        run.record_runtime_snapshot(event(0));

        // How many of the writer's events have returned from their record call.
        let returned = Arc::new(AtomicUsize::new(0));
        let writer = {
            let run = Arc::clone(&run);
            let returned = Arc::clone(&returned);
            thread::spawn(move || {
                run.record_runtime_snapshot(event(1));
                returned.store(1, Ordering::Release);
                run.record_runtime_snapshot(event(2));
                returned.store(2, Ordering::Release);
            })
        };
        let reader = {
            let run = Arc::clone(&run);
            let returned = Arc::clone(&returned);
            thread::spawn(move || {
                let before = returned.load(Ordering::Acquire);
                let first = tags(&run.snapshot());
                let second = tags(&run.snapshot());
                (before, first, second)
            })
        };
        writer.join().expect("the writer finishes");
        let (before, first, second) = reader.join().expect("the reader finishes");
        let last = tags(&run.snapshot());

        for (name, seen) in [("first", &first), ("second", &second), ("last", &last)] {
            for tag in 0..=2 {
                assert!(
                    occurrences(seen, tag) <= 1,
                    "the {name} snapshot must hold each event at most once: {seen:?}"
                );
            }
            assert!(
                seen.windows(2).all(|pair| pair[0] < pair[1]),
                "the {name} snapshot must list events in recording order: {seen:?}"
            );
        }
        for tag in 0..=before as u64 {
            assert_eq!(
                occurrences(&first, tag),
                1,
                "event {tag} returned before the first snapshot began, so it must be in it: \
                 {first:?}"
            );
        }
        for tag in &first {
            assert_eq!(
                occurrences(&second, *tag),
                1,
                "a snapshot must not consume: event {tag} was in the first snapshot \
                 ({first:?}) but not in the second ({second:?})"
            );
        }
        assert_eq!(
            last,
            [0, 1, 2],
            "after the writer finished, a snapshot must hold every event exactly once \
             (earlier snapshots saw {first:?} then {second:?})"
        );
    });
}
