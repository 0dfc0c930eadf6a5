//! `audit-reader serve` (default); see `--help` and [`audit_reader::command`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    audit_reader::command::run(audit_reader::config::Cli::parse()).await
}
