//! Sinks: where a finished run goes.
//!
//! [`LocalJsonSink`] writes the artifact atomically: the JSON goes to a new temporary file in
//! the destination's own folder (so the final rename never crosses file systems), is flushed
//! and synced, then renamed over the destination; the folder is then synced, where the
//! platform allows, so that the rename survives a crash. A reader therefore sees either the
//! previous artifact or the complete new one, never a partial file. On any failure the
//! temporary file is removed and an existing destination is left as it was. The folder sync
//! comes after the destination was replaced, so it is best effort: some file systems refuse
//! it, and a folder may be writable without being readable, and neither makes the write fail.

use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::run_view::RunView;
use crate::Run;

/// Receives the run at shutdown.
///
/// ```
/// use tailtriage_core::{Run, RunSink, SinkError, Tailtriage};
///
/// struct CountRequests;
///
/// impl RunSink for CountRequests {
///     fn write(&self, run: &Run) -> Result<(), SinkError> {
///         assert_eq!(run.requests.len(), 1);
///         Ok(())
///     }
/// }
///
/// let tailtriage = Tailtriage::builder("checkout").sink(CountRequests).build()?;
/// tailtriage.begin_request("/checkout").completion.finish_ok();
/// tailtriage.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait RunSink {
    /// Stores or forwards `run`.
    ///
    /// # Errors
    ///
    /// A [`SinkError`] saying what failed.
    fn write(&self, run: &Run) -> Result<(), SinkError>;
}

/// Accepts every run and keeps nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct DiscardSink;

impl RunSink for DiscardSink {
    fn write(&self, _run: &Run) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Keeps the last run written, in memory; clones share one slot.
///
/// ```
/// use tailtriage_core::{MemorySink, Tailtriage};
///
/// let sink = MemorySink::new();
/// let tailtriage = Tailtriage::builder("checkout").sink(sink.clone()).build()?;
/// tailtriage.shutdown()?;
/// assert!(sink.last_run().is_some());
/// assert!(sink.take_run().is_some());
/// assert!(sink.last_run().is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    slot: Arc<Mutex<Option<Run>>>,
}

impl MemorySink {
    /// An empty sink.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the last run written, if any.
    #[must_use]
    pub fn last_run(&self) -> Option<Run> {
        self.slot().clone()
    }

    /// Takes the last run written, leaving the sink empty.
    #[must_use]
    pub fn take_run(&self) -> Option<Run> {
        self.slot().take()
    }

    /// Forgets the last run written.
    pub fn clear(&self) {
        *self.slot() = None;
    }

    fn slot(&self) -> MutexGuard<'_, Option<Run>> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RunSink for MemorySink {
    fn write(&self, run: &Run) -> Result<(), SinkError> {
        *self.slot() = Some(run.clone());
        Ok(())
    }
}

/// Writes the run as a JSON file, atomically replacing the destination.
///
/// The artifact is compact JSON by default; [`pretty`](LocalJsonSink::pretty) makes it
/// indented for reading by hand. Both load the same way.
///
/// ```
/// use tailtriage_core::{LocalJsonSink, Run, Tailtriage};
///
/// let folder = tempfile::tempdir()?;
/// let path = folder.path().join("run.json");
/// let tailtriage = Tailtriage::builder("checkout")
///     .sink(LocalJsonSink::new(&path).pretty())
///     .build()?;
/// tailtriage.begin_request("/checkout").completion.finish_ok();
/// tailtriage.shutdown()?;
///
/// let run: Run = serde_json::from_slice(&std::fs::read(&path)?)?;
/// assert_eq!(run.requests.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct LocalJsonSink {
    path: PathBuf,
    pretty: bool,
}

impl LocalJsonSink {
    /// A sink writing compact JSON to `path`.
    #[must_use]
    pub fn new(path: impl AsRef<Path>) -> Self {
        Self {
            path: path.as_ref().to_path_buf(),
            pretty: false,
        }
    }

    /// Writes indented JSON instead of compact JSON.
    #[must_use]
    pub fn pretty(mut self) -> Self {
        self.pretty = true;
        self
    }

    /// The destination path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder the temporary file goes in: the destination's own.
    fn folder(&self) -> &Path {
        match self.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        }
    }

    /// Serializes `run` as this sink's JSON (compact or pretty) into `writer`.
    fn encode(&self, writer: impl Write, run: &Run) -> serde_json::Result<()> {
        if self.pretty {
            serde_json::to_writer_pretty(writer, run)
        } else {
            serde_json::to_writer(writer, run)
        }
    }

    /// Serializes the run `view` describes as this sink's JSON into `writer`; the same bytes
    /// [`encode`](Self::encode) writes for that run.
    pub(crate) fn encode_view(
        &self,
        writer: impl Write,
        view: &RunView<'_>,
    ) -> serde_json::Result<()> {
        if self.pretty {
            serde_json::to_writer_pretty(writer, view)
        } else {
            crate::json::write_compact(writer, view).map_err(serde_json::Error::io)
        }
    }

    /// Fills a temporary file with `fill`, syncs it, and renames it over the destination.
    pub(crate) fn write_with(
        &self,
        fill: impl FnOnce(&mut BufWriter<&File>) -> serde_json::Result<()>,
    ) -> Result<(), SinkError> {
        let folder = self.folder();
        let file_name = self.path.file_name().map_or_else(
            || "tailtriage-run.json".into(),
            |name| name.to_string_lossy(),
        );

        // The temporary file deletes itself when dropped, on every early return below.
        let prefix = format!(".{file_name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // A temporary file is private (0600) by default; the artifact gets the permissions a
        // plainly created file would (0666 less the umask), as the published sink's does.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
        let temp = builder.tempfile_in(folder).map_err(|error| {
            SinkError::Io(self.path_error("create a temporary file in", folder, error))
        })?;
        self.fill(temp.as_file(), temp.path(), fill)?;

        temp.persist(&self.path).map_err(|error| {
            // Dropping `error.file` removes the temporary file.
            SinkError::Io(self.path_error("replace", &self.path, error.error))
        })?;
        Self::sync_folder(folder);
        Ok(())
    }

    /// Makes the rename durable where it can: on Unix a renamed entry survives a crash only
    /// once its folder is synced. Best effort, because the destination is already replaced:
    /// reporting an error now would tell the caller the artifact was not written. (Windows
    /// offers no folder handle to sync; the rename itself is atomic there.)
    fn sync_folder(folder: &Path) {
        #[cfg(unix)]
        if let Ok(folder) = File::open(folder) {
            // Ignored on purpose: see above.
            let _ = folder.sync_all();
        }
        #[cfg(not(unix))]
        let _ = folder;
    }

    /// Writes the JSON `encode` produces into the temporary `file`, then syncs it.
    fn fill(
        &self,
        file: &File,
        temp_path: &Path,
        encode: impl FnOnce(&mut BufWriter<&File>) -> serde_json::Result<()>,
    ) -> Result<(), SinkError> {
        let failed = |action, error| SinkError::Io(self.path_error(action, temp_path, error));
        let mut writer = BufWriter::with_capacity(1 << 16, file);
        encode(&mut writer).map_err(|error| {
            if error.is_io() {
                failed("write the temporary file", io::Error::from(error))
            } else {
                SinkError::Serialize(error)
            }
        })?;
        writer
            .flush()
            .map_err(|error| failed("write the temporary file", error))?;
        drop(writer);
        file.sync_all()
            .map_err(|error| failed("sync the temporary file", error))
    }

    /// An I/O error naming this sink's destination, the step that failed and the path it
    /// failed on (a failed step may concern the folder or the temporary file, but the caller
    /// knows the destination, so the message always names it too).
    fn path_error(&self, action: &'static str, path: &Path, cause: io::Error) -> io::Error {
        io::Error::new(
            cause.kind(),
            PathError {
                destination: self.path.clone(),
                action,
                path: path.to_path_buf(),
                cause,
            },
        )
    }
}

impl RunSink for LocalJsonSink {
    fn write(&self, run: &Run) -> Result<(), SinkError> {
        self.write_with(|writer| self.encode(writer, run))
    }
}

/// The sink a run was built with.
///
/// A [`LocalJsonSink`] is kept by value so that shutdown can write JSON straight from the
/// sections' records instead of first copying every event into a [`Run`]; any other sink
/// receives the `Run`.
#[derive(Clone)]
pub(crate) enum Destination {
    Json(LocalJsonSink),
    Custom(Arc<dyn RunSink + Send + Sync>),
}

impl Destination {
    pub(crate) fn of<S: RunSink + Send + Sync + 'static>(sink: S) -> Self {
        match (&sink as &dyn std::any::Any).downcast_ref::<LocalJsonSink>() {
            Some(json) => Self::Json(json.clone()),
            None => Self::Custom(Arc::new(sink)),
        }
    }
}

/// Why a sink could not write the run.
#[derive(Debug)]
pub enum SinkError {
    /// Reading or writing a file failed; the message names the path and the cause.
    Io(io::Error),
    /// The run could not be serialized.
    Serialize(serde_json::Error),
    /// Strict lifecycle is on and requests were still pending; nothing was written. Finish
    /// every request before shutdown, or turn strict lifecycle off.
    Lifecycle {
        /// How many requests were pending.
        unfinished_count: usize,
    },
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(error) => write!(f, "could not write the run artifact: {error}"),
            Self::Serialize(error) => write!(f, "could not serialize the run: {error}"),
            Self::Lifecycle { unfinished_count } => write!(
                f,
                "strict lifecycle: {unfinished_count} request(s) were still pending at \
                 shutdown, so the run was not written"
            ),
        }
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(error) => Some(error),
            Self::Serialize(error) => Some(error),
            Self::Lifecycle { .. } => None,
        }
    }
}

/// An I/O error that names the destination, what was being done to which path, and the cause,
/// keeping the cause's kind.
#[derive(Debug)]
struct PathError {
    /// The artifact the sink was asked to write.
    destination: PathBuf,
    action: &'static str,
    /// The path the failed step concerned: the destination, its folder or the temporary file.
    path: PathBuf,
    cause: io::Error,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path == self.destination {
            write!(f, "{} {}: {}", self.action, self.path.display(), self.cause)
        } else {
            write!(
                f,
                "{} {} for {}: {}",
                self.action,
                self.path.display(),
                self.destination.display(),
                self.cause
            )
        }
    }
}

impl std::error::Error for PathError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}
