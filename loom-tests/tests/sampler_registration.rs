//! Model: two runtime samplers register on one run at once.
//!
//! Exactly one registration succeeds, the other is refused as a duplicate start, and the run's
//! metadata holds the winner's configuration: a snapshot taken during the race sees either no
//! sampler yet or the winner's, never the loser's.
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use tailtriage_core::__internal::register_tokio_runtime_sampler;
use tailtriage_core::{
    CaptureLimits, CaptureMode, EffectiveTokioSamplerConfig, RuntimeSamplerRegistrationError,
};
use tailtriage_loom_tests::{model, recorder};

/// A sampler configuration told apart by its cadence.
fn config(cadence_ms: u64) -> EffectiveTokioSamplerConfig {
    EffectiveTokioSamplerConfig {
        inherited_mode: CaptureMode::Light,
        explicit_mode_override: None,
        resolved_mode: CaptureMode::Light,
        resolved_sampler_cadence_ms: cadence_ms,
        resolved_runtime_snapshot_retention: 8,
    }
}

#[test]
fn concurrent_sampler_registrations_let_exactly_one_win_and_keep_its_config() {
    model("sampler registration", || {
        let (run, _sink) = recorder(CaptureLimits::default());

        let samplers: Vec<_> = [10, 20]
            .into_iter()
            .map(|cadence_ms| {
                let run = Arc::clone(&run);
                thread::spawn(move || {
                    (
                        cadence_ms,
                        register_tokio_runtime_sampler(&run, config(cadence_ms)),
                    )
                })
            })
            .collect();
        let during = run.snapshot().metadata.effective_tokio_sampler_config;
        let outcomes: Vec<_> = samplers
            .into_iter()
            .map(|sampler| sampler.join().expect("a sampler finishes registering"))
            .collect();

        let winners: Vec<u64> = outcomes
            .iter()
            .filter(|(_, outcome)| outcome.is_ok())
            .map(|(cadence_ms, _)| *cadence_ms)
            .collect();
        assert_eq!(
            winners.len(),
            1,
            "exactly one registration must succeed: {outcomes:?}"
        );
        assert!(
            outcomes.iter().all(|(_, outcome)| outcome.is_ok()
                || *outcome == Err(RuntimeSamplerRegistrationError::DuplicateStart)),
            "the losing registration must be refused as a duplicate start: {outcomes:?}"
        );
        let winner = config(winners[0]);
        assert_eq!(
            run.snapshot().metadata.effective_tokio_sampler_config,
            Some(winner),
            "the metadata must hold the winning sampler's config"
        );
        assert!(
            during.is_none() || during == Some(winner),
            "a snapshot taken during the race must see no sampler or the winner's, saw \
             {during:?} (winner {winner:?})"
        );
    });
}
