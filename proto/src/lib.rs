//! The `tps.v1` wire protocol between TPS agents and the collector: generated types and
//! the encoded descriptor set (for gRPC reflection), and the codec. Nothing else lives here; both sides
//! convert these types into their own domain types at their edge.

pub mod codec;

/// `tps.v1`: enrollment and measurement push.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("tps.v1");
}

/// Encoded `FileDescriptorSet` of every `tps.v1` file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tps_v1_descriptor.bin"));
