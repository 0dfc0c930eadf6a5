//! Analytics queries for the reader, one module per feature. Raw SQL lives
//! here because these are aggregates diesel's DSL cannot express
//! (histogram merges and quantiles, window functions, generate_series,
//! grouping sets).

pub mod activity;
pub mod errors;
pub mod histogram;
pub mod metrics;
pub mod quality;
pub mod regressions;
pub mod search;
pub mod stages;
pub mod trends;

use crate::{DbError, PgPool};
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Bool, Text, Timestamptz};
use diesel_async::RunQueryDsl;

/// Rollup bucket sizes, as the `metrics_period` enum spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Minute,
    Hour,
    Day,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }

    /// The start of the bucket holding `t`, as `date_trunc` gives it in a
    /// UTC session (every pool sets its time zone to UTC).
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        // Truncation to minutes, hours or days of the Unix epoch cannot
        // fail for timestamps PostgreSQL stores.
        t.duration_trunc(TimeDelta::seconds(self.seconds()))
            .unwrap_or(t)
    }

    /// The first bucket start at or after `t`.
    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let down = self.floor(t);
        if down == t {
            t
        } else {
            down + TimeDelta::seconds(self.seconds())
        }
    }
}

#[derive(QueryableByName)]
struct AsOf {
    #[diesel(sql_type = Timestamptz)]
    refreshed_at: DateTime<Utc>,
}

/// When the rollups were last brought up to date.
pub async fn as_of(pool: &PgPool) -> Result<DateTime<Utc>, DbError> {
    let mut conn = pool.get().await?;
    let row: AsOf = diesel::sql_query("SELECT refreshed_at FROM rollup_state")
        .get_result(&mut conn)
        .await?;
    Ok(row.refreshed_at)
}

/// How current an answer read straight from raw events on this server is:
/// now when it has replayed everything it received (or is the primary),
/// else the commit time of the last transaction it replayed.
pub async fn replica_as_of(pool: &PgPool) -> Result<DateTime<Utc>, DbError> {
    let mut conn = pool.get().await?;
    let row: AsOf = diesel::sql_query(
        "SELECT CASE WHEN NOT pg_is_in_recovery() \
                       OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() \
                       OR pg_last_xact_replay_timestamp() IS NULL THEN now() \
                     ELSE pg_last_xact_replay_timestamp() END AS refreshed_at",
    )
    .get_result(&mut conn)
    .await?;
    Ok(row.refreshed_at)
}

/// When a materialized view was last refreshed (the as_of of its answers).
pub(crate) async fn view_refreshed_at(
    conn: &mut diesel_async::AsyncPgConnection,
    view: &str,
) -> Result<DateTime<Utc>, DbError> {
    let row: AsOf =
        diesel::sql_query("SELECT refreshed_at FROM matview_refreshes WHERE view_name = $1")
            .bind::<Text, _>(view)
            .get_result(conn)
            .await?;
    Ok(row.refreshed_at)
}

#[derive(QueryableByName)]
struct Exists {
    #[diesel(sql_type = Bool)]
    found: bool,
}

/// Whether any signal has this normalised ticker.
pub async fn ticker_exists(pool: &PgPool, ticker: &str) -> Result<bool, DbError> {
    let mut conn = pool.get().await?;
    let row: Exists = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM signals WHERE normalised_ticker = $1) AS found",
    )
    .bind::<Text, _>(ticker)
    .get_result(&mut conn)
    .await?;
    Ok(row.found)
}
