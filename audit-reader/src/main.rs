//! `audit-reader serve` (default); see `--help`.

use audit_reader::config::{Cli, Command, ServeOnly};
use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
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
    match audit_reader::server::run(args, listener, audit_server::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "audit-reader failed");
            ExitCode::FAILURE
        }
    }
}
