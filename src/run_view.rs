//! A drained run, and the view through which it is read.
//!
//! A drain ([`DrainedRun`]) holds the metadata as of the drain, the truncation counters and,
//! per section, shared handles to every batch of records stored so far; it holds no lock.
//! Reading it orders each section's records and presents them as a [`RunView`]: the retained
//! records in recording order, borrowed. A view becomes either an owned [`Run`]
//! (`snapshot()`, custom sinks) or JSON written straight from the records (the JSON sink),
//! which copies no event and needs no lock while the file is written.
//!
//! Invariant: a `RunView` serializes to exactly the bytes its [`Run`] would, field by field
//! and in the same order, compact or pretty. The owned run is built from the same record views
//! that are serialized, so the two cannot disagree on a value; the field list below mirrors
//! [`Run`], and the tests compare the two encodings byte for byte.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::clock::RunClock;
use crate::records::{
    InflightRecord, InflightView, QueueRecord, QueueView, RequestRecord, RequestView, StageRecord,
    StageView,
};
use crate::section::{Drained, Sequenced};
use crate::{Run, RunMetadata, RuntimeSnapshot, TruncationSummary, SCHEMA_VERSION};

/// What a drain took: the run as of the drain, before its records are ordered.
pub(crate) struct DrainedRun {
    pub(crate) metadata: RunMetadata,
    /// Requests counted unfinished by a shutdown of this epoch or a later one are left out.
    pub(crate) epoch: u64,
    pub(crate) requests: Drained<RequestRecord>,
    pub(crate) stages: Drained<StageRecord>,
    pub(crate) queues: Drained<QueueRecord>,
    pub(crate) inflight: Drained<InflightRecord>,
    pub(crate) runtime_snapshots: Drained<RuntimeSnapshot>,
    pub(crate) truncation: TruncationSummary,
}

impl DrainedRun {
    /// Orders every section's records and lets `read` see the run.
    pub(crate) fn read<R>(&self, clock: &RunClock, read: impl FnOnce(&RunView<'_>) -> R) -> R {
        read(&RunView {
            metadata: &self.metadata,
            clock,
            epoch: self.epoch,
            requests: &self.requests.ordered(),
            stages: &self.stages.ordered(),
            queues: &self.queues.ordered(),
            inflight: &self.inflight.ordered(),
            runtime_snapshots: &self.runtime_snapshots.ordered(),
            truncation: &self.truncation,
        })
    }
}

impl DrainedRun {
    /// The owned run.
    pub(crate) fn to_run(&self, clock: &RunClock) -> Run {
        self.read(clock, owned_run)
    }
}

/// The retained records of one section, in recording order.
pub(crate) type Records<'a, E> = &'a [&'a Sequenced<E>];

/// A run whose events are still the sections' records.
pub(crate) struct RunView<'a> {
    pub(crate) metadata: &'a RunMetadata,
    pub(crate) clock: &'a RunClock,
    pub(crate) epoch: u64,
    pub(crate) requests: Records<'a, RequestRecord>,
    pub(crate) stages: Records<'a, StageRecord>,
    pub(crate) queues: Records<'a, QueueRecord>,
    pub(crate) inflight: Records<'a, InflightRecord>,
    pub(crate) runtime_snapshots: Records<'a, RuntimeSnapshot>,
    pub(crate) truncation: &'a TruncationSummary,
}

impl RunView<'_> {
    pub(crate) fn requests(&self) -> impl Iterator<Item = RequestView<'_>> {
        self.requests
            .iter()
            .filter(|record| record.event.unfinished_epoch < self.epoch)
            .map(|record| record.event.view(self.clock))
    }

    pub(crate) fn stages(&self) -> impl Iterator<Item = StageView<'_>> {
        self.stages
            .iter()
            .map(|record| record.event.view(self.clock))
    }

    pub(crate) fn queues(&self) -> impl Iterator<Item = QueueView<'_>> {
        self.queues
            .iter()
            .map(|record| record.event.view(self.clock))
    }

    pub(crate) fn inflight(&self) -> impl Iterator<Item = InflightView<'_>> {
        self.inflight
            .iter()
            .map(|record| record.event.view(self.clock))
    }

    pub(crate) fn runtime_snapshots(&self) -> impl Iterator<Item = &RuntimeSnapshot> {
        self.runtime_snapshots.iter().map(|record| &record.event)
    }
}

/// The owned run: every string copied out of the records.
fn owned_run(view: &RunView<'_>) -> Run {
    let mut run = Run::new(view.metadata.clone());
    run.requests = view.requests().map(RequestView::to_event).collect();
    run.stages = view.stages().map(StageView::to_event).collect();
    run.queues = view.queues().map(QueueView::to_event).collect();
    run.inflight = view.inflight().map(InflightView::to_event).collect();
    run.runtime_snapshots = view.runtime_snapshots().cloned().collect();
    run.truncation = view.truncation.clone();
    run
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
        run.serialize_field("truncation", self.truncation)?;
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
