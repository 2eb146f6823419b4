//! A run borrowed from the sections while a drain holds them.
//!
//! [`RunView`] is what every drain produces: the metadata, the truncation counters and, per
//! section, the retained records in recording order, borrowed from storage whose locks the
//! drain holds. It becomes either an owned [`Run`] (`snapshot()`, custom sinks) or JSON
//! written straight from the records (the JSON sink), which allocates nothing per event.
//!
//! Invariant: a `RunView` serializes to exactly the bytes its [`Run`] would, field by field
//! and in the same order, compact or pretty. The owned run is built from the same record views
//! that are serialized, so the two cannot disagree on a value; the field list below mirrors
//! [`Run`], and the tests compare the two encodings byte for byte.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::clock::RunClock;
use crate::records::{InflightRecord, QueueRecord, RequestRecord, StageRecord};
use crate::section::Sequenced;
use crate::{Run, RunMetadata, RuntimeSnapshot, TruncationSummary, SCHEMA_VERSION};

/// The retained records of one section, in recording order.
pub(crate) type Records<'a, E> = &'a [&'a Sequenced<E>];

/// A run whose events are still the sections' records.
pub(crate) struct RunView<'a> {
    pub(crate) metadata: &'a RunMetadata,
    pub(crate) clock: &'a RunClock,
    /// Requests counted unfinished by a shutdown of this epoch or a later one are left out.
    pub(crate) epoch: u64,
    pub(crate) requests: Records<'a, RequestRecord>,
    pub(crate) stages: Records<'a, StageRecord>,
    pub(crate) queues: Records<'a, QueueRecord>,
    pub(crate) inflight: Records<'a, InflightRecord>,
    pub(crate) runtime_snapshots: Records<'a, RuntimeSnapshot>,
    pub(crate) truncation: TruncationSummary,
}

impl RunView<'_> {
    fn requests(&self) -> impl Iterator<Item = crate::records::RequestView<'_>> {
        self.requests
            .iter()
            .filter(|record| record.event.unfinished_epoch < self.epoch)
            .map(|record| record.event.view(self.clock))
    }

    fn stages(&self) -> impl Iterator<Item = crate::records::StageView<'_>> {
        self.stages
            .iter()
            .map(|record| record.event.view(self.clock))
    }

    fn queues(&self) -> impl Iterator<Item = crate::records::QueueView<'_>> {
        self.queues
            .iter()
            .map(|record| record.event.view(self.clock))
    }

    fn inflight(&self) -> impl Iterator<Item = crate::records::InflightView<'_>> {
        self.inflight
            .iter()
            .map(|record| record.event.view(self.clock))
    }

    fn runtime_snapshots(&self) -> impl Iterator<Item = &RuntimeSnapshot> {
        self.runtime_snapshots.iter().map(|record| &record.event)
    }

    /// The owned run: every string copied out of the records.
    pub(crate) fn to_run(&self) -> Run {
        let mut run = Run::new(self.metadata.clone());
        run.requests = self.requests().map(|view| view.to_event()).collect();
        run.stages = self.stages().map(|view| view.to_event()).collect();
        run.queues = self.queues().map(|view| view.to_event()).collect();
        run.inflight = self.inflight().map(|view| view.to_event()).collect();
        run.runtime_snapshots = self.runtime_snapshots().cloned().collect();
        run.truncation = self.truncation.clone();
        run
    }
}

impl Serialize for RunView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut run = serializer.serialize_struct("Run", 8)?;
        run.serialize_field("schema_version", &SCHEMA_VERSION)?;
        run.serialize_field("metadata", self.metadata)?;
        run.serialize_field("requests", &Sequence(|| self.requests()))?;
        run.serialize_field("stages", &Sequence(|| self.stages()))?;
        run.serialize_field("queues", &Sequence(|| self.queues()))?;
        run.serialize_field("inflight", &Sequence(|| self.inflight()))?;
        run.serialize_field("runtime_snapshots", &Sequence(|| self.runtime_snapshots()))?;
        run.serialize_field("truncation", &self.truncation)?;
        run.end()
    }
}

/// Serializes as a JSON array of what a fresh iterator from the closure yields.
struct Sequence<F>(F);

impl<F, I> Serialize for Sequence<F>
where
    F: Fn() -> I,
    I: Iterator,
    I::Item: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq((self.0)())
    }
}
