//! What the collector believes about every station right now: the live view of agents
//! ([`live`], mirrored by the writer after each commit), coverage ([`coverage`]) and the
//! follow-up queue ([`flags`]), kept by one task ([`owner`]) that consumes committed
//! [`facts`] and the clock and publishes an immutable [`snapshot`] that readers use
//! without locks.

pub mod coverage;
pub mod facts;
pub mod flags;
pub mod live;
pub mod owner;
pub mod persist;
pub mod snapshot;
