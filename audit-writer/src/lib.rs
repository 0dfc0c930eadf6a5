//! `audit-writer`: the write side of Signal Audit Trail.
//!
//! Producers call [`grpc::WriterService`] (RecordSignal, RecordEvent,
//! RecordBatch, AddTags, RemoveTags, Ingest). Each handler decodes the
//! request into `audit-core` types (through `audit-wire`), runs exactly one
//! transaction on the PostgreSQL primary through [`store`] (unary writes
//! ride a shared transaction of [`group_commit`]; [`ingest`] commits one per
//! chunk), and answers with the commit's WAL position as a consistency token
//! that the reader honours. Failures are [`error::WriteError`], mapped to a
//! gRPC status in one place. [`server::run`] wires the service with health,
//! reflection, tracing and graceful shutdown; [`jobs`] keep the partitions,
//! rollups and hourly analytics tables current.

pub mod command;
pub mod config;
pub mod error;
pub mod group_commit;
pub mod grpc;
pub mod ingest;
pub mod jobs;
pub mod server;
pub mod store;
