//! What the writer's gauges read on the primary: how far the periodic jobs
//! are behind ([`read`]) and the data-quality checks ([`data_quality`]).

use audit_db::quality::{self, Finding, TouchedBy, Window};
use audit_db::{DbError, PgPool};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::Double;
use diesel_async::RunQueryDsl;
use std::time::Duration;

/// "Stuck" for the gauges: a non-terminal signal untouched for an hour.
const STUCK_AFTER: TimeDelta = TimeDelta::hours(1);

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    /// Age of the oldest minute waiting in `rollup_dirty`; 0 when none.
    pub rollup_backlog_secs: f64,
    /// Time since the hourly analytics tables were last brought up to date.
    pub analytics_age_secs: f64,
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
struct Age {
    #[diesel(sql_type = Double)]
    age: f64,
}

/// The rollup backlog, and how far pg_partman's partitions reach: the
/// latest partition's upper bound, in whole days past the end of today
/// (1 day premade = tomorrow's partition exists; 0 = tomorrow's events
/// would be refused: the table has no default partition).
const BACKLOG: &str = "SELECT \
       COALESCE(EXTRACT(EPOCH FROM now() - (SELECT min(bucket_minute) FROM rollup_dirty)), 0)::float8 \
         AS backlog, \
       GREATEST(0, COALESCE(floor(EXTRACT(EPOCH FROM \
         (SELECT max(i.child_end_time) \
          FROM partman.show_partitions('public.signal_events') p \
          CROSS JOIN LATERAL partman.show_partition_info( \
              p.partition_schemaname || '.' || p.partition_tablename, NULL, 'public.signal_events') i) \
         - (date_trunc('day', now()) + interval '1 day')) / 86400), 0))::float8 AS premade_days";

const ANALYTICS_AGE: &str =
    "SELECT EXTRACT(EPOCH FROM now() - refreshed_at)::float8 AS age FROM analytics_state";

pub async fn read(pool: &PgPool) -> Result<Status, DbError> {
    let mut conn = pool.get().await?;
    let backlog: Backlog = diesel::sql_query(BACKLOG).get_result(&mut conn).await?;
    let analytics: Age = diesel::sql_query(ANALYTICS_AGE)
        .get_result(&mut conn)
        .await?;
    Ok(Status {
        rollup_backlog_secs: backlog.backlog.max(0.0),
        analytics_age_secs: analytics.age.max(0.0),
        partitions_premade_days: backlog.premade_days,
    })
}

/// Events are stamped `recorded_at` with their transaction's start, so one
/// that commits after a check's snapshot can carry a time before it: each
/// run re-reads this much before its predecessor's end. Far longer than any
/// write transaction (bounded by the statement timeout).
pub const RECORDED_OVERLAP: TimeDelta = TimeDelta::minutes(10);

/// Every data-quality check in one snapshot (so a rollup key the refresher
/// takes mid-check cannot look like a mismatch), over what changed since
/// `since` (the previous successful run's end; the last `period` for the
/// first run; at most a day): the signals with events written since then
/// (late ones included) and the rollups of those minutes; stuck means an
/// hour. Only the counts matter here, so one id per check is fetched.
/// Returns the findings and the end of the window, the next run's `since`.
pub async fn data_quality(
    pool: &PgPool,
    since: Option<DateTime<Utc>>,
    period: Duration,
) -> Result<(Vec<Finding>, DateTime<Utc>), DbError> {
    let to = Utc::now();
    let first = to - TimeDelta::from_std(period).unwrap_or(TimeDelta::days(1));
    let from = since.unwrap_or(first).max(to - TimeDelta::days(1)) - RECORDED_OVERLAP;
    let stuck_after_us = STUCK_AFTER.num_microseconds().unwrap_or(i64::MAX);
    let window = Window {
        touched_by: TouchedBy::RecordedAt,
        from,
        to,
    };
    let mut conn = pool.get().await?;
    let findings = conn
        .build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| quality::check(conn, stuck_after_us, window, 1).await)
        .await?;
    Ok((findings, to))
}
