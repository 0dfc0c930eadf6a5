//! `audit-writer`: the write side of Signal Audit Trail.
//!
//! Producers call [`grpc::WriterService`] (RecordSignal, RecordEvent,
//! RecordBatch, AddTags, RemoveTags). Each handler validates the request
//! into `audit-core` types, runs exactly one transaction on the PostgreSQL
//! primary through `audit_db::writes`, and answers with the commit's WAL
//! position as a consistency token that the reader honours. [`server::run`]
//! wires the service with health, reflection, tracing and graceful shutdown;
//! background tasks keep the health status and the event partitions current.

pub mod config;
pub mod group_commit;
pub mod grpc;
pub mod ingest;
pub mod server;
