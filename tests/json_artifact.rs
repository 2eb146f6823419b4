//! The JSON sink writes the artifact straight from the recorder's records; what it writes is,
//! byte for byte, the serialized [`Run`] the same recording produces.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;

mod support;

use tailtriage_core::{
    LocalJsonSink, Outcome, RequestCompletion, RequestOptions, Run, RuntimeSnapshot, Tailtriage,
};

/// Polls `future` once; returns its output if it was ready. Dropping a pending timer future
/// records a cancelled event.
fn poll_once<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

/// One request of a generated recording.
#[derive(Debug, Clone)]
struct Request {
    route: String,
    id: Option<String>,
    kind: Option<String>,
    /// (name, succeeds, abandoned)
    stages: Vec<(String, bool, bool)>,
    /// (name, depth at start, abandoned)
    queues: Vec<(String, Option<u64>, bool)>,
    gauge: Option<String>,
    finish: Finish,
}

/// When a generated request finishes.
#[derive(Debug, Clone)]
enum Finish {
    /// Before the first shutdown.
    Now(Outcome),
    /// After the first shutdown counted it unfinished, before the next one.
    Late(Outcome),
    /// Never: it stays pending.
    Never,
}

/// Names that exercise JSON escaping: quotes, backslashes, control characters, non-ASCII.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/checkout".to_owned()),
        Just("db \"primary\"".to_owned()),
        Just("back\\slash\ttab\nline\u{1}".to_owned()),
        Just("наличие/库存/🛒".to_owned()),
        Just("del\u{7f} and \u{1f} and \u{2028}".to_owned()),
        Just("C:\\temp\\db".to_owned()),
        Just(String::new()),
        "[a-z/_-]{1,12}",
    ]
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Ok),
        Just(Outcome::Error),
        Just(Outcome::Timeout),
        Just(Outcome::Cancelled),
        Just(Outcome::Rejected),
        name().prop_map(Outcome::Other),
    ]
}

fn finish() -> impl Strategy<Value = Finish> {
    prop_oneof![
        3 => outcome().prop_map(Finish::Now),
        1 => outcome().prop_map(Finish::Late),
        1 => Just(Finish::Never),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    (
        name(),
        proptest::option::of(name()),
        proptest::option::of(name()),
        proptest::collection::vec((name(), any::<bool>(), any::<bool>()), 0..3),
        proptest::collection::vec(
            (name(), proptest::option::of(any::<u64>()), any::<bool>()),
            0..3,
        ),
        proptest::option::of(name()),
        finish(),
    )
        .prop_map(|(route, id, kind, stages, queues, gauge, finish)| Request {
            route,
            id,
            kind,
            stages,
            queues,
            gauge,
            finish,
        })
}

fn runtime_snapshot() -> impl Strategy<Value = RuntimeSnapshot> {
    (
        any::<u64>(),
        proptest::array::uniform5(proptest::option::of(any::<u64>())),
    )
        .prop_map(
            |(at_unix_ms, [alive, global, local, blocking, remote])| RuntimeSnapshot {
                at_unix_ms,
                alive_tasks: alive,
                global_queue_depth: global,
                local_queue_depth: local,
                blocking_queue_depth: blocking,
                remote_schedule_count: remote,
            },
        )
}

/// Records `request`; returns its completion when it is to finish late.
fn record<'a>(
    tailtriage: &'a Tailtriage,
    request: &Request,
) -> Option<(RequestCompletion<'a>, Outcome)> {
    let mut options = RequestOptions::new();
    if let Some(id) = &request.id {
        options = options.request_id(id.clone());
    }
    if let Some(kind) = &request.kind {
        options = options.kind(kind.clone());
    }
    let started = tailtriage.begin_request_with(request.route.clone(), options);
    let handle = &started.handle;
    let guard = request
        .gauge
        .as_ref()
        .map(|gauge| handle.inflight(gauge.clone()));
    for (queue, depth, abandoned) in &request.queues {
        let mut timer = handle.queue(queue.clone());
        if let Some(depth) = depth {
            timer = timer.with_depth_at_start(*depth);
        }
        if *abandoned {
            assert!(poll_once(timer.await_on(std::future::pending::<()>())).is_none());
        } else {
            assert!(poll_once(timer.await_on(std::future::ready(()))).is_some());
        }
    }
    for (stage, succeeds, abandoned) in &request.stages {
        let timer = handle.stage(stage.clone());
        if *abandoned {
            let never = std::future::pending::<Result<(), ()>>();
            assert!(poll_once(timer.await_on(never)).is_none());
        } else {
            let result = if *succeeds { Ok(()) } else { Err(()) };
            assert!(poll_once(timer.await_on(std::future::ready(result))).is_some());
        }
    }
    drop(guard);
    match &request.finish {
        Finish::Now(outcome) => started.completion.finish(outcome.clone()),
        Finish::Late(outcome) => return Some((started.completion, outcome.clone())),
        Finish::Never => std::mem::forget(started.completion),
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_json_artifact_is_byte_for_byte_the_serialized_run(
        requests in proptest::collection::vec(request(), 0..12),
        plain_requests in prop_oneof![Just(0_usize), 0_usize..700],
        runtime_snapshots in proptest::collection::vec(runtime_snapshot(), 0..3),
        limit in prop_oneof![0_usize..8, 250_usize..600],
        pretty in any::<bool>(),
        shutdowns in 1_usize..4,
    ) {
        let folder = tempfile::tempdir().expect("a temporary folder");
        let path = folder.path().join("run.json");
        let mut sink = LocalJsonSink::new(&path);
        if pretty {
            sink = sink.pretty();
        }
        let tailtriage = Tailtriage::builder("svc \"json\"")
            .service_version("1.0\n")
            .capture_limits(support::uniform_limits(limit))
            .sink(sink)
            .build()
            .expect("build succeeds");
        // Enough plain requests, with a larger limit, to spill rings into storage chunks.
        for _ in 0..plain_requests {
            let started = tailtriage.begin_request("/plain");
            drop(started.handle.inflight("plain"));
            started.completion.finish_ok();
        }
        let mut late = Vec::new();
        for request in &requests {
            late.extend(record(&tailtriage, request));
        }
        for snapshot in &runtime_snapshots {
            tailtriage.record_runtime_snapshot(snapshot.clone());
        }

        for shutdown in 0..shutdowns {
            tailtriage.shutdown().expect("the artifact is written");
            let written = std::fs::read(&path).expect("the artifact exists");
            // Nothing records in between, so a snapshot now is the run that was written.
            let run: Run = tailtriage.snapshot();
            let expected = if pretty {
                serde_json::to_vec_pretty(&run)
            } else {
                serde_json::to_vec(&run)
            }
            .expect("a run serializes");
            prop_assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&expected),
                "the artifact must be exactly the serialized run"
            );
            if shutdown == 0 {
                // Finished after a shutdown counted them unfinished: the next run holds them.
                for (completion, outcome) in late.drain(..) {
                    completion.finish(outcome);
                }
            }
        }
        for (completion, outcome) in late {
            completion.finish(outcome);
        }
    }
}
