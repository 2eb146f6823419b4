//! Behaviour of the HTTP layer, driven by real HTTP requests over loopback.
#![cfg(feature = "tower")]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::Path;
use axum::http::{Request, Response, StatusCode};
use axum::routing::get;
use axum::{Extension, Router};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tailtriage_core::http_layer::TailtriageLayer;
use tailtriage_core::{MemorySink, Outcome, OwnedRequestHandle, RequestEvent, Run, Tailtriage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::{Layer, ServiceBuilder};

/// Upper bound for anything a test waits for; generous so a loaded machine passes.
const PATIENCE: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn new_run() -> Arc<Tailtriage> {
    Arc::new(
        Tailtriage::builder("http-layer-tests")
            .sink(MemorySink::new())
            .build()
            .expect("the run should build"),
    )
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Serves `app` on an ephemeral loopback port for the rest of the test.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Sends `GET path` and returns the status and body.
async fn get_text(client: &HttpClient, addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let uri = format!("http://{addr}{path}");
    let response = client
        .get(uri.parse().expect("a valid URI"))
        .await
        .expect("the server should answer");
    let status = response.status();
    let body = response.into_body().collect().await.expect("read body");
    (
        status,
        String::from_utf8_lossy(&body.to_bytes()).into_owned(),
    )
}

/// Waits until the run holds `count` finished requests, then returns a snapshot.
async fn finished_requests(run: &Tailtriage, count: usize) -> Run {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let snapshot = run.snapshot();
        if snapshot.requests.len() >= count {
            return snapshot;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected {count} finished requests, found {}",
            snapshot.requests.len()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn by_route<'a>(run: &'a Run, route: &str) -> &'a RequestEvent {
    run.requests
        .iter()
        .find(|request| request.route == route)
        .unwrap_or_else(|| panic!("no request recorded for {route}: {:?}", run.requests))
}

async fn item(Path(id): Path<u32>) -> String {
    format!("item {id}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_requests_are_recorded_under_their_route_template() {
    let run = new_run();
    let app = Router::new()
        .route("/items/{id}", get(item))
        .layer(TailtriageLayer::new(Arc::clone(&run)));
    let addr = serve(app).await;

    let (status, body) = get_text(&client(), addr, "/items/42?verbose=1").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "item 42"));

    let run = finished_requests(&run, 1).await;
    let request = &run.requests[0];
    assert_eq!(request.route, "/items/{id}");
    assert_eq!(request.kind.as_deref(), Some("http"));
    assert_eq!(request.outcome, "ok");
    assert!(request.finished_at_unix_ms >= request.started_at_unix_ms);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrouted_requests_are_recorded_under_their_uri_path() {
    let run = new_run();
    let app = Router::new()
        .route("/items/{id}", get(item))
        .layer(TailtriageLayer::new(Arc::clone(&run)));
    let addr = serve(app).await;

    let (status, _) = get_text(&client(), addr, "/nowhere/7?q=1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let run = finished_requests(&run, 1).await;
    assert_eq!(run.requests[0].route, "/nowhere/7");
    assert_eq!(run.requests[0].outcome, "rejected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_find_the_request_handle_in_the_extensions() {
    async fn checkout(Extension(request): Extension<OwnedRequestHandle>) -> String {
        request
            .stage("charge_card")
            .await_value(tokio::time::sleep(Duration::from_millis(2)))
            .await;
        request.request_id().to_owned()
    }

    let run = new_run();
    let app = Router::new()
        .route("/checkout", get(checkout))
        .layer(TailtriageLayer::new(Arc::clone(&run)));
    let addr = serve(app).await;

    let (_, request_id) = get_text(&client(), addr, "/checkout").await;

    let run = finished_requests(&run, 1).await;
    assert_eq!(run.requests[0].request_id, request_id);
    assert_eq!(run.stages.len(), 1);
    assert_eq!(run.stages[0].request_id, request_id);
    assert!(run.stages[0].latency_us >= 2_000);
    assert!(
        run.requests[0].latency_us >= run.stages[0].latency_us,
        "the request should span the stage it contains"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_statuses_map_to_outcomes() {
    async fn status(Path(code): Path<u16>) -> StatusCode {
        StatusCode::from_u16(code).expect("a valid status code")
    }

    let run = new_run();
    let app = Router::new()
        .route("/status/{code}", get(status))
        .layer(TailtriageLayer::new(Arc::clone(&run)));
    let addr = serve(app).await;
    let client = client();

    let cases = [
        (204, "ok"),
        (302, "ok"),
        (400, "rejected"),
        (408, "timeout"),
        (429, "rejected"),
        (500, "error"),
        (503, "error"),
    ];
    for (code, _) in cases {
        get_text(&client, addr, &format!("/status/{code}")).await;
    }

    // One client on one connection: requests finish in the order they were sent.
    let run = finished_requests(&run, cases.len()).await;
    let outcomes: Vec<&str> = run.requests.iter().map(|r| r.outcome.as_str()).collect();
    let expected: Vec<&str> = cases.iter().map(|(_, outcome)| *outcome).collect();
    assert_eq!(outcomes, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_classifier_decides_the_outcome() {
    let run = new_run();
    let layer = TailtriageLayer::new(Arc::clone(&run)).classify_status(|status| {
        if status == StatusCode::NOT_FOUND {
            Outcome::Other("miss".into())
        } else {
            Outcome::Ok
        }
    });
    let addr = serve(Router::new().route("/items/{id}", get(item)).layer(layer)).await;

    get_text(&client(), addr, "/missing").await;

    let run = finished_requests(&run, 1).await;
    assert_eq!(run.requests[0].outcome, "miss");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_hangs_up_leaves_a_cancelled_request() {
    let entered = Arc::new(Notify::new());
    let slow = {
        let entered = Arc::clone(&entered);
        move || async move {
            entered.notify_one();
            tokio::time::sleep(PATIENCE * 2).await;
            "too late"
        }
    };

    let run = new_run();
    let app = Router::new()
        .route("/slow", get(slow))
        .layer(TailtriageLayer::new(Arc::clone(&run)));
    let addr = serve(app).await;

    let mut stream = TcpStream::connect(addr).await.expect("connect to loopback");
    stream
        .write_all(b"GET /slow HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send the request");
    entered.notified().await;
    drop(stream);

    let run_now = finished_requests(&run, 1).await;
    assert_eq!(run_now.requests[0].route, "/slow");
    assert_eq!(run_now.requests[0].outcome, "cancelled");

    run.shutdown().expect("the run should be written");
    let ended = run.snapshot();
    assert_eq!(ended.metadata.unfinished_requests.count, 0);
    assert!(ended.metadata.lifecycle_warnings.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_by_an_outer_timeout_is_recorded_as_cancelled() {
    async fn slow() -> &'static str {
        tokio::time::sleep(PATIENCE * 2).await;
        "too late"
    }

    let run = new_run();
    let timeout = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: tower::BoxError| async {
            StatusCode::GATEWAY_TIMEOUT
        }))
        .timeout(Duration::from_millis(20));
    let app = Router::new()
        .route("/slow", get(slow))
        .layer(TailtriageLayer::new(Arc::clone(&run)))
        .layer(timeout);
    let addr = serve(app).await;

    let (status, _) = get_text(&client(), addr, "/slow").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);

    let run = finished_requests(&run, 1).await;
    assert_eq!(run.requests[0].route, "/slow");
    assert_eq!(run.requests[0].outcome, "cancelled");
    assert!(run.requests[0].latency_us >= 20_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_is_recorded_as_an_error() {
    async fn explode() -> &'static str {
        panic!("the handler failed on purpose");
    }

    let run = new_run();
    let app = Router::new()
        .route("/explode", get(explode))
        .layer(TailtriageLayer::new(Arc::clone(&run)));
    let addr = serve(app).await;

    let answer = client()
        .get(
            format!("http://{addr}/explode")
                .parse()
                .expect("a valid URI"),
        )
        .await;
    assert!(
        answer.is_err(),
        "the connection should close without a response"
    );

    let run = finished_requests(&run, 1).await;
    assert_eq!(run.requests[0].outcome, "error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_all_finished_with_distinct_ids() {
    const REQUESTS: usize = 64;

    async fn work(Extension(request): Extension<OwnedRequestHandle>) -> &'static str {
        let _busy = request.inflight("handlers");
        request
            .stage("work")
            .await_value(tokio::time::sleep(Duration::from_millis(3)))
            .await;
        "done"
    }

    let run = new_run();
    let app = Router::new()
        .route("/work", get(work))
        .layer(TailtriageLayer::new(Arc::clone(&run)));
    let addr = serve(app).await;
    let client = client();

    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..REQUESTS {
        let client = client.clone();
        calls.spawn(async move { get_text(&client, addr, "/work").await });
    }
    while let Some(answer) = calls.join_next().await {
        assert_eq!(answer.expect("the call should not panic").0, StatusCode::OK);
    }

    run.shutdown().expect("the run should be written");
    let run = run.snapshot();
    assert_eq!(run.requests.len(), REQUESTS);
    assert_eq!(run.metadata.unfinished_requests.count, 0);
    let mut ids: Vec<&str> = run.requests.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), REQUESTS, "request ids should be distinct");
    assert_eq!(run.stages.len(), REQUESTS);
    assert_eq!(run.inflight.len(), 2 * REQUESTS);
}

/// Serves one plain tower service (no axum) with hyper on an ephemeral loopback port.
async fn serve_with_hyper<S>(service: S) -> SocketAddr
where
    S: tower::Service<Request<hyper::body::Incoming>, Response = Response<Full<Bytes>>>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener
        .local_addr()
        .expect("a bound listener has an address");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                // A failed connection is what some tests provoke; the run records it.
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tower_services_are_recorded_by_uri_path() {
    let run = new_run();
    let hello = tower::service_fn(|request: Request<hyper::body::Incoming>| async move {
        let handle = request
            .extensions()
            .get::<OwnedRequestHandle>()
            .expect("the layer should insert the handle")
            .clone();
        let body = format!("hello {}", handle.route());
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
    });
    let addr = serve_with_hyper(TailtriageLayer::new(Arc::clone(&run)).layer(hello)).await;

    let (status, body) = get_text(&client(), addr, "/greet/ada?x=1").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "hello /greet/ada")
    );

    let run = finished_requests(&run, 1).await;
    let request = by_route(&run, "/greet/ada");
    assert_eq!(request.kind.as_deref(), Some("http"));
    assert_eq!(request.outcome, "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inner_service_error_is_recorded_as_an_error() {
    let run = new_run();
    let failing = tower::service_fn(|_: Request<hyper::body::Incoming>| async {
        Err::<Response<Full<Bytes>>, _>(std::io::Error::other("backend unreachable"))
    });
    let addr = serve_with_hyper(TailtriageLayer::new(Arc::clone(&run)).layer(failing)).await;

    let mut stream = TcpStream::connect(addr).await.expect("connect to loopback");
    stream
        .write_all(b"GET /fails HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send the request");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    assert!(answer.is_empty(), "a failed service sends no response");

    let run = finished_requests(&run, 1).await;
    assert_eq!(by_route(&run, "/fails").outcome, "error");
}
