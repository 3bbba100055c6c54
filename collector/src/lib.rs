//! The TPS connectivity collector: knows every registered polling station, lets agents
//! enroll, takes their measurements over gRPC and never loses one it acknowledged.
//!
//! # Layout
//! The folders follow the flow: **ingest → store → state → web / report / sinks**.
//! - [`config`]: the TOML config, validated into typed values before anything binds.
//! - [`domain`]: stations, agents, measurements — free of wire and storage formats.
//! - [`edge`]: both ports' connection caps, start and idle deadlines, the HTTP loop.
//! - [`ingest`]: the gRPC service `tps.v1.Collector` (authenticate, validate, commit,
//!   acknowledge); [`ingest::wire`] is where `tps.v1` messages become domain types.
//! - [`store`]: all SQL. Schema and queries; [`store::writer`], the one batching writer
//!   that publishes what each commit stored; [`store::readers`], a small read pool;
//!   [`store::flags`], [`store::operators`], [`store::notify`] (the outbox), [`store::integrity`]; [`store::blocks`]
//!   (the compact form of old measurements) and [`store::compact`] (moving rows into it,
//!   retention deletes, reads across both); [`store::space`], the disk and its floor.
//! - [`state`]: what the collector believes now: [`state::live`] (agents, tokens, latest
//!   rounds), [`state::coverage`] and [`state::flags`] owned by [`state::owner`], which
//!   consumes committed [`state::facts`], stores its decisions through
//!   [`state::persist`] and publishes [`state::snapshot`]s that readers use without locks.
//! - [`web`]: the HTTP side — router, health and metrics, the status API
//!   ([`web::api`], OpenAPI at `/api/v1/openapi.json`), the dashboard, report routes,
//!   [`web::notifications`].
//! - [`report`]: the weekly coverage report for KPU (HTML, CSV, JSON) and its schedule.
//! - [`notify`]: flag changes told to operators (Telegram, WhatsApp, e-mail, webhook) by
//!   region, exactly once from an outbox; active flags pushed to Alertmanager; the bot.
//! - [`sinks`]: what reads stored measurements from durable cursors: the InfluxDB 2
//!   sink and the daily rollups; [`hist`]: their RTT and loss histograms.
//! - [`retention`]: the schedule that compacts old measurements and deletes what is past
//!   retention, in small writer steps.
//! - [`registry`]: parsing and validating the station registry CSV.
//! - [`boundaries`]: the bundled regency outlines: stations outside their regency, the map.
//! - [`auth`]: tokens, one-time enrollment codes, their hashes, the enrollment limiter.
//! - [`metrics`]: the collector's own Prometheus metrics.
//! - [`limits`]: the open-file limit (one socket per connected agent) and the caps it gives.
//! - [`commands`]: import-stations, enroll-codes, revoke-agent, operators.
//! - [`server`]: [`server::run`] wires it together on given listeners.
//! - `testing` (feature `testing`): a real collector on loopback for other crates' tests.

pub mod auth;
pub mod boundaries;
pub mod commands;
pub mod config;
pub mod domain;
pub mod edge;
pub mod hist;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod registry;
pub mod report;
pub mod retention;
pub mod server;
pub mod sinks;
pub mod state;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod web;

pub use server::{Listeners, run};
