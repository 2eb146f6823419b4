//! Requests: ids, outcomes, timers, gauges and the order events are listed in.

use tailtriage_core::{MemorySink, Outcome, RequestOptions, Tailtriage};

fn recorder() -> Tailtriage {
    Tailtriage::builder("checkout")
        .sink(MemorySink::new())
        .build()
        .expect("build succeeds")
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    futures_executor::block_on(future)
}

#[test]
fn generated_ids_start_with_the_sanitized_route_and_are_unique() {
    let tailtriage = recorder();
    let ids: Vec<String> = (0..100)
        .map(|_| {
            let started = tailtriage.begin_request("/v1/órders?id=1");
            let id = started.handle.request_id().to_owned();
            started.completion.finish_ok();
            id
        })
        .collect();
    for id in &ids {
        assert!(id.starts_with("_v1__rders_id_1"), "{id}");
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "generated ids are unique");
    let recorded: Vec<String> = tailtriage
        .snapshot()
        .requests
        .into_iter()
        .map(|request| request.request_id)
        .collect();
    assert_eq!(recorded, ids, "the artifact carries the same ids");
}

#[test]
fn caller_ids_are_kept_as_given_duplicates_included() {
    let tailtriage = recorder();
    for _ in 0..2 {
        let started = tailtriage.begin_request_with(
            "/checkout",
            RequestOptions::new().request_id("same").kind("http"),
        );
        assert_eq!(started.handle.request_id(), "same");
        assert_eq!(started.handle.kind(), Some("http"));
        assert_eq!(started.handle.route(), "/checkout");
        started.completion.finish_ok();
    }
    let run = tailtriage.snapshot();
    assert_eq!(
        run.requests.len(),
        2,
        "two requests with one id are two requests"
    );
    assert!(run.requests.iter().all(|r| r.request_id == "same"));
    assert!(run
        .requests
        .iter()
        .all(|r| r.kind.as_deref() == Some("http")));
}

#[test]
fn every_outcome_is_recorded_with_its_label() {
    let tailtriage = recorder();
    let outcomes = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Cancelled,
        Outcome::Rejected,
        Outcome::Other("shed".to_owned()),
    ];
    for outcome in outcomes.clone() {
        tailtriage.begin_request("/r").completion.finish(outcome);
    }
    tailtriage.begin_request("/r").completion.finish_ok();
    let ok: Result<u8, &str> = tailtriage
        .begin_request("/r")
        .completion
        .finish_result(Ok(1));
    assert_eq!(ok, Ok(1));
    let err: Result<u8, &str> = tailtriage
        .begin_request("/r")
        .completion
        .finish_result(Err("boom"));
    assert_eq!(err, Err("boom"), "the result passes through unchanged");

    let labels: Vec<String> = tailtriage
        .snapshot()
        .requests
        .into_iter()
        .map(|r| r.outcome)
        .collect();
    assert_eq!(
        labels,
        [
            "ok",
            "error",
            "timeout",
            "cancelled",
            "rejected",
            "shed",
            "ok",
            "ok",
            "error"
        ]
    );
    assert_eq!(Outcome::Rejected.into_string(), "rejected");
}

#[test]
fn a_request_event_carries_route_kind_times_and_latency() {
    let tailtriage = recorder();
    let started = tailtriage.begin_request_with("/slow", RequestOptions::new().kind("job"));
    std::thread::sleep(std::time::Duration::from_millis(15));
    started.completion.finish_ok();
    let request = &tailtriage.snapshot().requests[0];
    assert_eq!(request.route, "/slow");
    assert_eq!(request.kind.as_deref(), Some("job"));
    assert!(
        request.latency_us >= 15_000,
        "latency {}",
        request.latency_us
    );
    assert!(request.finished_at_unix_ms >= request.started_at_unix_ms + 14);
}

#[test]
fn queue_and_stage_timers_record_their_events() {
    let tailtriage = recorder();
    let started = tailtriage.begin_request_with("/c", RequestOptions::new().request_id("r1"));
    let handle = started.handle.clone();
    block_on(async {
        let value = handle
            .queue("db_pool")
            .with_depth_at_start(4)
            .await_on(async { 5 })
            .await;
        assert_eq!(value, 5);
        handle.queue("plain").await_on(async {}).await;
        let failed: Result<(), &str> = handle.stage("charge").await_on(async { Err("no") }).await;
        assert!(failed.is_err());
        let ok: Result<u8, ()> = handle.stage("price").await_on(async { Ok(2) }).await;
        assert_eq!(ok, Ok(2));
        assert_eq!(handle.stage("cpu").await_value(async { 7 }).await, 7);
    });
    started.completion.finish_ok();

    let run = tailtriage.snapshot();
    assert_eq!(run.queues.len(), 2);
    assert_eq!(run.queues[0].queue, "db_pool");
    assert_eq!(run.queues[0].request_id, "r1");
    assert_eq!(run.queues[0].depth_at_start, Some(4));
    assert_eq!(run.queues[1].depth_at_start, None);
    let stages: Vec<(&str, bool)> = run
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), s.success))
        .collect();
    assert_eq!(stages, [("charge", false), ("price", true), ("cpu", true)]);
    assert!(run
        .stages
        .iter()
        .all(|s| s.request_id == "r1" && !s.cancelled));
}

#[test]
fn instrumentation_never_finishes_a_request() {
    let tailtriage = recorder();
    let started = tailtriage.begin_request("/c");
    block_on(started.handle.queue("q").await_on(async {}));
    block_on(started.handle.stage("s").await_value(async {}));
    drop(started.handle.inflight("g"));
    assert!(tailtriage.snapshot().requests.is_empty());
    started.completion.finish_ok();
    assert_eq!(tailtriage.snapshot().requests.len(), 1);
}

#[test]
fn inflight_guards_count_up_and_down_and_record_each_change() {
    let tailtriage = recorder();
    let started = tailtriage.begin_request("/c");
    let first = started.handle.inflight("workers");
    let second = started.handle.inflight("workers");
    let other = started.handle.inflight("other");
    drop(first);
    drop(second);
    drop(other);
    started.completion.finish_ok();

    let snapshots: Vec<(String, u64)> = tailtriage
        .snapshot()
        .inflight
        .into_iter()
        .map(|s| (s.gauge, s.count))
        .collect();
    let expected = [
        ("workers", 1),
        ("workers", 2),
        ("other", 1),
        ("workers", 1),
        ("workers", 0),
        ("other", 0),
    ];
    let expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(g, c)| ((*g).to_owned(), *c))
        .collect();
    assert_eq!(snapshots, expected);
}

#[test]
fn owned_requests_work_across_threads() {
    let tailtriage = std::sync::Arc::new(recorder());
    let started = tailtriage.begin_request_with_owned("/owned", RequestOptions::new().kind("rpc"));
    let handle = started.handle.clone();
    let completion = started.completion;
    std::thread::spawn(move || {
        block_on(handle.stage("remote").await_value(async {}));
        completion.finish(Outcome::Timeout);
    })
    .join()
    .expect("worker joins");
    assert_eq!(started.handle.kind(), Some("rpc"));
    let run = tailtriage.snapshot();
    assert_eq!(run.requests[0].outcome, "timeout");
    assert_eq!(run.stages[0].request_id, run.requests[0].request_id);
}

#[test]
fn events_of_one_thread_are_listed_in_program_order() {
    let tailtriage = recorder();
    for index in 0..2_000 {
        tailtriage
            .begin_request_with("/o", RequestOptions::new().request_id(index.to_string()))
            .completion
            .finish_ok();
    }
    let ids: Vec<usize> = tailtriage
        .snapshot()
        .requests
        .iter()
        .map(|r| r.request_id.parse().expect("numeric id"))
        .collect();
    assert_eq!(ids, (0..2_000).collect::<Vec<_>>());
}

#[cfg(debug_assertions)]
#[test]
fn dropping_an_unfinished_completion_panics_in_debug_builds() {
    let tailtriage = recorder();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let started = tailtriage.begin_request("/leak");
        drop(started);
    }));
    assert!(
        outcome.is_err(),
        "a forgotten finish is caught in debug builds"
    );
    assert!(
        tailtriage.snapshot().requests.is_empty(),
        "nothing is recorded"
    );
}

#[test]
fn a_completion_dropped_while_panicking_does_not_abort() {
    let tailtriage = recorder();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _started = tailtriage.begin_request("/unwind");
        panic!("handler failed");
    }));
    assert!(outcome.is_err());
    assert!(tailtriage.snapshot().requests.is_empty());
}
