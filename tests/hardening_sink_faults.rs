//! Sink faults: a destination that cannot be written, whatever the reason, returns a
//! `SinkError` naming the destination and the cause, leaves no temporary file behind, leaves an
//! existing artifact as it was, and leaves the run usable so that the caller can retry with
//! another destination through `shutdown_to` and still get every event.
//!
//! The full-disk case mounts a small tmpfs when the process may mount (it is skipped with a
//! message otherwise); the write-fails-midway case is portable: a child process of this test
//! binary runs with a small `RLIMIT_FSIZE`, so the artifact's write fails after its first
//! kilobytes.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use tailtriage_core::{
    CaptureLimitsOverride, LocalJsonSink, MemorySink, Run, RunSink, SinkError, Tailtriage,
};

/// Requests, stages and queue waits recorded by [`record_traffic`] per call.
const TRAFFIC: usize = 1_500;

/// A run whose configured sink writes JSON to `path`.
fn run_writing_to(path: &Path) -> Tailtriage {
    Tailtriage::builder("checkout")
        .output(path)
        .capture_limits_override(CaptureLimitsOverride {
            max_requests: Some(1_000_000),
            ..CaptureLimitsOverride::default()
        })
        .build()
        .expect("a named service builds")
}

/// Records `TRAFFIC` requests, each with one queue wait and one stage, with ids that start with
/// `label` (large enough that its artifact is hundreds of kilobytes).
fn record_traffic(tailtriage: &Tailtriage, label: &str) {
    for i in 0..TRAFFIC {
        let started = tailtriage.begin_request_with(
            "/checkout",
            tailtriage_core::RequestOptions::new().request_id(format!("{label}-{i}")),
        );
        futures_executor::block_on(async {
            started.handle.queue("db_pool").await_on(async {}).await;
            started.handle.stage("query").await_value(async {}).await;
        });
        started.completion.finish_ok();
    }
}

/// The temporary files a `LocalJsonSink` writing `destination` would leave in its folder.
fn temporary_files_for(destination: &Path) -> Vec<String> {
    let folder = destination.parent().expect("destination has a folder");
    let prefix = format!(
        ".{}.",
        destination
            .file_name()
            .expect("destination has a name")
            .to_string_lossy()
    );
    let Ok(entries) = fs::read_dir(folder) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| {
            name.starts_with(&prefix) && Path::new(name).extension().is_some_and(|ext| ext == "tmp")
        })
        .collect()
}

/// The innermost cause of an error: the operating system's own message.
fn root_cause(error: &dyn std::error::Error) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}

/// Checks what every failed write must guarantee about its error: the kind of the cause is
/// kept, and the message names the destination and states the cause (`cause`, the operating
/// system's words, and the innermost source's message).
fn assert_names_destination_and_cause(
    error: &SinkError,
    destination: &Path,
    kind: ErrorKind,
    cause: &str,
) {
    let SinkError::Io(io) = error else {
        panic!("a file system failure should be an I/O sink error, got {error:?}");
    };
    assert_eq!(io.kind(), kind, "the error should keep the cause's kind");

    let message = error.to_string();
    assert!(
        message.contains(&destination.display().to_string()),
        "the message should name the destination {}: {message}",
        destination.display()
    );
    assert!(
        message.contains(cause),
        "the message should state the cause ({cause}): {message}"
    );
    let root = root_cause(error);
    assert!(
        message.contains(&root),
        "the message should include the innermost cause ({root}): {message}"
    );
    assert_ne!(
        root, message,
        "the I/O error should be reachable as a source"
    );
}

/// Checks that a retry to another sink gets every event recorded so far.
fn assert_retry_elsewhere_gets_everything(tailtriage: &Tailtriage, requests: usize) {
    let fallback = MemorySink::new();
    tailtriage
        .shutdown_to(&fallback)
        .expect("a retry to a working sink should succeed");
    let run = fallback.last_run().expect("the retry wrote the run");
    assert_eq!(
        run.requests.len(),
        requests,
        "every request is in the retry"
    );
    assert_eq!(run.stages.len(), requests, "every stage is in the retry");
    assert_eq!(
        run.queues.len(),
        requests,
        "every queue wait is in the retry"
    );
    assert!(!run.truncation.is_truncated(), "nothing was dropped");
}

#[test]
fn a_missing_destination_folder_fails_naming_the_destination_and_the_run_can_be_retried() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let destination = folder.path().join("missing").join("run.json");
    let tailtriage = run_writing_to(&destination);
    record_traffic(&tailtriage, "a");

    let error = tailtriage
        .shutdown()
        .expect_err("the folder does not exist");
    assert_names_destination_and_cause(
        &error,
        &destination,
        ErrorKind::NotFound,
        "No such file or directory",
    );
    assert!(!destination.exists(), "nothing was created");

    // The caller can retry to a JSON file elsewhere and to memory; both get every event.
    let retry = folder.path().join("run.json");
    tailtriage
        .shutdown_to(&LocalJsonSink::new(&retry))
        .expect("a retry to a writable folder should succeed");
    let written: Run = serde_json::from_slice(&fs::read(&retry).expect("the retry wrote"))
        .expect("the retried artifact loads");
    assert_eq!(written.requests.len(), TRAFFIC);
    assert!(temporary_files_for(&retry).is_empty());
    assert_retry_elsewhere_gets_everything(&tailtriage, TRAFFIC);
}

#[test]
fn a_destination_that_is_a_folder_fails_and_leaves_the_folder_and_no_temporary_file() {
    let folder = tempfile::tempdir().expect("a temporary folder");
    let destination = folder.path().join("run.json");
    fs::create_dir(&destination).expect("a folder where the artifact should go");
    fs::write(destination.join("kept.txt"), b"inside").expect("a file inside it");
    let tailtriage = run_writing_to(&destination);
    record_traffic(&tailtriage, "a");

    let error = tailtriage
        .shutdown()
        .expect_err("the destination is a folder");
    assert_names_destination_and_cause(
        &error,
        &destination,
        ErrorKind::IsADirectory,
        "Is a directory",
    );
    assert!(destination.is_dir(), "the folder is left as it was");
    assert_eq!(
        fs::read(destination.join("kept.txt")).expect("its content is kept"),
        b"inside"
    );
    assert!(
        temporary_files_for(&destination).is_empty(),
        "the serialized temporary file is removed: {:?}",
        temporary_files_for(&destination)
    );
    assert_retry_elsewhere_gets_everything(&tailtriage, TRAFFIC);
}

#[test]
fn a_path_under_proc_cannot_be_written_and_the_error_names_it() {
    if !Path::new("/proc/self").exists() {
        eprintln!("skipped: this system has no /proc");
        return;
    }
    let destination = PathBuf::from("/proc/tailtriage-hardening-run.json");
    let tailtriage = run_writing_to(&destination);
    record_traffic(&tailtriage, "a");

    let error = tailtriage
        .shutdown()
        .expect_err("/proc does not take new files");
    let SinkError::Io(io) = &error else {
        panic!("expected an I/O sink error, got {error:?}");
    };
    let cause = root_cause(&error);
    assert_names_destination_and_cause(&error, &destination, io.kind(), &cause);
    assert!(!destination.exists());
    assert_retry_elsewhere_gets_everything(&tailtriage, TRAFFIC);
}

/// A tmpfs mounted on a temporary folder for the life of the value.
struct SmallDisk {
    folder: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `size` on a new temporary folder; `None` when mounting is not allowed.
    fn mount(size: &str) -> Option<Self> {
        let folder = tempfile::tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(folder.path())
            .output()
            .ok()?;
        if !mounted.status.success() {
            eprintln!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&mounted.stderr).trim()
            );
            return None;
        }
        Some(Self { folder })
    }

    fn path(&self) -> &Path {
        self.folder.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy, so that the folder is released even if a file in it were still open.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.folder.path())
            .status();
    }
}

#[test]
fn a_full_disk_fails_the_write_keeps_the_old_artifact_and_leaves_no_temporary_file() {
    let Some(disk) = SmallDisk::mount("64k") else {
        eprintln!(
            "skipped: this process may not mount a tmpfs (needs root with CAP_SYS_ADMIN); the \
             write that fails midway is still covered by the file-size-limit test"
        );
        return;
    };
    let destination = disk.path().join("run.json");
    let tailtriage = run_writing_to(&destination);

    // A first, small artifact fits on the disk.
    record_traffic_small(&tailtriage);
    tailtriage.shutdown().expect("a small artifact fits");
    let old_artifact = fs::read(&destination).expect("the first artifact");

    // Hundreds of kilobytes of events do not fit in 64 KiB.
    record_traffic(&tailtriage, "a");
    let error = tailtriage.shutdown().expect_err("the disk is full");
    assert_names_destination_and_cause(
        &error,
        &destination,
        ErrorKind::StorageFull,
        "No space left on device",
    );
    assert_eq!(
        fs::read(&destination).expect("the old artifact is still there"),
        old_artifact,
        "the old artifact is left exactly as it was"
    );
    assert!(
        temporary_files_for(&destination).is_empty(),
        "the partial temporary file is removed: {:?}",
        temporary_files_for(&destination)
    );
    assert_retry_elsewhere_gets_everything(&tailtriage, TRAFFIC + 1);
}

/// One request with a queue wait and a stage.
fn record_traffic_small(tailtriage: &Tailtriage) {
    let started = tailtriage.begin_request("/checkout");
    futures_executor::block_on(async {
        started.handle.queue("db_pool").await_on(async {}).await;
        started.handle.stage("query").await_value(async {}).await;
    });
    started.completion.finish_ok();
}

/// Set in the child process of the file-size-limit test: the artifact path it must write.
const FSIZE_CHILD_PATH: &str = "TAILTRIAGE_HARDENING_FSIZE_CHILD_PATH";

#[test]
fn a_write_that_fails_midway_keeps_the_old_artifact_and_leaves_no_temporary_file() {
    if let Some(path) = std::env::var_os(FSIZE_CHILD_PATH) {
        write_under_a_file_size_limit(Path::new(&path));
        return;
    }

    let folder = tempfile::tempdir().expect("a temporary folder");
    let destination = folder.path().join("run.json");
    fs::write(&destination, b"{\"the\":\"old artifact\"}").expect("an existing artifact");

    // Rerun this test alone in a child limited to 8 blocks per file; SIGXFSZ is ignored so that
    // the oversized write fails with EFBIG instead of killing the child.
    let child = Command::new("bash")
        .args(["-c", "trap '' XFSZ; ulimit -f 8 && exec \"$@\"", "bash"])
        .arg(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "a_write_that_fails_midway_keeps_the_old_artifact_and_leaves_no_temporary_file",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(FSIZE_CHILD_PATH, &destination)
        .output()
        .expect("bash runs the child");
    let output = format!(
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    assert!(
        child.status.success(),
        "the child's checks failed:\n{output}"
    );
    assert!(
        output.contains("1 passed"),
        "the child should have run the test:\n{output}"
    );

    assert_eq!(
        fs::read(&destination).expect("the old artifact"),
        b"{\"the\":\"old artifact\"}",
        "the old artifact is left exactly as it was"
    );
    assert!(temporary_files_for(&destination).is_empty());
}

/// The child side: writes a large run under the file-size limit the parent set.
fn write_under_a_file_size_limit(destination: &Path) {
    let tailtriage = run_writing_to(destination);
    record_traffic(&tailtriage, "a");

    let error = tailtriage
        .shutdown()
        .expect_err("the artifact exceeds the file size limit");
    assert_names_destination_and_cause(
        &error,
        destination,
        ErrorKind::FileTooLarge,
        "File too large",
    );
    assert_eq!(
        fs::read(destination).expect("the old artifact"),
        b"{\"the\":\"old artifact\"}"
    );
    assert!(
        temporary_files_for(destination).is_empty(),
        "the partial temporary file is removed: {:?}",
        temporary_files_for(destination)
    );
    assert_retry_elsewhere_gets_everything(&tailtriage, TRAFFIC);
}

/// A sink that fails its first `failures` writes, then writes to memory.
struct FlakySink {
    failures: usize,
    attempts: AtomicUsize,
    memory: MemorySink,
}

impl RunSink for FlakySink {
    fn write(&self, run: &Run) -> Result<(), SinkError> {
        if self.attempts.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(SinkError::Io(std::io::Error::new(
                ErrorKind::BrokenPipe,
                "the collector went away",
            )));
        }
        self.memory.write(run)
    }
}

#[test]
fn a_custom_sink_error_is_returned_unchanged_and_every_later_shutdown_sees_every_event() {
    let memory = MemorySink::new();
    let sink = FlakySink {
        failures: 2,
        attempts: AtomicUsize::new(0),
        memory: memory.clone(),
    };
    let tailtriage = Tailtriage::builder("checkout")
        .sink(sink)
        .build()
        .expect("a named service builds");
    record_traffic(&tailtriage, "a");

    for _ in 0..2 {
        let error = tailtriage.shutdown().expect_err("the sink fails twice");
        assert!(
            error.to_string().contains("the collector went away"),
            "{error}"
        );
    }
    record_traffic(&tailtriage, "b");
    tailtriage.shutdown().expect("the third write succeeds");

    let run = memory.last_run().expect("written");
    assert_eq!(
        run.requests.len(),
        2 * TRAFFIC,
        "no event was lost to the failures"
    );
    assert_eq!(run.requests[0].request_id, "a-0");
    assert_eq!(run.requests[TRAFFIC].request_id, "b-0");
    assert_eq!(run.metadata.unfinished_requests.count, 0);
    assert!(run.metadata.lifecycle_warnings.is_empty());
}
