//! Data for analytics, and the analytics benchmark.
//!
//! - `history`: a deterministic, realistic pipeline history written through
//!   the writer's gRPC API (many tickers, every status, retries, errors,
//!   HTTP failures, late events), for demos and end-to-end checks.
//! - `bulk`: millions of events generated inside PostgreSQL (deterministic:
//!   `setseed`), far faster than any API, then the rollups brought up to date.
//! - `run`: each analytics question answered by the reader over gRPC and
//!   the same question answered from raw events on the replica in the same
//!   run, with p50/p99 latencies and the speed-up; the dashboard RPCs are
//!   judged against their target, the others reported for information.
//! - `maintenance`: the writer's periodic jobs' wall and CPU time for one
//!   hour of new traffic on top of the history (flat with history is the
//!   goal).

mod bulk;
mod history;
mod maintenance;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, Parser)]
#[command(
    name = "audit-analytics-bench",
    version,
    about = "Signal Audit Trail data generators and analytics benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a realistic history through the writer (gRPC).
    History(history::Args),
    /// Generate events in bulk inside PostgreSQL and refresh the rollups.
    Bulk(bulk::Args),
    /// Measure every analytics RPC against raw-event queries.
    Run(run::Args),
    /// Measure the periodic jobs' cost for one hour of new traffic on top
    /// of the history in the database.
    Maintenance(maintenance::Args),
}

#[tokio::main]
async fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::History(args) => history::run(args).await,
        Command::Bulk(args) => bulk::run(args).await,
        Command::Run(args) => run::run(args).await,
        Command::Maintenance(args) => maintenance::run(args).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("audit-analytics-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
