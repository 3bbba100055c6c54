//! The TPS connectivity collector: knows every registered polling station, lets agents
//! enroll, takes their measurements over gRPC and never loses one it acknowledged.
//!
//! # Layout
//! - [`config`]: the TOML config, validated into typed values before anything binds.
//! - [`domain`]: stations, agents, measurements — free of wire and storage formats.
//! - [`wire`]: the edge; `tps.v1` messages are validated and converted here only.
//! - [`registry`]: parsing and validating the station registry CSV.
//! - [`auth`]: tokens, one-time enrollment codes, their hashes, wrong-code limits.
//! - [`store`]: SQLite schema, migrations, queries; [`store::writer`] is the one
//!   batching writer that every push and enrollment goes through.
//! - [`live`]: the in-memory view (token → agent, last seen, latest per target).
//! - [`coverage`]: the coverage state machine; [`flags`]: the follow-up queue;
//!   [`monitor`] keeps both current in the running collector.
//! - [`ingest`]: the gRPC service `tps.v1.Collector`.
//! - [`http`]: health, metrics, the dashboard; [`api`]: the status API (JSON,
//!   OpenAPI at `/api/v1/openapi.json`); [`operators`]: who may call it;
//!   [`dashboard`]: the operators' page.
//! - [`metrics`]: the metrics themselves.
//! - [`influx`]: the optional InfluxDB 2 sink, reading from a durable cursor.
//! - [`rollup`]: daily RTT/loss rollups of measurements, from a durable cursor;
//!   [`report`]: the weekly coverage report for KPU (HTML, CSV, JSON) and its schedule.
//! - [`limits`]: the open-file limit (one socket per connected agent).
//! - [`commands`]: import-stations, enroll-codes, revoke-agent.
//! - [`server`]: [`server::run`] wires it together on given listeners.
//! - `testing` (feature `testing`): a real collector on loopback for other crates' tests.

pub mod api;
pub mod auth;
pub mod commands;
pub mod config;
pub mod dashboard;
pub mod domain;
pub mod edge;
pub mod http;
pub mod influx;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod operators;
pub mod registry;
pub mod report;
pub mod rollup;
pub mod server;
pub mod state;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use server::{Listeners, run};
