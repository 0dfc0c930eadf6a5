use audit_db::PoolConfig;
use std::time::Duration;

/// Pool options both services take; flatten into a service's `ServeArgs`.
/// The defaults follow the migration plan's 20–50 connections per pool.
#[derive(Debug, Clone, clap::Args)]
pub struct PoolArgs {
    /// Connections kept open even when idle.
    #[arg(long, env = "AUDIT_POOL_MIN", default_value_t = 20)]
    pub pool_min: u32,
    /// Most connections open at once.
    #[arg(long, env = "AUDIT_POOL_MAX", default_value_t = 50)]
    pub pool_max: u32,
    /// How long a call waits for a pooled connection before UNAVAILABLE.
    #[arg(long, env = "AUDIT_POOL_TIMEOUT_MS", default_value_t = 2_000)]
    pub pool_timeout_ms: u64,
}

impl PoolArgs {
    /// The pool for `url`; the role-specific settings come from the service.
    pub fn config(
        &self,
        url: &str,
        application_name: &str,
        statement_timeout: Duration,
        read_only: bool,
    ) -> PoolConfig {
        PoolConfig {
            url: url.to_owned(),
            min_idle: self.pool_min,
            max_size: self.pool_max,
            connect_timeout: Duration::from_millis(self.pool_timeout_ms),
            statement_timeout,
            application_name: application_name.to_owned(),
            // Reader connections sit idle between dashboard refreshes and a
            // replica restart breaks them all; the writer's are busy enough
            // that a broken one fails a single call and is replaced.
            test_on_checkout: read_only,
            read_only,
        }
    }
}
