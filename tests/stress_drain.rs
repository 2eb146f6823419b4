//! Stress: nothing is lost around concurrent `snapshot()` and `shutdown()`.
//!
//! Writers record numbered events as fast as they can (their rings fill, spill and are drained
//! under them) while another thread takes snapshots or shuts the run down, again and again.
//! Each writer publishes how many of its record calls have returned before each drain begins.
//! Every drain must then hold, for each writer, exactly a prefix of its events (nothing lost,
//! nothing doubled, recording order kept) at least as long as what had returned, and never
//! shorter than the previous drain's (drains do not consume). Set `TAILTRIAGE_STRESS_SCALE` to
//! run more rounds.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;

use tailtriage_core::{CaptureLimits, MemorySink, Run, RuntimeSnapshot, Tailtriage};

const WRITERS: usize = 3;
const EVENTS_PER_WRITER: u64 = 20_000;
/// A writer records at most this many events ahead of the drains: it waits for drain `n` to
/// begin before its event `n * PACE`, so that drains overlap recording even on a loaded
/// machine where the writers could otherwise finish before the first drain.
const PACE: u64 = 2_000;

/// Lets paced threads run free when dropped, so that a failed check on the draining thread
/// ends the test instead of leaving the paced threads waiting for drains that never come.
struct ReleaseOnDrop<'a>(&'a AtomicU64);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(u64::MAX, Ordering::Release);
    }
}

/// Event `index` of writer `writer`.
fn event(writer: usize, index: u64) -> RuntimeSnapshot {
    RuntimeSnapshot {
        at_unix_ms: 0,
        alive_tasks: Some(index),
        global_queue_depth: Some(writer as u64),
        local_queue_depth: None,
        blocking_queue_depth: None,
        remote_schedule_count: None,
    }
}

/// How many events of each writer `run` holds, after checking that they are exactly the
/// writer's first events, in order, each once.
fn prefix_lengths(run: &Run, what: &str) -> [u64; WRITERS] {
    let mut lengths = [0; WRITERS];
    for snapshot in &run.runtime_snapshots {
        let writer = usize::try_from(snapshot.global_queue_depth.expect("events name a writer"))
            .expect("writer numbers are small");
        let index = snapshot.alive_tasks.expect("events carry their index");
        assert_eq!(
            index, lengths[writer],
            "{what} must hold each writer's first events in order, each once: writer {writer} \
             has event {index} where event {} belongs",
            lengths[writer]
        );
        lengths[writer] += 1;
    }
    lengths
}

/// Runs the writers while `drain` is called again and again; `drain` returns the run it saw.
fn race_writers_against(what: &str, tailtriage: &Tailtriage, drain: impl Fn() -> Run) {
    let returned: [AtomicU64; WRITERS] = std::array::from_fn(|_| AtomicU64::new(0));
    let drains_begun = AtomicU64::new(0);
    let writers_done = AtomicBool::new(false);
    let start = Barrier::new(WRITERS + 1);

    std::thread::scope(|scope| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let (returned, start, drains_begun) = (&returned, &start, &drains_begun);
                scope.spawn(move || {
                    start.wait();
                    for index in 0..EVENTS_PER_WRITER {
                        if index % PACE == 0 {
                            while drains_begun.load(Ordering::Acquire) < index / PACE {
                                std::thread::yield_now();
                            }
                        }
                        tailtriage.record_runtime_snapshot(event(writer, index));
                        returned[writer].store(index + 1, Ordering::Release);
                    }
                })
            })
            .collect();

        let _release = ReleaseOnDrop(&drains_begun);
        start.wait();
        let mut previous = [0; WRITERS];
        let mut drains = 0;
        while !writers_done.load(Ordering::Relaxed) {
            if writers
                .iter()
                .all(std::thread::ScopedJoinHandle::is_finished)
            {
                writers_done.store(true, Ordering::Relaxed);
            }
            let before: [u64; WRITERS] =
                std::array::from_fn(|writer| returned[writer].load(Ordering::Acquire));
            drains_begun.fetch_add(1, Ordering::Release);
            let run = drain();
            drains += 1;
            let lengths = prefix_lengths(&run, what);
            for writer in 0..WRITERS {
                assert!(
                    lengths[writer] >= before[writer],
                    "{what} {drains} must hold every event recorded before it began: writer \
                     {writer} had returned {} events, the drain holds {}",
                    before[writer],
                    lengths[writer]
                );
                assert!(
                    lengths[writer] >= previous[writer],
                    "{what} {drains} must hold everything earlier ones did: writer {writer} \
                     had {} events, now {}",
                    previous[writer],
                    lengths[writer]
                );
            }
            previous = lengths;
        }
    });

    let last = prefix_lengths(&drain(), what);
    assert_eq!(
        last, [EVENTS_PER_WRITER; WRITERS],
        "after the writers finished, a {what} must hold every event"
    );
}

fn recorder() -> (Tailtriage, MemorySink) {
    let sink = MemorySink::new();
    let tailtriage = Tailtriage::builder("stress")
        .sink(sink.clone())
        .capture_limits(CaptureLimits {
            max_runtime_snapshots: usize::MAX,
            ..CaptureLimits::default()
        })
        .build()
        .expect("a recorder with a service name builds");
    (tailtriage, sink)
}

#[test]
fn snapshots_taken_while_writers_record_hold_every_returned_event_and_consume_nothing() {
    for _ in 0..support::rounds(5) {
        let (tailtriage, _sink) = recorder();
        race_writers_against("snapshot", &tailtriage, || tailtriage.snapshot());
    }
}

#[test]
fn shutdowns_taken_while_writers_record_hand_every_returned_event_to_the_sink() {
    for _ in 0..support::rounds(5) {
        let (tailtriage, sink) = recorder();
        race_writers_against("shutdown", &tailtriage, || {
            tailtriage
                .shutdown()
                .expect("a memory sink accepts the run");
            sink.take_run().expect("shutdown hands the run to the sink")
        });
    }
}
