//! Shared helpers for end-to-end tests, the fleet simulator and benchmarks.
