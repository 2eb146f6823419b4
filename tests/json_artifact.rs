//! The JSON sink writes the artifact straight from the recorder's records; what it writes is,
//! byte for byte, the serialized [`Run`] the same recording produces.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;

mod support;

use tailtriage_core::{LocalJsonSink, Outcome, RequestOptions, Run, RuntimeSnapshot, Tailtriage};

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
    /// `None` leaves the request unfinished.
    outcome: Option<Outcome>,
}

/// Names that exercise JSON escaping: quotes, backslashes, control characters, non-ASCII.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/checkout".to_owned()),
        Just("db \"primary\"".to_owned()),
        Just("back\\slash\ttab\nline\u{1}".to_owned()),
        Just("наличие/库存/🛒".to_owned()),
        Just(String::new()),
        "[a-z/_-]{1,12}",
    ]
}

fn outcome() -> impl Strategy<Value = Option<Outcome>> {
    prop_oneof![
        Just(None),
        Just(Some(Outcome::Ok)),
        Just(Some(Outcome::Error)),
        Just(Some(Outcome::Timeout)),
        Just(Some(Outcome::Cancelled)),
        Just(Some(Outcome::Rejected)),
        name().prop_map(|label| Some(Outcome::Other(label))),
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
        outcome(),
    )
        .prop_map(
            |(route, id, kind, stages, queues, gauge, outcome)| Request {
                route,
                id,
                kind,
                stages,
                queues,
                gauge,
                outcome,
            },
        )
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

fn record(tailtriage: &Tailtriage, request: &Request) {
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
    match &request.outcome {
        Some(outcome) => started.completion.finish(outcome.clone()),
        None => std::mem::forget(started.completion),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_json_artifact_is_byte_for_byte_the_serialized_run(
        requests in proptest::collection::vec(request(), 0..12),
        runtime_snapshots in proptest::collection::vec(runtime_snapshot(), 0..3),
        limit in 0_usize..8,
        pretty in any::<bool>(),
        shutdowns in 1_usize..3,
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
        for request in &requests {
            record(&tailtriage, request);
        }
        for snapshot in &runtime_snapshots {
            tailtriage.record_runtime_snapshot(snapshot.clone());
        }

        for _ in 0..shutdowns {
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
        }
    }
}
