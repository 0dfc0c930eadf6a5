//! `audit-reader` itself, built with the integration tests so that the
//! fault tests can SIGTERM a real reader process.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    audit_reader::command::run(audit_reader::config::Cli::parse()).await
}
