//! Behaviour of the Tokio runtime sampler against a real runtime.
#![cfg(feature = "tokio")]

use std::sync::Arc;
use std::time::Duration;

use tailtriage_core::runtime_sampler::{
    capture_runtime_snapshot, RuntimeSampler, SamplerStartError, TokioSamplerModeDefaults,
};
use tailtriage_core::{
    CaptureLimitsOverride, CaptureMode, MemorySink, Tailtriage, TailtriageBuilder,
};

/// Upper bound for anything a test waits for; generous so a loaded machine passes.
const PATIENCE: Duration = Duration::from_secs(10);

fn builder() -> TailtriageBuilder {
    Tailtriage::builder("sampler-tests").sink(MemorySink::new())
}

fn run_with(builder: TailtriageBuilder) -> Arc<Tailtriage> {
    Arc::new(builder.build().expect("the run should build"))
}

fn snapshots_taken(run: &Tailtriage) -> usize {
    run.snapshot().runtime_snapshots.len()
}

/// Waits, yielding to the runtime, until `condition` holds or `PATIENCE` runs out.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampler_records_snapshots_with_stable_metrics_filled() {
    let run = run_with(builder());
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_millis(2))
        .start()
        .expect("the sampler should start");

    eventually("three snapshots", || snapshots_taken(&run) >= 3).await;
    sampler.shutdown().await;

    let run = run.snapshot();
    for snapshot in &run.runtime_snapshots {
        assert!(
            snapshot.at_unix_ms > 0,
            "each snapshot should carry its time"
        );
        assert!(
            snapshot.alive_tasks.is_some(),
            "alive_tasks is a stable metric"
        );
        assert!(
            snapshot.global_queue_depth.is_some(),
            "global_queue_depth is stable"
        );
    }
    let times: Vec<u64> = run.runtime_snapshots.iter().map(|s| s.at_unix_ms).collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "snapshots should be in time order"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn first_snapshot_is_taken_without_waiting_a_full_cadence() {
    let run = run_with(builder());
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_secs(3_600))
        .start()
        .expect("the sampler should start");

    eventually("the first snapshot", || snapshots_taken(&run) == 1).await;
    sampler.shutdown().await;
    assert_eq!(snapshots_taken(&run), 1, "the next tick is an hour away");
}

#[cfg(not(tokio_unstable))]
#[tokio::test(flavor = "current_thread")]
async fn unstable_metrics_are_none_without_tokio_unstable() {
    let snapshot = capture_runtime_snapshot(&tokio::runtime::Handle::current());
    assert_eq!(snapshot.local_queue_depth, None);
    assert_eq!(snapshot.blocking_queue_depth, None);
    assert_eq!(snapshot.remote_schedule_count, None);
}

#[cfg(tokio_unstable)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstable_metrics_are_filled_with_tokio_unstable() {
    let snapshot = capture_runtime_snapshot(&tokio::runtime::Handle::current());
    assert!(snapshot.local_queue_depth.is_some());
    assert!(snapshot.blocking_queue_depth.is_some());
    assert!(snapshot.remote_schedule_count.is_some());
}

#[tokio::test(flavor = "current_thread")]
async fn light_run_gets_light_sampler_defaults() {
    let run = run_with(builder().light());
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .start()
        .expect("the sampler should start");
    sampler.shutdown().await;

    let config = run
        .snapshot()
        .metadata
        .effective_tokio_sampler_config
        .expect("start should register the sampler configuration");
    assert_eq!(config.inherited_mode, CaptureMode::Light);
    assert_eq!(config.explicit_mode_override, None);
    assert_eq!(config.resolved_mode, CaptureMode::Light);
    assert_eq!(config.resolved_sampler_cadence_ms, 500);
    assert_eq!(config.resolved_runtime_snapshot_retention, 5_000);
}

#[tokio::test(flavor = "current_thread")]
async fn investigation_run_gets_investigation_sampler_defaults() {
    let run = run_with(builder().investigation());
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .start()
        .expect("the sampler should start");
    sampler.shutdown().await;

    let config = run
        .snapshot()
        .metadata
        .effective_tokio_sampler_config
        .expect("start should register the sampler configuration");
    let defaults = TokioSamplerModeDefaults::for_mode(CaptureMode::Investigation);
    assert_eq!(config.inherited_mode, CaptureMode::Investigation);
    assert_eq!(config.resolved_mode, CaptureMode::Investigation);
    assert_eq!(config.resolved_sampler_cadence_ms, 100);
    assert_eq!(
        config.resolved_runtime_snapshot_retention,
        defaults.max_runtime_snapshots
    );
}

#[tokio::test(flavor = "current_thread")]
async fn explicit_mode_wins_over_the_inherited_mode() {
    let run = run_with(builder().investigation());
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .mode(CaptureMode::Light)
        .start()
        .expect("the sampler should start");

    let config = *sampler.config();
    sampler.shutdown().await;
    assert_eq!(config.inherited_mode, CaptureMode::Investigation);
    assert_eq!(config.explicit_mode_override, Some(CaptureMode::Light));
    assert_eq!(config.resolved_mode, CaptureMode::Light);
    assert_eq!(config.resolved_sampler_cadence_ms, 500);
    assert_eq!(config.resolved_runtime_snapshot_retention, 5_000);
    assert_eq!(
        run.snapshot().metadata.effective_tokio_sampler_config,
        Some(config),
        "the run's metadata should hold what the sampler runs with"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn explicit_interval_and_retention_win_over_mode_defaults() {
    let run = run_with(builder());
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_millis(17))
        .max_runtime_snapshots(42)
        .start()
        .expect("the sampler should start");
    sampler.shutdown().await;

    let config = run
        .snapshot()
        .metadata
        .effective_tokio_sampler_config
        .unwrap();
    assert_eq!(config.resolved_sampler_cadence_ms, 17);
    assert_eq!(config.resolved_runtime_snapshot_retention, 42);
}

#[tokio::test(flavor = "current_thread")]
async fn retention_is_clamped_to_the_run_limit_and_sampling_stops_there() {
    let limits = CaptureLimitsOverride {
        max_runtime_snapshots: Some(3),
        ..CaptureLimitsOverride::default()
    };
    let run = run_with(builder().capture_limits_override(limits));
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_millis(1))
        .max_runtime_snapshots(50)
        .start()
        .expect("the sampler should start");
    assert_eq!(sampler.config().resolved_runtime_snapshot_retention, 3);

    eventually("the sampler to stop by itself", || sampler.is_finished()).await;
    tokio::time::sleep(Duration::from_millis(10)).await;

    let run_now = run.snapshot();
    assert_eq!(run_now.runtime_snapshots.len(), 3);
    assert_eq!(
        run_now.truncation.dropped_runtime_snapshots, 0,
        "a sampler that respects the limit never makes the run drop a snapshot"
    );
    assert!(!run_now.truncation.limits_hit);
    sampler.shutdown().await;
}

#[tokio::test(flavor = "current_thread")]
async fn zero_retention_records_no_snapshot() {
    let limits = CaptureLimitsOverride {
        max_runtime_snapshots: Some(0),
        ..CaptureLimitsOverride::default()
    };
    let run = run_with(builder().capture_limits_override(limits));
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_millis(1))
        .start()
        .expect("a zero limit is legal and still starts a sampler");

    eventually("the sampler to stop by itself", || sampler.is_finished()).await;
    assert_eq!(snapshots_taken(&run), 0);
    assert_eq!(sampler.config().resolved_runtime_snapshot_retention, 0);
    assert!(!run.snapshot().truncation.limits_hit);
}

#[tokio::test(flavor = "current_thread")]
async fn zero_interval_is_refused_and_leaves_the_run_untouched() {
    let run = run_with(builder());
    let refused = RuntimeSampler::start(Arc::clone(&run), Duration::ZERO);

    assert_eq!(refused.unwrap_err(), SamplerStartError::ZeroInterval);
    assert_eq!(run.snapshot().metadata.effective_tokio_sampler_config, None);
    let retry = RuntimeSampler::start(Arc::clone(&run), Duration::from_millis(5));
    retry
        .expect("a refused start should not count as the run's sampler")
        .shutdown()
        .await;
}

#[test]
fn start_outside_a_runtime_is_refused_and_leaves_the_run_untouched() {
    let run = run_with(builder());
    let refused = RuntimeSampler::builder(Arc::clone(&run)).start();

    assert_eq!(refused.unwrap_err(), SamplerStartError::MissingRuntime);
    assert_eq!(run.snapshot().metadata.effective_tokio_sampler_config, None);
}

#[test]
fn start_outside_a_runtime_works_with_a_runtime_handle() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_time()
        .build()
        .expect("the runtime should build");
    let run = run_with(builder());

    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .runtime_handle(runtime.handle().clone())
        .interval(Duration::from_millis(1))
        .start()
        .expect("a handle should stand in for the current runtime");

    runtime.block_on(async {
        eventually("a snapshot from the handle's runtime", || {
            snapshots_taken(&run) > 0
        })
        .await;
        sampler.shutdown().await;
    });
}

#[tokio::test(flavor = "current_thread")]
async fn second_sampler_on_the_same_run_is_refused_and_keeps_the_first_config() {
    let run = run_with(builder());
    let first = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_millis(11))
        .start()
        .expect("the first sampler should start");

    let second = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_millis(17))
        .start();
    assert_eq!(second.unwrap_err(), SamplerStartError::DuplicateStart);

    first.shutdown().await;
    let config = run
        .snapshot()
        .metadata
        .effective_tokio_sampler_config
        .unwrap();
    assert_eq!(config.resolved_sampler_cadence_ms, 11);
}

#[tokio::test(flavor = "current_thread")]
async fn shutdown_stops_sampling() {
    let run = run_with(builder());
    let sampler = RuntimeSampler::start(Arc::clone(&run), Duration::from_millis(1))
        .expect("the sampler should start");
    eventually("two snapshots", || snapshots_taken(&run) >= 2).await;

    sampler.shutdown().await;
    let after_shutdown = snapshots_taken(&run);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(snapshots_taken(&run), after_shutdown);
    assert_eq!(
        Arc::strong_count(&run),
        1,
        "the ended task should have let go of the run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_sampler_stops_sampling() {
    let run = run_with(builder());
    let sampler = RuntimeSampler::start(Arc::clone(&run), Duration::from_millis(1))
        .expect("the sampler should start");
    eventually("two snapshots", || snapshots_taken(&run) >= 2).await;

    drop(sampler);
    eventually("the task to let go of the run", || {
        Arc::strong_count(&run) == 1
    })
    .await;
    let after_drop = snapshots_taken(&run);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(snapshots_taken(&run), after_drop);
}

#[test]
fn shutdown_returns_when_the_sampled_runtime_is_gone() {
    let run = run_with(builder());
    let doomed = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("the runtime should build");
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .runtime_handle(doomed.handle().clone())
        .interval(Duration::from_millis(1))
        .start()
        .expect("the sampler should start");

    // Dropping the runtime drops its tasks, the sampler's among them.
    drop(doomed);
    let waiter = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("the runtime should build");
    waiter.block_on(sampler.shutdown());
    assert_eq!(Arc::strong_count(&run), 1);
}

#[tokio::test(flavor = "current_thread")]
async fn artifact_carries_snapshots_and_the_sampler_config() {
    let sink = MemorySink::new();
    let run = run_with(
        Tailtriage::builder("sampler-artifact")
            .sink(sink.clone())
            .investigation(),
    );
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .interval(Duration::from_millis(1))
        .start()
        .expect("the sampler should start");
    eventually("five snapshots", || snapshots_taken(&run) >= 5).await;
    sampler.shutdown().await;
    run.shutdown().expect("the run should be written");

    let artifact = sink.last_run().expect("shutdown should write the run");
    assert!(artifact.runtime_snapshots.len() >= 5);
    let config = artifact.metadata.effective_tokio_sampler_config.unwrap();
    assert_eq!(config.resolved_mode, CaptureMode::Investigation);
    assert_eq!(config.resolved_sampler_cadence_ms, 1);

    let json = serde_json::to_value(&artifact).expect("the artifact should serialize");
    assert_eq!(
        json["metadata"]["effective_tokio_sampler_config"]["resolved_mode"],
        "investigation"
    );
    assert!(json["runtime_snapshots"][0]["alive_tasks"].is_u64());
}
