//! What reads stored measurements from durable cursors and sends them on: the
//! optional InfluxDB 2 sink ([`influx`]) and the daily RTT/loss rollups ([`rollup`]).

pub mod influx;
pub mod rollup;
