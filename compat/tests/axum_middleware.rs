//! The published axum middleware and extractor recording into this crate's core,
//! driven by real HTTP over loopback.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use axum::Router;
use common::load_artifact;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tailtriage::axum::{middleware, TailtriageRequest};
use tailtriage::Tailtriage;
use tokio::net::TcpListener;

async fn order(TailtriageRequest(request): TailtriageRequest, Path(id): Path<u32>) -> String {
    request
        .stage("load_order")
        .await_value(tokio::time::sleep(Duration::from_millis(2)))
        .await;
    format!("order {id} for {}", request.request_id())
}

async fn broken() -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn their_middleware_records_http_requests_by_route_template() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("axum.json");
    let run = Arc::new(
        Tailtriage::builder("compat-axum")
            .output(&path)
            .build()
            .expect("the run should build"),
    );
    let app = Router::new()
        .route("/orders/{id}", get(order))
        .route("/broken", get(broken))
        .layer(from_fn_with_state(Arc::clone(&run), middleware));

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<axum::body::Bytes>>();
    let mut answers = Vec::new();
    for path in ["/orders/7", "/orders/8", "/nowhere", "/broken"] {
        let uri = format!("http://{addr}{path}").parse().expect("a valid URI");
        let response = client.get(uri).await.expect("the server should answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("read body")
            .to_bytes();
        answers.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    drop(client);
    let _ = stop.send(());
    server
        .await
        .expect("the server task should not panic")
        .expect("the server should stop cleanly");
    run.shutdown().expect("the run should be written");

    let artifact = load_artifact(&path);
    let recorded: Vec<(&str, &str)> = artifact
        .requests
        .iter()
        .map(|r| (r.route.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(
        recorded,
        [
            ("/orders/{id}", "ok"),
            ("/orders/{id}", "ok"),
            ("/nowhere", "rejected"),
            ("/broken", "error"),
        ]
    );
    assert!(artifact
        .requests
        .iter()
        .all(|r| r.kind.as_deref() == Some("http")));

    // The extractor handed the handler the same request the middleware began.
    assert_eq!(artifact.stages.len(), 2);
    for (stage, (status, body)) in artifact.stages.iter().zip(&answers) {
        assert_eq!(*status, StatusCode::OK);
        assert!(
            body.ends_with(&stage.request_id),
            "{body} vs {}",
            stage.request_id
        );
        assert!(stage.latency_us >= 2_000);
    }
}
