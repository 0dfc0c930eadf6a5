//! `audit-writer` itself, built with the integration tests so that the
//! fault tests can kill -9 and SIGTERM a real writer process.

use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    audit_writer::command::run(audit_writer::config::Cli::parse()).await
}
