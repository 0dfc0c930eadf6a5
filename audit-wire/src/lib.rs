//! The gRPC edge both services share, and nothing else: protobuf stays on
//! this side, domain types (`audit-core`) and rows (`audit-db`) on the other.
//!
//! - [`convert`]: protobuf scalars and enums to domain values and back;
//! - [`decode`]: write requests to checked [`audit_core::NewSignal`] /
//!   [`audit_core::NewEvent`], every error naming its protobuf field;
//! - `encode` (feature `service`, on by default): stored rows to protobuf
//!   messages;
//! - [`token`]: page and resume tokens, the cursors they carry, checked
//!   when they come back;
//! - `db_status` (feature `service`): how a storage failure reads as a
//!   gRPC status. Each service's own error enum delegates its storage
//!   variant here, so a given failure reads the same whichever service
//!   reports it;
//! - `fuzzing` (tests and the `fuzzing` feature): hostile bytes through
//!   protobuf decoding and validation, and hostile tokens, for `fuzz/` and
//!   the proptests.

pub mod convert;
pub mod decode;
#[cfg(feature = "service")]
pub mod encode;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
#[cfg(feature = "service")]
mod status;
pub mod token;

#[cfg(feature = "service")]
pub use status::db_status;
