//! A checkout service under load, recorded with tailtriage and triaged by the published
//! analyzer.
//!
//! The example starts three things in one process, all on loopback:
//!
//! - a payment provider (plain axum, not recorded) that answers after a delay;
//! - the checkout service (axum, recorded through [`TailtriageLayer`]), whose handlers
//!   wait for a connection from a bounded database pool (a queue, with its depth),
//!   query the database and call the payment provider (stages), price the cart on the
//!   CPU (a stage), and count checkouts in flight (a gauge), while a
//!   [`RuntimeSampler`] records the service runtime's metrics;
//! - a load generator that sends real HTTP requests at a fixed concurrency.
//!
//! When the load is done the run is written as a JSON artifact, and the example
//! prints throughput, latency percentiles per route and the verdict of the published
//! `tailtriage-analyzer` 0.2.0 on that artifact (the same verdict that
//! `tailtriage analyze <artifact>` gives).
//!
//! ```text
//! cargo run --release --example checkout_service --features tokio,tower
//! cargo run --release --example checkout_service --features tokio,tower -- \
//!     --scenario downstream-bound --requests 2000 --concurrency 32 --output run.json
//! ```

use std::error::Error;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Router};
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tailtriage_core::http_layer::TailtriageLayer;
use tailtriage_core::runtime_sampler::RuntimeSampler;
use tailtriage_core::{OwnedRequestHandle, Run, Tailtriage};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Semaphore};

type HttpClient = Client<HttpConnector, Full<Bytes>>;
type BoxError = Box<dyn Error + Send + Sync>;

/// Drive an instrumented checkout service with HTTP load and triage the recording.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Requests to send in total.
    #[arg(long, default_value_t = 6_000, value_parser = clap::value_parser!(u64).range(1..))]
    requests: u64,

    /// Requests in flight at any time.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=4_096))]
    concurrency: u64,

    /// Where to write the run artifact.
    #[arg(long, default_value = "tailtriage-run.json")]
    output: PathBuf,

    /// Which bottleneck the service has.
    #[arg(long, value_enum, default_value_t = Scenario::QueueBound)]
    scenario: Scenario,

    /// Also write the analyzer's report as JSON to this path (the same document as
    /// `tailtriage analyze --format json` prints).
    #[arg(long)]
    report: Option<PathBuf>,
}

/// Where the service spends its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// Few database connections for the load: requests wait for the pool.
    QueueBound,
    /// A slow payment provider with a heavy tail: requests wait for it.
    DownstreamBound,
}

impl Scenario {
    fn profile(self) -> Profile {
        match self {
            Self::QueueBound => Profile {
                db_connections: 4,
                db_query_ms: 4..=8,
                payment_ms: 2..=5,
                payment_slow_ms: 10..=20,
                payment_slow_percent: 1,
                payment_failure_percent: 1,
                pricing_rounds: 20_000,
            },
            Self::DownstreamBound => Profile {
                db_connections: 4_096,
                db_query_ms: 1..=3,
                payment_ms: 15..=40,
                payment_slow_ms: 120..=200,
                payment_slow_percent: 5,
                payment_failure_percent: 1,
                pricing_rounds: 20_000,
            },
        }
    }

    const fn name(self) -> &'static str {
        match self {
            Self::QueueBound => "queue-bound",
            Self::DownstreamBound => "downstream-bound",
        }
    }
}

/// The service's resources and the payment provider's behaviour in one scenario.
#[derive(Debug, Clone)]
struct Profile {
    /// Connections in the database pool.
    db_connections: usize,
    /// How long one database query holds its connection.
    db_query_ms: std::ops::RangeInclusive<u64>,
    /// How long the payment provider usually takes.
    payment_ms: std::ops::RangeInclusive<u64>,
    /// How long it takes when it is slow.
    payment_slow_ms: std::ops::RangeInclusive<u64>,
    /// How often it is slow.
    payment_slow_percent: u8,
    /// How often it declines with a 502.
    payment_failure_percent: u8,
    /// Work done by the CPU-bound pricing step.
    pricing_rounds: u32,
}

fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let profile = args.scenario.profile();

    // The service gets a runtime of its own, so the sampled runtime metrics describe
    // the service alone and not the load generator or the payment provider.
    let service_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("checkout-service")
        .enable_all()
        .build()?;
    let outside_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load-and-payments")
        .enable_all()
        .build()?;

    let run = Arc::new(
        Tailtriage::builder("checkout-service")
            .service_version(env!("CARGO_PKG_VERSION"))
            .output(&args.output)
            .build()?,
    );
    let sampler = RuntimeSampler::builder(Arc::clone(&run))
        .runtime_handle(service_runtime.handle().clone())
        .interval(Duration::from_millis(50))
        .start()?;

    let payments = outside_runtime.block_on(start_payment_provider(profile.clone()))?;
    let service = service_runtime.block_on(start_service(Arc::clone(&run), profile, payments))?;

    eprintln!(
        "checkout service on http://{} ({} scenario): sending {} requests, {} at a time",
        service.addr,
        args.scenario.name(),
        args.requests,
        args.concurrency
    );
    let load =
        outside_runtime.block_on(generate_load(service.addr, args.requests, args.concurrency));

    service_runtime.block_on(service.stop());
    service_runtime.block_on(sampler.shutdown());
    run.shutdown()?;
    drop(outside_runtime);
    drop(service_runtime);

    // Read the artifact back from disk: the report describes exactly what the file
    // holds, which is what `tailtriage analyze` reads as well.
    let artifact: Run = serde_json::from_slice(&std::fs::read(&args.output)?)?;
    let verdict = analyze(&artifact, args.report.as_deref())?;
    print!("{}", render_report(&args, &load, &artifact, &verdict));
    Ok(())
}

// ---------------------------------------------------------------------------------
// The payment provider: an outside dependency, not recorded.

async fn start_payment_provider(profile: Profile) -> Result<SocketAddr, BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/charge", post(charge))
        .with_state(Arc::new(profile));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

async fn charge(State(profile): State<Arc<Profile>>) -> StatusCode {
    let latency = if fastrand::u8(0..100) < profile.payment_slow_percent {
        fastrand::u64(profile.payment_slow_ms.clone())
    } else {
        fastrand::u64(profile.payment_ms.clone())
    };
    tokio::time::sleep(Duration::from_millis(latency)).await;

    if fastrand::u8(0..100) < profile.payment_failure_percent {
        StatusCode::BAD_GATEWAY
    } else {
        StatusCode::OK
    }
}

// ---------------------------------------------------------------------------------
// The checkout service.

/// Shared state of the checkout service's handlers.
#[derive(Clone)]
struct Checkout {
    db: Arc<DbPool>,
    payments: HttpClient,
    charge_uri: Arc<str>,
    profile: Arc<Profile>,
}

/// A database connection pool: a semaphore with one permit per connection.
struct DbPool {
    connections: Semaphore,
    /// Requests waiting for a connection right now.
    waiting: AtomicU64,
}

/// Counts one waiter for as long as it lives, even if the wait is abandoned.
struct Waiter<'a>(&'a AtomicU64);

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl DbPool {
    /// Waits for a connection (recorded as the `db_pool` queue, with the number of
    /// requests already waiting), then holds it for one query (the `db_query` stage).
    async fn query(&self, request: &OwnedRequestHandle, duration: Duration) {
        let ahead = self.waiting.fetch_add(1, Ordering::Relaxed);
        let waiter = Waiter(&self.waiting);
        let connection = request
            .queue("db_pool")
            .with_depth_at_start(ahead)
            .await_on(self.connections.acquire())
            .await
            .expect("the pool is never closed");
        drop(waiter);

        request
            .stage("db_query")
            .await_value(tokio::time::sleep(duration))
            .await;
        drop(connection);
    }
}

/// A running checkout service and the means to stop it.
struct Service {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Service {
    /// Stops accepting connections and waits for open ones to finish.
    async fn stop(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("checkout service stopped with an error: {error}"),
            Err(error) => eprintln!("checkout service task failed: {error}"),
        }
    }
}

async fn start_service(
    run: Arc<Tailtriage>,
    profile: Profile,
    payments: SocketAddr,
) -> Result<Service, BoxError> {
    let state = Checkout {
        db: Arc::new(DbPool {
            connections: Semaphore::new(profile.db_connections),
            waiting: AtomicU64::new(0),
        }),
        payments: Client::builder(TokioExecutor::new()).build_http(),
        charge_uri: format!("http://{payments}/charge").into(),
        profile: Arc::new(profile),
    };
    let app = Router::new()
        .route("/checkout", post(checkout))
        .route("/inventory/{sku}", get(inventory))
        .layer(TailtriageLayer::new(run))
        .with_state(state);

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Service { addr, stop, task })
}

/// `POST /checkout`: load the cart, price it, charge the card.
async fn checkout(
    State(app): State<Checkout>,
    Extension(request): Extension<OwnedRequestHandle>,
    cart: String,
) -> Result<String, StatusCode> {
    let _in_flight = request.inflight("checkout_inflight");

    app.db.query(&request, app.profile.random_db_query()).await;

    let rounds = app.profile.pricing_rounds;
    let total_cents = request
        .stage("price_cart")
        .await_value(async { price_cart(&cart, rounds) })
        .await;

    let charge = Request::post(&*app.charge_uri)
        .body(Full::new(Bytes::from(cart)))
        .map_err(|_| StatusCode::INTERNAL_SERVER_ERROR)?;
    let payment = request
        .stage("payment_gateway")
        .await_on(async {
            let response = app
                .payments
                .request(charge)
                .await
                .map_err(|_| "unreachable")?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err("declined")
            }
        })
        .await;

    match payment {
        Ok(()) => Ok(format!("charged {total_cents} cents\n")),
        Err(_) => Err(StatusCode::BAD_GATEWAY),
    }
}

/// `GET /inventory/{sku}`: one database read.
async fn inventory(
    State(app): State<Checkout>,
    Extension(request): Extension<OwnedRequestHandle>,
    Path(sku): Path<String>,
) -> String {
    app.db.query(&request, app.profile.random_db_query()).await;
    format!("{sku}: in stock\n")
}

impl Profile {
    fn random_db_query(&self) -> Duration {
        Duration::from_millis(fastrand::u64(self.db_query_ms.clone()))
    }
}

/// A deliberately CPU-bound price computation: `rounds` rounds of integer mixing.
fn price_cart(cart: &str, rounds: u32) -> u64 {
    let mut price = cart.bytes().fold(0x9E37_79B9_7F4A_7C15_u64, |acc, byte| {
        (acc ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
    });
    for round in 0..rounds {
        price = std::hint::black_box(price.rotate_left(7) ^ u64::from(round)).wrapping_mul(31);
    }
    1_000 + price % 9_000
}

// ---------------------------------------------------------------------------------
// The load generator.

/// What the load generator saw.
struct Load {
    sent: u64,
    failed: u64,
    elapsed: Duration,
}

/// Sends `total` requests to the service, `concurrency` at a time, and reports
/// progress on stderr about once a second.
async fn generate_load(service: SocketAddr, total: u64, concurrency: u64) -> Load {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(usize::try_from(concurrency).unwrap_or(usize::MAX))
        .build_http();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();

    let progress = tokio::spawn(report_progress(Arc::clone(&done), total, started));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, next, done, failed) = (
            client.clone(),
            Arc::clone(&next),
            Arc::clone(&done),
            Arc::clone(&failed),
        );
        workers.spawn(async move {
            // Each worker claims request numbers until all `total` are taken.
            while next.fetch_add(1, Ordering::Relaxed) < total {
                if send_one(&client, service).await.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    while workers.join_next().await.is_some() {}
    progress.abort();

    let elapsed = started.elapsed();
    eprintln!(
        "[{:>5.1}s] {total}/{total} requests done",
        elapsed.as_secs_f64()
    );
    Load {
        sent: total,
        failed: failed.load(Ordering::Relaxed),
        elapsed,
    }
}

/// One request of the mix: three checkouts for every inventory lookup.
async fn send_one(client: &HttpClient, service: SocketAddr) -> Result<StatusCode, BoxError> {
    let sku = fastrand::u32(1..=500);
    let request = if fastrand::u8(0..4) == 0 {
        Request::get(format!("http://{service}/inventory/sku-{sku}")).body(Full::default())?
    } else {
        let cart = format!("sku=sku-{sku}&quantity={}", fastrand::u8(1..=5));
        Request::post(format!("http://{service}/checkout")).body(Full::new(Bytes::from(cart)))?
    };

    let response = client.request(request).await?;
    let status = response.status();
    // Read the body so the connection can go back to the pool.
    http_body_util::BodyExt::collect(response.into_body()).await?;
    Ok(status)
}

async fn report_progress(done: Arc<AtomicU64>, total: u64, started: Instant) {
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let done = done.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        eprintln!(
            "[{elapsed:>5.1}s] {done}/{total} requests done ({:.0}%), {:.0} req/s",
            percent(done, total),
            as_f64(done) / elapsed
        );
    }
}

// ---------------------------------------------------------------------------------
// Triage and the report.

/// The published analyzer's verdict on the artifact.
struct Verdict {
    kind: &'static str,
    confidence: String,
    score: u8,
    evidence: Vec<String>,
    next_checks: Vec<String>,
    runners_up: Vec<(&'static str, u8)>,
}

/// Runs the published analyzer on `artifact`, optionally writing its report as JSON.
///
/// The analyzer is built against the published `tailtriage-core` 0.2.0, whose `Run`
/// is a different type from ours with the same JSON form; the artifact crosses over
/// as JSON, the same way `tailtriage analyze` reads it from disk.
fn analyze(artifact: &Run, report_path: Option<&std::path::Path>) -> Result<Verdict, BoxError> {
    let theirs: published::Run = serde_json::from_str(&serde_json::to_string(artifact)?)?;
    let report =
        tailtriage_analyzer::analyze_run(&theirs, tailtriage_analyzer::AnalyzeOptions::default());

    if let Some(path) = report_path {
        let mut json = tailtriage_analyzer::render_json_pretty(&report)?;
        json.push('\n');
        std::fs::write(path, json)?;
    }

    let primary = &report.primary_suspect;
    Ok(Verdict {
        kind: primary.kind.as_str(),
        confidence: serde_json::to_value(primary.confidence)?
            .as_str()
            .unwrap_or("unknown")
            .to_owned(),
        score: primary.score,
        evidence: primary.evidence.clone(),
        next_checks: primary.next_checks.clone(),
        runners_up: report
            .secondary_suspects
            .iter()
            .map(|suspect| (suspect.kind.as_str(), suspect.score))
            .collect(),
    })
}

/// Latency summary of one route, from the recorded requests.
struct RouteSummary {
    route: String,
    requests: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

/// Largest latency the summary tells apart; longer ones are counted as an hour.
const HOUR_US: u64 = 3_600_000_000;

fn summarize_routes(artifact: &Run) -> Vec<RouteSummary> {
    let mut routes: Vec<RouteSummary> = Vec::new();
    for request in &artifact.requests {
        let index = if let Some(index) = routes.iter().position(|r| r.route == request.route) {
            index
        } else {
            routes.push(RouteSummary {
                route: request.route.clone(),
                requests: 0,
                errors: 0,
                latency_us: Histogram::new_with_bounds(1, HOUR_US, 3)
                    .expect("1 us to an hour at 3 significant figures is a valid range"),
            });
            routes.len() - 1
        };
        let summary = &mut routes[index];
        summary.requests += 1;
        summary.errors += u64::from(request.outcome != "ok");
        summary.latency_us.saturating_record(request.latency_us);
    }
    routes.sort_by(|a, b| a.route.cmp(&b.route));
    routes
}

fn render_report(args: &Args, load: &Load, artifact: &Run, verdict: &Verdict) -> String {
    let mut out = String::new();
    let seconds = load.elapsed.as_secs_f64();
    let _ = writeln!(
        out,
        "\ncheckout service, {} scenario: {} requests at concurrency {}",
        args.scenario.name(),
        load.sent,
        args.concurrency
    );
    let _ = writeln!(
        out,
        "  {} requests in {seconds:.1} s = {:.0} req/s; {} failed at the client",
        load.sent,
        as_f64(load.sent) / seconds,
        load.failed
    );
    let _ = writeln!(
        out,
        "  artifact {}: {} requests, {} queue waits, {} stages, {} in-flight samples, \
         {} runtime snapshots",
        args.output.display(),
        artifact.requests.len(),
        artifact.queues.len(),
        artifact.stages.len(),
        artifact.inflight.len(),
        artifact.runtime_snapshots.len()
    );

    let _ = writeln!(
        out,
        "\n  {:<18} {:>8} {:>7} {:>9} {:>9} {:>9}",
        "route", "requests", "not ok", "p50 ms", "p95 ms", "p99 ms"
    );
    for route in summarize_routes(artifact) {
        let ms = |quantile| as_f64(route.latency_us.value_at_quantile(quantile)) / 1_000.0;
        let _ = writeln!(
            out,
            "  {:<18} {:>8} {:>7} {:>9.1} {:>9.1} {:>9.1}",
            route.route,
            route.requests,
            route.errors,
            ms(0.50),
            ms(0.95),
            ms(0.99)
        );
    }

    let _ = writeln!(
        out,
        "\n  verdict of tailtriage-analyzer 0.2.0: {} ({} confidence, score {})",
        verdict.kind, verdict.confidence, verdict.score
    );
    for line in &verdict.evidence {
        let _ = writeln!(out, "    evidence: {line}");
    }
    if let Some(check) = verdict.next_checks.first() {
        let _ = writeln!(out, "    next check: {check}");
    }
    for (kind, score) in &verdict.runners_up {
        let _ = writeln!(out, "    also considered: {kind} (score {score})");
    }
    let _ = writeln!(
        out,
        "\n  to check it with the published CLI: tailtriage analyze {}",
        args.output.display()
    );
    out
}

fn percent(part: u64, whole: u64) -> f64 {
    100.0 * as_f64(part) / as_f64(whole.max(1))
}

/// Converts a count to `f64` for display; precision loss past 2^53 does not matter
/// for a printed figure.
#[allow(clippy::cast_precision_loss)]
const fn as_f64(value: u64) -> f64 {
    value as f64
}
