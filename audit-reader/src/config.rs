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
    /// The streaming replicas queries run on: one URL, several separated by
    /// commas, or the flag repeated. Each call goes to one healthy replica
    /// (one that has replayed its consistency token, if it carries one);
    /// each replica gets a pool of its own. TLS as libpq's `sslmode` and
    /// `sslrootcert` URL parameters say (default prefer); the value is never
    /// shown (it may hold a password).
    #[arg(
        long,
        env = "AUDIT_REPLICA_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:15433/signal_audit"
    )]
    pub replica_url: Vec<String>,
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
    /// How often the replica's replay position is polled while waiting
    /// (calls waiting together share each query, see `replica.rs`).
    #[arg(long, env = "AUDIT_CONSISTENCY_POLL_MS", default_value_t = 1)]
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
    /// One pool per replica URL. With one replica its pool (and metrics) are
    /// named `replica` as before; with several, `replica-1`, `replica-2`, …
    /// in the order given.
    pub fn pools(&self) -> Vec<PoolConfig> {
        let urls = split_urls(&self.replica_url);
        let several = urls.len() > 1;
        urls.iter()
            .enumerate()
            .map(|(i, url)| {
                let mut config = self.pool.config(
                    url,
                    "audit-reader",
                    Duration::from_millis(self.statement_timeout_ms),
                    true,
                );
                if several {
                    config.name = format!("replica-{}", i + 1);
                }
                config
            })
            .collect()
    }
}

/// The URLs in `values`, each of which may hold several separated by commas.
/// A comma splits only where a new `postgres://` or `postgresql://` URL
/// starts, so libpq's multi-host form (`postgres://h1:5432,h2:5432/db`)
/// stays one URL.
pub fn split_urls(values: &[String]) -> Vec<String> {
    let mut urls = Vec::new();
    for value in values {
        let mut current = String::new();
        for piece in value.split(',') {
            let starts_url = ["postgres://", "postgresql://"]
                .iter()
                .any(|scheme| piece.trim_start().starts_with(scheme));
            if starts_url && !current.trim().is_empty() {
                urls.push(current.trim().to_owned());
                current.clear();
            }
            if !current.is_empty() {
                current.push(',');
            }
            current.push_str(piece);
        }
        if !current.trim().is_empty() {
            urls.push(current.trim().to_owned());
        }
    }
    urls
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn urls(args: &[&str]) -> Vec<String> {
        let args =
            ServeOnly::try_parse_from(std::iter::once("audit-reader").chain(args.iter().copied()))
                .unwrap()
                .args;
        args.pools()
            .into_iter()
            .map(|p| format!("{} {}", p.name, p.url))
            .collect()
    }

    #[test]
    fn one_replica_keeps_its_name() {
        assert_eq!(
            urls(&["--replica-url=postgres://a/db"]),
            ["replica postgres://a/db"]
        );
    }

    #[test]
    fn several_replicas_from_commas_or_repeated_flags() {
        let expected = [
            "replica-1 postgres://a/db",
            "replica-2 postgresql://b:5433/db",
        ];
        assert_eq!(
            urls(&["--replica-url=postgres://a/db, postgresql://b:5433/db"]),
            expected
        );
        assert_eq!(
            urls(&[
                "--replica-url=postgres://a/db",
                "--replica-url=postgresql://b:5433/db"
            ]),
            expected
        );
    }

    #[test]
    fn a_multi_host_url_stays_one_replica() {
        assert_eq!(
            split_urls(&["postgres://h1:5432,h2:5432/db?target_session_attrs=any".into()]),
            ["postgres://h1:5432,h2:5432/db?target_session_attrs=any"]
        );
        assert_eq!(
            split_urls(&["postgres://h1,h2/db,postgres://h3/db".into()]),
            ["postgres://h1,h2/db", "postgres://h3/db"]
        );
    }
}
