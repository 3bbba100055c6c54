//! The TPS agent.
pub mod config;
pub mod gateway;
pub mod probe;
pub mod spool;
pub mod stats;
pub mod system;
