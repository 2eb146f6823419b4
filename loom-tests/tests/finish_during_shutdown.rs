//! Model: requests finish while `shutdown()` runs.
//!
//! Three requests are pending when the threads start. Two of them are finished by two threads
//! while a third thread shuts the run down; the last stays pending. Whatever the interleaving,
//! each racing request is either a completed request in the run handed to the sink or one of
//! its unfinished requests, never both and never neither, and the unfinished count is exactly
//! the number of requests the run does not hold as completed. A second shutdown, after every
//! request finished, holds each request exactly once and none unfinished.
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use tailtriage_core::{CaptureLimits, RequestOptions, Run};
use tailtriage_loom_tests::{model, recorder};

/// Ids of the requests, in the order they begin.
const IDS: [&str; 3] = ["first", "second", "idle"];

/// The ids of the completed requests in `run`.
fn completed(run: &Run) -> Vec<&str> {
    run.requests.iter().map(|r| r.request_id.as_str()).collect()
}

/// The ids of the unfinished requests `run` names.
fn unfinished(run: &Run) -> Vec<&str> {
    run.metadata
        .unfinished_requests
        .sample
        .iter()
        .map(|sample| sample.request_id.as_str())
        .collect()
}

#[test]
fn a_request_finished_during_shutdown_is_completed_or_unfinished_never_both() {
    model("finish during shutdown", || {
        let (run, sink) = recorder(CaptureLimits::default());
        let [first, second, idle] = IDS
            .map(|id| run.begin_request_with_owned("/model", RequestOptions::new().request_id(id)));

        let finisher = thread::spawn(move || first.completion.finish_ok());
        let closer = {
            let run = Arc::clone(&run);
            let sink = sink.clone();
            thread::spawn(move || {
                run.shutdown().expect("a memory sink accepts the run");
                sink.take_run().expect("shutdown hands the run to the sink")
            })
        };
        second.completion.finish_ok();
        finisher.join().expect("the finisher finishes");
        let run_at_shutdown = closer.join().expect("the closer finishes");

        let done = completed(&run_at_shutdown);
        let pending = unfinished(&run_at_shutdown);
        for id in IDS {
            let times = done
                .iter()
                .chain(&pending)
                .filter(|seen| **seen == id)
                .count();
            assert_eq!(
                times, 1,
                "request {id} must be exactly once either completed or unfinished in the run: \
                 completed {done:?}, unfinished {pending:?}"
            );
        }
        assert!(
            pending.contains(&"idle"),
            "a request never finished must be unfinished: {pending:?}"
        );
        assert_eq!(
            run_at_shutdown.metadata.unfinished_requests.count,
            pending.len() as u64,
            "the unfinished count must be exact: completed {done:?}, unfinished {pending:?}"
        );

        idle.completion.finish_ok();
        run.shutdown().expect("a second shutdown is accepted");
        let last = sink
            .take_run()
            .expect("the second shutdown hands a run to the sink");
        let mut done = completed(&last);
        done.sort_unstable();
        assert_eq!(
            done,
            ["first", "idle", "second"],
            "once every request finished, the next shutdown must hold each exactly once \
             (the first run completed {:?})",
            completed(&run_at_shutdown)
        );
        assert_eq!(
            last.metadata.unfinished_requests.count, 0,
            "no request is pending at the second shutdown"
        );
    });
}
