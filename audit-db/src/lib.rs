//! The storage shared by both services: the diesel [`schema`] (mirroring
//! the migrations), the [`models`] rows, [`connect`] (every connection,
//! with TLS as the URL's `sslmode` says), the bb8 [`pool`] builder, the
//! consistency tokens of [`replication`], and [`DbError`], which classifies
//! database failures by what a caller can do about them; [`leader`] runs
//! each periodic job once per cluster.
//!
//! The queries themselves live with their only user: the write path in
//! `audit-writer`'s `store` module, the read and analytics queries in
//! `audit-reader`'s `queries` module. The exception is [`quality`], the
//! data-quality checks both use (the reader's RPC, the writer's periodic
//! job). This crate knows nothing of gRPC; each service maps [`DbError`]
//! to its own statuses.

pub mod connect;
mod error;
pub mod leader;
pub mod models;
pub mod pool;
pub mod quality;
pub mod replication;
pub mod schema;

pub use connect::{establish, redact_url};
pub use error::DbError;
pub use pool::{PgPool, PoolConfig, PooledConnection, build_pool};
