//! The published Tokio integration (runtime sampler and primitive helpers) recording
//! into this crate's core.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, load_artifact};
use tailtriage::tokio::{RuntimeSampler, SamplerStartError, TokioRequestHandleExt};
use tailtriage::{CaptureLimitsOverride, CaptureMode, Tailtriage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn their_runtime_sampler_records_into_the_artifact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("sampled.json");
    let run = Arc::new(
        Tailtriage::builder("compat-sampler")
            .investigation()
            .output(&path)
            .build()
            .expect("the run should build"),
    );

    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_millis(2))
        .start()
        .expect("their sampler should start on our run");
    let second = RuntimeSampler::builder(Arc::clone(&run)).start();
    assert_eq!(
        second.expect_err("our registration hook should refuse a second sampler"),
        SamplerStartError::DuplicateStart
    );

    eventually("five runtime snapshots", || {
        run.snapshot().runtime_snapshots.len() >= 5
    })
    .await;
    run.begin_request("/sampled").completion.finish_ok();
    sampler.shutdown().await;
    run.shutdown().expect("the run should be written");

    let artifact = load_artifact(&path);
    let config = artifact
        .metadata
        .effective_tokio_sampler_config
        .expect("their sampler should register its configuration");
    assert_eq!(config.inherited_mode, CaptureMode::Investigation);
    assert_eq!(config.resolved_mode, CaptureMode::Investigation);
    assert_eq!(config.resolved_sampler_cadence_ms, 2);
    assert_eq!(config.resolved_runtime_snapshot_retention, 50_000);
    assert!(artifact.runtime_snapshots.len() >= 5);
    assert!(artifact
        .runtime_snapshots
        .iter()
        .all(|s| s.alive_tasks.is_some() && s.global_queue_depth.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn their_sampler_stops_at_our_runtime_snapshot_limit() {
    let run = Arc::new(
        Tailtriage::builder("compat-sampler-limit")
            .sink(tailtriage::DiscardSink)
            .capture_limits_override(CaptureLimitsOverride {
                max_runtime_snapshots: Some(4),
                ..CaptureLimitsOverride::default()
            })
            .build()
            .expect("the run should build"),
    );
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_millis(1))
        .max_runtime_snapshots(100)
        .start()
        .expect("their sampler should start on our run");

    eventually("four runtime snapshots", || {
        run.snapshot().runtime_snapshots.len() == 4
    })
    .await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    sampler.shutdown().await;

    let snapshot = run.snapshot();
    assert_eq!(snapshot.runtime_snapshots.len(), 4);
    assert_eq!(snapshot.truncation.dropped_runtime_snapshots, 0);
    assert_eq!(
        snapshot
            .metadata
            .effective_tokio_sampler_config
            .map(|c| c.resolved_runtime_snapshot_retention),
        Some(4)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn their_primitive_helpers_record_queues_stages_and_gauges() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("helpers.json");
    let run = Tailtriage::builder("compat-helpers")
        .output(&path)
        .build()
        .expect("the run should build");

    let started = run.begin_request("/helpers");
    let request = started.handle.clone();
    let pool = tokio::sync::Semaphore::new(1);
    {
        let _permit = request
            .semaphore("db_pool", &pool)
            .acquire()
            .await
            .expect("the pool is open");
        let _gauge = request.inflight_guard("busy");
        let timed: Result<u8, _> = request
            .timeout_stage("downstream", Duration::from_secs(5), async { 7 })
            .await;
        assert_eq!(timed.expect("no timeout"), 7);
        let joined = request
            .join_task("spawned", tokio::spawn(async { 1 + 1 }))
            .await
            .expect("the task should not panic");
        assert_eq!(joined, 2);
        let blocking = request
            .blocking_stage("blocking_io", || "read")
            .await
            .expect("the blocking task should not panic");
        assert_eq!(blocking, "read");
    }
    started.completion.finish_ok();
    run.shutdown().expect("the run should be written");

    let artifact = load_artifact(&path);
    let request_id = &artifact.requests[0].request_id;
    assert_eq!(artifact.queues.len(), 1);
    assert_eq!(artifact.queues[0].queue, "db_pool");
    let stages: Vec<&str> = artifact.stages.iter().map(|s| s.stage.as_str()).collect();
    assert_eq!(stages, ["downstream", "spawned", "blocking_io"]);
    assert!(artifact
        .stages
        .iter()
        .all(|s| s.success && &s.request_id == request_id));
    let counts: Vec<u64> = artifact.inflight.iter().map(|g| g.count).collect();
    assert_eq!(counts, [1, 0]);
}
