//! What every model shares: the exploration settings and a recorder to drive.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tailtriage_core::{CaptureLimits, MemorySink, Run, RuntimeSnapshot, Tailtriage};

/// Preemptions explored per execution when `LOOM_MAX_PREEMPTIONS` is not set.
///
/// A lost update needs one preemption and a race through three steps two; three keeps a margin
/// and the whole suite within seconds. Set `LOOM_MAX_PREEMPTIONS` to explore deeper, or
/// [`UNBOUNDED_VARIABLE`] to explore every interleaving.
pub const DEFAULT_PREEMPTIONS: usize = 3;

/// The environment variable that lifts the preemption bound altogether when set to `1`
/// (loom's own `LOOM_MAX_PREEMPTIONS` only takes a number).
pub const UNBOUNDED_VARIABLE: &str = "TAILTRIAGE_LOOM_UNBOUNDED";

/// Thread switches allowed in one execution when `LOOM_MAX_BRANCHES` is not set; a shutdown
/// touches every shard of every section, more than loom's default allows.
pub const DEFAULT_MAX_BRANCHES: usize = 20_000;

/// Explores every interleaving of `scenario` within the preemption bound, and reports how many
/// executions the model `name` took.
///
/// # Panics
///
/// When an execution of `scenario` panics: a property of the protocol does not hold.
pub fn model<F>(name: &str, scenario: F)
where
    F: Fn() + Sync + Send + 'static,
{
    let mut builder = loom::model::Builder::new();
    if std::env::var(UNBOUNDED_VARIABLE).is_ok_and(|value| value == "1") {
        builder.preemption_bound = None;
    } else if std::env::var_os("LOOM_MAX_PREEMPTIONS").is_none() {
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = DEFAULT_MAX_BRANCHES;
    }

    let executions = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&executions);
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        scenario();
    });
    let bound = builder
        .preemption_bound
        .map_or_else(|| "none".to_owned(), |bound| bound.to_string());
    println!(
        "{name}: {} executions, preemption bound {bound}",
        executions.load(Ordering::Relaxed),
    );
}

/// A recorder with the given limits writing to a memory sink, shareable with model threads.
///
/// # Panics
///
/// Never: the service name is not blank.
#[must_use]
pub fn recorder(limits: CaptureLimits) -> (Arc<Tailtriage>, MemorySink) {
    let sink = MemorySink::new();
    let tailtriage = Tailtriage::builder("model")
        .run_id("model-run")
        .sink(sink.clone())
        .capture_limits(limits)
        .build()
        .expect("a recorder with a service name builds");
    (Arc::new(tailtriage), sink)
}

/// Limits that hold every event a model records, with `runtime_snapshots` for that section.
#[must_use]
pub fn runtime_snapshot_limit(runtime_snapshots: usize) -> CaptureLimits {
    CaptureLimits {
        max_runtime_snapshots: runtime_snapshots,
        ..CaptureLimits::default()
    }
}

/// A runtime snapshot that models use as a plain event, told apart by `tag`.
#[must_use]
pub fn event(tag: u64) -> RuntimeSnapshot {
    RuntimeSnapshot {
        at_unix_ms: 0,
        alive_tasks: Some(tag),
        global_queue_depth: None,
        local_queue_depth: None,
        blocking_queue_depth: None,
        remote_schedule_count: None,
    }
}

/// The tags of the plain events a run holds, in the run's order.
///
/// # Panics
///
/// When the run holds a runtime snapshot without a tag, which no model records.
#[must_use]
pub fn tags(run: &Run) -> Vec<u64> {
    run.runtime_snapshots
        .iter()
        .map(|snapshot| snapshot.alive_tasks.expect("models tag every event"))
        .collect()
}

/// How many times `tag` appears in `tags`.
#[must_use]
pub fn occurrences(tags: &[u64], tag: u64) -> usize {
    tags.iter().filter(|t| **t == tag).count()
}
