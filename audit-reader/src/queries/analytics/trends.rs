//! GetTrends (regr_slope / regr_r2 over rollup buckets) and GetCorrelations
//! (corr() between tickers' per-bucket series, gaps filled with zero).

use super::metrics::SeriesMetric;
use super::rollup_key;
use audit_core::Period;
use audit_core::TickerScope;
use audit_db::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Double, Nullable, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Fit {
    /// Change per hour.
    #[diesel(sql_type = Nullable<Double>)]
    pub slope: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    pub r2: Option<f64>,
    #[diesel(sql_type = BigInt)]
    pub points: i64,
}

/// Least-squares fit of `metric` against time (hours) over the buckets with data.
#[tracing::instrument(name = "SELECT signal_metrics_summary", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_metrics_summary"))]
pub async fn trend(
    conn: &mut AsyncPgConnection,
    period: Period,
    ticker: &TickerScope,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    metric: SeriesMetric,
) -> Result<Fit, DbError> {
    Ok(diesel::sql_query(format!(
        "WITH v AS (SELECT extract(epoch FROM period_start) / 3600.0 AS x, {} AS y \
                    FROM signal_metrics_summary \
                    WHERE period_type = $1::metrics_period AND normalised_ticker = $2 \
                      AND period_start >= date_trunc($1, $3) AND period_start < $4) \
         SELECT regr_slope(y, x) AS slope, regr_r2(y, x) AS r2, regr_count(y, x) AS points FROM v",
        metric.expression()
    ))
    .bind::<Text, _>(period.as_str())
    .bind::<Text, _>(rollup_key(ticker))
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .get_result(conn)
    .await?)
}

#[derive(QueryableByName)]
struct Ticker {
    #[diesel(sql_type = Text)]
    normalised_ticker: String,
}

/// The `limit` tickers with the most signals in the range.
#[tracing::instrument(name = "SELECT signal_metrics_summary", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_metrics_summary"))]
pub async fn busiest_tickers(
    conn: &mut AsyncPgConnection,
    period: Period,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    let rows: Vec<Ticker> = diesel::sql_query(
        "SELECT normalised_ticker FROM signal_metrics_summary \
         WHERE period_type = $1::metrics_period AND normalised_ticker <> '*' \
           AND period_start >= date_trunc($1, $2) AND period_start < $3 \
         GROUP BY 1 ORDER BY sum(total_signals) DESC, 1 LIMIT $4",
    )
    .bind::<Text, _>(period.as_str())
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.normalised_ticker).collect())
}

#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct Pair {
    #[diesel(sql_type = Text)]
    pub ticker_a: String,
    #[diesel(sql_type = Text)]
    pub ticker_b: String,
    #[diesel(sql_type = Double)]
    pub coefficient: f64,
    #[diesel(sql_type = BigInt)]
    pub buckets: i64,
}

/// Every unordered pair of `tickers` (in their order), correlated over all
/// buckets of the range.
#[tracing::instrument(name = "SELECT signal_metrics_summary", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_metrics_summary"))]
pub async fn correlations(
    conn: &mut AsyncPgConnection,
    period: Period,
    tickers: &[String],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    errors: bool,
) -> Result<Vec<Pair>, DbError> {
    let column = if errors {
        "error_events"
    } else {
        "total_signals"
    };
    Ok(diesel::sql_query(format!(
        "WITH buckets AS (SELECT generate_series(date_trunc($1, $2), $3 - interval '1 microsecond', \
                                                 ('1 ' || $1)::interval) AS b), \
              t AS (SELECT ticker, ord FROM unnest($4::text[]) WITH ORDINALITY AS u(ticker, ord)), \
              grid AS (SELECT t.ticker, t.ord, buckets.b, COALESCE(m.{column}, 0)::float8 AS v \
                       FROM t CROSS JOIN buckets \
                       LEFT JOIN signal_metrics_summary m ON m.period_type = $1::metrics_period \
                        AND m.normalised_ticker = t.ticker AND m.period_start = buckets.b) \
         SELECT a.ticker AS ticker_a, c.ticker AS ticker_b, \
                COALESCE(corr(a.v, c.v), 0)::float8 AS coefficient, count(*) AS buckets \
         FROM grid a JOIN grid c ON c.b = a.b AND a.ord < c.ord \
         GROUP BY a.ticker, a.ord, c.ticker, c.ord ORDER BY a.ord, c.ord"
    ))
    .bind::<Text, _>(period.as_str())
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Array<Text>, _>(tickers)
    .load(conn)
    .await?)
}
