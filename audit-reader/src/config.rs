//! Command line and environment; `audit-reader --help` documents every option.

use audit_db::PoolConfig;
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "audit-reader",
    version,
    about = "Signal Audit Trail analytics read service (gRPC, PostgreSQL replica)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub telemetry: audit_server::TelemetryArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve gRPC (the default when no command is given).
    Serve(ServeArgs),
}

/// `audit-reader` with no command: serve, configured from the environment.
#[derive(Debug, Parser)]
pub struct ServeOnly {
    #[command(flatten)]
    pub args: ServeArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "AUDIT_READER_LISTEN", default_value = "127.0.0.1:15052")]
    pub listen: SocketAddr,
    /// Where Prometheus scrapes GET /metrics (plain HTTP); empty turns it off.
    #[arg(long, env = "AUDIT_METRICS_LISTEN", default_value = "127.0.0.1:15092")]
    pub metrics_listen: audit_server::metrics::MetricsListen,
    #[command(flatten)]
    pub connection: audit_server::ConnectionArgs,
    /// The streaming replica every query runs on. TLS as libpq's `sslmode`
    /// and `sslrootcert` URL parameters say (default prefer); the value is
    /// never shown (it may hold a password).
    #[arg(
        long,
        env = "AUDIT_REPLICA_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:15433/signal_audit"
    )]
    pub replica_url: String,
    #[command(flatten)]
    pub pool: audit_server::PoolArgs,
    #[command(flatten)]
    pub shutdown: audit_server::ShutdownArgs,
    #[command(flatten)]
    pub security: audit_server::SecurityArgs,
    /// PostgreSQL statement_timeout for every connection.
    #[arg(long, env = "AUDIT_STATEMENT_TIMEOUT_MS", default_value_t = 10_000)]
    pub statement_timeout_ms: u64,
    /// Largest gRPC request accepted.
    #[arg(long, env = "AUDIT_MAX_REQUEST_BYTES", default_value_t = 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Longest wait for the replica to reach a consistency token when the
    /// call has no deadline (a deadline shortens it).
    #[arg(long, env = "AUDIT_CONSISTENCY_MAX_WAIT_MS", default_value_t = 5_000)]
    pub consistency_max_wait_ms: u64,
    /// How often the replica's replay position is polled while waiting.
    #[arg(long, env = "AUDIT_CONSISTENCY_POLL_MS", default_value_t = 5)]
    pub consistency_poll_ms: u64,
    /// How long an analytics answer stays cached (it is also dropped as soon
    /// as newer rollups reach the replica).
    #[arg(long, env = "AUDIT_CACHE_TTL_MS", default_value_t = 5_000)]
    pub cache_ttl_ms: u64,
    /// Most answers kept in the in-process cache.
    #[arg(long, env = "AUDIT_CACHE_MAX_ENTRIES", default_value_t = 10_000)]
    pub cache_max_entries: u64,
    /// Shared Redis cache (e.g. redis://127.0.0.1:6379/0, or
    /// rediss://:PASSWORD@cache:6380/0 over TLS); off when unset.
    #[arg(long, env = "AUDIT_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// CA certificates (PEM) a rediss:// server's certificate must chain
    /// to, instead of the system's CA bundle.
    #[arg(long, env = "AUDIT_REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// How often StreamEvents polls the replica for new commits when idle.
    #[arg(long, env = "AUDIT_TAIL_POLL_MS", default_value_t = 100)]
    pub tail_poll_ms: u64,
    /// How often the replica is checked for the health status and the
    /// replica gauges (reachable, replay lag).
    #[arg(long, env = "AUDIT_HEALTH_CHECK_MS", default_value_t = 2_000)]
    pub health_check_ms: u64,
}

impl ServeArgs {
    pub fn pool(&self) -> PoolConfig {
        self.pool.config(
            &self.replica_url,
            "audit-reader",
            Duration::from_millis(self.statement_timeout_ms),
            true,
        )
    }
}
