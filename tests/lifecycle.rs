//! Snapshots and shutdowns: nothing consumed, stamps, unfinished requests, strictness.

use std::sync::Arc;

use tailtriage_core::{
    CaptureMode, EffectiveTokioSamplerConfig, MemorySink, RunEndReason,
    RuntimeSamplerRegistrationError, SinkError, Tailtriage,
};

fn recorder(sink: &MemorySink) -> Tailtriage {
    Tailtriage::builder("checkout")
        .sink(sink.clone())
        .build()
        .expect("build succeeds")
}

#[test]
fn snapshots_do_not_consume_and_a_later_shutdown_writes_everything() {
    let sink = MemorySink::new();
    let tailtriage = recorder(&sink);
    for _ in 0..3 {
        tailtriage.begin_request("/a").completion.finish_ok();
    }
    let first = tailtriage.snapshot();
    let second = tailtriage.snapshot();
    assert_eq!(first, second, "two snapshots in a row agree");
    assert_eq!(first.requests.len(), 3);
    assert_eq!(first.metadata.finalized_at_unix_ms, None);

    tailtriage.shutdown().expect("shutdown succeeds");
    assert_eq!(sink.last_run().expect("written").requests, first.requests);
}

#[test]
fn shutdown_stamps_finish_and_finalize_with_one_instant_and_keeps_them_live() {
    let sink = MemorySink::new();
    let tailtriage = recorder(&sink);
    std::thread::sleep(std::time::Duration::from_millis(5));
    tailtriage.shutdown().expect("shutdown succeeds");
    let written = sink.last_run().expect("written").metadata;
    assert_eq!(
        Some(written.finished_at_unix_ms),
        written.finalized_at_unix_ms
    );
    assert!(written.finished_at_unix_ms >= written.started_at_unix_ms + 4);

    let live = tailtriage.snapshot().metadata;
    assert_eq!(live.finalized_at_unix_ms, written.finalized_at_unix_ms);
    assert_eq!(live.finished_at_unix_ms, written.finished_at_unix_ms);
}

#[test]
fn unfinished_requests_are_counted_warned_and_sampled_at_shutdown() {
    let sink = MemorySink::new();
    let tailtriage = recorder(&sink);
    let mut leaked = Vec::new();
    for index in 0..7 {
        leaked.push(tailtriage.begin_request(format!("/pending/{index}")));
    }
    tailtriage.begin_request("/done").completion.finish_ok();
    tailtriage.shutdown().expect("lenient shutdown writes");

    let run = sink.last_run().expect("written");
    assert_eq!(run.requests.len(), 1);
    assert_eq!(run.metadata.unfinished_requests.count, 7);
    assert_eq!(run.metadata.unfinished_requests.sample.len(), 5);
    for sample in &run.metadata.unfinished_requests.sample {
        assert!(sample.route.starts_with("/pending/"));
        assert!(sample.request_id.starts_with("_pending_"));
    }
    assert_eq!(run.metadata.lifecycle_warnings.len(), 1);
    assert!(run.metadata.lifecycle_warnings[0].contains("7 unfinished request"));

    let live = tailtriage.snapshot();
    assert_eq!(
        live.metadata.unfinished_requests,
        run.metadata.unfinished_requests
    );

    for started in leaked {
        started.completion.finish_ok();
    }
}

#[test]
fn strict_lifecycle_refuses_to_write_a_run_with_pending_requests() {
    let sink = MemorySink::new();
    let tailtriage = Tailtriage::builder("checkout")
        .sink(sink.clone())
        .strict_lifecycle(true)
        .build()
        .expect("build succeeds");
    let pending = tailtriage.begin_request("/pending");
    let error = tailtriage.shutdown().expect_err("strict shutdown refuses");
    assert!(matches!(
        error,
        SinkError::Lifecycle {
            unfinished_count: 1
        }
    ));
    assert!(error.to_string().contains("1 request"), "{error}");
    assert!(sink.last_run().is_none(), "nothing was written");
    assert_eq!(tailtriage.snapshot().metadata.unfinished_requests.count, 1);

    pending.completion.finish_ok();
    tailtriage.shutdown().expect("nothing pending any more");
    let run = sink.last_run().expect("written");
    assert_eq!(run.requests.len(), 1);
    assert_eq!(run.metadata.unfinished_requests.count, 0);
}

#[test]
fn strict_lifecycle_also_counts_requests_turned_away_because_the_run_was_full() {
    let sink = MemorySink::new();
    let tailtriage = Tailtriage::builder("checkout")
        .sink(sink.clone())
        .strict_lifecycle(true)
        .capture_limits_override(tailtriage_core::CaptureLimitsOverride {
            max_requests: Some(1),
            ..Default::default()
        })
        .build()
        .expect("build succeeds");
    tailtriage.begin_request("/done").completion.finish_ok();
    // The request section is full: this one is turned away at begin, but it is running.
    let still_running = tailtriage.begin_request("/still-running");
    let error = tailtriage.shutdown().expect_err("strict shutdown refuses");
    assert!(
        matches!(
            error,
            SinkError::Lifecycle {
                unfinished_count: 1
            }
        ),
        "{error:?}"
    );
    assert!(sink.last_run().is_none(), "nothing was written");

    still_running.completion.finish_ok();
    tailtriage.shutdown().expect("nothing pending any more");
    let run = sink.last_run().expect("written");
    assert_eq!(run.metadata.unfinished_requests.count, 0);
    assert_eq!(run.requests.len(), 1);
    assert_eq!(run.truncation.dropped_requests, 1);
}

#[test]
fn recording_after_shutdown_keeps_working_and_a_second_shutdown_writes_it() {
    let sink = MemorySink::new();
    let tailtriage = recorder(&sink);
    tailtriage.begin_request("/before").completion.finish_ok();
    tailtriage.shutdown().expect("first shutdown");
    tailtriage.begin_request("/after").completion.finish_ok();
    tailtriage.shutdown().expect("second shutdown");
    let routes: Vec<String> = sink
        .last_run()
        .expect("written")
        .requests
        .into_iter()
        .map(|r| r.route)
        .collect();
    assert_eq!(routes, ["/before", "/after"]);
}

#[test]
fn a_request_unfinished_at_one_shutdown_and_finished_later_is_in_the_next() {
    let sink = MemorySink::new();
    let tailtriage = recorder(&sink);
    let started = tailtriage.begin_request("/late");
    tailtriage.shutdown().expect("first shutdown");
    assert_eq!(
        sink.last_run()
            .expect("run")
            .metadata
            .unfinished_requests
            .count,
        1
    );
    started.completion.finish_ok();
    tailtriage.shutdown().expect("second shutdown");
    let run = sink.last_run().expect("run");
    assert_eq!(run.requests.len(), 1);
    assert_eq!(run.metadata.unfinished_requests.count, 0);
}

#[test]
fn the_first_run_end_reason_wins() {
    let tailtriage = recorder(&MemorySink::new());
    tailtriage.set_run_end_reason_if_absent(RunEndReason::ManualDisarm);
    tailtriage.set_run_end_reason_if_absent(RunEndReason::Shutdown);
    assert_eq!(
        tailtriage.snapshot().metadata.run_end_reason,
        Some(RunEndReason::ManualDisarm)
    );
}

#[test]
fn only_the_first_runtime_sampler_registration_succeeds() {
    let tailtriage = recorder(&MemorySink::new());
    let config = |cadence| EffectiveTokioSamplerConfig {
        inherited_mode: CaptureMode::Light,
        explicit_mode_override: None,
        resolved_mode: CaptureMode::Light,
        resolved_sampler_cadence_ms: cadence,
        resolved_runtime_snapshot_retention: 100,
    };
    assert_eq!(
        tailtriage_core::__internal::register_tokio_runtime_sampler(&tailtriage, config(10)),
        Ok(())
    );
    assert_eq!(
        tailtriage_core::__internal::register_tokio_runtime_sampler(&tailtriage, config(20)),
        Err(RuntimeSamplerRegistrationError::DuplicateStart)
    );
    assert_eq!(
        tailtriage
            .snapshot()
            .metadata
            .effective_tokio_sampler_config,
        Some(config(10))
    );
}

#[test]
fn a_shared_recorder_can_be_shut_down_from_any_thread() {
    let sink = MemorySink::new();
    let tailtriage = Arc::new(recorder(&sink));
    let worker = Arc::clone(&tailtriage);
    std::thread::spawn(move || worker.shutdown())
        .join()
        .expect("joins")
        .expect("shutdown succeeds");
    assert!(sink.last_run().is_some());
}

/// Keeps the routes of every run written, in order; its first write waits for a signal, then
/// takes a snapshot of `run` when that is set (a sink that reads the run it writes).
struct SlowFirstWrite {
    written: std::sync::Mutex<Vec<Vec<String>>>,
    entered: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
    run: std::sync::OnceLock<std::sync::Weak<Tailtriage>>,
}

impl SlowFirstWrite {
    fn new() -> (
        Arc<Self>,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (entered, first_write_entered) = std::sync::mpsc::channel();
        let (release_first_write, release) = std::sync::mpsc::channel();
        let sink = Arc::new(Self {
            written: std::sync::Mutex::new(Vec::new()),
            entered: std::sync::Mutex::new(Some(entered)),
            release: std::sync::Mutex::new(release),
            run: std::sync::OnceLock::new(),
        });
        (sink, first_write_entered, release_first_write)
    }
}

impl tailtriage_core::RunSink for SlowFirstWrite {
    fn write(&self, run: &tailtriage_core::Run) -> Result<(), SinkError> {
        let first = self.entered.lock().expect("not poisoned").take();
        if let Some(entered) = first {
            entered.send(()).expect("the test listens");
            self.release
                .lock()
                .expect("not poisoned")
                .recv()
                .expect("the test releases the first write");
            if let Some(run) = self.run.get().and_then(std::sync::Weak::upgrade) {
                let _ = run.snapshot();
            }
        }
        let routes = run.requests.iter().map(|r| r.route.clone()).collect();
        self.written.lock().expect("not poisoned").push(routes);
        Ok(())
    }
}

/// A sink the test keeps a handle on.
struct Shared<S>(Arc<S>);

impl<S: tailtriage_core::RunSink> tailtriage_core::RunSink for Shared<S> {
    fn write(&self, run: &tailtriage_core::Run) -> Result<(), SinkError> {
        self.0.write(run)
    }
}

/// A run writing to `sink`, with one finished request.
fn run_writing_to(sink: &Arc<SlowFirstWrite>) -> Arc<Tailtriage> {
    let tailtriage = Arc::new(
        Tailtriage::builder("checkout")
            .sink(Shared(Arc::clone(sink)))
            .build()
            .expect("build succeeds"),
    );
    tailtriage.begin_request("/before").completion.finish_ok();
    tailtriage
}

/// Shuts `tailtriage` down on a new thread.
fn shut_down_elsewhere(
    tailtriage: &Arc<Tailtriage>,
) -> std::thread::JoinHandle<Result<(), SinkError>> {
    let tailtriage = Arc::clone(tailtriage);
    std::thread::spawn(move || tailtriage.shutdown())
}

#[test]
fn overlapping_shutdowns_reach_the_sink_in_the_order_they_drained() {
    let (sink, first_write_entered, release_first_write) = SlowFirstWrite::new();
    let tailtriage = run_writing_to(&sink);

    let first = shut_down_elsewhere(&tailtriage);
    first_write_entered
        .recv()
        .expect("the first shutdown reaches its sink");
    // The first shutdown has drained and is writing; a request finishes, and a second
    // shutdown starts.
    tailtriage.begin_request("/x").completion.finish_ok();
    let second = shut_down_elsewhere(&tailtriage);
    std::thread::sleep(std::time::Duration::from_millis(50));
    release_first_write.send(()).expect("the first write waits");
    first.join().expect("no panic").expect("written");
    second.join().expect("no panic").expect("written");

    let written = sink.written.lock().expect("not poisoned");
    assert_eq!(
        written.last().expect("two runs written"),
        &["/before", "/x"],
        "the newest run is the one left written last: {written:?}"
    );
}

#[test]
fn a_sink_that_reads_its_run_while_another_shutdown_waits_does_not_deadlock() {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (sink, first_write_entered, release_first_write) = SlowFirstWrite::new();
        let tailtriage = run_writing_to(&sink);
        sink.run.set(Arc::downgrade(&tailtriage)).expect("set once");
        let first = shut_down_elsewhere(&tailtriage);
        first_write_entered
            .recv()
            .expect("the first shutdown reaches its sink");
        // A second shutdown waits for the first; then the first sink reads the run.
        let second = shut_down_elsewhere(&tailtriage);
        std::thread::sleep(std::time::Duration::from_millis(50));
        release_first_write.send(()).expect("the first write waits");
        first.join().expect("no panic").expect("written");
        second.join().expect("no panic").expect("written");
        let _ = done.send(sink.written.lock().expect("not poisoned").len());
    });
    let written = result
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect(
        "both shutdowns return: a sink reading its run must not deadlock with a waiting shutdown",
    );
    assert_eq!(written, 2);
}

/// Runs `shut_down` on a new thread and returns its result, or fails the test if it has not
/// returned within ten seconds (a shutdown waiting for itself would never return).
fn returns_in_time(
    shut_down: impl FnOnce() -> Result<(), SinkError> + Send + 'static,
) -> Result<(), SinkError> {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(shut_down());
    });
    result
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the shutdown returns instead of waiting for itself")
}

/// A sink that calls `inside` on its run while writing, and keeps what that returned.
struct ReentrantSink {
    run: std::sync::OnceLock<std::sync::Weak<Tailtriage>>,
    inside: fn(&Tailtriage) -> Option<Result<(), SinkError>>,
    inner_result: std::sync::Mutex<Option<Result<(), SinkError>>>,
    writes: std::sync::atomic::AtomicUsize,
}

impl ReentrantSink {
    fn new(inside: fn(&Tailtriage) -> Option<Result<(), SinkError>>) -> Arc<Self> {
        Arc::new(Self {
            run: std::sync::OnceLock::new(),
            inside,
            inner_result: std::sync::Mutex::new(None),
            writes: std::sync::atomic::AtomicUsize::new(0),
        })
    }
}

impl tailtriage_core::RunSink for ReentrantSink {
    fn write(&self, _run: &tailtriage_core::Run) -> Result<(), SinkError> {
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(run) = self.run.get().and_then(std::sync::Weak::upgrade) {
            if let Some(result) = (self.inside)(&run) {
                *self.inner_result.lock().expect("not poisoned") = Some(result);
            }
        }
        Ok(())
    }
}

/// A run writing to `sink`, which can reach the run, with `limits` and one finished request.
fn run_with_reentrant_sink(
    sink: &Arc<ReentrantSink>,
    limits: tailtriage_core::CaptureLimitsOverride,
) -> Arc<Tailtriage> {
    let tailtriage = Arc::new(
        Tailtriage::builder("checkout")
            .sink(Shared(Arc::clone(sink)))
            .capture_limits_override(limits)
            .build()
            .expect("build succeeds"),
    );
    sink.run.set(Arc::downgrade(&tailtriage)).expect("set once");
    tailtriage.begin_request("/before").completion.finish_ok();
    tailtriage
}

fn assert_refused_as_reentrant(result: Option<Result<(), SinkError>>) {
    match result {
        Some(Err(SinkError::Io(error))) => {
            assert_eq!(error.kind(), std::io::ErrorKind::Deadlock, "{error}");
            assert!(
                error.to_string().contains("already shutting this run down"),
                "the error says why: {error}"
            );
        }
        other => panic!("the inner shutdown fails as re-entrant, got {other:?}"),
    }
}

#[test]
fn a_sink_that_shuts_its_own_run_down_gets_an_error_instead_of_waiting_for_itself() {
    let sink = ReentrantSink::new(|run| Some(run.shutdown_to(&MemorySink::new())));
    let tailtriage =
        run_with_reentrant_sink(&sink, tailtriage_core::CaptureLimitsOverride::default());

    let outer = Arc::clone(&tailtriage);
    returns_in_time(move || outer.shutdown()).expect("the outer shutdown writes");
    assert_refused_as_reentrant(sink.inner_result.lock().expect("not poisoned").take());

    // The lock was released: the run can be shut down again, from any thread.
    let again = Arc::clone(&tailtriage);
    returns_in_time(move || again.shutdown_to(&MemorySink::new())).expect("written");
    assert_eq!(sink.writes.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn a_listener_set_off_inside_a_sink_write_cannot_make_the_shutdown_wait_for_itself() {
    // The sink records a runtime snapshot into a section with no room; the drop runs the
    // limits-hit listener on the writing thread, and the listener seals the run.
    let sink = ReentrantSink::new(|run| {
        run.record_runtime_snapshot(tailtriage_core::RuntimeSnapshot {
            at_unix_ms: 0,
            alive_tasks: None,
            global_queue_depth: None,
            local_queue_depth: None,
            blocking_queue_depth: None,
            remote_schedule_count: None,
        });
        None
    });
    let tailtriage = run_with_reentrant_sink(
        &sink,
        tailtriage_core::CaptureLimitsOverride {
            max_runtime_snapshots: Some(0),
            ..Default::default()
        },
    );
    let listener_result = Arc::new(std::sync::Mutex::new(None));
    let seen = Arc::clone(&listener_result);
    let weak = Arc::downgrade(&tailtriage);
    tailtriage.set_limits_hit_listener(Some(Arc::new(move || {
        if let Some(run) = weak.upgrade() {
            *seen.lock().expect("not poisoned") = Some(run.shutdown_to(&MemorySink::new()));
        }
    })));

    let outer = Arc::clone(&tailtriage);
    returns_in_time(move || outer.shutdown()).expect("the outer shutdown writes");
    assert_refused_as_reentrant(listener_result.lock().expect("not poisoned").take());
    let run = tailtriage.snapshot();
    assert_eq!(run.truncation.dropped_runtime_snapshots, 1);
    assert!(run.truncation.limits_hit);
}
