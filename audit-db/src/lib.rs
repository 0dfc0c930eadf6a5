//! The PostgreSQL side of Signal Audit Trail.
//!
//! [`schema`] mirrors the migrations, [`models`] holds the rows, [`pool`]
//! builds the bb8 pools (primary for the writer, replica for the reader), and
//! each query family lives in its own module: [`writes`] for everything the
//! writer does in one transaction per request, [`reads`] for the reader's
//! lookups and keyset pages, [`replication`] for consistency tokens and
//! replica lag. Callers hand in checked domain values from `audit-core` and
//! get rows or a [`DbError`] back; mapping to gRPC happens in the services.

pub mod analytics;
mod convert;
mod error;
pub mod maintenance;
pub mod models;
pub mod pool;
pub mod reads;
pub mod replication;
pub mod rollups;
pub mod schema;
mod statements;
pub mod tail;
pub mod writes;

pub use convert::{event_to_proto, interval_to_delta, signal_to_proto};
pub use error::{DbError, invalid};
pub use pool::{PgPool, PoolConfig, build_pool};
