//! Model: writers race at a section's capacity boundary.
//!
//! Two writers, each on its own shard, offer two events each to a section whose limit is 0, 1,
//! 2 or 3. Under loom a shard leases permits two at a time and its ring holds one event, so at
//! these limits the writers race to lease from the pool, take each other's leftover credits,
//! find the pool empty while a lease is in flight, and spill their rings. Whatever the
//! interleaving, the section keeps exactly `min(attempts, limit)` events and counts every other
//! attempt as dropped, and a writer's later event is never kept when its earlier one was not.
//!
//! Two writers, not three: a writer that finds the pool empty while another's lease is in
//! flight yields until the lease lands. With two such waiters loom may hand the processor from
//! one to the other forever (a yield is not a preemption, so the bound does not stop it),
//! although any real scheduler runs the leasing thread; the model would never finish.
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use tailtriage_loom_tests::{event, model, occurrences, recorder, runtime_snapshot_limit, tags};

/// Events each writer offers.
const PER_WRITER: u64 = 2;

/// Events offered in each execution: two writers' worth.
const ATTEMPTS: usize = 4;
const _: () = assert!(ATTEMPTS as u64 == 2 * PER_WRITER);

/// Starts a writer offering events `first..first + PER_WRITER`, in order.
fn writer(run: &Arc<tailtriage_core::Tailtriage>, first: u64) -> thread::JoinHandle<()> {
    let run = Arc::clone(run);
    thread::spawn(move || {
        for tag in first..first + PER_WRITER {
            run.record_runtime_snapshot(event(tag));
        }
    })
}

fn writers_race_at_the_limit(limit: usize) {
    model(&format!("capacity boundary, limit {limit}"), move || {
        let (run, _sink) = recorder(runtime_snapshot_limit(limit));

        let writers = [writer(&run, 1), writer(&run, 1 + PER_WRITER)];
        for writer in writers {
            writer.join().expect("a writer finishes");
        }

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
        for first in [1, 1 + PER_WRITER] {
            let own: Vec<u64> = kept
                .iter()
                .copied()
                .filter(|tag| (first..first + PER_WRITER).contains(tag))
                .collect();
            let expected_own: Vec<u64> = (first..).take(own.len()).collect();
            assert_eq!(
                own, expected_own,
                "a writer's kept events must be its first ones, each once and in the order it \
                 recorded them, kept {kept:?}"
            );
        }
        for tag in 1..=ATTEMPTS as u64 {
            assert!(
                occurrences(&kept, tag) <= 1,
                "an event must be kept at most once, kept {kept:?}"
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

#[test]
fn writers_racing_at_a_limit_of_three_keep_exactly_three_events() {
    writers_race_at_the_limit(3);
}
