//! Stress: requests finishing while the run shuts down, and samplers registering at once.
//!
//! Workers finish requests while the main thread shuts the run down again and again. Every
//! run handed to the sink must account for each pending request exactly once, as completed or
//! as unfinished, so the unfinished count is exact; a request whose finish returned before the
//! shutdown began must be completed in it; and what one run holds as completed, every later
//! run does too. Concurrent sampler registrations let exactly one
//! win. Set `TAILTRIAGE_STRESS_SCALE` to run more rounds.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use tailtriage_core::__internal::register_tokio_runtime_sampler;
use tailtriage_core::{
    CaptureLimits, CaptureMode, EffectiveTokioSamplerConfig, MemorySink, RequestOptions, Run,
    RuntimeSamplerRegistrationError, Tailtriage,
};

const WORKERS: usize = 4;
/// A worker finishes at most this many requests ahead of the shutdowns: it waits for shutdown
/// `n` to begin before its request `n * PACE`, so that shutdowns overlap finishing even on a
/// loaded machine where the workers could otherwise finish before the first shutdown.
const PACE: usize = 150;

/// Lets paced threads run free when dropped, so that a failed check on the draining thread
/// ends the test instead of leaving the paced threads waiting for drains that never come.
struct ReleaseOnDrop<'a>(&'a AtomicUsize);

impl Drop for ReleaseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(usize::MAX, Ordering::Release);
    }
}

fn request_id(worker: usize, index: usize) -> String {
    format!("{worker}-{index}")
}

/// Checks that the run of shutdown number `shutdown` accounts for each of the `total` requests
/// exactly once, holds every request whose finish returned before it (`finished_before` per
/// worker) and every request an earlier run completed; returns the completed ids.
fn check_every_request_accounted_once(
    run: &Run,
    total: usize,
    finished_before: &[usize; WORKERS],
    previous: &HashSet<String>,
    shutdown: usize,
) -> HashSet<String> {
    let completed: HashSet<String> = run.requests.iter().map(|r| r.request_id.clone()).collect();
    assert_eq!(
        completed.len(),
        run.requests.len(),
        "shutdown {shutdown} must hold each completed request once"
    );
    let unfinished = run.metadata.unfinished_requests.count;
    assert_eq!(
        completed.len() as u64 + unfinished,
        total as u64,
        "shutdown {shutdown} must account for every request exactly once: \
         {} completed + {unfinished} unfinished",
        completed.len()
    );
    for sample in &run.metadata.unfinished_requests.sample {
        assert!(
            !completed.contains(&sample.request_id),
            "request {} must not be both completed and unfinished",
            sample.request_id
        );
    }
    for (worker, count) in finished_before.iter().enumerate() {
        for index in 0..*count {
            assert!(
                completed.contains(&request_id(worker, index)),
                "request {} finished before shutdown {shutdown} began, so it \
                 must be completed in its run",
                request_id(worker, index)
            );
        }
    }
    assert!(
        completed.is_superset(previous),
        "shutdown {shutdown} must still hold every request earlier runs completed"
    );
    completed
}

/// Checks that in the run of shutdown number `shutdown`, every request whose finish returned
/// before it began (`finished_before` per worker) is completed, and every request begun before
/// it (`begun_before`) but not finished is completed or unfinished, never both, never neither.
fn check_pending_requests_completed_or_unfinished(
    run: &Run,
    begun_before: &[usize; WORKERS],
    finished_before: &[usize; WORKERS],
    shutdown: usize,
) {
    let completed: HashSet<&str> = run.requests.iter().map(|r| r.request_id.as_str()).collect();
    let unfinished: HashSet<&str> = run
        .metadata
        .unfinished_requests
        .sample
        .iter()
        .map(|sample| sample.request_id.as_str())
        .collect();
    assert_eq!(
        run.metadata.unfinished_requests.count,
        unfinished.len() as u64,
        "shutdown {shutdown}: with at most {WORKERS} requests pending, the \
         unfinished count must be exactly the requests the sample names"
    );
    for worker in 0..WORKERS {
        for index in 0..begun_before[worker] {
            let id = request_id(worker, index);
            let is_completed = completed.contains(id.as_str());
            let is_unfinished = unfinished.contains(id.as_str());
            if index < finished_before[worker] {
                assert!(
                    is_completed && !is_unfinished,
                    "shutdown {shutdown}: request {id} finished before the \
                     shutdown began, so it must be completed and only completed"
                );
            } else {
                assert!(
                    is_completed != is_unfinished,
                    "shutdown {shutdown}: request {id} was pending when the \
                     shutdown began, so it must be completed or unfinished, never \
                     both and never neither (completed: {is_completed}, \
                     unfinished: {is_unfinished})"
                );
            }
        }
    }
}

#[test]
fn unfinished_count_is_exact_when_requests_finish_during_shutdown() {
    const PER_WORKER: usize = 1_500;
    let total = WORKERS * PER_WORKER;

    for _ in 0..support::rounds(10) {
        let sink = MemorySink::new();
        let tailtriage = Arc::new(
            Tailtriage::builder("stress")
                .sink(sink.clone())
                .capture_limits(CaptureLimits {
                    max_requests: total,
                    ..CaptureLimits::default()
                })
                .build()
                .expect("a recorder with a service name builds"),
        );
        let mut completions: Vec<Vec<_>> = (0..WORKERS).map(|_| Vec::new()).collect();
        for index in 0..PER_WORKER {
            for (worker, completions) in completions.iter_mut().enumerate() {
                let options = RequestOptions::new().request_id(request_id(worker, index));
                completions.push(
                    tailtriage
                        .begin_request_with_owned("/stress", options)
                        .completion,
                );
            }
        }

        let finished: [AtomicUsize; WORKERS] = std::array::from_fn(|_| AtomicUsize::new(0));
        let shutdowns_begun = AtomicUsize::new(0);
        let start = Barrier::new(WORKERS + 1);
        std::thread::scope(|scope| {
            let workers: Vec<_> = completions
                .into_iter()
                .enumerate()
                .map(|(worker, completions)| {
                    let (finished, start, shutdowns_begun) = (&finished, &start, &shutdowns_begun);
                    scope.spawn(move || {
                        start.wait();
                        for (index, completion) in completions.into_iter().enumerate() {
                            if index % PACE == 0 {
                                while shutdowns_begun.load(Ordering::Acquire) < index / PACE {
                                    std::thread::yield_now();
                                }
                            }
                            completion.finish_ok();
                            finished[worker].fetch_add(1, Ordering::Release);
                        }
                    })
                })
                .collect();

            let _release = ReleaseOnDrop(&shutdowns_begun);
            start.wait();
            let mut previous: HashSet<String> = HashSet::new();
            let mut shutdowns = 0;
            loop {
                let all_done = workers
                    .iter()
                    .all(std::thread::ScopedJoinHandle::is_finished);
                let before: [usize; WORKERS] =
                    std::array::from_fn(|worker| finished[worker].load(Ordering::Acquire));
                shutdowns_begun.fetch_add(1, Ordering::Release);
                tailtriage
                    .shutdown()
                    .expect("a memory sink accepts the run");
                shutdowns += 1;
                let run = sink.take_run().expect("shutdown hands the run to the sink");

                let completed =
                    check_every_request_accounted_once(&run, total, &before, &previous, shutdowns);
                previous = completed;
                if all_done {
                    assert_eq!(
                        run.metadata.unfinished_requests.count, 0,
                        "no request is pending once all finished"
                    );
                    break;
                }
            }
        });
    }
}

#[test]
fn a_request_finishing_during_shutdown_is_completed_or_unfinished_never_both_nor_neither() {
    // Workers begin and finish one request at a time, so at most one request per worker is
    // pending and a run's unfinished sample names every unfinished request.
    const PER_WORKER: usize = 2_000;

    for _ in 0..support::rounds(10) {
        let sink = MemorySink::new();
        let tailtriage = Tailtriage::builder("stress")
            .sink(sink.clone())
            .build()
            .expect("a recorder with a service name builds");
        // Per worker: requests whose begin returned, and requests whose finish returned.
        let begun: [AtomicUsize; WORKERS] = std::array::from_fn(|_| AtomicUsize::new(0));
        let finished: [AtomicUsize; WORKERS] = std::array::from_fn(|_| AtomicUsize::new(0));
        let shutdowns_begun = AtomicUsize::new(0);

        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..WORKERS)
                .map(|worker| {
                    let (tailtriage, begun, finished, shutdowns_begun) =
                        (&tailtriage, &begun, &finished, &shutdowns_begun);
                    scope.spawn(move || {
                        for index in 0..PER_WORKER {
                            if index % PACE == 0 {
                                while shutdowns_begun.load(Ordering::Acquire) < index / PACE {
                                    std::thread::yield_now();
                                }
                            }
                            let options =
                                RequestOptions::new().request_id(request_id(worker, index));
                            let started = tailtriage.begin_request_with("/stress", options);
                            begun[worker].store(index + 1, Ordering::Release);
                            started.completion.finish_ok();
                            finished[worker].store(index + 1, Ordering::Release);
                        }
                    })
                })
                .collect();

            let _release = ReleaseOnDrop(&shutdowns_begun);
            let mut shutdowns = 0;
            loop {
                let all_done = workers
                    .iter()
                    .all(std::thread::ScopedJoinHandle::is_finished);
                let finished_before: [usize; WORKERS] =
                    std::array::from_fn(|worker| finished[worker].load(Ordering::Acquire));
                let begun_before: [usize; WORKERS] =
                    std::array::from_fn(|worker| begun[worker].load(Ordering::Acquire));
                shutdowns_begun.fetch_add(1, Ordering::Release);
                tailtriage
                    .shutdown()
                    .expect("a memory sink accepts the run");
                shutdowns += 1;
                let run = sink.take_run().expect("shutdown hands the run to the sink");

                check_pending_requests_completed_or_unfinished(
                    &run,
                    &begun_before,
                    &finished_before,
                    shutdowns,
                );
                if all_done {
                    assert_eq!(
                        run.requests.len(),
                        WORKERS * PER_WORKER,
                        "once every request finished, a shutdown must hold them all"
                    );
                    break;
                }
            }
        });
    }
}

fn sampler_config(cadence_ms: u64) -> EffectiveTokioSamplerConfig {
    EffectiveTokioSamplerConfig {
        inherited_mode: CaptureMode::Light,
        explicit_mode_override: None,
        resolved_mode: CaptureMode::Light,
        resolved_sampler_cadence_ms: cadence_ms,
        resolved_runtime_snapshot_retention: 8,
    }
}

#[test]
fn only_one_of_many_concurrent_sampler_registrations_succeeds() {
    const SAMPLERS: u64 = 4;

    for round in 0..support::rounds(1_000) {
        let tailtriage = Tailtriage::builder("stress")
            .build()
            .expect("a recorder with a service name builds");
        let start = Barrier::new(usize::try_from(SAMPLERS).expect("a few samplers"));
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let samplers: Vec<_> = (1..=SAMPLERS)
                .map(|cadence_ms| {
                    let (tailtriage, start) = (&tailtriage, &start);
                    scope.spawn(move || {
                        start.wait();
                        let outcome =
                            register_tokio_runtime_sampler(tailtriage, sampler_config(cadence_ms));
                        (cadence_ms, outcome)
                    })
                })
                .collect();
            samplers
                .into_iter()
                .map(|sampler| sampler.join().expect("a sampler finishes registering"))
                .collect()
        });

        let winners: Vec<u64> = outcomes
            .iter()
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(cadence_ms, _)| *cadence_ms)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "exactly one registration must succeed (round {round}): {outcomes:?}"
        );
        assert!(
            outcomes.iter().all(|(_, outcome)| outcome.is_ok()
                || *outcome == Err(RuntimeSamplerRegistrationError::DuplicateStart)),
            "every other registration must be refused as a duplicate start: {outcomes:?}"
        );
        assert_eq!(
            tailtriage
                .snapshot()
                .metadata
                .effective_tokio_sampler_config,
            Some(sampler_config(winners[0])),
            "the metadata must hold the winner's config (round {round})"
        );
    }
}
