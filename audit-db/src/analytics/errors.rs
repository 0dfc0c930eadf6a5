//! GetErrorBreakdown: failed events of a range, counted along four
//! dimensions in one pass (GROUPING SETS) over the partial error index.

use crate::{DbError, PgPool};
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::RunQueryDsl;

#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct ErrorCount {
    /// `type`, `http_status`, `ticker` or `stage`.
    #[diesel(sql_type = Text)]
    pub dimension: String,
    #[diesel(sql_type = Text)]
    pub key: String,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
}

/// Counts per dimension, largest first; `ticker` empty means all tickers.
pub async fn breakdown(
    pool: &PgPool,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ticker: &str,
) -> Result<Vec<ErrorCount>, DbError> {
    let mut conn = pool.get().await?;
    Ok(diesel::sql_query(
        "WITH failed AS ( \
             SELECT COALESCE(e.error_info ->> 'type', e.error_info ->> 'kind', \
                             CASE WHEN e.error_info IS NULL THEN 'http' ELSE 'unknown' END) AS error_type, \
                    COALESCE(e.http_status::text, 'none') AS http_status, \
                    s.normalised_ticker AS ticker, e.event_type::text AS stage \
             FROM signal_events e JOIN signals s ON s.signal_id = e.signal_id \
             WHERE (e.error_info IS NOT NULL OR e.http_status >= 400) \
               AND e.ts >= $1 AND e.ts < $2 AND ($3 = '' OR s.normalised_ticker = $3)) \
         SELECT CASE WHEN GROUPING(error_type) = 0 THEN 'type' \
                     WHEN GROUPING(http_status) = 0 THEN 'http_status' \
                     WHEN GROUPING(ticker) = 0 THEN 'ticker' ELSE 'stage' END AS dimension, \
                COALESCE(error_type, http_status, ticker, stage) AS key, count(*) AS count \
         FROM failed GROUP BY GROUPING SETS ((error_type), (http_status), (ticker), (stage)) \
         ORDER BY dimension, count DESC, key",
    )
    .bind::<Timestamptz, _>(from)
    .bind::<Timestamptz, _>(to)
    .bind::<Text, _>(ticker)
    .load(&mut conn)
    .await?)
}
