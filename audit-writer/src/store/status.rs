//! What the writer's gauges read on the primary: how far the periodic jobs
//! are behind ([`read`]) and the data-quality checks ([`data_quality`]).

use audit_db::quality::{self, Finding};
use audit_db::{DbError, PgPool};
use chrono::{TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Double, Text};
use diesel_async::RunQueryDsl;
use std::time::Duration;

/// "Stuck" for the gauges: a non-terminal signal untouched for an hour.
const STUCK_AFTER: TimeDelta = TimeDelta::hours(1);

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Age of the oldest minute waiting in `rollup_dirty`; 0 when none.
    pub rollup_backlog_secs: f64,
    /// Per materialized view, time since its last refresh.
    pub view_ages_secs: Vec<(String, f64)>,
    /// Whole days of `signal_events` partitions after today.
    pub partitions_premade_days: f64,
}

#[derive(QueryableByName)]
struct Backlog {
    #[diesel(sql_type = Double)]
    backlog: f64,
    #[diesel(sql_type = Double)]
    premade_days: f64,
}

#[derive(QueryableByName)]
struct ViewAge {
    #[diesel(sql_type = Text)]
    view_name: String,
    #[diesel(sql_type = Double)]
    age: f64,
}

/// The rollup backlog, and how far pg_partman's partitions reach: the
/// latest partition's upper bound, in whole days past the end of today
/// (1 day premade = tomorrow's partition exists; 0 = tomorrow's events
/// would land in the default partition).
const BACKLOG: &str = "SELECT \
       COALESCE(EXTRACT(EPOCH FROM now() - (SELECT min(bucket_minute) FROM rollup_dirty)), 0)::float8 \
         AS backlog, \
       GREATEST(0, COALESCE(floor(EXTRACT(EPOCH FROM \
         (SELECT max(i.child_end_time) \
          FROM partman.show_partitions('public.signal_events') p \
          CROSS JOIN LATERAL partman.show_partition_info( \
              p.partition_schemaname || '.' || p.partition_tablename, NULL, 'public.signal_events') i) \
         - (date_trunc('day', now()) + interval '1 day')) / 86400), 0))::float8 AS premade_days";

const VIEW_AGES: &str = "SELECT view_name, EXTRACT(EPOCH FROM now() - refreshed_at)::float8 AS age \
     FROM matview_refreshes ORDER BY view_name";

pub async fn read(pool: &PgPool) -> Result<Status, DbError> {
    let mut conn = pool.get().await?;
    let backlog: Backlog = diesel::sql_query(BACKLOG).get_result(&mut conn).await?;
    let views: Vec<ViewAge> = diesel::sql_query(VIEW_AGES).load(&mut conn).await?;
    Ok(Status {
        rollup_backlog_secs: backlog.backlog.max(0.0),
        view_ages_secs: views.into_iter().map(|v| (v.view_name, v.age)).collect(),
        partitions_premade_days: backlog.premade_days,
    })
}

/// Every data-quality check in one snapshot (so a rollup key the refresher
/// takes mid-check cannot look like a mismatch): stuck means an hour, the
/// rollups compared are those of the last `period` (at most a day). Only
/// the counts matter here, so one id per check is fetched.
pub async fn data_quality(pool: &PgPool, period: Duration) -> Result<Vec<Finding>, DbError> {
    let to = Utc::now();
    let window = TimeDelta::from_std(period)
        .unwrap_or(TimeDelta::days(1))
        .min(TimeDelta::days(1));
    let stuck_after_us = STUCK_AFTER.num_microseconds().unwrap_or(i64::MAX);
    let mut conn = pool.get().await?;
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| quality::check(conn, stuck_after_us, to - window, to, 1).await)
        .await
}
