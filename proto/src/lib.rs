//! The one contract between Signal Audit Trail and its callers.
//!
//! `signal_audit/v1/*.proto` is compiled at build time; this crate re-exports
//! the generated messages, clients and servers, and the encoded file
//! descriptor set that both services hand to gRPC reflection.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("signal_audit.v1");
}

/// Encoded `FileDescriptorSet` of every file in the contract, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/signal_audit_descriptor.bin"));
