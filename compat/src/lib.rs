//! Drop-in checks for the recorder.
//!
//! This crate has no code of its own. Its tests build the published `tailtriage`
//! 0.2.0 crates (umbrella with the `tokio`, `axum` and `controller` integrations,
//! `tailtriage-analyzer` and the library half of `tailtriage-cli`) with this
//! repository's `tailtriage-core` patched in for the published one, and run the flows
//! those crates document end to end, asserting the artifacts they write.
