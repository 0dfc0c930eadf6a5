//! `audit-admin`: the operator's command line for Signal Audit Trail.
//!
//! One module per command family: [`migrate`] (schema), [`partitions`]
//! (daily partitions of `signal_events`), [`check`] (the data-quality
//! checks the reader serves, run on demand), [`retention`] (the policy, and
//! runs that archive and then drop what is past it), [`restore`] (`archive`
//! and `restore` of one day), built on [`archive`] (the archive format and
//! its store) and [`dump`] (rows out of and back into PostgreSQL); and the
//! migration from the old tracker: [`import`], [`verify`] and [`export`] of
//! the JSON-lines format of [`tracker`]; [`backup`] drives pgBackRest.
//!
//! Every command returns a [`report::Report`], printed as text or JSON by
//! [`run`], which also decides the exit code: 0 done, 1 found problems,
//! 2 failed or refused. Periodic commands (retention, check) take the same
//! cluster-wide job locks as the writer's jobs (`audit_db::leader`), so a
//! scheduled run and a manual one never overlap.

pub mod archive;
pub mod backup;
pub mod check;
pub mod cli;
pub mod db;
pub mod dump;
pub mod error;
pub mod export;
pub mod import;
pub mod migrate;
pub mod partitions;
pub mod policy;
pub mod report;
pub mod restore;
pub mod retention;
pub mod tracker;
pub mod verify;

use clap::Parser;
use cli::{Cli, Command, PartitionsCommand, RetentionCommand};
use error::AdminError;
use report::Report;
use std::ffi::OsString;

/// What a command printed and how it exits.
#[derive(Debug)]
pub struct Output {
    pub code: u8,
    pub stdout: String,
    pub stderr: String,
}

/// Parses `args` (the program name first) and runs the command.
pub async fn run<I, T>(args: I) -> Output
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let text = error.render().to_string();
            return if error.use_stderr() {
                Output {
                    code: 2,
                    stdout: String::new(),
                    stderr: text,
                }
            } else {
                // --help, --version
                Output {
                    code: 0,
                    stdout: text,
                    stderr: String::new(),
                }
            };
        }
    };
    let json = cli.global.json;
    match execute(&cli).await {
        Ok(report) => Output {
            code: u8::from(report.findings),
            stdout: if json {
                format!("{}\n", report.json)
            } else {
                format!("{}\n", report.text)
            },
            stderr: String::new(),
        },
        Err(error) => Output {
            code: error.exit_code(),
            stdout: if json {
                format!("{}\n", serde_json::json!({ "error": error.to_string() }))
            } else {
                String::new()
            },
            stderr: format!("audit-admin: {error}\n"),
        },
    }
}

async fn execute(cli: &Cli) -> Result<Report, AdminError> {
    let global = &cli.global;
    let pool = db::pool(global);
    match &cli.command {
        Command::Migrate(command) => migrate::run(global, command).await,
        Command::Partitions(PartitionsCommand::List(args)) => partitions::list(&pool, args).await,
        Command::Partitions(PartitionsCommand::Ensure(args)) => {
            partitions::ensure(&pool, global, args).await
        }
        Command::Check(args) => check::run(&pool, args).await,
        Command::Retention(RetentionCommand::Show) => retention::show(&pool).await,
        Command::Retention(RetentionCommand::Set(args)) => retention::set(&pool, args).await,
        Command::Retention(RetentionCommand::Run(args)) => {
            retention::run(&pool, global, args).await
        }
        Command::Archive(args) => restore::archive_day(&pool, args).await,
        Command::Restore(args) => restore::restore(&pool, global, args).await,
        Command::Import(args) => import::run(&pool, global, args).await,
        Command::Verify(args) => verify::run(&pool, args).await,
        Command::Export(args) => export::run(&pool, args).await,
        Command::Backup(args) => backup::backup(args).await,
        Command::BackupInfo(args) => backup::info(args).await,
        Command::RestoreBackup(args) => backup::restore(args).await,
    }
}
