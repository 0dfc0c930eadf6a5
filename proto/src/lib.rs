//! The one contract between Signal Audit Trail and its callers.
//!
//! `signal_audit/v1/*.proto` is compiled at build time; this crate re-exports
//! the generated messages, clients and servers, and the encoded file
//! descriptor set that both services hand to gRPC reflection.

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/signal_audit.v1.rs"));
}

/// Encoded `FileDescriptorSet` of every file in the contract, for reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/signal_audit_descriptor.bin"));
