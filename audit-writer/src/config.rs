//! Command line and environment. Every option has an `AUDIT_…` variable and
//! a default, so `audit-writer --help` is the configuration reference.

use audit_core::rules::Limits;
use audit_db::PoolConfig;
use chrono::TimeDelta;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "audit-writer",
    version,
    about = "Signal Audit Trail write service (gRPC, PostgreSQL primary)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub telemetry: audit_server::TelemetryArgs,
}

/// `audit-writer` with no command: serve, configured from the environment.
#[derive(Debug, Parser)]
pub struct ServeOnly {
    #[command(flatten)]
    pub args: ServeArgs,
}

#[derive(Debug, Subcommand)]
#[expect(
    clippy::large_enum_variant,
    reason = "parsed once at start-up and moved into the server"
)]
pub enum Command {
    /// Serve gRPC (the default when no command is given).
    Serve(ServeArgs),
    /// Apply pending migrations (idempotent), or revert them all.
    Migrate(MigrateArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL primary. TLS as libpq's `sslmode` and `sslrootcert` URL
    /// parameters say (default prefer); the value is never shown (it may
    /// hold a password).
    #[arg(
        long,
        env = "AUDIT_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:15432/signal_audit"
    )]
    pub database_url: String,
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Revert every migration instead (drops all data; needs --yes).
    /// `audit-admin migrate down` reverts step by step.
    #[arg(long, default_value_t = false)]
    pub revert_all: bool,
    /// Confirm --revert-all.
    #[arg(long, default_value_t = false)]
    pub yes: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AUDIT_WRITER_LISTEN", default_value = "127.0.0.1:15051")]
    pub listen: SocketAddr,
    /// Where Prometheus scrapes GET /metrics (plain HTTP); empty turns it off.
    #[arg(long, env = "AUDIT_METRICS_LISTEN", default_value = "127.0.0.1:15091")]
    pub metrics_listen: audit_server::metrics::MetricsListen,
    #[command(flatten)]
    pub connection: audit_server::ConnectionArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub pool: audit_server::PoolArgs,
    #[command(flatten)]
    pub shutdown: audit_server::ShutdownArgs,
    #[command(flatten)]
    pub security: audit_server::SecurityArgs,
    /// PostgreSQL statement_timeout for every connection.
    #[arg(long, env = "AUDIT_STATEMENT_TIMEOUT_MS", default_value_t = 5_000)]
    pub statement_timeout_ms: u64,
    /// Largest gRPC request accepted.
    #[arg(long, env = "AUDIT_MAX_REQUEST_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Largest JSON payload or text field in a signal or event.
    #[arg(long, env = "AUDIT_MAX_PAYLOAD_BYTES", default_value_t = 64 * 1024)]
    pub max_payload_bytes: usize,
    /// Most signals plus events in one RecordBatch.
    #[arg(long, env = "AUDIT_MAX_BATCH_ITEMS", default_value_t = 5_000)]
    pub max_batch_items: usize,
    /// Most RecordSignal/RecordEvent calls committed in one group transaction.
    #[arg(long, env = "AUDIT_GROUP_COMMIT_MAX_ITEMS", default_value_t = 500)]
    pub group_commit_max_items: usize,
    /// Group transactions in flight at once; further calls wait and form
    /// larger groups. One is fastest on the measured 2-core machine (5.1-5.2x
    /// naive against 4.7-5.1x with four; concurrent groups contend on the
    /// same right-most index pages and the WAL), at the price of head-of-line
    /// blocking: a group waiting on a row lock held by a large RecordBatch
    /// holds up the unary writes queued behind it (bounded by the statement
    /// timeout). See BENCHMARKS.md.
    #[arg(long, env = "AUDIT_GROUP_COMMIT_MAX_BATCHES", default_value_t = 1)]
    pub group_commit_max_batches: usize,
    /// Unary writes waiting for a group beyond this are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUDIT_GROUP_COMMIT_QUEUE", default_value_t = 20_000)]
    pub group_commit_queue: usize,
    /// Unacknowledged chunks read from one Ingest stream.
    #[arg(long, env = "AUDIT_INGEST_IN_FLIGHT", default_value_t = 4)]
    pub ingest_in_flight: usize,
    /// Ingest chunk transactions running at once across all streams.
    #[arg(long, env = "AUDIT_INGEST_SLOTS", default_value_t = 8)]
    pub ingest_slots: usize,
    /// How long a chunk waits for a slot before RESOURCE_EXHAUSTED.
    #[arg(long, env = "AUDIT_INGEST_WAIT_MS", default_value_t = 1_000)]
    pub ingest_wait_ms: u64,
    /// How far ahead of this server's clock a timestamp may be.
    #[arg(long, env = "AUDIT_MAX_CLOCK_SKEW_SECS", default_value_t = 300)]
    pub max_clock_skew_secs: i64,
    /// How often pg_partman maintenance runs (also once at start-up).
    #[arg(
        long,
        env = "AUDIT_PARTITION_MAINTENANCE_SECS",
        default_value_t = 3_600
    )]
    pub partition_maintenance_secs: u64,
    /// How often the metric rollups are brought up to date with new events.
    /// Each pass recomputes whole dirty minutes from raw events, so under
    /// heavy ingest a short interval re-reads the current minute often (at
    /// 1 s it doubled the write p99 in BENCHMARKS.md); answers carry `as_of`.
    #[arg(long, env = "AUDIT_ROLLUP_REFRESH_MS", default_value_t = 10_000)]
    pub rollup_refresh_ms: u64,
    /// How often the hourly analytics tables (stage latencies, ticker
    /// activity) are brought up to date with the keys the rollup refresh
    /// handed over. Each pass rebuilds only the hours that changed, so its
    /// cost follows the traffic, not the history.
    #[arg(long, env = "AUDIT_ANALYTICS_REFRESH_SECS", default_value_t = 60)]
    pub analytics_refresh_secs: u64,
    /// How often the data-quality job runs on the primary (orphans, stuck
    /// signals, counters, rollups; as `audit_data_quality_findings`). Each
    /// run checks the ended minutes the rollup refresh rewrote since their
    /// last check (late events included) and stores what it finds, which
    /// `CheckDataQuality` answers those minutes from; minutes not checked
    /// yet are checked live by each call, so a longer period makes calls
    /// slower, not staler.
    #[arg(long, env = "AUDIT_DATA_QUALITY_SECS", default_value_t = 60)]
    pub data_quality_secs: u64,
    /// Start even when the database carries migrations this build does not
    /// know (a newer release migrated it). Off: the writer refuses, since
    /// its statements may not fit that schema; on only for a rollback to a
    /// release whose statements are known to fit (additive migrations).
    #[arg(long, env = "AUDIT_ALLOW_NEWER_SCHEMA", default_value_t = false)]
    pub allow_newer_schema: bool,
    /// How often the database is pinged for the health status.
    #[arg(long, env = "AUDIT_HEALTH_CHECK_MS", default_value_t = 2_000)]
    pub health_check_ms: u64,
}

impl ServeArgs {
    pub fn pool(&self) -> PoolConfig {
        self.pool.config(
            &self.database.database_url,
            "audit-writer",
            Duration::from_millis(self.statement_timeout_ms),
            false,
        )
    }

    pub fn schedule(&self) -> crate::jobs::Schedule {
        crate::jobs::Schedule {
            partition_maintenance: Duration::from_secs(self.partition_maintenance_secs.max(1)),
            rollup_refresh: Duration::from_millis(self.rollup_refresh_ms.max(10)),
            analytics_refresh: Duration::from_secs(self.analytics_refresh_secs.max(1)),
            data_quality: Duration::from_secs(self.data_quality_secs.max(1)),
        }
    }

    pub fn group_commit(&self) -> crate::group_commit::GroupCommitConfig {
        crate::group_commit::GroupCommitConfig {
            max_items: self.group_commit_max_items,
            queue: self.group_commit_queue,
            max_batches: self.group_commit_max_batches,
            connect_timeout: Duration::from_millis(self.pool.pool_timeout_ms),
        }
    }

    pub fn ingest(&self) -> crate::ingest::IngestConfig {
        crate::ingest::IngestConfig {
            in_flight: self.ingest_in_flight,
            wait: Duration::from_millis(self.ingest_wait_ms),
        }
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_clock_skew: TimeDelta::seconds(self.max_clock_skew_secs),
            ..Limits::default()
        }
    }
}
