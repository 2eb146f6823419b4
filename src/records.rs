//! The compact in-memory form of events, and how a drain turns it into the artifact's form.
//!
//! A record keeps what the hot path had in hand: the shared request state (not a copy of its
//! id), the name `String` the caller passed, and run-clock ticks (not wall-clock reads). The
//! artifact's strings and millisecond instants are built only when a run is drained, which is
//! rare, instead of on every event.

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
    pub(crate) stage: String,
    pub(crate) started: Tick,
    pub(crate) finished: Tick,
    pub(crate) success: bool,
    pub(crate) cancelled: bool,
}

/// A timed queue wait.
#[derive(Debug)]
pub(crate) struct QueueRecord {
    pub(crate) request: Arc<RequestState>,
    pub(crate) queue: String,
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

impl RequestRecord {
    pub(crate) fn to_event(&self, clock: &RunClock) -> RequestEvent {
        let request = &*self.request;
        RequestEvent {
            request_id: request.id().to_owned(),
            route: request.route.clone(),
            kind: request.kind.clone(),
            started_at_unix_ms: clock.unix_ms(request.started),
            finished_at_unix_ms: clock.unix_ms(self.finished),
            latency_us: clock.micros_between(request.started, self.finished),
            outcome: self.outcome.as_str().to_owned(),
        }
    }
}

impl StageRecord {
    pub(crate) fn to_event(&self, clock: &RunClock) -> StageEvent {
        StageEvent {
            request_id: self.request.id().to_owned(),
            stage: self.stage.clone(),
            started_at_unix_ms: clock.unix_ms(self.started),
            finished_at_unix_ms: clock.unix_ms(self.finished),
            latency_us: clock.micros_between(self.started, self.finished),
            success: self.success,
            cancelled: self.cancelled,
        }
    }
}

impl QueueRecord {
    pub(crate) fn to_event(&self, clock: &RunClock) -> QueueEvent {
        QueueEvent {
            request_id: self.request.id().to_owned(),
            queue: self.queue.clone(),
            waited_from_unix_ms: clock.unix_ms(self.started),
            waited_until_unix_ms: clock.unix_ms(self.finished),
            wait_us: clock.micros_between(self.started, self.finished),
            depth_at_start: self.depth_at_start,
            cancelled: self.cancelled,
        }
    }
}

impl InflightRecord {
    pub(crate) fn to_event(&self, clock: &RunClock) -> InFlightSnapshot {
        InFlightSnapshot {
            gauge: self.gauge.cell.name.to_string(),
            at_unix_ms: clock.unix_ms(self.at),
            count: self.count,
        }
    }
}
