//! `audit-reader`: the read side of Signal Audit Trail.
//!
//! Every call is answered from the PostgreSQL streaming replica through a
//! pool whose sessions are read-only, so this service cannot write even by
//! mistake and never loads the primary. A request may carry the consistency
//! token of an earlier write; [`consistency`] holds the call until the
//! replica has replayed it (within the call's deadline) or answers
//! UNAVAILABLE. [`request`] turns protobuf filters into [`queries`];
//! [`grpc`] holds the reader's thin handlers (with [`export`] and [`tail`]
//! for the streaming calls), [`analytics`] the analytics service's, one
//! module per RPC family, answered from rollups and hourly analytics tables and
//! cached in [`cache`]. Failures are [`error::ReadError`], mapped to a gRPC
//! status in one place. [`server::run`] wires them with health, the
//! replica gauges of [`replica`], reflection, tracing, metrics and graceful
//! shutdown.

pub mod analytics;
pub mod cache;
pub mod command;
pub mod config;
pub mod consistency;
pub mod error;
pub mod export;
pub mod grpc;
pub mod queries;
pub mod replica;
pub mod request;
pub mod server;
pub mod tail;
