//! Building a run: defaults, limits, metadata and refusals.

use tailtriage_core::{
    BuildError, CaptureLimits, CaptureLimitsOverride, CaptureMode, MemorySink, Tailtriage,
};

mod support;

fn memory_run(builder: tailtriage_core::TailtriageBuilder) -> Tailtriage {
    builder
        .sink(MemorySink::new())
        .build()
        .expect("build succeeds")
}

#[test]
fn a_default_run_is_light_lenient_and_uses_the_light_limits() {
    let tailtriage = memory_run(Tailtriage::builder("checkout"));
    let config = tailtriage.effective_core_config();
    assert_eq!(tailtriage.selected_mode(), CaptureMode::Light);
    assert_eq!(config.mode, CaptureMode::Light);
    assert_eq!(config.capture_limits, CaptureLimits::default());
    assert_eq!(config.capture_limits, CaptureMode::Light.core_defaults());
    assert!(!config.strict_lifecycle);
}

#[test]
fn mode_defaults_are_the_documented_numbers() {
    let light = CaptureMode::Light.core_defaults();
    assert_eq!(
        (
            light.max_requests,
            light.max_stages,
            light.max_queues,
            light.max_inflight_snapshots,
            light.max_runtime_snapshots
        ),
        (100_000, 200_000, 200_000, 200_000, 100_000)
    );
    let investigation = CaptureMode::Investigation.core_defaults();
    assert_eq!(
        (
            investigation.max_requests,
            investigation.max_stages,
            investigation.max_queues,
            investigation.max_inflight_snapshots,
            investigation.max_runtime_snapshots
        ),
        (300_000, 600_000, 600_000, 600_000, 300_000)
    );
}

#[test]
fn a_blank_service_name_is_refused_with_a_clear_error() {
    for name in ["", "   ", "\n\t"] {
        let error = Tailtriage::builder(name).build().expect_err("blank name");
        assert_eq!(error, BuildError::EmptyServiceName);
        assert!(error.to_string().contains("service name"), "{error}");
    }
}

#[test]
fn full_limits_replace_the_mode_defaults_and_win_over_overrides() {
    let limits = CaptureLimits {
        max_requests: 1,
        max_stages: 2,
        max_queues: 3,
        max_inflight_snapshots: 4,
        max_runtime_snapshots: 5,
    };
    let tailtriage = memory_run(
        Tailtriage::builder("checkout")
            .investigation()
            .capture_limits_override(CaptureLimitsOverride {
                max_requests: Some(99),
                ..CaptureLimitsOverride::default()
            })
            .capture_limits(limits),
    );
    assert_eq!(tailtriage.effective_core_config().capture_limits, limits);
    assert_eq!(tailtriage.selected_mode(), CaptureMode::Investigation);
}

#[test]
fn overrides_apply_on_top_of_the_mode_and_merge_field_by_field() {
    let tailtriage = memory_run(
        Tailtriage::builder("checkout")
            .investigation()
            .capture_limits_override(CaptureLimitsOverride {
                max_requests: Some(10),
                max_stages: Some(20),
                ..CaptureLimitsOverride::default()
            })
            .capture_limits_override(CaptureLimitsOverride {
                max_stages: Some(25),
                ..CaptureLimitsOverride::default()
            }),
    );
    let limits = tailtriage.effective_core_config().capture_limits;
    assert_eq!(limits.max_requests, 10);
    assert_eq!(limits.max_stages, 25);
    assert_eq!(limits.max_queues, 600_000);
}

#[test]
fn metadata_at_build_names_the_service_and_stamps_now() {
    let before = tailtriage_core::unix_time_ms();
    let tailtriage = memory_run(
        Tailtriage::builder("checkout")
            .service_version("1.2.3")
            .strict_lifecycle(true),
    );
    let after = tailtriage_core::unix_time_ms();
    let metadata = tailtriage.snapshot().metadata;

    assert_eq!(metadata.service_name, "checkout");
    assert_eq!(metadata.service_version.as_deref(), Some("1.2.3"));
    assert!(metadata.run_id.starts_with("run-"));
    let uuid = metadata.run_id.trim_start_matches("run-");
    assert_eq!(
        uuid::Uuid::parse_str(uuid).expect("uuid").get_version_num(),
        4
    );
    assert!(metadata.started_at_unix_ms >= before.saturating_sub(2));
    assert!(metadata.started_at_unix_ms <= after + 2);
    assert_eq!(metadata.finished_at_unix_ms, metadata.started_at_unix_ms);
    assert_eq!(metadata.finalized_at_unix_ms, None);
    assert_eq!(metadata.mode, CaptureMode::Light);
    let config = metadata.effective_core_config.expect("core config");
    assert!(config.strict_lifecycle);
    assert_eq!(metadata.effective_tokio_sampler_config, None);
    assert_eq!(metadata.pid, Some(std::process::id()));
    if let Some(host) = &metadata.host {
        assert_eq!(host.trim(), host, "host is trimmed");
        assert!(!host.is_empty());
    }
    assert!(metadata.lifecycle_warnings.is_empty());
    assert_eq!(metadata.unfinished_requests.count, 0);
    assert_eq!(metadata.run_end_reason, None);
}

#[test]
fn a_given_run_id_is_kept() {
    let tailtriage = memory_run(Tailtriage::builder("checkout").run_id("incident-7"));
    assert_eq!(tailtriage.snapshot().metadata.run_id, "incident-7");
}

#[test]
fn every_limit_value_is_legal_from_zero_to_the_maximum() {
    for limit in [0, 1, 2, 1_000, usize::MAX / 2, usize::MAX] {
        let tailtriage = memory_run(
            Tailtriage::builder("checkout").capture_limits(support::uniform_limits(limit)),
        );
        let started = tailtriage.begin_request("/x");
        drop(started.handle.inflight("g"));
        started.completion.finish_ok();
        let run = tailtriage.snapshot();
        let kept = usize::from(limit > 0);
        assert_eq!(run.requests.len(), kept, "limit {limit}");
        assert_eq!(run.truncation.dropped_requests, u64::from(limit == 0));
    }
}
