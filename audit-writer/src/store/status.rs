//! What the writer's gauges read on the primary: how far the periodic jobs
//! are behind ([`read`]) and the data-quality checks ([`data_quality`]).

use audit_db::quality::{self, Check};
use audit_db::{DbError, PgPool};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::Double;
use diesel_async::{AsyncConnection, RunQueryDsl, SimpleAsyncConnection};

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

/// How many queued minutes one quality run checks at most: after the
/// migration or a bulk load the queue holds the whole history, worked
/// through newest first over several runs rather than in one transaction
/// of unbounded length (six hours of a 10 M-events day: about 25 s).
pub const VERIFY_BUDGET: i64 = 360;

/// The first run after a migration checks a backlog; this bounds it instead
/// of the pool's statement timeout.
const VERIFY_TIMEOUT: &str = "SET LOCAL statement_timeout = '15min'";

/// What a quality run did and what the gauges show.
#[derive(Debug, Clone, PartialEq)]
pub struct QualityRun {
    /// Minutes checked and stored.
    pub minutes: usize,
    /// Findings per check: the stored ones over the last day's minutes (each
    /// id once) and the stuck signals now (an hour untouched); 0 when clean.
    pub counts: Vec<(Check, i64)>,
}

/// The periodic data-quality job: checks the minutes the rollup refresher
/// rewrote since they were last checked (up to [`VERIFY_BUDGET`], those
/// ended by `before`) and stores their findings, the answer of
/// `CheckDataQuality` for them; then counts the stored findings and the
/// stuck signals. One transaction: a failed run leaves its minutes queued.
pub async fn data_quality(pool: &PgPool, before: DateTime<Utc>) -> Result<QualityRun, DbError> {
    let stuck_after_us = STUCK_AFTER.num_microseconds().unwrap_or(i64::MAX);
    let mut conn = pool.get().await?;
    conn.transaction::<_, DbError, _>(async |conn| {
        conn.batch_execute(VERIFY_TIMEOUT).await?;
        let minutes = quality::verify(conn, before, VERIFY_BUDGET).await?;
        let stored = quality::stored_counts(conn, Utc::now() - TimeDelta::days(1)).await?;
        let stuck = quality::stuck(conn, stuck_after_us, 1).await?;
        let counts = Check::ALL
            .into_iter()
            .map(|check| {
                let count = match check {
                    Check::StuckSignals => stuck.count,
                    _ => stored
                        .iter()
                        .find(|(c, _)| *c == check)
                        .map_or(0, |(_, n)| *n),
                };
                (check, count)
            })
            .collect();
        Ok(QualityRun { minutes, counts })
    })
    .await
}
