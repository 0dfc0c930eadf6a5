//! `audit-bench ingest`: how fast the writer takes signals, next to what
//! PostgreSQL itself absorbs on the same machine, measured in one run.
//!
//! The bench starts the real `audit-writer serve` as a child process (so it
//! can read the writer's CPU time and peak RSS from /proc), waits for its
//! health to report SERVING, then runs phases against one empty, migrated
//! database, truncating between phases so each starts from the same size:
//!
//! - `naive`: one transaction per signal straight on PostgreSQL (signal,
//!   event-id claim, received event, COMMIT) from N clients: the baseline;
//! - `batched`: `audit_writer::store::record_batch` with chunks of signals from
//!   N clients, no gRPC: the database-side limit of this schema;
//! - `unary`: RecordSignal, one signal per call, from many concurrent
//!   callers: what group commit makes of single writes;
//! - `unary-half`: the same, paced open-loop at half the `unary` rate, for
//!   the latency at half of peak;
//! - `stream`: the Ingest RPC with chunks and a window of chunks in flight;
//! - `naive-events`: one transaction per event straight on PostgreSQL (lock
//!   the signal, claim the id, insert the event, update the signal, COMMIT)
//!   from N clients: the events baseline;
//! - `batched-events`: `record_batch` with chunks of events (one per
//!   signal) from N clients, no gRPC: the event path's database-side limit;
//! - `events`: RecordEvent for existing signals, a forwarding-pipeline mix;
//! - `events-half`: the same, paced open-loop at half the `events` rate;
//! - `stream-events`: the Ingest RPC carrying events.
//!
//! Each phase reports throughput, latency percentiles (HDR histogram) and
//! the writer's CPU; the end prints the ratios issues 5 and 11 set targets
//! for and one JSON line. (`audit-bench soak`, in [`soak`], is the long-running
//! counterpart against services already running.) A phase the writer does not implement (UNIMPLEMENTED) is
//! reported as not available. Everything is bounded by `--signals` (and
//! optionally `--duration-secs`), talks to 127.0.0.1 only, and the writer
//! child is killed when the bench ends, fails or is interrupted.

mod args;
mod ingest;
mod measure;
mod phases;
mod report;
mod soak;
mod workload;
mod writer;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(name = "audit-bench", version, about = "Signal Audit Trail benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ingest throughput and latency: naive and batched baselines, unary
    /// group commit, paced half-peak, streaming ingest, for signals and for
    /// events.
    Ingest(args::IngestArgs),
    /// Both services at a steady half-peak load with reads and tails, for
    /// minutes: RSS, connections, p99 and errors per window.
    Soak(soak::SoakArgs),
}

/// Why a run (or one phase of it) could not finish.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid options: {0}")]
    Options(String),
    #[error("{0}")]
    Database(#[from] audit_db::DbError),
    #[error("generated an invalid item: {0}")]
    Generated(#[from] audit_core::DomainError),
    #[error("writer: {0}")]
    Writer(String),
    #[error("grpc connection: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{call}: {:?}: {}", .status.code(), .status.message())]
    Call {
        call: &'static str,
        status: tonic::Status,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("bench task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl BenchError {
    pub fn call(call: &'static str, status: tonic::Status) -> Self {
        Self::Call { call, status }
    }

    pub fn query(error: diesel::result::Error) -> Self {
        Self::Database(audit_db::DbError::from(error))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match Cli::parse().command {
        Command::Ingest(args) => args,
        Command::Soak(args) => {
            return match soak::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("audit-bench: {error}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    // Leaving the select drops the run, and with it the writer child.
    tokio::select! {
        result = ingest::run(args) => match result {
            Ok(report) if report.any_failed() => ExitCode::FAILURE,
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("audit-bench: {error}");
                ExitCode::FAILURE
            }
        },
        signal = interrupted() => {
            eprintln!("audit-bench: {signal}, writer stopped");
            ExitCode::from(130)
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() -> &'static str {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "interrupted",
        () = terminate => "terminated",
    }
}
