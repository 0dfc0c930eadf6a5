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
struct HourRow {
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
    processing_histogram: LatencyHistogram,
}

/// One (day, ticker)'s hours, summed.
struct DaySums {
    first: HourRow,
    histogram: LatencyHistogram,
}

impl DaySums {
    fn new(mut row: HourRow) -> Self {
        let histogram = std::mem::take(&mut row.processing_histogram);
        Self {
            first: row,
            histogram,
        }
    }

    fn add(&mut self, row: &HourRow) {
        let sums = &mut self.first;
        sums.signals += row.signals;
        sums.succeeded += row.succeeded;
        sums.rejected += row.rejected;
        sums.failed += row.failed;
        sums.in_flight += row.in_flight;
        sums.errors += row.errors;
        sums.retries += row.retries;
        sums.processing_count += row.processing_count;
        sums.processing_sum_us += row.processing_sum_us;
        self.histogram.merge(&row.processing_histogram);
    }

    fn finish(self) -> DayRow {
        let row = self.first;
        DayRow {
            avg_processing_ms: (row.processing_count > 0)
                .then(|| row.processing_sum_us as f64 / row.processing_count as f64 / 1000.0),
            p95_processing_ms: self.histogram.quantile(0.95).map(|us| us / 1000.0),
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
    }
}

/// The UTC days that start before `to` and do not end before `from`, per
/// ticker, and when the table was last brought up to date. The hours are
/// summed here rather than in SQL: expanding every hour's JSONB histogram
/// into rows to merge them took ~100 ms for a day of 20 tickers
/// (BENCHMARKS.md, Analytics), merging the parsed histograms takes well
/// under a millisecond.
#[tracing::instrument(name = "SELECT ticker_activity_hourly", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "ticker_activity_hourly"))]
pub async fn daily(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ticker: &TickerScope,
) -> Result<(Vec<DayRow>, DateTime<Utc>), DbError> {
    let hours: Vec<HourRow> = diesel::sql_query(
        "SELECT date_trunc('day', hour, 'UTC') AS day, normalised_ticker, signals, succeeded, \
                rejected, failed, in_flight, errors, retries, processing_count, \
                processing_sum_us, processing_histogram \
         FROM ticker_activity_hourly \
         WHERE hour >= date_trunc('day', $1, 'UTC') \
           AND hour < date_trunc('day', $2, 'UTC') + interval '1 day' \
           AND date_trunc('day', hour, 'UTC') < $2 \
           AND ($3 = '' OR normalised_ticker = $3) \
         ORDER BY 1, 2",
    )
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Text, _>(filter_value(ticker))
    .load(conn)
    .await?;
    // The same snapshot as the rows (the caller's transaction).
    let as_of = analytics_as_of(conn).await?;
    let mut days: Vec<DayRow> = Vec::new();
    let mut current: Option<DaySums> = None;
    for hour in hours {
        match &mut current {
            Some(sums)
                if sums.first.day == hour.day
                    && sums.first.normalised_ticker == hour.normalised_ticker =>
            {
                sums.add(&hour)
            }
            _ => {
                days.extend(current.take().map(DaySums::finish));
                current = Some(DaySums::new(hour));
            }
        }
    }
    days.extend(current.map(DaySums::finish));
    Ok((days, as_of))
}
