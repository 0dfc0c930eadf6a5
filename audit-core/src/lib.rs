//! The domain of Signal Audit Trail, shared by the writer and the reader.
//!
//! Requests arrive as protobuf messages; [`validate`] turns them into the
//! checked types here (or a [`DomainError`] naming the offending field), and
//! the services only ever hand checked types to the database layer. The
//! pipeline vocabulary ([`SignalStatus`], [`SignalLocation`]) is one Rust enum
//! each, mapped to PostgreSQL enums by `diesel-derive-enum` and to protobuf
//! enums in [`convert`].

pub mod convert;
mod error;
mod pipeline;
mod ticker;
pub mod validate;

pub use error::DomainError;
pub use pipeline::{SignalLocation, SignalLocationMapping, SignalStatus, SignalStatusMapping};
pub use ticker::normalise_ticker;
