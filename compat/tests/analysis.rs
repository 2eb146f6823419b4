//! The published analyzer and CLI loader reading runs recorded by this crate's core.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::load_artifact;
use tailtriage::Tailtriage;
use tailtriage_analyzer::{analyze_run, render_json_pretty, render_text, AnalyzeOptions};
use tokio::sync::Semaphore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn their_analyzer_finds_queue_saturation_in_a_queue_bound_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("queue-bound.json");
    let run = Arc::new(
        Tailtriage::builder("compat-analysis")
            .output(&path)
            .build()
            .expect("the run should build"),
    );

    // Forty requests contend for one connection that each holds for 2 ms.
    let pool = Arc::new(Semaphore::new(1));
    let waiting = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let (run, pool, waiting) = (Arc::clone(&run), Arc::clone(&pool), Arc::clone(&waiting));
        requests.spawn(async move {
            let started = run.begin_request_owned("/checkout");
            let _in_flight = started.handle.inflight("checkout_inflight");
            let depth = waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let _permit = started
                .handle
                .queue("db_pool")
                .with_depth_at_start(depth)
                .await_on(pool.acquire())
                .await
                .expect("the pool is open");
            waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            started
                .handle
                .stage("db_query")
                .await_value(tokio::time::sleep(Duration::from_millis(2)))
                .await;
            started.completion.finish_ok();
        });
    }
    while let Some(done) = requests.join_next().await {
        done.expect("a request task should not panic");
    }
    run.shutdown().expect("the run should be written");

    let artifact = load_artifact(&path);
    assert_eq!(artifact.requests.len(), 40);
    let report = analyze_run(&artifact, AnalyzeOptions::default());
    assert_eq!(report.request_count, 40);
    assert_eq!(
        report.primary_suspect.kind.as_str(),
        "application_queue_saturation",
        "{}",
        render_text(&report)
    );
    let json = render_json_pretty(&report).expect("the report should render");
    assert!(json.contains("\"application_queue_saturation\""));
}

#[test]
fn their_loader_rejects_a_run_without_requests() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("empty.json");
    let run = Tailtriage::builder("compat-empty")
        .output(&path)
        .build()
        .expect("the run should build");
    run.shutdown().expect("the run should be written");

    let error = tailtriage_cli::artifact::load_run_artifact(&path)
        .expect_err("the CLI loader requires at least one request");
    assert!(error.to_string().contains("requests"), "{error}");
}
