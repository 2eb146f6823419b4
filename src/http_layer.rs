//! A tower layer that records one request per HTTP request.
//!
//! [`TailtriageLayer`] wraps any tower service that takes an [`http::Request`] and
//! answers with an [`http::Response`], axum routers included. For every request it:
//!
//! 1. begins a request on the run, with kind `http` and a route label (below);
//! 2. puts the request's [`OwnedRequestHandle`](crate::OwnedRequestHandle) into the
//!    request extensions, where handlers find it (with axum:
//!    `Extension<OwnedRequestHandle>`) to time queues, stages and in-flight gauges under
//!    the same request id;
//! 3. finishes the request when the inner service answers: from the response status
//!    (see [`default_status_outcome`], or your own classifier), or with
//!    [`Outcome::Error`] when the inner service fails.
//!
//! # Requests that never answer
//!
//! A request is never left pending. When the response future is dropped before it
//! completes (the client went away, an outer timeout fired, the server is shutting
//! down) the request is finished as [`Outcome::Cancelled`]; when it is dropped because
//! the handler panicked, as [`Outcome::Error`]. Dropped requests therefore show up in
//! the artifact with the time they ran for, instead of in its unfinished summary.
//!
//! # Route labels
//!
//! A request that axum routed carries a [`MatchedPath`](axum::extract::MatchedPath) and is
//! labelled with the route template
//! (`/orders/{id}`), which keeps the number of distinct routes small. Axum inserts it
//! while routing, so add the layer with `Router::layer` or `Router::route_layer`
//! rather than around the whole router. Any other request is labelled with its URI
//! path, without the query string.
//!
//! The response is considered complete when its head is ready: time spent streaming
//! the body afterwards is not part of the recorded latency.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::{Outcome, OwnedRequestCompletion, RequestOptions, Tailtriage};

/// The request kind recorded for every request that passes the layer.
pub const HTTP_REQUEST_KIND: &str = "http";

/// Maps a response status to the request's outcome.
type StatusClassifier = Arc<dyn Fn(StatusCode) -> Outcome + Send + Sync>;

/// The outcome the layer records for a response status unless told otherwise.
///
/// | status            | outcome     |
/// |-------------------|-------------|
/// | 5xx               | `error`     |
/// | 408               | `timeout`   |
/// | other 4xx         | `rejected`  |
/// | anything else     | `ok`        |
///
/// This is the mapping of the published `tailtriage-axum` 0.2 middleware, so both
/// label the same traffic the same way.
///
/// # Examples
///
/// ```
/// use http::StatusCode;
/// use tailtriage_core::http_layer::default_status_outcome;
/// use tailtriage_core::Outcome;
///
/// assert_eq!(default_status_outcome(StatusCode::OK), Outcome::Ok);
/// assert_eq!(default_status_outcome(StatusCode::NOT_FOUND), Outcome::Rejected);
/// assert_eq!(default_status_outcome(StatusCode::REQUEST_TIMEOUT), Outcome::Timeout);
/// assert_eq!(default_status_outcome(StatusCode::BAD_GATEWAY), Outcome::Error);
/// ```
#[must_use]
pub fn default_status_outcome(status: StatusCode) -> Outcome {
    if status.is_server_error() {
        Outcome::Error
    } else if status == StatusCode::REQUEST_TIMEOUT {
        Outcome::Timeout
    } else if status.is_client_error() {
        Outcome::Rejected
    } else {
        Outcome::Ok
    }
}

/// A tower [`Layer`] that records each HTTP request in a run.
///
/// # Examples
///
/// With axum, added per route so that requests are labelled by route template:
///
/// ```
/// use std::sync::Arc;
/// use axum::routing::get;
/// use axum::{Extension, Router};
/// use tailtriage_core::http_layer::TailtriageLayer;
/// use tailtriage_core::{DiscardSink, OwnedRequestHandle, Tailtriage};
///
/// async fn order(Extension(request): Extension<OwnedRequestHandle>) -> &'static str {
///     request
///         .stage("load_order")
///         .await_value(async { /* query the database */ })
///         .await;
///     "ok"
/// }
///
/// let run = Arc::new(Tailtriage::builder("orders").sink(DiscardSink).build().unwrap());
/// let app: Router = Router::new()
///     .route("/orders/{id}", get(order))
///     .layer(TailtriageLayer::new(run));
/// ```
#[derive(Clone)]
pub struct TailtriageLayer {
    run: Arc<Tailtriage>,
    classify: StatusClassifier,
}

impl TailtriageLayer {
    /// Returns a layer that records into `run` and classifies responses with
    /// [`default_status_outcome`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::Arc;
    /// use tailtriage_core::http_layer::TailtriageLayer;
    /// use tailtriage_core::{DiscardSink, Tailtriage};
    ///
    /// let run = Arc::new(Tailtriage::builder("orders").sink(DiscardSink).build().unwrap());
    /// let layer = TailtriageLayer::new(run);
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn new(run: Arc<Tailtriage>) -> Self {
        Self {
            run,
            classify: Arc::new(default_status_outcome),
        }
    }

    /// Replaces the mapping from response status to outcome.
    ///
    /// # Examples
    ///
    /// Count 429 answers as `rejected` and every other 4xx as `ok`:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use http::StatusCode;
    /// use tailtriage_core::http_layer::{default_status_outcome, TailtriageLayer};
    /// use tailtriage_core::{DiscardSink, Outcome, Tailtriage};
    ///
    /// let run = Arc::new(Tailtriage::builder("orders").sink(DiscardSink).build().unwrap());
    /// let layer = TailtriageLayer::new(run).classify_status(|status| match status {
    ///     StatusCode::TOO_MANY_REQUESTS => Outcome::Rejected,
    ///     status if status.is_client_error() => Outcome::Ok,
    ///     status => default_status_outcome(status),
    /// });
    /// # drop(layer);
    /// ```
    #[must_use]
    pub fn classify_status<F>(mut self, classify: F) -> Self
    where
        F: Fn(StatusCode) -> Outcome + Send + Sync + 'static,
    {
        self.classify = Arc::new(classify);
        self
    }
}

impl fmt::Debug for TailtriageLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailtriageLayer")
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for TailtriageLayer {
    type Service = TailtriageService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TailtriageService {
            inner,
            run: Arc::clone(&self.run),
            classify: Arc::clone(&self.classify),
        }
    }
}

/// The service made by [`TailtriageLayer`]: records each request, then calls the
/// wrapped service.
///
/// # Examples
///
/// Wrapping a plain tower service, without axum:
///
/// ```
/// use std::convert::Infallible;
/// use std::sync::Arc;
/// use http::{Request, Response};
/// use tailtriage_core::http_layer::TailtriageLayer;
/// use tailtriage_core::{MemorySink, Tailtriage};
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let sink = MemorySink::new();
/// let run = Arc::new(Tailtriage::builder("echo").sink(sink.clone()).build().unwrap());
/// let echo = tower::service_fn(|request: Request<String>| async move {
///     Ok::<_, Infallible>(Response::new(request.into_body()))
/// });
///
/// let service = TailtriageLayer::new(Arc::clone(&run)).layer(echo);
/// let request = Request::get("/echo?x=1").body(String::from("hi")).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.body(), "hi");
///
/// run.shutdown().unwrap();
/// let recorded = &sink.last_run().unwrap().requests[0];
/// assert_eq!((recorded.route.as_str(), recorded.outcome.as_str()), ("/echo", "ok"));
/// # }
/// ```
#[derive(Clone)]
pub struct TailtriageService<S> {
    inner: S,
    run: Arc<Tailtriage>,
    classify: StatusClassifier,
}

impl<S: fmt::Debug> fmt::Debug for TailtriageService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TailtriageService")
            .field("inner", &self.inner)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for TailtriageService<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let started = self.run.begin_request_with_owned(
            route_label(&request),
            RequestOptions::new().kind(HTTP_REQUEST_KIND),
        );
        request.extensions_mut().insert(started.handle);

        ResponseFuture {
            inner: self.inner.call(request),
            pending: PendingRequest(Some(started.completion)),
            classify: Arc::clone(&self.classify),
        }
    }
}

/// The label a request is recorded under: axum's matched route template when there
/// is one, else the URI path.
fn route_label<B>(request: &Request<B>) -> String {
    if let Some(matched) = request.extensions().get::<axum::extract::MatchedPath>() {
        return matched.as_str().to_owned();
    }

    request.uri().path().to_owned()
}

pin_project! {
    /// The response future of [`TailtriageService`]: resolves like the wrapped
    /// service's future and finishes the recorded request, whichever way it ends.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        pending: PendingRequest,
        classify: StatusClassifier,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("pending", &self.pending.0.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, ResBody, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));

        let outcome = match &result {
            Ok(response) => (this.classify)(response.status()),
            Err(_) => Outcome::Error,
        };
        this.pending.finish(outcome);
        Poll::Ready(result)
    }
}

/// The completion of a request whose response is not known yet.
///
/// Holding it in a field of its own, rather than in the future, means that every way
/// the future can end (ready, dropped, unwound by a panic) passes through exactly one
/// `finish` call.
struct PendingRequest(Option<OwnedRequestCompletion>);

impl PendingRequest {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(completion) = self.0.take() {
            completion.finish(outcome);
        }
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        // Still pending here means the future ended without a response: either the
        // handler panicked while being polled, or whoever awaited it gave up.
        let outcome = if std::thread::panicking() {
            Outcome::Error
        } else {
            Outcome::Cancelled
        };
        self.finish(outcome);
    }
}
