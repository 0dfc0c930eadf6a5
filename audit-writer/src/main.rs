//! `audit-writer serve` (default) or `audit-writer migrate`; see `--help`
//! and [`audit_writer::command`].

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    audit_writer::command::run(audit_writer::config::Cli::parse()).await
}
