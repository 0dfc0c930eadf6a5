//! `audit-bench ingest`: how fast the writer takes signals, next to what
//! PostgreSQL itself absorbs on the same machine, measured in one run.
//!
//! The bench starts the real `audit-writer` binary as a child (so it can
//! read its CPU time and peak RSS from /proc), then runs phases against one
//! empty, migrated database, truncating between phases so each starts from
//! the same size:
//!
//! - `naive`: one transaction per signal straight on PostgreSQL (signal,
//!   event-id claim and received event), N clients: the baseline;
//! - `batched`: `audit_db::writes::record_batch` with chunks of signals,
//!   N clients, no gRPC: the database-side limit of this schema;
//! - `unary`: RecordSignal calls over gRPC from many concurrent callers,
//!   exercising group commit;
//! - `unary-half`: the same, paced at half the rate `unary` reached, for
//!   latency at half of peak;
//! - `stream`: the Ingest RPC with chunks and a window of chunks in flight.
//!
//! Every phase prints throughput, latency percentiles (HDR histogram), and
//! the writer's CPU; the end prints the ratios issue 5 asks for.

mod measure;
mod phases;

use clap::{Args, Parser, Subcommand};
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
    /// group commit, streaming ingest.
    Ingest(IngestArgs),
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// An empty, migrated database on the primary.
    #[arg(
        long,
        env = "AUDIT_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:57532/bench"
    )]
    pub database_url: String,
    /// The writer binary to start and measure.
    #[arg(long, default_value = "target/release/audit-writer")]
    pub writer_bin: String,
    /// Signals written in each phase.
    #[arg(long, default_value_t = 40_000)]
    pub signals: usize,
    /// Concurrent database clients in the baselines.
    #[arg(long, default_value_t = 8)]
    pub db_clients: usize,
    /// Concurrent RecordSignal calls in flight in the unary phase.
    #[arg(long, default_value_t = 128)]
    pub unary_concurrency: usize,
    /// gRPC connections the unary callers share.
    #[arg(long, default_value_t = 4)]
    pub channels: usize,
    /// Signals per batch (baseline) or Ingest chunk.
    #[arg(long, default_value_t = 200)]
    pub chunk_size: usize,
    /// Concurrent Ingest streams.
    #[arg(long, default_value_t = 4)]
    pub streams: usize,
    /// Unacknowledged chunks per stream.
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Writer pool size (AUDIT_POOL_MAX for the child writer).
    #[arg(long, default_value_t = 16)]
    pub writer_pool: u32,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Ingest(args) = cli.command;
    match phases::run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("audit-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
