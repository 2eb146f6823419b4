//! Sinks: the atomic JSON file, memory, discard and custom sinks.

use std::fs;
use std::path::Path;

use tailtriage_core::{
    DiscardSink, LocalJsonSink, MemorySink, Run, RunSink, SinkError, Tailtriage,
};

fn finished_run(sink: impl RunSink + Send + Sync + 'static) -> Tailtriage {
    let tailtriage = Tailtriage::builder("checkout")
        .sink(sink)
        .build()
        .expect("build succeeds");
    tailtriage.begin_request("/checkout").completion.finish_ok();
    tailtriage
}

fn temporary_files_in(folder: &Path) -> Vec<String> {
    fs::read_dir(folder)
        .expect("folder readable")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.') && name.contains(".json."))
        .collect()
}

#[test]
fn the_json_sink_writes_a_loadable_artifact_and_replaces_an_old_one() {
    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path().join("run.json");
    fs::write(&path, b"old artifact").expect("seed");

    let tailtriage = finished_run(LocalJsonSink::new(&path));
    tailtriage.shutdown().expect("shutdown writes");

    let run: Run = serde_json::from_slice(&fs::read(&path).expect("read")).expect("loads");
    assert_eq!(run.requests.len(), 1);
    assert_eq!(run.metadata.service_name, "checkout");
    assert!(
        temporary_files_in(folder.path()).is_empty(),
        "no temporary file remains"
    );
}

#[test]
fn the_pretty_json_sink_writes_the_same_run_indented() {
    let folder = tempfile::tempdir().expect("temp dir");
    let compact_path = folder.path().join("compact.json");
    let pretty_path = folder.path().join("pretty.json");
    let tailtriage = finished_run(DiscardSink);
    tailtriage
        .shutdown_to(&LocalJsonSink::new(&compact_path))
        .expect("compact");
    tailtriage
        .shutdown_to(&LocalJsonSink::new(&pretty_path).pretty())
        .expect("pretty");
    let compact = fs::read_to_string(&compact_path).expect("read");
    let pretty = fs::read_to_string(&pretty_path).expect("read");
    assert!(!compact.contains('\n'));
    assert!(pretty.contains("\n  \"metadata\""));
    let compact: Run = serde_json::from_str(&compact).expect("loads");
    let pretty: Run = serde_json::from_str(&pretty).expect("loads");
    assert_eq!(compact.requests, pretty.requests);
}

#[test]
fn a_relative_file_name_is_written_in_the_current_folder() {
    let sink = LocalJsonSink::new("relative-run.json");
    assert_eq!(sink.path(), Path::new("relative-run.json"));
}

#[test]
fn a_missing_folder_fails_naming_the_path_and_leaves_the_run_usable() {
    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path().join("missing").join("run.json");
    let tailtriage = finished_run(LocalJsonSink::new(&path));

    let error = tailtriage.shutdown().expect_err("missing folder");
    let SinkError::Io(io) = &error else {
        panic!("expected an I/O error, got {error:?}");
    };
    assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
    let message = error.to_string();
    assert!(
        message.contains(&folder.path().join("missing").display().to_string()),
        "{message}"
    );
    assert!(std::error::Error::source(&error).is_some());

    let fallback = MemorySink::new();
    tailtriage.shutdown_to(&fallback).expect("retry elsewhere");
    assert_eq!(fallback.last_run().expect("written").requests.len(), 1);
}

#[test]
fn a_destination_that_is_a_folder_fails_and_leaves_no_temporary_file() {
    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path().join("taken");
    fs::create_dir(&path).expect("create folder");
    let tailtriage = finished_run(LocalJsonSink::new(&path));

    let error = tailtriage.shutdown().expect_err("destination is a folder");
    assert!(matches!(error, SinkError::Io(_)));
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
    assert!(path.is_dir(), "the folder is untouched");
    assert!(temporary_files_in(folder.path()).is_empty());
}

#[test]
fn memory_sink_clones_share_one_slot_and_writes_replace_it() {
    let sink = MemorySink::new();
    let clone = sink.clone();
    let tailtriage = finished_run(sink.clone());
    tailtriage.shutdown().expect("first write");
    tailtriage.begin_request("/again").completion.finish_ok();
    tailtriage.shutdown().expect("second write");
    assert_eq!(clone.last_run().expect("shared").requests.len(), 2);
    let taken = clone.take_run().expect("take");
    assert_eq!(taken.requests.len(), 2);
    assert!(sink.last_run().is_none(), "take clears the shared slot");
    tailtriage.shutdown().expect("third write");
    sink.clear();
    assert!(clone.last_run().is_none());
}

#[test]
fn a_custom_sink_receives_the_run_and_its_error_is_returned() {
    struct Refuse;
    impl RunSink for Refuse {
        fn write(&self, run: &Run) -> Result<(), SinkError> {
            assert_eq!(run.requests.len(), 1);
            Err(SinkError::Io(std::io::Error::other("upstream refused")))
        }
    }
    let tailtriage = finished_run(Refuse);
    let error = tailtriage.shutdown().expect_err("custom error");
    assert!(error.to_string().contains("upstream refused"));
}

#[test]
fn the_discard_sink_accepts_everything() {
    finished_run(DiscardSink)
        .shutdown()
        .expect("discard succeeds");
}

#[cfg(unix)]
#[test]
fn the_artifact_is_readable_like_a_plainly_created_file() {
    use std::os::unix::fs::PermissionsExt;

    let folder = tempfile::tempdir().expect("temp dir");
    let path = folder.path().join("run.json");
    let plain = folder.path().join("plain");
    fs::write(&plain, b"x").expect("plain file");
    finished_run(LocalJsonSink::new(&path))
        .shutdown()
        .expect("shutdown writes");
    let mode = |p: &Path| fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    assert_eq!(
        mode(&path),
        mode(&plain),
        "the artifact is not left private to its writer"
    );
}
