//! `audit-writer serve` (default) or `audit-writer migrate`; see `--help`.

use audit_writer::config::{Cli, Command, ServeOnly};
use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let _telemetry = match cli.telemetry.init("audit-writer") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("audit-writer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let command = match cli.command {
        Some(command) => command,
        // `audit-writer` alone serves, with options from the environment.
        None => Command::Serve(ServeOnly::parse_from(["audit-writer"]).args),
    };
    match command {
        Command::Migrate(args) => {
            let result = if args.revert_all {
                audit_migrations::revert_all(&args.database.database_url).await
            } else {
                audit_migrations::run_pending(&args.database.database_url).await
            };
            match result {
                Ok(versions) if versions.is_empty() => {
                    tracing::info!("schema is up to date");
                    ExitCode::SUCCESS
                }
                Ok(versions) => {
                    tracing::info!(?versions, revert = args.revert_all, "migrations applied");
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    tracing::error!(%error, "migration failed");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            let listener = match tokio::net::TcpListener::bind(args.listen).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::error!(%error, listen = %args.listen, "cannot listen");
                    return ExitCode::FAILURE;
                }
            };
            match audit_writer::server::run(args, listener, audit_server::shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!(%error, "audit-writer failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
