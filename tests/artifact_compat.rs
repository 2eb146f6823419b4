//! The artifact round-trips with the published tailtriage-core 0.2.0 in both directions.

use tailtriage_core::{
    CaptureLimitsOverride, CaptureMode, EffectiveTokioSamplerConfig, MemorySink, RequestOptions,
    Run, RunEndReason, RuntimeSnapshot, Tailtriage,
};

/// A run exercising every section and every optional metadata field.
fn rich_run_from_ours() -> Run {
    let sink = MemorySink::new();
    let tailtriage = Tailtriage::builder("checkout")
        .service_version("2.0.0")
        .sink(sink.clone())
        .capture_limits_override(CaptureLimitsOverride {
            max_queues: Some(1),
            ..CaptureLimitsOverride::default()
        })
        .build()
        .expect("build succeeds");
    tailtriage_core::__internal::register_tokio_runtime_sampler(
        &tailtriage,
        EffectiveTokioSamplerConfig {
            inherited_mode: CaptureMode::Light,
            explicit_mode_override: Some(CaptureMode::Investigation),
            resolved_mode: CaptureMode::Investigation,
            resolved_sampler_cadence_ms: 50,
            resolved_runtime_snapshot_retention: 300_000,
        },
    )
    .expect("first registration");
    let started = tailtriage.begin_request_with(
        "/checkout",
        RequestOptions::new().request_id("r1").kind("http"),
    );
    futures_executor::block_on(async {
        for depth in 0..2 {
            started
                .handle
                .queue("db")
                .with_depth_at_start(depth)
                .await_on(async {})
                .await;
        }
        let _: Result<(), ()> = started
            .handle
            .stage("pay")
            .await_on(async { Err(()) })
            .await;
    });
    drop(started.handle.inflight("inflight"));
    started.completion.finish_ok();
    let leaked = tailtriage.begin_request("/pending");
    tailtriage.record_runtime_snapshot(RuntimeSnapshot {
        at_unix_ms: 5,
        alive_tasks: Some(3),
        global_queue_depth: Some(1),
        local_queue_depth: None,
        blocking_queue_depth: Some(0),
        remote_schedule_count: None,
    });
    tailtriage.set_run_end_reason_if_absent(RunEndReason::AutoSealOnLimitsHit);
    tailtriage.shutdown().expect("shutdown writes");
    std::mem::forget(leaked);
    sink.last_run().expect("written")
}

#[test]
fn an_artifact_we_write_loads_unchanged_into_the_published_run() {
    let ours = rich_run_from_ours();
    assert_eq!(ours.truncation.dropped_queues, 1);
    assert_eq!(ours.metadata.unfinished_requests.count, 1);

    let json = serde_json::to_string(&ours).expect("serializes");
    let theirs: published::Run = serde_json::from_str(&json).expect("published crate loads it");

    // Re-serialized by the published crate, the document is the one we wrote.
    let ours_value: serde_json::Value = serde_json::from_str(&json).expect("json");
    let theirs_value = serde_json::to_value(&theirs).expect("json");
    assert_eq!(theirs_value, ours_value);
}

#[test]
fn an_artifact_the_published_crate_writes_loads_unchanged_into_our_run() {
    let sink = published::MemorySink::new();
    let tailtriage = published::Tailtriage::builder("checkout")
        .service_version("0.2.0")
        .sink(sink.clone())
        .capture_limits_override(published::CaptureLimitsOverride {
            max_stages: Some(1),
            ..published::CaptureLimitsOverride::default()
        })
        .build()
        .expect("published build");
    let started = tailtriage.begin_request_with(
        "/checkout",
        published::RequestOptions::new()
            .request_id("p1")
            .kind("http"),
    );
    futures_executor::block_on(async {
        started
            .handle
            .queue("db")
            .with_depth_at_start(2)
            .await_on(async {})
            .await;
        for _ in 0..2 {
            started.handle.stage("pay").await_value(async {}).await;
        }
    });
    drop(started.handle.inflight("g"));
    started
        .completion
        .finish(published::Outcome::Other("shed".into()));
    let pending = tailtriage.begin_request("/pending");
    tailtriage.set_run_end_reason_if_absent(published::RunEndReason::ManualDisarm);
    tailtriage.shutdown().expect("published shutdown");
    std::mem::forget(pending);
    let theirs = sink.last_run().expect("published wrote");

    let json = serde_json::to_string_pretty(&theirs).expect("serializes");
    let ours: Run = serde_json::from_str(&json).expect("our crate loads it");
    assert_eq!(ours.requests[0].outcome, "shed");
    assert_eq!(ours.truncation.dropped_stages, 1);
    assert_eq!(
        ours.metadata.run_end_reason,
        Some(RunEndReason::ManualDisarm)
    );
    assert_eq!(
        serde_json::to_value(&ours).expect("json"),
        serde_json::from_str::<serde_json::Value>(&json).expect("json"),
        "nothing is lost or added on the way through our types"
    );
}

#[test]
fn an_old_artifact_without_optional_fields_loads_with_defaults() {
    let old = r#"{
        "schema_version": 1,
        "metadata": {
            "run_id": "r", "service_name": "svc", "service_version": null,
            "started_at_unix_ms": 1, "finished_at_unix_ms": 2, "mode": "investigation",
            "host": null, "pid": null
        },
        "requests": [], "stages": [{"request_id": "a", "stage": "s", "started_at_unix_ms": 1,
            "finished_at_unix_ms": 2, "latency_us": 3, "success": true}],
        "queues": [], "inflight": [], "runtime_snapshots": [],
        "some_future_field": {"ignored": true}
    }"#;
    let run: Run = serde_json::from_str(old).expect("old artifact loads");
    assert_eq!(run.metadata.mode, CaptureMode::Investigation);
    assert_eq!(run.metadata.finalized_at_unix_ms, None);
    assert_eq!(run.metadata.effective_core_config, None);
    assert!(run.metadata.lifecycle_warnings.is_empty());
    assert_eq!(run.metadata.unfinished_requests.count, 0);
    assert_eq!(run.metadata.run_end_reason, None);
    assert!(!run.truncation.is_truncated());
    assert!(!run.stages[0].cancelled);
}

#[test]
fn enum_spellings_match_the_schema() {
    let json = |value: &dyn erased::Json| value.json();
    assert_eq!(json(&CaptureMode::Light), "\"light\"");
    assert_eq!(json(&CaptureMode::Investigation), "\"investigation\"");
    assert_eq!(json(&RunEndReason::ManualDisarm), "\"manual_disarm\"");
    assert_eq!(json(&RunEndReason::Shutdown), "\"shutdown\"");
    assert_eq!(
        json(&RunEndReason::AutoSealOnLimitsHit),
        "\"auto_seal_on_limits_hit\""
    );
}

mod erased {
    pub trait Json {
        fn json(&self) -> String;
    }
    impl<T: serde::Serialize> Json for T {
        fn json(&self) -> String {
            serde_json::to_string(self).expect("serializes")
        }
    }
}
