//! bb8 pools of diesel-async connections, one per server role.

use diesel::ConnectionError;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use std::time::Duration;

pub type PgPool = bb8::Pool<AsyncDieselConnectionManager<AsyncPgConnection>>;

#[derive(Debug, Clone)]
pub struct PoolConfig {
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
            let mut conn = AsyncPgConnection::establish(&url).await?;
            conn.batch_execute(&setup)
                .await
                .map_err(ConnectionError::CouldntSetupConfiguration)?;
            Ok(conn)
        })
    });
    let manager = AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(
        &config.url,
        manager_config,
    );
    bb8::Pool::builder()
        .min_idle(Some(config.min_idle.min(config.max_size)))
        .max_size(config.max_size.max(1))
        .connection_timeout(config.connect_timeout)
        .test_on_check_out(config.test_on_checkout)
        .idle_timeout(Some(Duration::from_secs(300)))
        .build_unchecked(manager)
}

/// Time buckets (date_trunc) are UTC whatever the server's time zone.
fn session_settings(config: &PoolConfig) -> String {
    let mut setup = format!(
        "SET application_name = '{}'; SET statement_timeout = {}; SET TIME ZONE 'UTC';",
        config.application_name.replace('\'', "''"),
        config.statement_timeout.as_millis()
    );
    if config.read_only {
        setup.push_str(" SET default_transaction_read_only = on;");
    }
    setup
}
