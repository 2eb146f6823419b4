//! Cancellation evidence: a queue wait or stage whose future is dropped before it completes (a
//! timeout, a `select!` branch that lost, a client that went away, a panic unwinding through
//! it) still records its event, marked `cancelled`, with the time spent until the drop; a
//! cancelled stage is never successful. The artifact stays readable by the published
//! `tailtriage-core` 0.2.0, which ignores the new field.

use std::future::Future;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tailtriage_core::{
    CaptureLimitsOverride, MemorySink, Outcome, QueueEvent, Run, StageEvent, Tailtriage,
};

/// Long enough that the wrapped future never completes within a test.
const NEVER: Duration = Duration::from_secs(3_600);

fn recorder() -> Tailtriage {
    Tailtriage::builder("checkout")
        .sink(MemorySink::new())
        .build()
        .expect("a named service builds")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).expect("fits")
}

/// The bounds a recorded duration must fall within, widened by 2% and a millisecond: the run
/// times with the CPU's calibrated cycle counter, the test with the system's monotonic clock,
/// and a timer starts at its first poll, a moment after the deadline that ends it was set.
fn widened(at_least: Duration, at_most: Duration) -> (u64, u64) {
    let slack = |bound: Duration| bound / 50 + Duration::from_millis(1);
    (
        micros(at_least.saturating_sub(slack(at_least))),
        micros(at_most + slack(at_most)),
    )
}

/// Checks that a cancelled wait recorded at least `at_least` and at most `at_most` (within
/// the clocks' disagreement), with wall-clock instants that agree with the duration.
fn assert_queue_waited(event: &QueueEvent, at_least: Duration, at_most: Duration) {
    assert!(
        event.cancelled,
        "the wait should be marked cancelled: {event:?}"
    );
    let (low, high) = widened(at_least, at_most);
    assert!(
        event.wait_us >= low && event.wait_us <= high,
        "the wait should be the time until the drop, between {at_least:?} and {at_most:?}: \
         {event:?}"
    );
    let span_ms = event.waited_until_unix_ms - event.waited_from_unix_ms;
    assert!(
        span_ms.abs_diff(event.wait_us / 1_000) <= 1,
        "the instants should agree with the wait: {event:?}"
    );
}

/// Checks that a cancelled stage is unsuccessful and recorded the time until the drop.
fn assert_stage_ran(event: &StageEvent, at_least: Duration, at_most: Duration) {
    assert!(
        event.cancelled,
        "the stage should be marked cancelled: {event:?}"
    );
    assert!(
        !event.success,
        "a cancelled stage is never successful: {event:?}"
    );
    let (low, high) = widened(at_least, at_most);
    assert!(
        event.latency_us >= low && event.latency_us <= high,
        "the latency should be the time until the drop, between {at_least:?} and \
         {at_most:?}: {event:?}"
    );
    let span_ms = event.finished_at_unix_ms - event.started_at_unix_ms;
    assert!(
        span_ms.abs_diff(event.latency_us / 1_000) <= 1,
        "the instants should agree with the latency: {event:?}"
    );
}

#[test]
fn a_queue_wait_cut_short_by_a_timeout_records_a_cancelled_event_with_the_time_waited() {
    let tailtriage = recorder();
    let limit = Duration::from_millis(50);

    let elapsed = runtime().block_on(async {
        let started = tailtriage.begin_request("/checkout");
        let begun = Instant::now();
        let permit = tokio::time::timeout(
            limit,
            started
                .handle
                .queue("db_pool")
                .with_depth_at_start(7)
                .await_on(tokio::time::sleep(NEVER)),
        )
        .await;
        let elapsed = begun.elapsed();
        assert!(permit.is_err(), "the wait timed out");
        started.completion.finish(Outcome::Timeout);
        elapsed
    });

    let run = tailtriage.snapshot();
    assert_eq!(run.queues.len(), 1, "the wait did not vanish");
    let event = &run.queues[0];
    assert_queue_waited(event, limit, elapsed);
    assert_eq!(event.queue, "db_pool");
    assert_eq!(
        event.depth_at_start,
        Some(7),
        "what was known at the start is kept"
    );
    assert_eq!(event.request_id, run.requests[0].request_id);
    assert_eq!(run.requests[0].outcome, "timeout");
}

#[test]
fn a_stage_cut_short_by_a_timeout_is_recorded_unsuccessful_and_cancelled() {
    let tailtriage = recorder();
    let limit = Duration::from_millis(40);

    let elapsed = runtime().block_on(async {
        let started = tailtriage.begin_request("/checkout");
        let begun = Instant::now();
        let charged = tokio::time::timeout(
            limit,
            started.handle.stage("charge_card").await_on(async {
                tokio::time::sleep(NEVER).await;
                Ok::<u32, io::Error>(1)
            }),
        )
        .await;
        let elapsed = begun.elapsed();
        assert!(charged.is_err(), "the stage timed out");
        started.completion.finish(Outcome::Timeout);
        elapsed
    });

    let run = tailtriage.snapshot();
    assert_eq!(run.stages.len(), 1, "the stage did not vanish");
    assert_stage_ran(&run.stages[0], limit, elapsed);
    assert_eq!(run.stages[0].stage, "charge_card");
}

#[test]
fn the_losing_branch_of_a_select_is_recorded_cancelled_and_the_winner_completed() {
    let tailtriage = recorder();
    let race = Duration::from_millis(20);

    let elapsed = runtime().block_on(async {
        let started = tailtriage.begin_request("/search");
        let handle = &started.handle;
        let begun = Instant::now();
        // Biased: the slow branch is polled first, so both have started when the fast one wins.
        let winner = tokio::select! {
            biased;
            slow = handle.stage("slow_replica").await_on(async {
                tokio::time::sleep(NEVER).await;
                Ok::<&str, io::Error>("slow")
            }) => slow,
            fast = handle.stage("fast_replica").await_on(async {
                tokio::time::sleep(race).await;
                Ok::<&str, io::Error>("fast")
            }) => fast,
        };
        let elapsed = begun.elapsed();
        assert_eq!(winner.expect("the fast replica answered"), "fast");
        started.completion.finish_ok();
        elapsed
    });

    let run = tailtriage.snapshot();
    assert_eq!(run.stages.len(), 2, "neither branch vanished");
    let fast = &run.stages[0];
    assert_eq!(fast.stage, "fast_replica", "the winner completed first");
    assert!(
        fast.success && !fast.cancelled,
        "the winner completed: {fast:?}"
    );
    let slow = &run.stages[1];
    assert_eq!(slow.stage, "slow_replica");
    assert_stage_ran(slow, race, elapsed);
}

#[test]
fn a_select_branch_never_polled_because_another_won_at_once_is_recorded_cancelled() {
    let tailtriage = recorder();

    runtime().block_on(async {
        let started = tailtriage.begin_request("/search");
        let handle = &started.handle;
        // Biased: the cache branch is polled first and answers at once, so the database
        // branch's future is dropped without ever being polled.
        let answer = tokio::select! {
            biased;
            cached = handle.stage("cache").await_value(async { 1 }) => cached,
            stored = handle.stage("database").await_value(async {
                tokio::time::sleep(NEVER).await;
                2
            }) => stored,
        };
        assert_eq!(answer, 1);
        started.completion.finish_ok();
    });

    let run = tailtriage.snapshot();
    assert_eq!(
        run.stages.len(),
        2,
        "the branch that never ran did not vanish"
    );
    assert_eq!(run.stages[0].stage, "cache");
    assert!(run.stages[0].success && !run.stages[0].cancelled);
    let never_ran = &run.stages[1];
    assert_eq!(never_ran.stage, "database");
    assert_stage_ran(never_ran, Duration::ZERO, Duration::ZERO);
    assert_eq!(
        never_ran.latency_us, 0,
        "a stage that never ran lasted no time"
    );
}

#[test]
fn a_timed_future_dropped_before_its_first_poll_is_recorded_cancelled_with_no_wait() {
    let tailtriage = recorder();
    let started = tailtriage.begin_request("/upload");
    let wait = started
        .handle
        .queue("upload_slots")
        .with_depth_at_start(3)
        .await_on(std::future::pending::<()>());
    drop(wait);
    started.completion.finish(Outcome::Cancelled);

    let run = tailtriage.snapshot();
    assert_eq!(run.queues.len(), 1);
    assert_queue_waited(&run.queues[0], Duration::ZERO, Duration::ZERO);
    assert_eq!(
        run.queues[0].wait_us, 0,
        "a wait that never began lasted no time"
    );
    assert_eq!(run.queues[0].depth_at_start, Some(3));
}

#[test]
fn a_wait_dropped_after_it_began_because_the_client_went_away_records_the_time_so_far() {
    let tailtriage = recorder();
    let started = tailtriage.begin_request("/upload");
    let away_after = Duration::from_millis(25);

    let begun = Instant::now();
    {
        let mut wait = pin!(started
            .handle
            .queue("upload_slots")
            .await_on(std::future::pending::<()>()));
        let mut context = Context::from_waker(Waker::noop());
        assert!(
            wait.as_mut().poll(&mut context).is_pending(),
            "the wait began"
        );
        std::thread::sleep(away_after);
        // The client went away: the wait's future is dropped here.
    }
    let elapsed = begun.elapsed();
    started.completion.finish(Outcome::Cancelled);

    let run = tailtriage.snapshot();
    assert_eq!(run.queues.len(), 1);
    assert_queue_waited(&run.queues[0], away_after, elapsed);
    assert_eq!(run.requests[0].outcome, "cancelled");
}

#[test]
fn an_await_value_stage_dropped_before_completion_is_not_successful() {
    let tailtriage = recorder();
    let started = tailtriage.begin_request("/render");
    {
        let mut render = pin!(started
            .handle
            .stage("render")
            .await_value(std::future::pending::<u32>()));
        let mut context = Context::from_waker(Waker::noop());
        assert_eq!(render.as_mut().poll(&mut context), Poll::Pending);
    }
    started.completion.finish_ok();

    let run = tailtriage.snapshot();
    assert_eq!(run.stages.len(), 1);
    assert!(run.stages[0].cancelled);
    assert!(
        !run.stages[0].success,
        "await_value is successful only when it completes"
    );
}

/// Keeps the one panic these tests cause on purpose out of the output; every other panic is
/// reported as usual.
fn quiet_expected_panic() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&"malformed body") {
                report(info);
            }
        }));
    });
}

#[test]
fn a_panic_unwinding_through_a_stage_and_a_queue_wait_records_both_as_cancelled() {
    quiet_expected_panic();
    let tailtriage = recorder();
    let started = tailtriage.begin_request("/parse");
    let handle = &started.handle;
    let hold = Duration::from_millis(15);

    let begun = Instant::now();
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        futures_executor::block_on(async {
            handle
                .queue("parser_pool")
                .await_on(async {
                    let _parsed: Result<(), io::Error> = handle
                        .stage("parse_body")
                        .await_on(async {
                            std::thread::sleep(hold);
                            panic!("malformed body");
                        })
                        .await;
                })
                .await;
        });
    }));
    let elapsed = begun.elapsed();
    let payload = outcome.expect_err("the stage panicked");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"malformed body"));

    // The request itself is unharmed and can still be finished.
    started.completion.finish(Outcome::Error);
    let run = tailtriage.snapshot();
    assert_eq!(run.stages.len(), 1);
    assert_stage_ran(&run.stages[0], hold, elapsed);
    assert_eq!(run.queues.len(), 1);
    assert_queue_waited(&run.queues[0], hold, elapsed);
    assert_eq!(run.requests.len(), 1);
    assert_eq!(run.requests[0].outcome, "error");
}

#[test]
fn completed_waits_and_stages_are_not_marked_and_the_field_is_left_out_of_the_json() {
    let tailtriage = recorder();
    let started = tailtriage.begin_request("/checkout");
    futures_executor::block_on(async {
        started.handle.queue("db_pool").await_on(async {}).await;
        let failed: Result<(), &str> = started
            .handle
            .stage("query")
            .await_on(async { Err("no rows") })
            .await;
        assert!(failed.is_err());
    });
    started.completion.finish_ok();

    let run = tailtriage.snapshot();
    assert!(!run.queues[0].cancelled);
    assert!(
        !run.stages[0].cancelled,
        "a failed stage is not a cancelled one"
    );
    assert!(!run.stages[0].success);
    let json = serde_json::to_string(&run).expect("serializes");
    assert!(
        !json.contains("cancelled"),
        "the field is absent while false, so older readers see the same document: {json}"
    );
}

/// A run with one cancelled queue wait, one cancelled stage and one completed stage.
fn run_with_cancellations() -> Run {
    let tailtriage = recorder();
    let started = tailtriage.begin_request("/checkout");
    runtime().block_on(async {
        let wait = started
            .handle
            .queue("db_pool")
            .await_on(std::future::pending::<()>());
        let _ = tokio::time::timeout(Duration::from_millis(5), wait).await;
        let stage = started.handle.stage("charge").await_on(async {
            tokio::time::sleep(NEVER).await;
            Ok::<(), io::Error>(())
        });
        let _ = tokio::time::timeout(Duration::from_millis(5), stage).await;
        started.handle.stage("notify").await_value(async {}).await;
    });
    started.completion.finish(Outcome::Timeout);
    let sink = MemorySink::new();
    tailtriage.shutdown_to(&sink).expect("shutdown writes");
    sink.last_run().expect("written")
}

#[test]
fn an_artifact_with_cancelled_events_loads_into_the_published_0_2_0_run() {
    let ours = run_with_cancellations();
    assert!(ours.queues[0].cancelled && ours.stages[0].cancelled);
    let json = serde_json::to_string(&ours).expect("serializes");
    assert!(json.contains("\"cancelled\":true"));

    // As the published CLI loads an artifact: the schema version, then the published Run.
    let raw: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(raw["schema_version"], 1);
    let theirs: published::Run =
        serde_json::from_value(raw).expect("the published 0.2.0 Run reads the artifact");

    assert_eq!(theirs.requests.len(), 1);
    assert_eq!(theirs.queues.len(), 1);
    assert_eq!(theirs.queues[0].wait_us, ours.queues[0].wait_us);
    assert_eq!(theirs.stages.len(), 2);
    for (their_stage, our_stage) in theirs.stages.iter().zip(&ours.stages) {
        assert_eq!(their_stage.stage, our_stage.stage);
        assert_eq!(their_stage.success, our_stage.success);
        assert_eq!(their_stage.latency_us, our_stage.latency_us);
    }
    assert!(
        !theirs.stages[0].success,
        "older readers see the cancelled stage as failed"
    );

    // And back: an artifact the published crate writes loads with nothing cancelled.
    let back: Run = serde_json::from_str(&serde_json::to_string(&theirs).expect("serializes"))
        .expect("our Run reads the published artifact");
    assert!(back.queues.iter().all(|queue| !queue.cancelled));
    assert!(back.stages.iter().all(|stage| !stage.cancelled));
}

#[test]
fn a_cancelled_wait_on_a_full_section_is_counted_as_dropped_exactly_once() {
    let tailtriage = Tailtriage::builder("checkout")
        .sink(MemorySink::new())
        .capture_limits_override(CaptureLimitsOverride {
            max_queues: Some(1),
            max_stages: Some(0),
            ..CaptureLimitsOverride::default()
        })
        .build()
        .expect("builds");
    let started = tailtriage.begin_request("/checkout");
    let mut context = Context::from_waker(Waker::noop());
    for _ in 0..3 {
        let mut wait = pin!(started
            .handle
            .queue("db_pool")
            .await_on(std::future::pending::<()>()));
        assert!(wait.as_mut().poll(&mut context).is_pending());
        let mut stage = pin!(started
            .handle
            .stage("charge")
            .await_value(std::future::pending::<()>()));
        assert!(stage.as_mut().poll(&mut context).is_pending());
    }
    started.completion.finish_ok();

    let run = tailtriage.snapshot();
    assert_eq!(run.queues.len(), 1);
    assert!(run.queues[0].cancelled);
    assert_eq!(run.truncation.dropped_queues, 2);
    assert!(run.stages.is_empty());
    assert_eq!(run.truncation.dropped_stages, 3);
}
