//! The public surface matches tailtriage-core 0.2.0: traits, thread safety and future `Send`ness.

use std::fmt::Debug;
use std::sync::Arc;

use tailtriage_core::{
    BuildError, CaptureLimits, CaptureLimitsOverride, CaptureMode, DiscardSink,
    EffectiveCoreConfig, EffectiveTokioSamplerConfig, InFlightSnapshot, LocalJsonSink, MemorySink,
    Outcome, OwnedRequestCompletion, OwnedRequestHandle, OwnedStartedRequest, QueueEvent,
    RequestCompletion, RequestEvent, RequestHandle, RequestOptions, Run, RunEndReason, RunMetadata,
    RuntimeSamplerRegistrationError, RuntimeSnapshot, SinkError, StageEvent, StartedRequest,
    Tailtriage, TailtriageBuilder, TruncationSummary, UnfinishedRequestSample, UnfinishedRequests,
    SCHEMA_VERSION,
};

fn is_send_sync<T: Send + Sync>() {}
fn is_debug<T: Debug>() {}
fn is_clone<T: Clone>() {}
fn is_copy<T: Copy>() {}
fn is_default<T: Default>() {}
fn is_eq<T: PartialEq + Eq>() {}
fn is_artifact<
    T: Debug + Clone + PartialEq + Eq + serde::Serialize + serde::de::DeserializeOwned,
>() {
}
fn is_error<T: std::error::Error>() {}

#[test]
fn the_recorder_is_send_sync_and_debug_and_its_parts_have_the_published_traits() {
    is_send_sync::<Tailtriage>();
    is_debug::<Tailtriage>();
    is_clone::<TailtriageBuilder>();
    is_debug::<StartedRequest<'static>>();
    is_debug::<OwnedStartedRequest>();
    is_clone::<RequestHandle<'static>>();
    is_clone::<OwnedRequestHandle>();
    is_debug::<RequestCompletion<'static>>();
    is_debug::<OwnedRequestCompletion>();
    is_send_sync::<OwnedRequestHandle>();
    is_send_sync::<OwnedRequestCompletion>();
    is_clone::<RequestOptions>();
    is_eq::<RequestOptions>();
    is_default::<RequestOptions>();
    is_clone::<Outcome>();
    is_eq::<Outcome>();
    is_copy::<CaptureMode>();
    is_copy::<CaptureLimits>();
    is_default::<CaptureLimits>();
    is_copy::<CaptureLimitsOverride>();
    is_default::<CaptureLimitsOverride>();
    is_copy::<EffectiveCoreConfig>();
    is_copy::<EffectiveTokioSamplerConfig>();
    is_copy::<RunEndReason>();
    is_clone::<BuildError>();
    is_eq::<BuildError>();
    is_error::<BuildError>();
    is_copy::<RuntimeSamplerRegistrationError>();
    is_eq::<RuntimeSamplerRegistrationError>();
    is_error::<SinkError>();
    is_copy::<DiscardSink>();
    is_default::<DiscardSink>();
    is_clone::<MemorySink>();
    is_default::<MemorySink>();
    is_clone::<LocalJsonSink>();
    is_debug::<LocalJsonSink>();
    is_artifact::<Run>();
    is_artifact::<RunMetadata>();
    is_artifact::<RequestEvent>();
    is_artifact::<StageEvent>();
    is_artifact::<QueueEvent>();
    is_artifact::<InFlightSnapshot>();
    is_artifact::<RuntimeSnapshot>();
    is_artifact::<TruncationSummary>();
    is_default::<TruncationSummary>();
    is_artifact::<UnfinishedRequests>();
    is_default::<UnfinishedRequests>();
    is_artifact::<UnfinishedRequestSample>();
    is_artifact::<CaptureMode>();
    is_artifact::<CaptureLimits>();
    is_artifact::<EffectiveCoreConfig>();
    is_artifact::<EffectiveTokioSamplerConfig>();
    is_artifact::<RunEndReason>();
    assert_eq!(SCHEMA_VERSION, 1_u64);
}

#[test]
fn const_functions_are_usable_in_const_context() {
    const LIGHT: CaptureLimits = CaptureMode::Light.core_defaults();
    const TIGHT: CaptureLimits = CaptureLimitsOverride {
        max_requests: Some(7),
        max_stages: None,
        max_queues: None,
        max_inflight_snapshots: None,
        max_runtime_snapshots: None,
    }
    .apply(LIGHT);
    assert_eq!(TIGHT.max_requests, 7);
    assert!(!TruncationSummary {
        limits_hit: false,
        dropped_requests: 0,
        dropped_stages: 0,
        dropped_queues: 0,
        dropped_inflight_snapshots: 0,
        dropped_runtime_snapshots: 0,
        ..TruncationSummary::default()
    }
    .is_truncated());
}

#[test]
fn timer_futures_are_send_and_run_on_a_multi_threaded_runtime() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime builds");
    let sink = MemorySink::new();
    let tailtriage = Arc::new(
        Tailtriage::builder("checkout")
            .sink(sink.clone())
            .build()
            .expect("build succeeds"),
    );

    runtime.block_on(async {
        let mut tasks = Vec::new();
        for index in 0..8 {
            let started = tailtriage.begin_request_owned(format!("/route/{index}"));
            tasks.push(tokio::spawn(async move {
                let handle = started.handle;
                handle
                    .queue("pool")
                    .with_depth_at_start(index)
                    .await_on(tokio::task::yield_now())
                    .await;
                let value: Result<u64, String> = handle
                    .stage("downstream")
                    .await_on(async {
                        tokio::task::yield_now().await;
                        Ok(index)
                    })
                    .await;
                let doubled = handle
                    .stage("cpu")
                    .await_value(async move { index * 2 })
                    .await;
                let guard = handle.inflight("inflight");
                tokio::task::yield_now().await;
                drop(guard);
                started.completion.finish_result(value).map(|v| v + doubled)
            }));
        }
        for task in tasks {
            task.await.expect("task joins").expect("stage succeeds");
        }
    });

    tailtriage.shutdown().expect("shutdown succeeds");
    let run = sink.last_run().expect("run written");
    assert_eq!(run.requests.len(), 8);
    assert_eq!(run.queues.len(), 8);
    assert_eq!(run.stages.len(), 16);
    assert_eq!(run.inflight.len(), 16);
}

#[test]
fn borrowed_request_futures_are_send_too() {
    fn assert_send<T: Send>(_: &T) {}
    let tailtriage = Tailtriage::builder("checkout")
        .sink(DiscardSink)
        .build()
        .expect("build succeeds");
    let started = tailtriage.begin_request("/checkout");
    let queue = started.handle.queue("q").await_on(async {});
    assert_send(&queue);
    let stage = started
        .handle
        .stage("s")
        .await_on(async { Ok::<(), ()>(()) });
    assert_send(&stage);
    let value = started.handle.stage("v").await_value(async { 1 });
    assert_send(&value);
    drop((queue, stage, value));
    started.completion.finish_ok();
}
