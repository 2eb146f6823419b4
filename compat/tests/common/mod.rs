//! Helpers shared by the drop-in tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use tailtriage::Run;

/// Upper bound for anything a test waits for; generous so a loaded machine passes.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Loads an artifact the way `tailtriage analyze` does, failing the test on any
/// loader warning: every flow here finishes all of its requests.
pub fn load_artifact(path: &Path) -> Run {
    let loaded = tailtriage_cli::artifact::load_run_artifact(path)
        .unwrap_or_else(|error| panic!("the CLI loader should accept {}: {error}", path.display()));
    assert!(
        loaded.warnings.is_empty(),
        "the artifact should load without warnings: {:?}",
        loaded.warnings
    );
    loaded.run
}

/// Waits, yielding to the runtime, until `condition` holds or `PATIENCE` runs out.
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
