//! Configuring a run before it starts.

use crate::recorder::Parts;
use crate::sink::Destination;
use crate::{
    BuildError, CaptureLimits, CaptureLimitsOverride, CaptureMode, EffectiveCoreConfig,
    LocalJsonSink, RunSink, Tailtriage,
};
use std::path::Path;

/// Configures a [`Tailtriage`] run; created by [`Tailtriage::builder`].
///
/// Defaults: [`CaptureMode::Light`], a [`LocalJsonSink`] writing `tailtriage-run.json`, no
/// limit override, strict lifecycle off.
///
/// ```
/// use tailtriage_core::{CaptureLimitsOverride, CaptureMode, MemorySink, Tailtriage};
///
/// let tailtriage = Tailtriage::builder("checkout")
///     .investigation()
///     .service_version("1.4.2")
///     .run_id("incident-812")
///     .sink(MemorySink::new())
///     .capture_limits_override(CaptureLimitsOverride {
///         max_requests: Some(50_000),
///         ..Default::default()
///     })
///     .strict_lifecycle(true)
///     .build()?;
/// let config = tailtriage.effective_core_config();
/// assert_eq!(config.mode, CaptureMode::Investigation);
/// assert_eq!(config.capture_limits.max_requests, 50_000);
/// assert_eq!(config.capture_limits.max_stages, 600_000);
/// assert!(config.strict_lifecycle);
/// # Ok::<(), tailtriage_core::BuildError>(())
/// ```
#[derive(Clone)]
pub struct TailtriageBuilder {
    service_name: String,
    service_version: Option<String>,
    run_id: Option<String>,
    mode: CaptureMode,
    sink: Destination,
    capture_limits: Option<CaptureLimits>,
    capture_limits_override: CaptureLimitsOverride,
    strict_lifecycle: bool,
}

impl std::fmt::Debug for TailtriageBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TailtriageBuilder")
            .field("service_name", &self.service_name)
            .field("service_version", &self.service_version)
            .field("run_id", &self.run_id)
            .field("mode", &self.mode)
            .field("capture_limits", &self.capture_limits)
            .field("capture_limits_override", &self.capture_limits_override)
            .field("strict_lifecycle", &self.strict_lifecycle)
            .finish_non_exhaustive()
    }
}

impl TailtriageBuilder {
    pub(crate) fn new(service_name: String) -> Self {
        Self {
            service_name,
            service_version: None,
            run_id: None,
            mode: CaptureMode::Light,
            sink: Destination::Json(LocalJsonSink::new("tailtriage-run.json")),
            capture_limits: None,
            capture_limits_override: CaptureLimitsOverride::default(),
            strict_lifecycle: false,
        }
    }

    /// Uses [`CaptureMode::Light`] (the default).
    #[must_use]
    pub fn light(mut self) -> Self {
        self.mode = CaptureMode::Light;
        self
    }

    /// Uses [`CaptureMode::Investigation`].
    #[must_use]
    pub fn investigation(mut self) -> Self {
        self.mode = CaptureMode::Investigation;
        self
    }

    /// Writes the run as JSON to `output_path` at shutdown (a [`LocalJsonSink`]).
    #[must_use]
    pub fn output(mut self, output_path: impl AsRef<Path>) -> Self {
        self.sink = Destination::Json(LocalJsonSink::new(output_path));
        self
    }

    /// Writes the run to `sink` at shutdown.
    #[must_use]
    pub fn sink<S>(mut self, sink: S) -> Self
    where
        S: RunSink + Send + Sync + 'static,
    {
        self.sink = Destination::of(sink);
        self
    }

    /// Records the service's version.
    #[must_use]
    pub fn service_version(mut self, service_version: impl Into<String>) -> Self {
        self.service_version = Some(service_version.into());
        self
    }

    /// Uses the given run id instead of a generated `run-<uuid>`.
    #[must_use]
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// Replaces the mode's limits entirely; wins over any override.
    #[must_use]
    pub fn capture_limits(mut self, limits: CaptureLimits) -> Self {
        self.capture_limits = Some(limits);
        self
    }

    /// Replaces the set fields of the mode's limits; later calls win field by field.
    #[must_use]
    pub fn capture_limits_override(mut self, overrides: CaptureLimitsOverride) -> Self {
        self.capture_limits_override = self.capture_limits_override.merge(overrides);
        self
    }

    /// With `true`, `shutdown()` refuses to write a run that has unfinished requests.
    #[must_use]
    pub fn strict_lifecycle(mut self, strict_lifecycle: bool) -> Self {
        self.strict_lifecycle = strict_lifecycle;
        self
    }

    /// Builds the run. Allocates little whatever the limits: memory grows with retained events.
    ///
    /// # Errors
    ///
    /// [`BuildError::EmptyServiceName`] when the service name is blank.
    pub fn build(self) -> Result<Tailtriage, BuildError> {
        let capture_limits = self.capture_limits.unwrap_or_else(|| {
            self.capture_limits_override
                .apply(self.mode.core_defaults())
        });
        Tailtriage::from_parts(Parts {
            service_name: self.service_name,
            service_version: self.service_version,
            run_id: self.run_id,
            config: EffectiveCoreConfig {
                mode: self.mode,
                capture_limits,
                strict_lifecycle: self.strict_lifecycle,
            },
            sink: self.sink,
        })
    }
}
