//! The command line: every command and option, with `--help` at every level.

use chrono::NaiveDate;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "audit-admin",
    version,
    about = "Signal Audit Trail operations: migrations, partitions, data-quality checks, \
             retention with archival, restore, import/export",
    long_about = "Signal Audit Trail operations: migrations, partitions, data-quality checks, \
                  retention with archival, restore, import/export.\n\n\
                  Exit codes: 0 done; 1 ran and found problems (check, verify); \
                  2 failed or refused (nothing was changed that the message does not say)."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// PostgreSQL primary: a login IN ROLE audit_admin, or the schema owner
    /// (or a member of it) for `migrate` and for what creates, detaches or
    /// drops partitions (`partitions ensure`, `retention run`, `restore`,
    /// `import`).
    #[arg(
        long,
        global = true,
        env = "AUDIT_DATABASE_URL",
        // clap would print the variable's value, password and all, in --help.
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:15432/signal_audit"
    )]
    pub database_url: String,
    /// Print one JSON document on stdout instead of text.
    #[arg(long, global = true, default_value_t = false)]
    pub json: bool,
    /// How long a DDL statement (partition creation, detach, drop) waits for
    /// its table lock before it gives up and retries; writers queued behind
    /// the lock request wait at most this long.
    #[arg(
        long,
        global = true,
        env = "AUDIT_ADMIN_LOCK_TIMEOUT_MS",
        default_value_t = 1_000
    )]
    pub lock_timeout_ms: u64,
    /// Attempts for a DDL statement that hits the lock timeout.
    #[arg(
        long,
        global = true,
        env = "AUDIT_ADMIN_LOCK_RETRIES",
        default_value_t = 10
    )]
    pub lock_retries: u32,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply, revert or list schema migrations.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Daily partitions of signal_events.
    #[command(subcommand)]
    Partitions(PartitionsCommand),
    /// Run the data-quality checks (orphans, stuck signals, counter and
    /// rollup mismatches); exit code 1 when anything is found.
    Check(CheckArgs),
    /// Retention policy and runs.
    #[command(subcommand)]
    Retention(RetentionCommand),
    /// Archive one day of events (and their signals) without dropping it.
    Archive(DayArgs),
    /// Bring an archived day back into the live tables.
    Restore(DayArgs),
    /// Load a snapshot of the old tracker (JSON lines, see the README) through
    /// the Ingest write path; idempotent, so running it again resumes.
    Import(ImportArgs),
    /// Compare a snapshot of the old tracker with the database; exit code 1
    /// on any difference.
    Verify(VerifyArgs),
    /// Write signals and their events in the tracker format.
    Export(ExportArgs),
    /// Take a pgBackRest backup of the primary (WAL archiving must be on).
    Backup(BackupArgs),
    /// List the pgBackRest backups.
    BackupInfo(PgBackRestArgs),
    /// Point-in-time recovery from the pgBackRest backups into a fresh data
    /// directory (never over the running primary).
    RestoreBackup(RestoreBackupArgs),
}

#[derive(Debug, Clone, Args)]
pub struct PgBackRestArgs {
    /// pgBackRest configuration (scripts/pg-cluster.sh with PG_CLUSTER_BACKUP=1
    /// writes STATE_DIR/pgbackrest/pgbackrest.conf).
    #[arg(long = "pgbackrest-config", env = "AUDIT_PGBACKREST_CONFIG")]
    pub config: PathBuf,
    /// The stanza (the cluster's name in the repository).
    #[arg(long, env = "AUDIT_PGBACKREST_STANZA", default_value = "audit")]
    pub stanza: String,
    /// OS user pgbackrest and the restored server run as; `postgres` when
    /// this runs as root, else the current user.
    #[arg(long, env = "AUDIT_PGBACKREST_USER")]
    pub run_as: Option<String>,
    /// The pgbackrest program.
    #[arg(long, env = "AUDIT_PGBACKREST_BIN", default_value = "pgbackrest")]
    pub pgbackrest: String,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub pgbackrest: PgBackRestArgs,
    /// full, diff or incr (pgBackRest makes the first one full anyway).
    #[arg(long = "type", default_value = "incr", value_parser = ["full", "diff", "incr"])]
    pub kind: String,
}

#[derive(Debug, Args)]
pub struct RestoreBackupArgs {
    #[command(flatten)]
    pub pgbackrest: PgBackRestArgs,
    /// Recover to this time (RFC 3339): transactions committed at or before
    /// it are in the copy, later ones are not.
    #[arg(long)]
    pub to: chrono::DateTime<chrono::Utc>,
    /// A new or empty directory for the restored data directory.
    #[arg(long)]
    pub target: PathBuf,
    /// Configure the copy to listen on 127.0.0.1:PORT (beside the source).
    #[arg(long)]
    pub port: Option<u16>,
    /// Start the copy (needs --port) and wait until it has recovered.
    #[arg(long, default_value_t = false)]
    pub start: bool,
    /// PostgreSQL binaries (pg_ctl).
    #[arg(long, env = "PG_BIN", default_value = "/usr/lib/postgresql/15/bin")]
    pub pg_bin: PathBuf,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The JSON-lines file.
    pub file: PathBuf,
    /// Signals plus events per transaction (at most 5000, the Ingest limit).
    #[arg(long, default_value_t = 2_000)]
    pub chunk_items: usize,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The JSON-lines file.
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The file to write.
    #[arg(long, short)]
    pub output: PathBuf,
    /// Signals created at or after this time (RFC 3339).
    #[arg(long)]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Signals created before this time (RFC 3339).
    #[arg(long)]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this normalised ticker (e.g. AAPL).
    #[arg(long)]
    pub ticker: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Apply every pending migration (idempotent).
    Up,
    /// Revert the newest migration(s): drops their tables and data.
    Down(MigrateDownArgs),
    /// List applied, pending and unknown migrations.
    Status,
}

#[derive(Debug, Args)]
pub struct MigrateDownArgs {
    /// How many migrations to revert, newest first.
    #[arg(long, default_value_t = 1, conflicts_with = "all")]
    pub steps: usize,
    /// Revert every migration (drops everything).
    #[arg(long, default_value_t = false)]
    pub all: bool,
    /// Confirm: reverting drops data.
    #[arg(long, default_value_t = false)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum PartitionsCommand {
    /// Every partition with its range, rows and size.
    List(PartitionsListArgs),
    /// Create the daily partitions of a range that are missing.
    Ensure(PartitionsEnsureArgs),
}

#[derive(Debug, Args)]
pub struct PartitionsListArgs {
    /// Count rows exactly (reads every partition) instead of the planner's estimate.
    #[arg(long, default_value_t = false)]
    pub exact: bool,
}

#[derive(Debug, Args)]
pub struct PartitionsEnsureArgs {
    /// Days ahead of today (UTC) that must have a partition.
    #[arg(long, default_value_t = 7)]
    pub ahead_days: u32,
    /// Also every day from this one (YYYY-MM-DD) to today, e.g. before
    /// importing old events.
    #[arg(long)]
    pub from: Option<NaiveDate>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A signal in a non-terminal status for longer than this is stuck.
    #[arg(long, default_value_t = 30)]
    pub stuck_after_secs: i64,
    /// Rollup buckets of the last this many hours are compared with raw events.
    #[arg(long, default_value_t = 24)]
    pub summary_hours: i64,
    /// Ids listed per finding.
    #[arg(long, default_value_t = 20)]
    pub max_ids: i64,
}

#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// The configured policy (table retention_policy) and what it means today.
    Show,
    /// Change the configured retention of one kind of data.
    Set(RetentionSetArgs),
    /// Archive, verify and drop what is past retention.
    Run(RetentionRunArgs),
}

#[derive(Debug, Args)]
pub struct RetentionSetArgs {
    /// raw_events, signals, minute_rollups, hour_rollups or day_rollups.
    pub kind: String,
    /// Whole days (`90`, `90d`) or `forever`.
    pub keep: String,
}

#[derive(Debug, Clone, Args)]
pub struct ArchiveArgs {
    /// Where archives go: a local folder, or a URL (file:///…, memory://,
    /// s3://bucket/prefix with AWS_* credentials, region and endpoint in the
    /// environment).
    #[arg(long, env = "AUDIT_ARCHIVE_URL", default_value = "./audit-archive")]
    pub archive_url: String,
}

#[derive(Debug, Args)]
pub struct RetentionRunArgs {
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// Report what would leave, change nothing.
    #[arg(long, default_value_t = false)]
    pub dry_run: bool,
    /// Confirm: data past retention leaves the database (after it is archived and verified).
    #[arg(long, default_value_t = false)]
    pub yes: bool,
    /// Override the configured retention of raw events for this run (days or `forever`).
    #[arg(long)]
    pub raw_events: Option<String>,
    /// Override for signals (at least as long as raw events).
    #[arg(long)]
    pub signals: Option<String>,
    /// Override for minute rollups.
    #[arg(long)]
    pub minute_rollups: Option<String>,
    /// Override for hourly rollups.
    #[arg(long)]
    pub hour_rollups: Option<String>,
    /// Override for daily rollups.
    #[arg(long)]
    pub day_rollups: Option<String>,
    /// Most days of events handled in this run (oldest first).
    #[arg(long, default_value_t = 31)]
    pub max_days: usize,
}

#[derive(Debug, Args)]
pub struct DayArgs {
    #[command(flatten)]
    pub archive: ArchiveArgs,
    /// The day (UTC), YYYY-MM-DD.
    #[arg(long)]
    pub day: NaiveDate,
}
