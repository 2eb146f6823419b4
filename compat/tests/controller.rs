//! The published controller's arm/disarm flows, recording into this crate's core.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load_artifact;
use tailtriage::controller::{
    DisableOutcome, EnableError, GenerationState, RunEndPolicy, RuntimeSamplerTemplate,
    TailtriageController,
};
use tailtriage::{CaptureLimitsOverride, CaptureMode, Outcome, RequestOptions, RunEndReason};
use tokio::sync::Semaphore;

fn sampled_controller(dir: &std::path::Path) -> TailtriageController {
    TailtriageController::builder("compat-controller")
        .output(dir.join("run.json"))
        .runtime_sampler(RuntimeSamplerTemplate {
            enabled_for_armed_runs: true,
            mode_override: None,
            interval_ms: Some(5),
            max_runtime_snapshots: None,
        })
        .build()
        .expect("the controller should build")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_and_disarm_write_one_artifact_per_generation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let controller = sampled_controller(dir.path());

    let inert = controller.begin_request("/before-arming");
    assert!(inert.handle.request_id().starts_with("inert-"));
    inert.completion.finish_ok();

    let generation = controller.enable().expect("arming should succeed");
    assert_eq!(generation.generation_id, 1);
    assert_eq!(
        generation.artifact_path,
        dir.path().join("run-generation-1.json")
    );

    let pool = Arc::new(Semaphore::new(1));
    for n in 0..5 {
        let started = controller.begin_request_with(
            "/checkout",
            RequestOptions::new()
                .request_id(format!("order-{n}"))
                .kind("http"),
        );
        let _busy = started.handle.inflight("checkout_inflight");
        let _permit = started
            .handle
            .queue("db_pool")
            .with_depth_at_start(0)
            .await_on(pool.acquire())
            .await
            .expect("the pool is open");
        let charged: Result<(), &str> = started
            .handle
            .stage("payment_gateway")
            .await_on(async {
                if n == 4 {
                    Err("declined")
                } else {
                    Ok(())
                }
            })
            .await;
        started.completion.finish_result(charged).ok();
    }
    // The sampler takes its first snapshot at once and then one every 5 ms.
    tokio::time::sleep(Duration::from_millis(50)).await;

    let outcome = controller.disable().expect("disarming should succeed");
    assert_eq!(outcome, DisableOutcome::Finalized { generation_id: 1 });

    let first = load_artifact(&dir.path().join("run-generation-1.json"));
    assert_eq!(first.metadata.run_id, "compat-controller-generation-1");
    assert_eq!(
        first.metadata.run_end_reason,
        Some(RunEndReason::ManualDisarm)
    );
    assert!(first.metadata.finalized_at_unix_ms.is_some());
    assert_eq!(
        first.requests.len(),
        5,
        "the inert request must not be captured"
    );
    let ids: Vec<&str> = first
        .requests
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(ids, ["order-0", "order-1", "order-2", "order-3", "order-4"]);
    assert_eq!(first.requests[4].outcome, "error");
    assert!(first
        .requests
        .iter()
        .all(|r| r.kind.as_deref() == Some("http")));
    assert_eq!(first.queues.len(), 5);
    assert_eq!(first.stages.len(), 5);
    assert!(!first.stages[4].success);
    assert_eq!(first.inflight.len(), 10);
    let sampler = first
        .metadata
        .effective_tokio_sampler_config
        .expect("the armed run should record its sampler");
    assert_eq!(sampler.resolved_sampler_cadence_ms, 5);
    assert_eq!(sampler.resolved_mode, CaptureMode::Light);
    assert!(!first.runtime_snapshots.is_empty());

    // A second arming is a fresh run with its own artifact.
    controller.enable().expect("re-arming should succeed");
    controller.begin_request("/second").completion.finish_ok();
    assert_eq!(
        controller.disable().expect("disarming should succeed"),
        DisableOutcome::Finalized { generation_id: 2 }
    );
    let second = load_artifact(&dir.path().join("run-generation-2.json"));
    assert_eq!(second.metadata.run_id, "compat-controller-generation-2");
    assert_eq!(second.requests.len(), 1);
    assert_eq!(second.requests[0].route, "/second");
    assert_ne!(first.metadata.started_at_unix_ms, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disarming_with_a_request_in_flight_writes_once_it_finishes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let controller = sampled_controller(dir.path());
    controller.enable().expect("arming should succeed");

    let in_flight = controller.begin_request("/slow");
    let closing = controller.disable().expect("disarming should succeed");
    assert_eq!(
        closing,
        DisableOutcome::Closing {
            generation_id: 1,
            inflight_captured_requests: 1
        }
    );
    let artifact = dir.path().join("run-generation-1.json");
    assert!(
        !artifact.exists(),
        "nothing is written while a request is in flight"
    );
    assert!(
        controller
            .begin_request("/late")
            .handle
            .request_id()
            .starts_with("inert-"),
        "a closing generation admits nothing new"
    );

    in_flight.completion.finish(Outcome::Cancelled);
    let run = load_artifact(&artifact);
    assert_eq!(run.requests.len(), 1);
    assert_eq!(run.requests[0].outcome, "cancelled");
    assert_eq!(
        run.metadata.run_end_reason,
        Some(RunEndReason::ManualDisarm)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hitting_a_limit_seals_the_generation_under_the_auto_seal_policy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let controller = TailtriageController::builder("compat-seal")
        .output(dir.path().join("run.json"))
        .capture_limits_override(CaptureLimitsOverride {
            max_stages: Some(2),
            ..CaptureLimitsOverride::default()
        })
        .run_end_policy(RunEndPolicy::AutoSealOnLimitsHit)
        .build()
        .expect("the controller should build");
    controller.enable().expect("arming should succeed");

    let started = controller.begin_request("/busy");
    for _ in 0..3 {
        started.handle.stage("step").await_value(async {}).await;
    }
    started.completion.finish_ok();

    let run = load_artifact(&dir.path().join("run-generation-1.json"));
    assert_eq!(
        run.metadata.run_end_reason,
        Some(RunEndReason::AutoSealOnLimitsHit)
    );
    assert_eq!(run.stages.len(), 2);
    assert_eq!(run.truncation.dropped_stages, 1);
    assert!(run.truncation.limits_hit);
    assert!(matches!(
        controller.status().generation,
        GenerationState::Disabled { next_generation: 2 }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn toml_config_arms_at_build_and_shutdown_writes_the_generation() {
    let dir = tempfile::tempdir().expect("temp dir");
    let output = dir.path().join("toml-run.json");
    let config = dir.path().join("tailtriage.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[controller]
service_name = "compat-toml"
initially_enabled = true

[controller.activation]
mode = "investigation"

[controller.activation.sink]
type = "local_json"
output_path = "{}"

[controller.activation.runtime_sampler]
enabled_for_armed_runs = true
interval_ms = 5
max_runtime_snapshots = 3
"#,
            output.display()
        ),
    )
    .expect("write the config");

    let controller = TailtriageController::builder("ignored-by-toml")
        .config_path(&config)
        .build()
        .expect("the controller should build from TOML");
    controller.begin_request("/toml").completion.finish_ok();
    // Three snapshots at a 5 ms cadence need 10 ms; leave room for a busy machine.
    tokio::time::sleep(Duration::from_millis(200)).await;
    controller
        .shutdown()
        .expect("shutdown should write the generation");

    let run = load_artifact(&dir.path().join("toml-run-generation-1.json"));
    assert_eq!(run.metadata.service_name, "compat-toml");
    assert_eq!(run.metadata.mode, CaptureMode::Investigation);
    assert_eq!(run.metadata.run_end_reason, Some(RunEndReason::Shutdown));
    let sampler = run
        .metadata
        .effective_tokio_sampler_config
        .expect("sampler config");
    assert_eq!(sampler.resolved_runtime_snapshot_retention, 3);
    assert_eq!(run.runtime_snapshots.len(), 3);
}

#[test]
fn arming_a_sampled_template_outside_a_runtime_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let controller = sampled_controller(dir.path());
    assert!(matches!(
        controller.enable(),
        Err(EnableError::MissingTokioRuntimeForSampler)
    ));
}
