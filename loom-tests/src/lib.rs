//! Loom models of the recorder's concurrency protocol.
