//! Keeps `signal_metrics_summary` and `signal_error_summary` exact (see the
//! migrations that create them for the design), and hands the keys it took
//! to the hourly analytics tables' refresher (`analytics.rs`). Runs on the
//! primary, from the writer.
//!
//! One pass, one transaction: take the dirty (minute, ticker) keys the
//! `signal_events` trigger queued, recompute those minutes from raw events,
//! the overall ('*') minutes from the per-ticker minutes, then the hours and
//! days containing them from the finer rows. Nothing a writer does waits on
//! this; a key dirtied while a pass runs stays queued for the next pass.
//!
//! Raw SQL: the recomputation is one aggregate per dirty key with FILTER
//! clauses, a nested histogram aggregation and upserts, which diesel's DSL
//! cannot express.

use audit_core::Period;
use audit_db::{DbError, PgPool};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Text, Timestamptz};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// Columns summed from finer buckets into coarser ones.
const COUNTS: &str = "total_events, total_signals, queued_processing, processing, approved_signals, \
    rejected_signals, queued_forwarding, forwarding, forwarded_success, forwarded_timeout, \
    forwarded_http_error, forwarded_generic_error, discarded, error_status, error_events, \
    terminal_events, processing_time_sum_us";

/// The dirty keys, and the contiguous runs of their minutes (gaps and
/// islands): each run is read with one range scan of `signal_events`
/// instead of one scan per (minute, ticker) key, which would read every
/// minute once per ticker. Events are kept only for keys that are dirty,
/// by the ticker each event carries: no read of `signals`, whose probes
/// per event land at random places of an index that outgrows the cache as
/// the history grows (BENCHMARKS.md, "Periodic jobs without a probe per
/// event"). The range is a lateral read with `OFFSET 0`: as a plain join
/// PostgreSQL applied the ranges as a filter over a scan of the whole day
/// partition, a cost that grows with the day rather than with what changed.
///
/// `events` narrows the events read: the error rows need only failed
/// events (a few percent), not the minute's.
fn keyed_events(events: EventFilter) -> String {
    format!(
        "
keys AS (
    SELECT DISTINCT bucket, ticker FROM unnest($1::timestamptz[], $2::text[]) AS k(bucket, ticker)
), runs AS (
    SELECT min(bucket) AS lo, max(bucket) + interval '1 minute' AS hi
    FROM (SELECT bucket, bucket - row_number() OVER (ORDER BY bucket) * interval '1 minute' AS island
          FROM (SELECT DISTINCT bucket FROM keys) d) t
    GROUP BY island
), keyed AS (
    SELECT k.bucket, k.ticker, e.signal_id, e.event_type, e.error_info, e.http_status, e.ts
    FROM runs r
    CROSS JOIN LATERAL (
        SELECT e.signal_id, e.event_type, e.error_info, e.http_status, e.ts, e.normalised_ticker
        FROM signal_events e
        WHERE e.ts >= r.lo AND e.ts < r.hi{filter} OFFSET 0) e
    JOIN keys k ON k.bucket = date_trunc('minute', e.ts) AND k.ticker = e.normalised_ticker
)",
        filter = events.condition()
    )
}

/// Which of the dirty minutes' events a statement reads.
#[derive(Clone, Copy)]
enum EventFilter {
    Every,
    /// Events counted as errors: an error document or an HTTP failure.
    Failed,
}

impl EventFilter {
    fn condition(self) -> &'static str {
        match self {
            Self::Every => "",
            Self::Failed => " AND (e.error_info IS NOT NULL OR e.http_status >= 400)",
        }
    }
}

/// Recomputes the minute buckets of the given keys from raw events. Only
/// a terminal event reads its signal, for the `created_at` its latency runs
/// from: a probe per terminal event (about one per signal), not per event.
fn minutes_from_events() -> String {
    format!(
        "WITH {keyed}, ev AS (
    SELECT bucket, ticker, event_type, error_info, http_status, terminal,
           CASE WHEN terminal THEN GREATEST(0, (EXTRACT(EPOCH FROM ts - (
               SELECT s.created_at FROM signals s WHERE s.signal_id = t.signal_id)) * 1000000)::bigint)
           END AS latency_us
    FROM (SELECT *, signal_status_is_terminal(event_type) AS terminal FROM keyed) t
), hist AS (
    SELECT bucket, ticker, jsonb_object_agg(b, n) AS h
    FROM (SELECT bucket, ticker, latency_bucket(latency_us) AS b, count(*) AS n
          FROM ev WHERE terminal GROUP BY 1, 2, 3) t
    GROUP BY 1, 2
), agg AS (
    SELECT bucket, ticker, count(*) AS total_events,
           count(*) FILTER (WHERE event_type = 'received') AS total_signals,
           count(*) FILTER (WHERE event_type = 'queued_processing') AS queued_processing,
           count(*) FILTER (WHERE event_type = 'processing') AS processing,
           count(*) FILTER (WHERE event_type = 'approved') AS approved_signals,
           count(*) FILTER (WHERE event_type = 'rejected') AS rejected_signals,
           count(*) FILTER (WHERE event_type = 'queued_forwarding') AS queued_forwarding,
           count(*) FILTER (WHERE event_type = 'forwarding') AS forwarding,
           count(*) FILTER (WHERE event_type = 'forwarded_success') AS forwarded_success,
           count(*) FILTER (WHERE event_type = 'forwarded_timeout') AS forwarded_timeout,
           count(*) FILTER (WHERE event_type = 'forwarded_http_error') AS forwarded_http_error,
           count(*) FILTER (WHERE event_type = 'forwarded_generic_error') AS forwarded_generic_error,
           count(*) FILTER (WHERE event_type = 'discarded') AS discarded,
           count(*) FILTER (WHERE event_type = 'error') AS error_status,
           count(*) FILTER (WHERE error_info IS NOT NULL OR http_status >= 400) AS error_events,
           count(*) FILTER (WHERE terminal) AS terminal_events,
           COALESCE(sum(latency_us) FILTER (WHERE terminal), 0)::bigint AS processing_time_sum_us
    FROM ev GROUP BY 1, 2
)
INSERT INTO signal_metrics_summary (period_type, period_start, period_end, normalised_ticker,
    {COUNTS}, latency_histogram)
SELECT 'minute', a.bucket, a.bucket + interval '1 minute', a.ticker, {COUNTS}, COALESCE(h.h, '{{}}')
FROM agg a LEFT JOIN hist h USING (bucket, ticker)
ON CONFLICT (period_type, normalised_ticker, period_start) DO UPDATE SET {updates},
    latency_histogram = EXCLUDED.latency_histogram, created_at = now()",
        keyed = keyed_events(EventFilter::Every),
        updates = updates()
    )
}

/// `c = EXCLUDED.c` for every summed column.
fn updates() -> String {
    COUNTS
        .split(", ")
        .map(|c| format!("{c} = EXCLUDED.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which finer rows a coarser bucket is summed from.
#[derive(Clone, Copy)]
enum Source {
    /// The rows of the key's own ticker.
    SameTicker,
    /// Every ticker's rows: the overall ('*') bucket.
    AllTickers,
}

impl Source {
    fn condition(self) -> &'static str {
        match self {
            Self::SameTicker => "m.normalised_ticker = k.ticker",
            Self::AllTickers => "m.normalised_ticker <> '*'",
        }
    }
}

/// Rebuilds `to` buckets of the given tickers from the finer `from` rows:
/// sums and histogram merges, so the result is exactly what raw events would
/// give. Histograms are merged as a set (every row's buckets expanded,
/// summed per bucket index) rather than with the `histogram_merge`
/// aggregate, which rebuilds a JSONB per row.
fn roll_up(from: Period, to: Period, source: Source) -> String {
    let ticker_filter = source.condition();
    let sums: String = COUNTS
        .split(", ")
        .map(|c| format!("sum({c})::bigint AS {c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH keys AS ({keys}), \
         src AS (SELECT k.bucket, k.ticker, m.* FROM keys k JOIN signal_metrics_summary m \
                   ON m.period_type = '{from}' AND m.period_start >= k.bucket \
                  AND m.period_start < k.bucket + interval '1 {to}' AND {ticker_filter}), \
         sums AS (SELECT bucket, ticker, {sums} FROM src GROUP BY bucket, ticker), \
         hist AS (SELECT bucket, ticker, jsonb_object_agg(b, n) AS h \
                  FROM (SELECT bucket, ticker, j.key AS b, sum(j.value::bigint) AS n \
                        FROM src, jsonb_each_text(src.latency_histogram) AS j \
                        GROUP BY 1, 2, 3) t \
                  GROUP BY bucket, ticker) \
         INSERT INTO signal_metrics_summary (period_type, period_start, period_end, normalised_ticker, \
             {COUNTS}, latency_histogram) \
         SELECT '{to}', s.bucket, s.bucket + interval '1 {to}', s.ticker, {COUNTS}, COALESCE(h.h, '{{}}') \
         FROM sums s LEFT JOIN hist h USING (bucket, ticker) \
         ON CONFLICT (period_type, normalised_ticker, period_start) DO UPDATE SET {updates}, \
             latency_histogram = EXCLUDED.latency_histogram, created_at = now()",
        keys = keys_by(to),
        updates = updates()
    )
}

/// Failed events of the dirty keys, by stage, error type and HTTP status.
fn error_minutes_from_events() -> String {
    format!(
        "WITH {keyed}
INSERT INTO signal_error_summary (period_type, period_start, normalised_ticker, stage, error_type,
    http_status, events)
SELECT 'minute', bucket, ticker, event_type,
       left(COALESCE(error_info ->> 'type', error_info ->> 'kind',
                     CASE WHEN error_info IS NULL THEN 'http' ELSE 'unknown' END), 64) AS error_type,
       COALESCE(http_status, 0) AS http_status, count(*)
FROM keyed
GROUP BY bucket, ticker, event_type, error_type, http_status",
        keyed = keyed_events(EventFilter::Failed)
    )
}

/// The distinct (`period` bucket, ticker) pairs of the bound key arrays.
fn keys_by(period: Period) -> String {
    format!(
        "SELECT DISTINCT date_trunc('{period}', bucket) AS bucket, ticker \
         FROM unnest($1::timestamptz[], $2::text[]) AS k(bucket, ticker)"
    )
}

/// Drops the `period` error rows of the keys' buckets, so that a combination
/// that no longer occurs does not linger (an upsert would keep it).
fn errors_clear(period: Period) -> String {
    format!(
        "DELETE FROM signal_error_summary m USING ({}) k \
         WHERE m.period_type = '{period}' AND m.period_start = k.bucket \
           AND m.normalised_ticker = k.ticker",
        keys_by(period)
    )
}

/// Rebuilds the `to` error rows of the keys' buckets from the `from` rows.
fn errors_roll_up(from: Period, to: Period) -> String {
    format!(
        "WITH keys AS ({}) \
         INSERT INTO signal_error_summary (period_type, period_start, normalised_ticker, stage, \
             error_type, http_status, events) \
         SELECT '{to}', k.bucket, k.ticker, m.stage, m.error_type, m.http_status, sum(m.events)::bigint \
         FROM keys k JOIN signal_error_summary m \
           ON m.period_type = '{from}' AND m.period_start >= k.bucket \
          AND m.period_start < k.bucket + interval '1 {to}' AND m.normalised_ticker = k.ticker \
         GROUP BY k.bucket, k.ticker, m.stage, m.error_type, m.http_status",
        keys_by(to)
    )
}

/// Queues the taken keys for the analytics refresher.
const HAND_OVER: &str = "INSERT INTO analytics_dirty (bucket_minute, normalised_ticker) \
     SELECT * FROM unnest($1::timestamptz[], $2::text[])";

/// Queues the taken keys' minutes for the quality job (store/status.rs),
/// which checks each again and stores what it finds. A minute the job is
/// taking right now waits here for its commit and is then queued anew.
const QUEUE_QUALITY: &str = "INSERT INTO quality_dirty (bucket_minute) \
     SELECT DISTINCT unnest($1::timestamptz[]) ON CONFLICT DO NOTHING";

#[derive(QueryableByName)]
struct DirtyKey {
    #[diesel(sql_type = Timestamptz)]
    bucket_minute: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    normalised_ticker: String,
}

#[derive(QueryableByName)]
struct Horizon {
    #[diesel(sql_type = diesel::sql_types::Nullable<Timestamptz>)]
    horizon: Option<DateTime<Utc>>,
}

/// Brings every dirty bucket up to date; returns how many minute buckets
/// were recomputed. One transaction: readers never see half a refresh.
#[tracing::instrument(name = "REFRESH signal_metrics_summary", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "REFRESH", db.collection.name = "signal_metrics_summary"))]
pub async fn refresh(pool: &PgPool) -> Result<usize, DbError> {
    let mut conn = pool.get().await?;
    conn.transaction::<_, DbError, _>(async |conn| refresh_in(conn).await)
        .await
}

/// Any constant shared by all refreshers: the advisory lock that keeps two
/// of them (two writer replicas, or a test) from racing, which could let an
/// older snapshot overwrite a newer one after its dirty keys were taken.
const REFRESH_LOCK: i64 = 0x5167_6e61_6c52_6f6c;

async fn refresh_in(conn: &mut AsyncPgConnection) -> Result<usize, DbError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
        .bind::<diesel::sql_types::BigInt, _>(REFRESH_LOCK)
        .execute(conn)
        .await?;
    let mut keys: Vec<(DateTime<Utc>, String)> =
        diesel::sql_query("DELETE FROM rollup_dirty RETURNING bucket_minute, normalised_ticker")
            .load::<DirtyKey>(conn)
            .await?
            .into_iter()
            .map(|k| (k.bucket_minute, k.normalised_ticker))
            .collect();
    // Buckets older than the retention horizon are never recomputed: the raw
    // events (or finer rollups) they would be rebuilt from have left, and
    // the stored rollup is the only correct figure (a late event, or a
    // restored archive day, must not shrink it).
    let horizon: Horizon =
        diesel::sql_query("SELECT max(horizon) AS horizon FROM retention_horizon")
            .get_result(conn)
            .await?;
    if let Some(horizon) = horizon.horizon {
        keys.retain(|(minute, _)| *minute >= horizon);
    }
    keys.sort_unstable();
    keys.dedup();
    if !keys.is_empty() {
        let (minutes, tickers): (Vec<DateTime<Utc>>, Vec<String>) = keys.iter().cloned().unzip();
        let everyone: Vec<String> = vec!["*".to_owned(); minutes.len()];
        let run = async |conn: &mut AsyncPgConnection, sql: String, tickers: &Vec<String>| {
            diesel::sql_query(sql)
                .bind::<Array<Timestamptz>, _>(&minutes)
                .bind::<Array<Text>, _>(tickers)
                .execute(conn)
                .await
        };
        use Period::{Day, Hour, Minute};
        // The hourly analytics tables are rebuilt from the same keys, and
        // the data-quality findings checked again, on their own schedules
        // (store/analytics.rs, store/status.rs): hand them over in this
        // transaction, so a key is never lost between them.
        run(conn, HAND_OVER.to_owned(), &tickers).await?;
        diesel::sql_query(QUEUE_QUALITY)
            .bind::<Array<Timestamptz>, _>(&minutes)
            .execute(conn)
            .await?;
        run(conn, minutes_from_events(), &tickers).await?;
        run(conn, roll_up(Minute, Minute, Source::AllTickers), &everyone).await?;
        for ticker_set in [&tickers, &everyone] {
            run(conn, roll_up(Minute, Hour, Source::SameTicker), ticker_set).await?;
            run(conn, roll_up(Hour, Day, Source::SameTicker), ticker_set).await?;
        }
        // Failed events by dimension: per ticker only (see the migration).
        run(conn, errors_clear(Minute), &tickers).await?;
        run(conn, error_minutes_from_events(), &tickers).await?;
        for (from, to) in [(Minute, Hour), (Hour, Day)] {
            run(conn, errors_clear(to), &tickers).await?;
            run(conn, errors_roll_up(from, to), &tickers).await?;
        }
    }
    diesel::sql_query("UPDATE rollup_state SET refreshed_at = now()")
        .execute(conn)
        .await?;
    Ok(keys.len())
}
