//! GetTrends (regr_slope / regr_r2 over rollup buckets) and GetCorrelations
//! (Pearson's coefficient between tickers' per-bucket series, gaps filled
//! with zero).

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

#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub ticker_a: String,
    pub ticker_b: String,
    pub coefficient: f64,
    pub buckets: i64,
}

#[derive(QueryableByName)]
struct Point {
    #[diesel(sql_type = Text)]
    ticker: String,
    #[diesel(sql_type = Timestamptz)]
    period_start: DateTime<Utc>,
    #[diesel(sql_type = Double)]
    v: f64,
}

/// Pearson's coefficient of two equally long series, as PostgreSQL's
/// `corr()` defines it, with 0 where it is undefined (a constant series).
fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len().min(y.len()) as f64;
    if n == 0.0 {
        return 0.0;
    }
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let (dx, dy) = (a - mx, b - my);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx == 0.0 || syy == 0.0 {
        0.0
    } else {
        sxy / (sxx * syy).sqrt()
    }
}

/// Every unordered pair of `tickers` (in their order), correlated over all
/// buckets of the range, a bucket without a row counting as zero. The
/// series are read in one range scan per ticker and correlated here: the
/// same done in SQL (a zero-filled grid of every ticker and bucket joined
/// to itself per pair) took ~110 ms for 10 tickers over a day of minutes
/// (BENCHMARKS.md, Analytics).
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
    let first = period.floor(from);
    let step = period.delta();
    let buckets = if to > first {
        ((to - first).num_microseconds().unwrap_or(i64::MAX) - 1)
            / step.num_microseconds().unwrap_or(1)
            + 1
    } else {
        0
    };
    let points: Vec<Point> = diesel::sql_query(format!(
        "SELECT normalised_ticker::text AS ticker, period_start, {column}::float8 AS v \
         FROM signal_metrics_summary \
         WHERE period_type = $1::metrics_period AND normalised_ticker = ANY($2) \
           AND period_start >= $3 AND period_start < $4"
    ))
    .bind::<Text, _>(period.as_str())
    .bind::<Array<Text>, _>(tickers)
    .bind::<Timestamptz, _>(first)
    .bind::<Timestamptz, _>(to)
    .load(conn)
    .await?;
    let len = usize::try_from(buckets).unwrap_or(0);
    let mut series: Vec<Vec<f64>> = vec![vec![0.0; len]; tickers.len()];
    for point in points {
        let at = (point.period_start - first).num_microseconds().unwrap_or(0)
            / step.num_microseconds().unwrap_or(1);
        let Ok(at) = usize::try_from(at) else {
            continue;
        };
        for (i, ticker) in tickers.iter().enumerate() {
            if *ticker == point.ticker && at < len {
                series[i][at] = point.v;
            }
        }
    }
    let mut pairs = Vec::new();
    for (i, a) in tickers.iter().enumerate() {
        for (j, b) in tickers.iter().enumerate().skip(i + 1) {
            pairs.push(Pair {
                ticker_a: a.clone(),
                ticker_b: b.clone(),
                coefficient: pearson(&series[i], &series[j]),
                buckets,
            });
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::pearson;

    #[test]
    fn pearson_matches_known_values_and_is_zero_when_undefined() {
        let up = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&up, &[2.0, 4.0, 6.0, 8.0]) - 1.0).abs() < 1e-12);
        assert!((pearson(&up, &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // By hand: means 2.5 and 2.25, sxy = 2.5, sxx = 5, syy = 2.75.
        let r = pearson(&up, &[1.0, 3.0, 2.0, 3.0]);
        assert!((r - 2.5 / (5.0_f64 * 2.75).sqrt()).abs() < 1e-12, "{r}");
        assert_eq!(pearson(&up, &[5.0; 4]), 0.0);
        assert_eq!(pearson(&[], &[]), 0.0);
    }
}
