//! bb8 pools of diesel-async connections, one per server role, measured:
//! every checkout's wait goes into `db_client_connection_wait_time_seconds`
//! and every wait that gives up into `db_client_connection_timeouts_total`
//! (see docs/metrics.md); [`PgPool::record_state`] samples the pool's size.

use diesel::ConnectionError;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig, PoolError};
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use std::ops::Deref;
use std::time::{Duration, Instant};

pub type Manager = AsyncDieselConnectionManager<AsyncPgConnection>;
pub type PooledConnection<'a> = bb8::PooledConnection<'a, Manager>;

/// A bb8 pool that measures its checkouts. It dereferences to the bb8 pool
/// for everything else; `get` and `get_owned` shadow bb8's so every
/// checkout in the services is timed without touching its call site.
#[derive(Clone)]
pub struct PgPool {
    inner: bb8::Pool<Manager>,
    name: std::sync::Arc<str>,
    metrics: PoolMetrics,
}

/// The pool's instruments, registered once (after the process's metrics
/// recorder is installed; before it, they record nothing).
#[derive(Clone)]
struct PoolMetrics {
    wait: metrics::Histogram,
    timeouts: metrics::Counter,
    idle: metrics::Gauge,
    used: metrics::Gauge,
    max: metrics::Gauge,
    pending: metrics::Gauge,
}

impl PoolMetrics {
    fn new(name: &str) -> Self {
        let name = name.to_owned();
        Self {
            wait: metrics::histogram!("db_client_connection_wait_time_seconds", "pool_name" => name.clone()),
            timeouts: metrics::counter!("db_client_connection_timeouts_total", "pool_name" => name.clone()),
            idle: metrics::gauge!("db_client_connection_count", "pool_name" => name.clone(), "state" => "idle"),
            used: metrics::gauge!("db_client_connection_count", "pool_name" => name.clone(), "state" => "used"),
            max: metrics::gauge!("db_client_connection_max", "pool_name" => name.clone()),
            pending: metrics::gauge!("db_client_connection_pending_requests", "pool_name" => name),
        }
    }

    fn checked_out<T>(&self, started: Instant, result: &Result<T, bb8::RunError<PoolError>>) {
        self.wait.record(started.elapsed().as_secs_f64());
        if matches!(result, Err(bb8::RunError::TimedOut)) {
            self.timeouts.increment(1);
        }
    }
}

impl PgPool {
    /// `primary` or `replica`: the `pool_name` of its metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A connection, waiting at most the pool's `connect_timeout`.
    pub async fn get(&self) -> Result<PooledConnection<'_>, bb8::RunError<PoolError>> {
        let started = Instant::now();
        let result = self.inner.get().await;
        self.metrics.checked_out(started, &result);
        result
    }

    /// The same, for a connection that outlives the borrow of the pool.
    pub async fn get_owned(
        &self,
    ) -> Result<bb8::PooledConnection<'static, Manager>, bb8::RunError<PoolError>> {
        let started = Instant::now();
        let result = self.inner.get_owned().await;
        self.metrics.checked_out(started, &result);
        result
    }

    /// Sets the size gauges (idle, used, waiting callers) from bb8's state.
    pub fn record_state(&self) {
        let state = self.inner.state();
        let idle = state.idle_connections;
        self.metrics.idle.set(f64::from(idle));
        self.metrics
            .used
            .set(f64::from(state.connections.saturating_sub(idle)));
        self.metrics
            .pending
            .set(state.statistics.pending_gets() as f64);
    }

    /// Samples the size gauges every `every` until the handle is aborted.
    pub fn watch(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let pool = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            loop {
                ticker.tick().await;
                pool.record_state();
            }
        })
    }
}

impl Deref for PgPool {
    type Target = bb8::Pool<Manager>;

    fn deref(&self) -> &Self::Target {
        &self.inner
    }
}

#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The `pool_name` of its metrics: `primary` or `replica`.
    pub name: String,
    pub url: String,
    pub min_idle: u32,
    pub max_size: u32,
    /// Shorter than a typical call deadline, so a starved pool answers
    /// UNAVAILABLE instead of the caller's deadline expiring.
    pub connect_timeout: Duration,
    pub statement_timeout: Duration,
    /// Shows in pg_stat_activity, so operators can tell the services apart.
    pub application_name: String,
    /// Reader pools: PostgreSQL itself refuses writes on these connections.
    pub read_only: bool,
    /// Ping every connection as it leaves the pool. Costs a round trip per
    /// checkout; without it a connection broken since its last use fails
    /// one call (with UNAVAILABLE) and is then discarded.
    pub test_on_checkout: bool,
}

/// Builds the pool without waiting for the database: a service must start
/// (and report NOT_SERVING) while PostgreSQL is down.
pub fn build_pool(config: &PoolConfig) -> PgPool {
    let setup = session_settings(config);
    let mut manager_config = ManagerConfig::<AsyncPgConnection>::default();
    manager_config.custom_setup = Box::new(move |url| {
        let setup = setup.clone();
        let url = url.to_owned();
        Box::pin(async move {
            let mut conn = crate::connect::establish(&url).await?;
            conn.batch_execute(&setup)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = Manager::new_with_config(&config.url, manager_config);
    let max_size = config.max_size.max(1);
    let inner = bb8::Pool::builder()
        .min_idle(Some(config.min_idle.min(max_size)))
        .max_size(max_size)
        .connection_timeout(config.connect_timeout)
        .test_on_check_out(config.test_on_checkout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .build_unchecked(manager);
    let metrics = PoolMetrics::new(&config.name);
    metrics.max.set(f64::from(max_size));
    let pool = PgPool {
        inner,
        name: config.name.as_str().into(),
        metrics,
    };
    pool.record_state();
    pool
}

/// Time buckets (date_trunc) are UTC whatever the server's time zone.
///
/// No JIT: the services' statements bind key arrays and ranges whose row
/// estimates are generic (hundreds of thousands), so the cheap ones crossed
/// the JIT thresholds and were compiled with inlining and optimisation on
/// every execution: 550 ms of a 551-ms rollup statement that read 136 rows
/// (1.3 s a pass), 680 ms of a data-quality check (BENCHMARKS.md,
/// Analytics, maintenance). None of them runs long enough to win it back.
fn session_settings(config: &PoolConfig) -> String {
    let mut setup = format!(
        "SET application_name = '{}'; SET statement_timeout = {}; SET TIME ZONE 'UTC'; SET jit = off;",
        config.application_name.replace('\'', "''"),
        config.statement_timeout.as_millis()
    );
    if config.read_only {
        setup.push_str(" SET default_transaction_read_only = on;");
    }
    setup
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_utc_without_jit_and_name_themselves_safely() {
        let config = PoolConfig {
            name: "replica".into(),
            url: "postgres://unused".into(),
            min_idle: 0,
            max_size: 1,
            connect_timeout: Duration::from_secs(1),
            statement_timeout: Duration::from_millis(2_500),
            application_name: "o'reader".into(),
            read_only: true,
            test_on_checkout: false,
        };
        assert_eq!(
            session_settings(&config),
            "SET application_name = 'o''reader'; SET statement_timeout = 2500; \
             SET TIME ZONE 'UTC'; SET jit = off; SET default_transaction_read_only = on;"
        );
    }
}
