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
            // The primary is written, replicas only read (docs/metrics.md).
            name: if read_only { "replica" } else { "primary" }.to_owned(),
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

/// Connection life on the gRPC port, so HTTP/2 clients behind a ClusterIP
/// Service (one connection, pinned to one pod) reconnect now and then and
/// spread over the current pods. Both take seconds (`300`) or a humantime
/// duration (`5m`, `30s`); empty means unlimited.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConnectionArgs {
    /// Age at which a client connection is sent GOAWAY; unlimited when empty.
    #[arg(long, env = "AUDIT_MAX_CONNECTION_AGE", value_parser = parse_duration, default_value = "")]
    pub max_connection_age: MaybeDuration,
    /// How long calls in flight on such a connection may still take before
    /// it is closed; unlimited when empty.
    #[arg(long, env = "AUDIT_MAX_CONNECTION_AGE_GRACE", value_parser = parse_duration, default_value = "")]
    pub max_connection_age_grace: MaybeDuration,
}

/// A duration that may be unset (an empty value).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaybeDuration(pub Option<Duration>);

/// Seconds (`300`) or a humantime duration (`5m`, `1h 30m`); empty or `0`
/// for none.
pub fn parse_duration(value: &str) -> Result<MaybeDuration, String> {
    let value = value.trim();
    let duration = if value.is_empty() {
        None
    } else if let Ok(seconds) = value.parse::<u64>() {
        Some(Duration::from_secs(seconds))
    } else {
        Some(
            humantime::parse_duration(value)
                .map_err(|e| format!("{value:?} is neither seconds nor a duration like 5m: {e}"))?,
        )
    };
    Ok(MaybeDuration(duration.filter(|d| !d.is_zero())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_seconds_or_humantime() {
        let parsed = |v: &str| parse_duration(v).map(|d| d.0);
        assert_eq!(parsed(""), Ok(None));
        assert_eq!(parsed("0"), Ok(None));
        assert_eq!(parsed("300"), Ok(Some(Duration::from_secs(300))));
        assert_eq!(parsed("5m"), Ok(Some(Duration::from_secs(300))));
        assert_eq!(parsed("30s"), Ok(Some(Duration::from_secs(30))));
        assert!(parsed("five minutes").is_err());
    }
}

/// TLS and caller authentication, both services; flatten into `ServeArgs`.
#[derive(Debug, Clone, clap::Args)]
pub struct SecurityArgs {
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
}

/// What [`crate::serve`] needs to serve securely: the TLS configuration
/// (none: plaintext) and the caller checks (possibly off).
#[derive(Debug, Clone)]
pub struct Security {
    pub tls: Option<std::sync::Arc<crate::tls::TlsReloader>>,
    pub auth: crate::auth::Auth,
}

impl Security {
    /// Plaintext, no authentication (tests and local development).
    pub fn off() -> Self {
        Self {
            tls: None,
            auth: crate::auth::Auth::off(),
        }
    }
}

impl SecurityArgs {
    /// Loads certificates and credential files; `policy` is the service's
    /// method → role table.
    pub fn load(&self, policy: crate::auth::Policy) -> Result<Security, SecurityError> {
        Ok(Security {
            tls: crate::tls::TlsReloader::load(&self.tls)?,
            auth: crate::auth::Auth::from_args(&self.auth, policy)?,
        })
    }
}
