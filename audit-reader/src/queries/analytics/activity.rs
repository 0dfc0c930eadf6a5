//! GetTickerActivity: read from the `mv_daily_ticker_activity` materialized view.

use super::filter_value;
use crate::queries::analytics::view_refreshed_at;
use audit_core::TickerScope;
use audit_db::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Double, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct DayRow {
    #[diesel(sql_type = Timestamptz)]
    pub day: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    pub normalised_ticker: String,
    #[diesel(sql_type = BigInt)]
    pub signals: i64,
    #[diesel(sql_type = BigInt)]
    pub succeeded: i64,
    #[diesel(sql_type = BigInt)]
    pub rejected: i64,
    #[diesel(sql_type = BigInt)]
    pub failed: i64,
    #[diesel(sql_type = BigInt)]
    pub in_flight: i64,
    #[diesel(sql_type = BigInt)]
    pub errors: i64,
    #[diesel(sql_type = BigInt)]
    pub retries: i64,
    #[diesel(sql_type = Nullable<Double>)]
    pub avg_processing_ms: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub p95_processing_ms: Option<f64>,
    #[diesel(sql_type = Timestamptz)]
    pub as_of: DateTime<Utc>,
}

#[tracing::instrument(name = "SELECT mv_daily_ticker_activity", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "mv_daily_ticker_activity"))]
pub async fn daily(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ticker: &TickerScope,
) -> Result<(Vec<DayRow>, DateTime<Utc>), DbError> {
    let rows: Vec<DayRow> = diesel::sql_query(
        "SELECT day, normalised_ticker, signals, succeeded, rejected, failed, in_flight, \
                errors::bigint AS errors, retries::bigint AS retries, avg_processing_ms::float8 AS avg_processing_ms, \
                p95_processing_ms, r.refreshed_at AS as_of \
         FROM mv_daily_ticker_activity \
         CROSS JOIN matview_refreshes r \
         WHERE r.view_name = 'mv_daily_ticker_activity' \
           AND day >= date_trunc('day', $1 AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AND day < $2 \
           AND ($3 = '' OR normalised_ticker = $3) \
         ORDER BY day, normalised_ticker",
    )
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Text, _>(filter_value(ticker))
    .load(conn)
    .await?;
    let as_of = match <[DayRow]>::first(&rows) {
        Some(row) => row.as_of,
        None => view_refreshed_at(conn, "mv_daily_ticker_activity").await?,
    };
    Ok((rows, as_of))
}
