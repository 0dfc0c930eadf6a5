//! `audit-reader`: the read side of Signal Audit Trail.
//!
//! Every call is answered from one of the PostgreSQL streaming replicas
//! ([`replica`]: round robin over the healthy ones) through a pool whose
//! sessions are read-only, so this service cannot write even by mistake and
//! never loads the primary. A request may carry the consistency token of an
//! earlier write; [`consistency`] sends the call to a replica that has
//! replayed it, holding it until one has (within the call's deadline) or
//! answering UNAVAILABLE. [`request`] turns protobuf filters into [`queries`];
//! [`grpc`] holds the reader's thin handlers (with [`export`] and [`tail`]
//! for the streaming calls), [`analytics`] the analytics service's, one
//! module per RPC family, answered from rollups and hourly analytics tables and
//! cached in [`cache`]. Failures are [`error::ReadError`], mapped to a gRPC
//! status in one place. [`server::run`] wires them with health (SERVING
//! while any replica is healthy), the per-replica watchers, reflection, tracing, metrics and graceful
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
