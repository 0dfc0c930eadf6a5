//! What `audit-reader` does with its command line: serve. Kept in the
//! library so the binary is one line and the fault tests can run this very
//! code as a process of its own.

use crate::config::{Cli, Command, ServeOnly};
use clap::Parser;
use std::process::ExitCode;

pub async fn run(cli: Cli) -> ExitCode {
    let _telemetry = match cli.telemetry.init("audit-reader") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("audit-reader: {error}");
            return ExitCode::FAILURE;
        }
    };
    let Command::Serve(args) = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeOnly::parse_from(["audit-reader"]).args));
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, listen = %args.listen, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match crate::server::run(args, listener, audit_server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "audit-reader failed");
            ExitCode::FAILURE
        }
    }
}
