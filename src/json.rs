//! Compact JSON of a run, written straight from its view.
//!
//! serde's derived serializers hand every key of every event to `serde_json`, which scans it
//! for characters to escape; in the shutdown profile of a 100 000-request run that key work
//! took more time than everything else in encoding. Here the keys are constant byte strings
//! written as they are, and every value still goes through `serde_json`: strings with its
//! escaping, the metadata and truncation objects through their derived serializers, numbers
//! as the same decimal digits.
//!
//! Invariant: [`write_compact`] writes exactly the bytes `serde_json::to_writer` writes for
//! the [`Run`](crate::Run) the view describes: the same keys in the same order, `null` for an
//! absent option, `cancelled` only when true. The field lists below mirror the artifact's
//! types; the tests compare both encodings byte for byte over generated runs, escapes
//! included.

use std::io::{self, Write};

use crate::records::{InflightView, QueueView, RequestView, StageView};
use crate::run_view::RunView;
use crate::SCHEMA_VERSION;

/// Writes the run `view` describes as compact JSON.
pub(crate) fn write_compact(writer: impl Write, view: &RunView<'_>) -> io::Result<()> {
    let mut out = Out {
        writer,
        digits: itoa::Buffer::new(),
    };
    out.raw(b"{\"schema_version\":")?;
    out.u64(SCHEMA_VERSION)?;
    out.raw(b",\"metadata\":")?;
    out.value(view.metadata)?;
    out.raw(b",\"requests\":")?;
    out.array(view.requests(), Out::request)?;
    out.raw(b",\"stages\":")?;
    out.array(view.stages(), Out::stage)?;
    out.raw(b",\"queues\":")?;
    out.array(view.queues(), Out::queue)?;
    out.raw(b",\"inflight\":")?;
    out.array(view.inflight(), Out::inflight)?;
    out.raw(b",\"runtime_snapshots\":")?;
    out.array(view.runtime_snapshots(), |out, snapshot| {
        out.value(snapshot)
    })?;
    out.raw(b",\"truncation\":")?;
    out.value(view.truncation)?;
    out.raw(b"}")
}

/// The destination, and a scratch buffer for formatting numbers.
struct Out<W> {
    writer: W,
    digits: itoa::Buffer,
}

impl<W: Write> Out<W> {
    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes)
    }

    /// A JSON string, escaped as `serde_json` escapes it.
    ///
    /// `serde_json` escapes exactly the control characters, `"` and `\\`; a string without
    /// them (names and ids nearly always) is written as it is, without its per-call work.
    fn str(&mut self, text: &str) -> io::Result<()> {
        let plain = text
            .bytes()
            .all(|byte| byte >= 0x20 && byte != b'"' && byte != b'\\');
        if plain {
            self.raw(b"\"")?;
            self.raw(text.as_bytes())?;
            self.raw(b"\"")
        } else {
            self.value(text)
        }
    }

    /// Any value through its serde serializer.
    fn value(&mut self, value: &(impl serde::Serialize + ?Sized)) -> io::Result<()> {
        serde_json::to_writer(&mut self.writer, value).map_err(io::Error::from)
    }

    fn u64(&mut self, number: u64) -> io::Result<()> {
        let digits = self.digits.format(number);
        self.writer.write_all(digits.as_bytes())
    }

    fn optional_u64(&mut self, number: Option<u64>) -> io::Result<()> {
        match number {
            Some(number) => self.u64(number),
            None => self.raw(b"null"),
        }
    }

    fn optional_str(&mut self, text: Option<&str>) -> io::Result<()> {
        match text {
            Some(text) => self.str(text),
            None => self.raw(b"null"),
        }
    }

    fn bool(&mut self, value: bool) -> io::Result<()> {
        self.raw(if value { b"true" } else { b"false" })
    }

    /// `[item,item,...]`, each written by `write`.
    fn array<T>(
        &mut self,
        items: impl Iterator<Item = T>,
        mut write: impl FnMut(&mut Self, T) -> io::Result<()>,
    ) -> io::Result<()> {
        self.raw(b"[")?;
        for (index, item) in items.enumerate() {
            if index > 0 {
                self.raw(b",")?;
            }
            write(self, item)?;
        }
        self.raw(b"]")
    }

    fn request(&mut self, event: RequestView<'_>) -> io::Result<()> {
        self.raw(b"{\"request_id\":")?;
        self.str(event.request_id)?;
        self.raw(b",\"route\":")?;
        self.str(event.route)?;
        self.raw(b",\"kind\":")?;
        self.optional_str(event.kind)?;
        self.raw(b",\"started_at_unix_ms\":")?;
        self.u64(event.started_at_unix_ms)?;
        self.raw(b",\"finished_at_unix_ms\":")?;
        self.u64(event.finished_at_unix_ms)?;
        self.raw(b",\"latency_us\":")?;
        self.u64(event.latency_us)?;
        self.raw(b",\"outcome\":")?;
        self.str(event.outcome)?;
        self.raw(b"}")
    }

    fn stage(&mut self, event: StageView<'_>) -> io::Result<()> {
        self.timed(
            event.request_id,
            (b",\"stage\":", event.stage),
            [
                (b",\"started_at_unix_ms\":", event.started_at_unix_ms),
                (b",\"finished_at_unix_ms\":", event.finished_at_unix_ms),
                (b",\"latency_us\":", event.latency_us),
            ],
        )?;
        self.raw(b",\"success\":")?;
        self.bool(event.success)?;
        self.end_cancellable(event.cancelled)
    }

    fn queue(&mut self, event: QueueView<'_>) -> io::Result<()> {
        self.timed(
            event.request_id,
            (b",\"queue\":", event.queue),
            [
                (b",\"waited_from_unix_ms\":", event.waited_from_unix_ms),
                (b",\"waited_until_unix_ms\":", event.waited_until_unix_ms),
                (b",\"wait_us\":", event.wait_us),
            ],
        )?;
        self.raw(b",\"depth_at_start\":")?;
        self.optional_u64(event.depth_at_start)?;
        self.end_cancellable(event.cancelled)
    }

    /// What stages and queues begin with: the request id, the name under its key, then two
    /// instants and a duration.
    fn timed(
        &mut self,
        request_id: &str,
        (name_key, name): (&[u8], &str),
        numbers: [(&[u8], u64); 3],
    ) -> io::Result<()> {
        self.raw(b"{\"request_id\":")?;
        self.str(request_id)?;
        self.raw(name_key)?;
        self.str(name)?;
        for (key, number) in numbers {
            self.raw(key)?;
            self.u64(number)?;
        }
        Ok(())
    }

    /// Closes a stage or a queue wait; `cancelled` appears only when true.
    fn end_cancellable(&mut self, cancelled: bool) -> io::Result<()> {
        if cancelled {
            self.raw(b",\"cancelled\":true")?;
        }
        self.raw(b"}")
    }

    fn inflight(&mut self, event: InflightView<'_>) -> io::Result<()> {
        self.raw(b"{\"gauge\":")?;
        self.str(event.gauge)?;
        self.raw(b",\"at_unix_ms\":")?;
        self.u64(event.at_unix_ms)?;
        self.raw(b",\"count\":")?;
        self.u64(event.count)?;
        self.raw(b"}")
    }
}
