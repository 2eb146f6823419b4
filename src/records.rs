//! The compact in-memory form of events, and how a drain turns it into the artifact's form.
//!
//! A record keeps what the hot path had in hand: the shared request state (not a copy of its
//! id), the name the caller passed (inline when it is short, see the request module), and
//! run-clock ticks (not wall-clock reads). The
//! artifact's strings and millisecond instants are built only when a run is drained, which is
//! rare, instead of on every event.
//!
//! A drain sees a record through its *view*: the artifact event's fields, in the artifact's
//! order and with its serde attributes, but borrowing every string from the record. A view
//! serializes to exactly the bytes its owned event would (the JSON sink writes views straight
//! from the drained records, allocating nothing per event), and turns into the owned event for
//! [`Run`](crate::Run) (snapshots, custom sinks). Each mapping from record to artifact field is
//! therefore written once, in `view`. (Compact JSON is written from the same views by
//! `json`, without serde's per-key work.)

use compact_str::CompactString;
use serde::Serialize;

use crate::artifact::is_false;
use crate::clock::{RunClock, Tick};
use crate::gauge::GaugeHandle;
use crate::request::RequestState;
use crate::sync::Arc;
use crate::{InFlightSnapshot, Outcome, QueueEvent, RequestEvent, StageEvent};

/// A finished request.
#[derive(Debug)]
pub(crate) struct RequestRecord {
    pub(crate) request: Arc<RequestState>,
    pub(crate) finished: Tick,
    pub(crate) outcome: Outcome,
    /// The epoch of the last shutdown that counted this request unfinished (0: none); a
    /// shutdown with epoch `e` writes the record only if this is below `e`.
    pub(crate) unfinished_epoch: u64,
}

/// A timed stage.
#[derive(Debug)]
pub(crate) struct StageRecord {
    pub(crate) request: Arc<RequestState>,
    pub(crate) stage: CompactString,
    pub(crate) started: Tick,
    pub(crate) finished: Tick,
    pub(crate) success: bool,
    pub(crate) cancelled: bool,
}

/// A timed queue wait.
#[derive(Debug)]
pub(crate) struct QueueRecord {
    pub(crate) request: Arc<RequestState>,
    pub(crate) queue: CompactString,
    pub(crate) started: Tick,
    pub(crate) finished: Tick,
    pub(crate) depth_at_start: Option<u64>,
    pub(crate) cancelled: bool,
}

/// A gauge count after a change.
#[derive(Debug)]
pub(crate) struct InflightRecord {
    pub(crate) gauge: std::sync::Arc<GaugeHandle>,
    pub(crate) at: Tick,
    pub(crate) count: u64,
}

/// A [`RequestEvent`] borrowed from its record.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct RequestView<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) route: &'a str,
    pub(crate) kind: Option<&'a str>,
    pub(crate) started_at_unix_ms: u64,
    pub(crate) finished_at_unix_ms: u64,
    pub(crate) latency_us: u64,
    pub(crate) outcome: &'a str,
}

/// A [`StageEvent`] borrowed from its record.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct StageView<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) stage: &'a str,
    pub(crate) started_at_unix_ms: u64,
    pub(crate) finished_at_unix_ms: u64,
    pub(crate) latency_us: u64,
    pub(crate) success: bool,
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) cancelled: bool,
}

/// A [`QueueEvent`] borrowed from its record.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct QueueView<'a> {
    pub(crate) request_id: &'a str,
    pub(crate) queue: &'a str,
    pub(crate) waited_from_unix_ms: u64,
    pub(crate) waited_until_unix_ms: u64,
    pub(crate) wait_us: u64,
    pub(crate) depth_at_start: Option<u64>,
    #[serde(skip_serializing_if = "is_false")]
    pub(crate) cancelled: bool,
}

/// An [`InFlightSnapshot`] borrowed from its record.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct InflightView<'a> {
    pub(crate) gauge: &'a str,
    pub(crate) at_unix_ms: u64,
    pub(crate) count: u64,
}

impl RequestRecord {
    pub(crate) fn view<'a>(&'a self, clock: &RunClock) -> RequestView<'a> {
        let request = &*self.request;
        RequestView {
            request_id: request.id(),
            route: &request.route,
            kind: request.kind.as_deref(),
            started_at_unix_ms: clock.unix_ms(request.started),
            finished_at_unix_ms: clock.unix_ms(self.finished),
            latency_us: clock.micros_between(request.started, self.finished),
            outcome: self.outcome.as_str(),
        }
    }
}

impl StageRecord {
    pub(crate) fn view<'a>(&'a self, clock: &RunClock) -> StageView<'a> {
        StageView {
            request_id: self.request.id(),
            stage: &self.stage,
            started_at_unix_ms: clock.unix_ms(self.started),
            finished_at_unix_ms: clock.unix_ms(self.finished),
            latency_us: clock.micros_between(self.started, self.finished),
            success: self.success,
            cancelled: self.cancelled,
        }
    }
}

impl QueueRecord {
    pub(crate) fn view<'a>(&'a self, clock: &RunClock) -> QueueView<'a> {
        QueueView {
            request_id: self.request.id(),
            queue: &self.queue,
            waited_from_unix_ms: clock.unix_ms(self.started),
            waited_until_unix_ms: clock.unix_ms(self.finished),
            wait_us: clock.micros_between(self.started, self.finished),
            depth_at_start: self.depth_at_start,
            cancelled: self.cancelled,
        }
    }
}

impl InflightRecord {
    pub(crate) fn view(&self, clock: &RunClock) -> InflightView<'_> {
        InflightView {
            gauge: &self.gauge.cell.name,
            at_unix_ms: clock.unix_ms(self.at),
            count: self.count,
        }
    }
}

impl RequestView<'_> {
    pub(crate) fn to_event(self) -> RequestEvent {
        RequestEvent {
            request_id: self.request_id.to_owned(),
            route: self.route.to_owned(),
            kind: self.kind.map(str::to_owned),
            started_at_unix_ms: self.started_at_unix_ms,
            finished_at_unix_ms: self.finished_at_unix_ms,
            latency_us: self.latency_us,
            outcome: self.outcome.to_owned(),
        }
    }
}

impl StageView<'_> {
    pub(crate) fn to_event(self) -> StageEvent {
        StageEvent {
            request_id: self.request_id.to_owned(),
            stage: self.stage.to_owned(),
            started_at_unix_ms: self.started_at_unix_ms,
            finished_at_unix_ms: self.finished_at_unix_ms,
            latency_us: self.latency_us,
            success: self.success,
            cancelled: self.cancelled,
        }
    }
}

impl QueueView<'_> {
    pub(crate) fn to_event(self) -> QueueEvent {
        QueueEvent {
            request_id: self.request_id.to_owned(),
            queue: self.queue.to_owned(),
            waited_from_unix_ms: self.waited_from_unix_ms,
            waited_until_unix_ms: self.waited_until_unix_ms,
            wait_us: self.wait_us,
            depth_at_start: self.depth_at_start,
            cancelled: self.cancelled,
        }
    }
}

impl InflightView<'_> {
    pub(crate) fn to_event(self) -> InFlightSnapshot {
        InFlightSnapshot {
            gauge: self.gauge.to_owned(),
            at_unix_ms: self.at_unix_ms,
            count: self.count,
        }
    }
}
