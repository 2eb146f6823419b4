//! Helpers shared by the integration tests; each test binary uses a subset.
#![allow(dead_code)]

use tailtriage_core::{CaptureLimits, RuntimeSnapshot};

/// Rounds of a stress test: `base` multiplied by `TAILTRIAGE_STRESS_SCALE` (default 1).
pub fn rounds(base: usize) -> usize {
    let scale = std::env::var("TAILTRIAGE_STRESS_SCALE")
        .ok()
        .and_then(|scale| scale.parse().ok())
        .unwrap_or(1_usize);
    base * scale.max(1)
}

/// A runtime snapshot taken at `at_unix_ms`, with no metric available.
pub fn runtime_snapshot(at_unix_ms: u64) -> RuntimeSnapshot {
    RuntimeSnapshot {
        at_unix_ms,
        alive_tasks: None,
        global_queue_depth: None,
        local_queue_depth: None,
        blocking_queue_depth: None,
        remote_schedule_count: None,
    }
}

/// The same `limit` for every section.
pub fn uniform_limits(limit: usize) -> CaptureLimits {
    CaptureLimits {
        max_requests: limit,
        max_stages: limit,
        max_queues: limit,
        max_inflight_snapshots: limit,
        max_runtime_snapshots: limit,
    }
}

/// Bytes live on the heap by `stats`, the counters of a `stats_alloc` global allocator.
///
/// `stats_alloc` adds a reallocation's growth to `bytes_allocated` and its shrinkage to
/// `bytes_deallocated`, and records the same net change again in `bytes_reallocated`; the live
/// heap is therefore allocated minus deallocated, without the reallocation total.
pub fn live_heap_bytes(stats: &stats_alloc::Stats) -> isize {
    let allocated = isize::try_from(stats.bytes_allocated).expect("fits");
    allocated - isize::try_from(stats.bytes_deallocated).expect("fits")
}
