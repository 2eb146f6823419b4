//! Panics in user code: a limits-hit listener, a custom sink or a timed future that panics
//! never poisons or corrupts the recorder. Accounting stays exact, the panic is contained or
//! reaches only the caller that ran the panicking code, and a later shutdown writes the run.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use tailtriage_core::{
    CaptureLimitsOverride, MemorySink, Outcome, Run, RunSink, SinkError, Tailtriage,
};

/// Messages of the panics these tests cause on purpose.
const EXPECTED_PANICS: [&str; 3] = ["listener bug", "sink bug", "stage bug"];

/// Keeps the panics these tests cause on purpose out of the output (hundreds of them would
/// each print a message, and a backtrace in CI); every other panic is reported as usual.
fn quiet_expected_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let message = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
            let expected = message.is_some_and(|m| EXPECTED_PANICS.contains(&m))
                || payload.downcast_ref::<u32>() == Some(&42);
            if !expected {
                report(info);
            }
        }));
    });
}

fn recorder(overrides: CaptureLimitsOverride) -> Tailtriage {
    quiet_expected_panics();
    Tailtriage::builder("checkout")
        .sink(MemorySink::new())
        .capture_limits_override(overrides)
        .build()
        .expect("a named service builds")
}

/// A listener that counts its calls, then panics with `payload`.
fn panicking_listener(calls: &Arc<AtomicUsize>, payload: fn() -> !) -> Arc<dyn Fn() + Send + Sync> {
    let calls = Arc::clone(calls);
    Arc::new(move || {
        calls.fetch_add(1, Ordering::SeqCst);
        payload();
    })
}

fn shut_down(tailtriage: &Tailtriage) -> Run {
    let sink = MemorySink::new();
    tailtriage
        .shutdown_to(&sink)
        .expect("a later shutdown writes the run");
    sink.last_run().expect("written")
}

#[test]
fn a_panicking_limits_hit_listener_is_contained_noted_in_the_run_and_never_run_again() {
    let tailtriage = recorder(CaptureLimitsOverride {
        max_requests: Some(1),
        ..CaptureLimitsOverride::default()
    });
    let calls = Arc::new(AtomicUsize::new(0));
    tailtriage.set_limits_hit_listener(Some(panicking_listener(&calls, || panic!("listener bug"))));

    // The second request is the first drop: the listener runs there and panics, and the
    // caller never sees the panic.
    for _ in 0..5 {
        tailtriage.begin_request("/checkout").completion.finish_ok();
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the listener runs once per run"
    );

    let run = shut_down(&tailtriage);
    assert_eq!(run.requests.len(), 1);
    assert_eq!(run.truncation.dropped_requests, 4, "accounting stays exact");
    assert!(run.truncation.limits_hit);
    assert_eq!(
        run.metadata.lifecycle_warnings,
        ["the limits-hit listener panicked: listener bug"],
        "the panic is noted once, with its message"
    );

    // Recording and shutting down go on as before.
    tailtriage.begin_request("/checkout").completion.finish_ok();
    let run = shut_down(&tailtriage);
    assert_eq!(run.truncation.dropped_requests, 5);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_listener_panicking_with_a_value_that_is_not_a_string_is_noted_too() {
    let tailtriage = recorder(CaptureLimitsOverride {
        max_stages: Some(0),
        ..CaptureLimitsOverride::default()
    });
    let calls = Arc::new(AtomicUsize::new(0));
    tailtriage.set_limits_hit_listener(Some(panicking_listener(&calls, || {
        std::panic::panic_any(42_u32)
    })));
    let started = tailtriage.begin_request("/checkout");
    futures_executor::block_on(started.handle.stage("query").await_value(async {}));
    started.completion.finish_ok();

    let run = shut_down(&tailtriage);
    assert_eq!(run.truncation.dropped_stages, 1);
    assert_eq!(run.metadata.lifecycle_warnings.len(), 1);
    assert!(
        run.metadata.lifecycle_warnings[0].contains("limits-hit listener panicked"),
        "{:?}",
        run.metadata.lifecycle_warnings
    );
}

#[test]
fn threads_racing_into_a_panicking_listener_run_it_once_and_keep_exact_counts() {
    const THREADS: usize = 4;
    const REQUESTS: usize = 2_000;
    let limit = 100;
    let tailtriage = recorder(CaptureLimitsOverride {
        max_requests: Some(limit),
        max_inflight_snapshots: Some(limit),
        ..CaptureLimitsOverride::default()
    });
    let calls = Arc::new(AtomicUsize::new(0));
    tailtriage.set_limits_hit_listener(Some(panicking_listener(&calls, || panic!("listener bug"))));

    let start = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                start.wait();
                for _ in 0..REQUESTS {
                    let started = tailtriage.begin_request("/checkout");
                    drop(started.handle.inflight("workers"));
                    started.completion.finish_ok();
                }
            });
        }
    });

    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let run = shut_down(&tailtriage);
    let attempts = THREADS * REQUESTS;
    assert_eq!(run.requests.len(), limit);
    assert_eq!(
        run.truncation.dropped_requests,
        u64::try_from(attempts - limit).expect("fits")
    );
    assert_eq!(run.inflight.len(), limit);
    assert_eq!(
        run.truncation.dropped_inflight_snapshots,
        u64::try_from(2 * attempts - limit).expect("fits")
    );
    assert_eq!(run.metadata.unfinished_requests.count, 0);
    assert_eq!(run.metadata.lifecycle_warnings.len(), 1);
}

#[test]
fn a_listener_panicking_while_a_stage_future_panics_does_not_abort_the_process() {
    let tailtriage = recorder(CaptureLimitsOverride {
        max_stages: Some(0),
        max_queues: Some(0),
        ..CaptureLimitsOverride::default()
    });
    let calls = Arc::new(AtomicUsize::new(0));
    tailtriage.set_limits_hit_listener(Some(panicking_listener(&calls, || panic!("listener bug"))));
    let started = tailtriage.begin_request("/checkout");

    // The stage's event is dropped (the section holds nothing) while the stage's own panic
    // unwinds; that drop runs the listener, which panics in turn.
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        futures_executor::block_on(started.handle.queue("db_pool").await_on(async {
            let _guard = started.handle.inflight("workers");
            let _: Result<(), io::Error> = started
                .handle
                .stage("query")
                .await_on(async { panic!("stage bug") })
                .await;
        }));
    }));
    let payload = unwound.expect_err("the stage's panic reaches the caller");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"stage bug"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    started.completion.finish_ok();

    let run = shut_down(&tailtriage);
    assert_eq!(run.truncation.dropped_stages, 1);
    assert_eq!(run.truncation.dropped_queues, 1);
    assert_eq!(run.requests.len(), 1);
    assert_eq!(
        run.inflight.iter().map(|s| s.count).collect::<Vec<_>>(),
        [1, 0],
        "the guard gave its unit back while unwinding"
    );
    assert_eq!(
        run.metadata.lifecycle_warnings,
        ["the limits-hit listener panicked: listener bug"]
    );
}

/// A sink that panics on its first `panics` writes, then writes to memory.
struct PanickingSink {
    panics: usize,
    writes: AtomicUsize,
    memory: MemorySink,
}

impl RunSink for PanickingSink {
    fn write(&self, run: &Run) -> Result<(), SinkError> {
        let earlier_writes = self.writes.fetch_add(1, Ordering::SeqCst);
        assert!(earlier_writes >= self.panics, "sink bug");
        self.memory.write(run)
    }
}

#[test]
fn a_panicking_sink_leaves_the_run_usable_and_a_later_shutdown_writes_everything() {
    quiet_expected_panics();
    let memory = MemorySink::new();
    let tailtriage = Tailtriage::builder("checkout")
        .sink(PanickingSink {
            panics: 2,
            writes: AtomicUsize::new(0),
            memory: memory.clone(),
        })
        .build()
        .expect("builds");
    let pending = tailtriage.begin_request("/slow");
    for _ in 0..10 {
        tailtriage.begin_request("/checkout").completion.finish_ok();
    }

    for _ in 0..2 {
        let unwound = catch_unwind(AssertUnwindSafe(|| tailtriage.shutdown()));
        assert!(
            unwound.is_err(),
            "the sink's panic reaches the caller of shutdown"
        );
    }

    // Nothing is poisoned: snapshots, recording, finishing and shutdown all work.
    let run = tailtriage.snapshot();
    assert_eq!(run.requests.len(), 10);
    assert_eq!(run.metadata.unfinished_requests.count, 1);
    for _ in 0..5 {
        tailtriage.begin_request("/checkout").completion.finish_ok();
    }
    pending.completion.finish_ok();
    tailtriage.shutdown().expect("the third write succeeds");

    let run = memory.last_run().expect("written");
    assert_eq!(
        run.requests.len(),
        16,
        "every request is written, none twice"
    );
    assert_eq!(run.metadata.unfinished_requests.count, 0);
    assert!(!run.truncation.is_truncated());
    assert_eq!(
        run.requests
            .iter()
            .filter(|request| request.route == "/slow")
            .count(),
        1
    );
}

#[test]
fn panicking_stage_futures_on_many_threads_keep_every_count_exact() {
    const THREADS: usize = 4;
    const REQUESTS: usize = 256;
    quiet_expected_panics();
    let tailtriage = recorder(CaptureLimitsOverride::default());
    let abandoned = AtomicUsize::new(0);

    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let (tailtriage, abandoned) = (&tailtriage, &abandoned);
            scope.spawn(move || {
                for i in 0..REQUESTS {
                    let started = tailtriage.begin_request(format!("/t{thread}"));
                    let handle = started.handle.clone();
                    let panics = i % 2 == 0;
                    // Every fourth request's completion is inside the unwinding scope: the
                    // panic abandons the request itself.
                    let abandons = i % 4 == 0;
                    let mut completion = Some(started.completion);
                    let unwound = catch_unwind(AssertUnwindSafe(|| {
                        let _abandoned = if abandons { completion.take() } else { None };
                        futures_executor::block_on(async {
                            let _guard = handle.inflight("workers");
                            handle.queue("pool").await_on(async {}).await;
                            let _: Result<(), io::Error> = handle
                                .stage("work")
                                .await_on(async {
                                    assert!(!panics, "stage bug");
                                    Ok(())
                                })
                                .await;
                        });
                    }));
                    assert_eq!(unwound.is_err(), panics);
                    if let Some(completion) = completion {
                        completion.finish(if panics { Outcome::Error } else { Outcome::Ok });
                    } else {
                        abandoned.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
    });

    // Every gauge unit came back: a new guard counts from zero.
    let started = tailtriage.begin_request("/check");
    drop(started.handle.inflight("workers"));
    started.completion.finish_ok();

    let run = shut_down(&tailtriage);
    let total = THREADS * REQUESTS;
    let panicked = total / 2;
    let abandoned = abandoned.load(Ordering::SeqCst);
    assert_eq!(
        abandoned,
        total / 4,
        "every fourth request was abandoned by its panic"
    );
    assert_eq!(run.stages.len(), total);
    assert_eq!(run.stages.iter().filter(|s| s.cancelled).count(), panicked);
    assert_eq!(
        run.stages.iter().filter(|s| s.success).count(),
        total - panicked
    );
    assert!(run.stages.iter().all(|s| s.success != s.cancelled));
    assert_eq!(run.queues.len(), total);
    assert!(
        run.queues.iter().all(|q| !q.cancelled),
        "the waits completed first"
    );
    assert_eq!(run.inflight.len(), 2 * total + 2);
    assert_eq!(
        run.inflight[2 * total..]
            .iter()
            .map(|s| s.count)
            .collect::<Vec<_>>(),
        [1, 0]
    );
    assert_eq!(run.requests.len(), total - abandoned + 1);
    assert_eq!(
        run.metadata.unfinished_requests.count,
        u64::try_from(abandoned).expect("fits"),
        "a request abandoned by a panic is reported unfinished, not lost"
    );
    assert!(!run.truncation.is_truncated());
}

/// Runs `body` on its own thread and returns its result, or fails the test if it has not
/// returned within ten seconds (a deadlock would otherwise hang the suite).
fn within_ten_seconds<T: Send + 'static>(
    what: &str,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(body());
    });
    result
        .recv_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("{what} did not return within ten seconds: a deadlock"))
}

/// With a request limit of two, begins and finishes requests so that the finish of the third
/// request is the run's first dropped event; returns that third request, still unfinished.
fn third_request_drops(tailtriage: &Arc<Tailtriage>) -> tailtriage_core::OwnedStartedRequest {
    let first = tailtriage.begin_request_owned("/first");
    let second = tailtriage.begin_request_owned("/second");
    first.completion.finish_ok();
    let third = tailtriage.begin_request_owned("/third");
    second.completion.finish_ok();
    third
}

#[test]
fn a_listener_that_shuts_the_run_down_from_a_finishing_request_does_not_hang() {
    let (calls, written) = within_ten_seconds("finishing the request", || {
        let sink = MemorySink::new();
        let tailtriage = Arc::new(
            Tailtriage::builder("checkout")
                .sink(sink.clone())
                .capture_limits_override(CaptureLimitsOverride {
                    max_requests: Some(2),
                    ..CaptureLimitsOverride::default()
                })
                .build()
                .expect("a named service builds"),
        );
        let run = Arc::downgrade(&tailtriage);
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&calls);
        tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            // Seal the run as soon as it drops something, from inside the listener.
            if let Some(tailtriage) = run.upgrade() {
                tailtriage
                    .shutdown()
                    .expect("the listener's shutdown writes");
            }
        })));
        third_request_drops(&tailtriage).completion.finish_ok();
        (calls.load(Ordering::SeqCst), sink.last_run())
    });
    assert_eq!(calls, 1, "the listener runs once");
    let run = written.expect("the listener's shutdown wrote the run");
    assert_eq!(run.requests.len(), 2);
    assert_eq!(run.truncation.dropped_requests, 1);
    assert_eq!(
        run.metadata.unfinished_requests.count, 0,
        "the request whose finish ran the listener is finished by then"
    );
}

#[test]
fn a_listener_panicking_while_another_thread_shuts_down_does_not_deadlock() {
    let warnings = within_ten_seconds("the shutdown and the finish", || {
        let tailtriage = Arc::new(recorder(CaptureLimitsOverride {
            max_requests: Some(2),
            ..CaptureLimitsOverride::default()
        }));
        let entered = Arc::new(Barrier::new(2));
        let inside = Arc::clone(&entered);
        tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
            inside.wait();
            // Let the shutdown start while this finish is still running the listener.
            std::thread::sleep(std::time::Duration::from_millis(100));
            panic!("listener bug");
        })));
        let third = third_request_drops(&tailtriage);
        let finisher = std::thread::spawn(move || third.completion.finish_ok());
        entered.wait();
        tailtriage.shutdown().expect("the shutdown writes");
        finisher
            .join()
            .expect("the finishing thread does not panic");
        tailtriage.snapshot().metadata.lifecycle_warnings
    });
    assert!(
        warnings
            .iter()
            .any(|warning| warning.contains("listener bug")),
        "the listener's panic is noted: {warnings:?}"
    );
}

/// Records one request with an in-flight guard when the thread that owns it exits.
struct RecordOnThreadExit(Arc<Tailtriage>);

impl Drop for RecordOnThreadExit {
    fn drop(&mut self) {
        let started = self.0.begin_request("/thread-exit");
        drop(started.handle.inflight("pool"));
        started.completion.finish_ok();
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<RecordOnThreadExit>> =
        const { std::cell::RefCell::new(None) };
}

#[test]
fn recording_from_a_thread_local_destructor_neither_panics_nor_aborts() {
    let tailtriage = Arc::new(recorder(CaptureLimitsOverride::default()));
    let on_thread = Arc::clone(&tailtriage);
    std::thread::spawn(move || {
        // Registered before the recorder's own thread-locals, so destroyed after them.
        ON_EXIT.with(|slot| *slot.borrow_mut() = Some(RecordOnThreadExit(Arc::clone(&on_thread))));
        let started = on_thread.begin_request("/work");
        drop(started.handle.inflight("pool"));
        started.completion.finish_ok();
    })
    .join()
    .expect("the thread exits cleanly");
    let run = tailtriage.snapshot();
    assert_eq!(run.requests.len(), 2, "both requests are recorded");
    assert_eq!(
        run.inflight
            .iter()
            .filter(|snapshot| snapshot.gauge == "pool")
            .count(),
        4,
        "both guards are recorded, up and down"
    );
}
