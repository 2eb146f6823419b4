//! Capture modes and the limits that bound each section of a run.

use serde::{Deserialize, Serialize};

/// How much a run captures by default.
///
/// Serialized in snake case: `"light"` or `"investigation"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMode {
    /// Lower limits, for runs left on in production.
    Light,
    /// Three times the light limits, for a focused investigation.
    Investigation,
}

impl CaptureMode {
    /// The section limits this mode uses unless the builder overrides them.
    ///
    /// ```
    /// use tailtriage_core::CaptureMode;
    ///
    /// assert_eq!(CaptureMode::Light.core_defaults().max_requests, 100_000);
    /// assert_eq!(CaptureMode::Investigation.core_defaults().max_stages, 600_000);
    /// ```
    #[must_use]
    pub const fn core_defaults(self) -> CaptureLimits {
        match self {
            Self::Light => CaptureLimits {
                max_requests: 100_000,
                max_stages: 200_000,
                max_queues: 200_000,
                max_inflight_snapshots: 200_000,
                max_runtime_snapshots: 100_000,
            },
            Self::Investigation => CaptureLimits {
                max_requests: 300_000,
                max_stages: 600_000,
                max_queues: 600_000,
                max_inflight_snapshots: 600_000,
                max_runtime_snapshots: 300_000,
            },
        }
    }
}

/// The most events each section of a run retains; events past a limit are counted, not kept.
///
/// Every value is legal, `0` and `usize::MAX` included. Limits are ceilings, not reservations:
/// a run allocates memory as events arrive, never in proportion to a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureLimits {
    /// Completed requests retained.
    pub max_requests: usize,
    /// Stage events retained.
    pub max_stages: usize,
    /// Queue-wait events retained.
    pub max_queues: usize,
    /// In-flight gauge snapshots retained.
    pub max_inflight_snapshots: usize,
    /// Runtime snapshots retained.
    pub max_runtime_snapshots: usize,
}

impl Default for CaptureLimits {
    /// The [`CaptureMode::Light`] defaults.
    fn default() -> Self {
        CaptureMode::Light.core_defaults()
    }
}

/// Per-field replacements for the mode's default limits; `None` keeps the default.
///
/// ```
/// use tailtriage_core::{CaptureLimitsOverride, CaptureMode};
///
/// let limits = CaptureLimitsOverride { max_requests: Some(10), ..Default::default() }
///     .apply(CaptureMode::Light.core_defaults());
/// assert_eq!(limits.max_requests, 10);
/// assert_eq!(limits.max_stages, 200_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CaptureLimitsOverride {
    /// Replaces [`CaptureLimits::max_requests`] when set.
    pub max_requests: Option<usize>,
    /// Replaces [`CaptureLimits::max_stages`] when set.
    pub max_stages: Option<usize>,
    /// Replaces [`CaptureLimits::max_queues`] when set.
    pub max_queues: Option<usize>,
    /// Replaces [`CaptureLimits::max_inflight_snapshots`] when set.
    pub max_inflight_snapshots: Option<usize>,
    /// Replaces [`CaptureLimits::max_runtime_snapshots`] when set.
    pub max_runtime_snapshots: Option<usize>,
}

/// `preferred` when it is set, else `fallback` (usable in `const fn`).
const fn either<T: Copy>(preferred: Option<T>, fallback: T) -> T {
    match preferred {
        Some(value) => value,
        None => fallback,
    }
}

/// `preferred` when it is set, else `fallback` (usable in `const fn`).
const fn either_opt<T: Copy>(preferred: Option<T>, fallback: Option<T>) -> Option<T> {
    match preferred {
        Some(value) => Some(value),
        None => fallback,
    }
}

impl CaptureLimitsOverride {
    /// The limits of `base` with every `Some` field of `self` put in its place.
    #[must_use]
    pub const fn apply(self, base: CaptureLimits) -> CaptureLimits {
        CaptureLimits {
            max_requests: either(self.max_requests, base.max_requests),
            max_stages: either(self.max_stages, base.max_stages),
            max_queues: either(self.max_queues, base.max_queues),
            max_inflight_snapshots: either(
                self.max_inflight_snapshots,
                base.max_inflight_snapshots,
            ),
            max_runtime_snapshots: either(self.max_runtime_snapshots, base.max_runtime_snapshots),
        }
    }

    /// Merges a later override into this one: the later override wins field by field.
    pub(crate) const fn merge(self, later: Self) -> Self {
        Self {
            max_requests: either_opt(later.max_requests, self.max_requests),
            max_stages: either_opt(later.max_stages, self.max_stages),
            max_queues: either_opt(later.max_queues, self.max_queues),
            max_inflight_snapshots: either_opt(
                later.max_inflight_snapshots,
                self.max_inflight_snapshots,
            ),
            max_runtime_snapshots: either_opt(
                later.max_runtime_snapshots,
                self.max_runtime_snapshots,
            ),
        }
    }
}

/// The configuration a run actually records with, written into the artifact's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveCoreConfig {
    /// The selected capture mode.
    pub mode: CaptureMode,
    /// The limits after overrides were applied.
    pub capture_limits: CaptureLimits,
    /// Whether `shutdown()` refuses to write a run with unfinished requests.
    pub strict_lifecycle: bool,
}

/// Why [`TailtriageBuilder::build`](crate::TailtriageBuilder::build) refused to build a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildError {
    /// The service name was empty or only white space; give the service a name.
    EmptyServiceName,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EmptyServiceName => {
                f.write_str("service name is empty: pass a non-blank name to Tailtriage::builder")
            }
        }
    }
}

impl std::error::Error for BuildError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_overrides_win_field_by_field() {
        let first = CaptureLimitsOverride {
            max_requests: Some(1),
            max_stages: Some(2),
            ..CaptureLimitsOverride::default()
        };
        let second = CaptureLimitsOverride {
            max_stages: Some(20),
            max_queues: Some(30),
            ..CaptureLimitsOverride::default()
        };
        let merged = first
            .merge(second)
            .apply(CaptureMode::Light.core_defaults());
        assert_eq!(merged.max_requests, 1);
        assert_eq!(merged.max_stages, 20);
        assert_eq!(merged.max_queues, 30);
        assert_eq!(merged.max_inflight_snapshots, 200_000);
    }
}
