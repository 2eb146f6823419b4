//! Model: a writer races `shutdown()`.
//!
//! One event is recorded before the threads start; then a writer records an event and begins
//! and finishes a request while another thread shuts the run down. Afterwards the main thread
//! records again and shuts down a second time. Whatever the interleaving:
//!
//! * an event or request whose record call returned before the shutdown began is in the run
//!   handed to the sink;
//! * an event racing the shutdown is in that run or the next one, never in neither, never
//!   twice; a request begun before the shutdown began is completed in that run or counted
//!   unfinished, never both and never neither;
//! * recording after a shutdown keeps working, and the second shutdown's run holds every
//!   event and request exactly once, in recording order.
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use tailtriage_core::{RequestOptions, Run, Tailtriage};
use tailtriage_loom_tests::{event, model, occurrences, recorder, runtime_snapshot_limit, tags};

/// Begins and finishes a request whose id is `id`.
fn request(run: &Tailtriage, id: &str) {
    run.begin_request_with("/model", RequestOptions::new().request_id(id))
        .completion
        .finish_ok();
}

/// The ids of the completed requests in `run`.
fn completed(run: &Run) -> Vec<&str> {
    run.requests.iter().map(|r| r.request_id.as_str()).collect()
}

/// Checks the run the racing shutdown handed to its sink, given how far the writer had got
/// (`before`) when the shutdown began; returns its events, its completed requests and its
/// unfinished count.
fn check_first_run(before: usize, first: &Run) -> (Vec<u64>, Vec<&str>, u64) {
    let first_events = tags(first);
    let first_requests = completed(first);
    assert!(
        first.metadata.finalized_at_unix_ms.is_some(),
        "the run handed to the sink must be finalized"
    );
    for tag in 0..=1 {
        assert!(
            occurrences(&first_events, tag) <= 1,
            "the first run must hold each event at most once: {first_events:?}"
        );
    }
    assert!(
        first_events.windows(2).all(|pair| pair[0] < pair[1]),
        "the first run must list events in recording order: {first_events:?}"
    );
    for tag in 0..=before.min(1) as u64 {
        assert_eq!(
            occurrences(&first_events, tag),
            1,
            "event {tag} returned before the shutdown began, so it must be in its run: \
             {first_events:?}"
        );
    }
    let completed_first = first_requests.contains(&"racing");
    let unfinished_first = first.metadata.unfinished_requests.count;
    assert!(
        first_requests.len() <= 1 && unfinished_first <= 1,
        "the first run must hold the racing request at most once: completed \
         {first_requests:?}, {unfinished_first} unfinished"
    );
    assert!(
        !(completed_first && unfinished_first == 1),
        "a request must not be both completed and unfinished in one run"
    );
    if before >= 2 {
        assert_eq!(
            u64::from(completed_first) + unfinished_first,
            1,
            "a request begun before the shutdown began must be exactly one of completed \
             or unfinished in its run: completed {first_requests:?}, {unfinished_first} \
             unfinished"
        );
    }
    if before == 3 {
        assert!(
            completed_first,
            "a request finished before the shutdown began must be completed in its run"
        );
    }

    (first_events, first_requests, unfinished_first)
}

#[test]
fn an_event_racing_shutdown_is_in_that_run_or_the_next_and_recording_goes_on() {
    model("shutdown race", || {
        let (run, sink) = recorder(runtime_snapshot_limit(usize::MAX));
        run.record_runtime_snapshot(event(0));

        // How far the writer got: 1 after its event returned, 2 once its request has begun,
        // 3 once the request has finished.
        let returned = Arc::new(AtomicUsize::new(0));
        let writer = {
            let run = Arc::clone(&run);
            let returned = Arc::clone(&returned);
            thread::spawn(move || {
                run.record_runtime_snapshot(event(1));
                returned.store(1, Ordering::Release);
                let started =
                    run.begin_request_with("/model", RequestOptions::new().request_id("racing"));
                returned.store(2, Ordering::Release);
                started.completion.finish_ok();
                returned.store(3, Ordering::Release);
            })
        };
        let closer = {
            let run = Arc::clone(&run);
            let sink = sink.clone();
            let returned = Arc::clone(&returned);
            thread::spawn(move || {
                let before = returned.load(Ordering::Acquire);
                run.shutdown().expect("a memory sink accepts the run");
                (
                    before,
                    sink.take_run().expect("shutdown hands the run to the sink"),
                )
            })
        };
        writer.join().expect("the writer finishes");
        let (before, first) = closer.join().expect("the closer finishes");

        run.record_runtime_snapshot(event(3));
        request(&run, "after");
        run.shutdown().expect("a second shutdown is accepted");
        let second = sink
            .take_run()
            .expect("the second shutdown hands a run to the sink");

        let (first_events, first_requests, unfinished_first) = check_first_run(before, &first);

        assert_eq!(
            tags(&second),
            [0, 1, 3],
            "the second shutdown must hold every event exactly once, in recording order, \
             including one recorded after the first shutdown (the first run held \
             {first_events:?})"
        );
        assert_eq!(
            completed(&second),
            ["racing", "after"],
            "the second shutdown must hold every request exactly once (the first run \
             completed {first_requests:?} and counted {unfinished_first} unfinished)"
        );
        assert_eq!(
            second.metadata.unfinished_requests.count, 0,
            "no request is pending at the second shutdown"
        );
    });
}
