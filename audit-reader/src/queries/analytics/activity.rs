//! GetTickerActivity: days summed from the incrementally maintained
//! `ticker_activity_hourly` table (hours of the signals' `created_at`, their
//! current state; see its migration). Counts, sums and the average are
//! exact; the p95 comes from the merged processing-time histograms (within
//! 1% of percentile_cont).

use super::filter_value;
use crate::queries::analytics::analytics_as_of;
use crate::queries::analytics::histogram::LatencyHistogram;
use audit_core::TickerScope;
use audit_db::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Jsonb, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(Debug, Clone, PartialEq)]
pub struct DayRow {
    pub day: DateTime<Utc>,
    pub normalised_ticker: String,
    pub signals: i64,
    pub succeeded: i64,
    pub rejected: i64,
    pub failed: i64,
    pub in_flight: i64,
    pub errors: i64,
    pub retries: i64,
    pub avg_processing_ms: Option<f64>,
    pub p95_processing_ms: Option<f64>,
}

#[derive(QueryableByName)]
struct SummedRow {
    #[diesel(sql_type = Timestamptz)]
    day: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    normalised_ticker: String,
    #[diesel(sql_type = BigInt)]
    signals: i64,
    #[diesel(sql_type = BigInt)]
    succeeded: i64,
    #[diesel(sql_type = BigInt)]
    rejected: i64,
    #[diesel(sql_type = BigInt)]
    failed: i64,
    #[diesel(sql_type = BigInt)]
    in_flight: i64,
    #[diesel(sql_type = BigInt)]
    errors: i64,
    #[diesel(sql_type = BigInt)]
    retries: i64,
    #[diesel(sql_type = BigInt)]
    processing_count: i64,
    #[diesel(sql_type = BigInt)]
    processing_sum_us: i64,
    #[diesel(sql_type = Jsonb)]
    histogram: serde_json::Value,
}

/// The UTC days that start before `to` and do not end before `from`, per
/// ticker, and when the table was last brought up to date.
#[tracing::instrument(name = "SELECT ticker_activity_hourly", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "ticker_activity_hourly"))]
pub async fn daily(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ticker: &TickerScope,
) -> Result<(Vec<DayRow>, DateTime<Utc>), DbError> {
    let rows: Vec<SummedRow> = diesel::sql_query(
        "WITH src AS ( \
             SELECT date_trunc('day', hour, 'UTC') AS day, normalised_ticker, signals, succeeded, \
                    rejected, failed, in_flight, errors, retries, processing_count, \
                    processing_sum_us, processing_histogram \
             FROM ticker_activity_hourly \
             WHERE hour >= date_trunc('day', $1, 'UTC') \
               AND hour < date_trunc('day', $2, 'UTC') + interval '1 day' \
               AND date_trunc('day', hour, 'UTC') < $2 \
               AND ($3 = '' OR normalised_ticker = $3)), \
         sums AS ( \
             SELECT day, normalised_ticker, sum(signals)::bigint AS signals, \
                    sum(succeeded)::bigint AS succeeded, sum(rejected)::bigint AS rejected, \
                    sum(failed)::bigint AS failed, sum(in_flight)::bigint AS in_flight, \
                    sum(errors)::bigint AS errors, sum(retries)::bigint AS retries, \
                    sum(processing_count)::bigint AS processing_count, \
                    sum(processing_sum_us)::bigint AS processing_sum_us \
             FROM src GROUP BY 1, 2), \
         hist AS ( \
             SELECT day, normalised_ticker, jsonb_object_agg(b, n) AS histogram \
             FROM (SELECT day, normalised_ticker, j.key AS b, sum(j.value::bigint) AS n \
                   FROM src, jsonb_each_text(src.processing_histogram) AS j GROUP BY 1, 2, 3) t \
             GROUP BY 1, 2) \
         SELECT s.*, COALESCE(h.histogram, '{}') AS histogram \
         FROM sums s LEFT JOIN hist h USING (day, normalised_ticker) \
         ORDER BY day, normalised_ticker",
    )
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Text, _>(filter_value(ticker))
    .load(conn)
    .await?;
    // The same snapshot as the rows (the caller's transaction).
    let as_of = analytics_as_of(conn).await?;
    let rows = rows
        .into_iter()
        .map(|row| {
            let processed = row.processing_count > 0;
            let histogram = LatencyHistogram::from_json(&row.histogram);
            DayRow {
                avg_processing_ms: processed
                    .then(|| row.processing_sum_us as f64 / row.processing_count as f64 / 1000.0),
                p95_processing_ms: histogram.quantile(0.95).map(|us| us / 1000.0),
                day: row.day,
                normalised_ticker: row.normalised_ticker,
                signals: row.signals,
                succeeded: row.succeeded,
                rejected: row.rejected,
                failed: row.failed,
                in_flight: row.in_flight,
                errors: row.errors,
                retries: row.retries,
            }
        })
        .collect();
    Ok((rows, as_of))
}
