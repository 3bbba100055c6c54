//! The TPS agent: measures the polling station's internet link, keeps every
//! measurement on disk until the collector has it, and tells a field technician in
//! plain words whether the station is covered.
//!
//! # Layout
//! - [`config`]: the TOML config, validated with messages that name the key.
//! - [`probe`]: ICMP and TCP connect probes, one prober per target; [`icmp`] is ICMP
//!   behind one interface (surge-ping sockets on Unix, the system API on Windows);
//!   [`gateway`] finds the default gateway; [`stats`] summarises a round.
//! - [`system`]: device facts (uptime, boot time, interfaces) via sysinfo.
//! - [`spool`]: the on-disk store-and-forward queue (SQLite, fsync per round).
//! - [`uplink`]: the gRPC client; [`backoff`] paces retries; [`wire`] is the edge
//!   where spool entries become `tps.v1` messages.
//! - [`credentials`]: agent id and token, file mode 0600.
//! - [`platform`]: what differs between a Linux PC and an OpenWrt router (default
//!   paths and spool bound, what to tell the operator to change).
//! - [`service`]: the Windows service (install, start, stop, its entry point).
//! - [`run`]: the probe loop and the push loop; [`check`]: the field check;
//!   [`enroll`]: enrollment and writing the config.

pub mod backoff;
pub mod check;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod disk;
pub mod enroll;
pub mod gateway;
pub mod icmp;
pub mod platform;
pub mod probe;
pub mod run;
pub mod service;
pub mod spool;
pub mod stats;
pub mod system;
pub mod uplink;
pub mod wire;
