//! GetErrorBreakdown: failed events of a range counted along four
//! dimensions in one pass (GROUPING SETS), read from `signal_error_summary`.
//!
//! The range, widened to whole minutes, is tiled with the coarsest buckets
//! that fit ([`tiles`]): minutes up to the first hour boundary, hours up to
//! the first day boundary, whole days, then hours and minutes to the end. A
//! 24-hour breakdown therefore reads about 23 hour rows and 120 minute rows
//! per ticker and failure kind, and is still exact to the minute.

use super::filter_value;
use audit_core::Period;
use audit_core::TickerScope;
use audit_db::DbError;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

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

/// One stretch of the range covered by whole buckets of one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub period: Period,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// `[from, to)` widened to whole minutes and covered, without overlap, by
/// minute, hour and day buckets, coarsest where they fit, oldest first.
pub fn tiles(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Tile> {
    let (minute, hour, day) = (Period::Minute, Period::Hour, Period::Day);
    let (from, to) = (minute.floor(from), minute.ceil(to));
    let h1 = hour.ceil(from).min(to);
    let h2 = hour.floor(to).max(h1);
    let d1 = day.ceil(h1).min(h2);
    let d2 = day.floor(h2).max(d1);
    [
        (Period::Minute, from, h1),
        (Period::Hour, h1, d1),
        (Period::Day, d1, d2),
        (Period::Hour, d2, h2),
        (Period::Minute, h2, to),
    ]
    .into_iter()
    .filter(|(_, start, end)| start < end)
    .fold(Vec::new(), |mut tiles: Vec<Tile>, (period, start, end)| {
        // Two hour tiles meet when no whole day fits: one is enough.
        match tiles.last_mut() {
            Some(last) if last.period == period => last.end = end,
            _ => tiles.push(Tile { period, start, end }),
        }
        tiles
    })
}

/// Counts per dimension, largest first; `ticker` empty means all tickers.
#[tracing::instrument(name = "SELECT signal_error_summary", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_error_summary"))]
pub async fn breakdown(
    conn: &mut AsyncPgConnection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    ticker: &TickerScope,
) -> Result<Vec<ErrorCount>, DbError> {
    let tiles = tiles(from, to);
    let periods: Vec<&str> = tiles.iter().map(|t| t.period.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = tiles.iter().map(|t| t.start).collect();
    let ends: Vec<DateTime<Utc>> = tiles.iter().map(|t| t.end).collect();
    Ok(diesel::sql_query(
        "WITH tiles AS ( \
             SELECT period::metrics_period AS period, lo, hi \
             FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[]) AS t(period, lo, hi)), \
         failed AS ( \
             SELECT m.error_type, CASE m.http_status WHEN 0 THEN 'none' ELSE m.http_status::text END \
                        AS http_status, \
                    m.normalised_ticker::text AS ticker, m.stage::text AS stage, m.events \
             FROM tiles t JOIN signal_error_summary m \
               ON m.period_type = t.period AND m.period_start >= t.lo AND m.period_start < t.hi \
             WHERE $4 = '' OR m.normalised_ticker = $4) \
         SELECT CASE WHEN GROUPING(error_type) = 0 THEN 'type' \
                     WHEN GROUPING(http_status) = 0 THEN 'http_status' \
                     WHEN GROUPING(ticker) = 0 THEN 'ticker' ELSE 'stage' END AS dimension, \
                COALESCE(error_type, http_status, ticker, stage) AS key, sum(events)::bigint AS count \
         FROM failed GROUP BY GROUPING SETS ((error_type), (http_status), (ticker), (stage)) \
         ORDER BY dimension, count DESC, key",
    )
    .bind::<Array<Text>, _>(periods)
    .bind::<Array<Timestamptz>, _>(starts)
    .bind::<Array<Timestamptz>, _>(ends)
    .bind::<Text, _>(filter_value(ticker))
    .load(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, d, h, m, s)
            .single()
            .unwrap_or_default()
    }

    /// Tiles are contiguous, cover the widened range exactly, and each is
    /// made of whole buckets of its size.
    fn check(from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<Tile> {
        let tiles = tiles(from, to);
        assert_eq!(
            <[Tile]>::first(&tiles).map(|t| t.start),
            Some(Period::Minute.floor(from))
        );
        assert_eq!(
            <[Tile]>::last(&tiles).map(|t| t.end),
            Some(Period::Minute.ceil(to))
        );
        for pair in tiles.windows(2) {
            assert_eq!(pair[0].end, pair[1].start);
        }
        for t in &tiles {
            assert_eq!(t.period.floor(t.start), t.start, "{t:?}");
            assert_eq!(t.period.floor(t.end), t.end, "{t:?}");
        }
        tiles
    }

    #[test]
    fn within_one_hour_only_minutes() {
        let tiles = check(at(25, 10, 3, 20), at(25, 10, 40, 1));
        assert_eq!(tiles.len(), 1);
        assert_eq!(tiles[0].period, Period::Minute);
        assert_eq!(
            (tiles[0].start, tiles[0].end),
            (at(25, 10, 3, 0), at(25, 10, 41, 0))
        );
    }

    #[test]
    fn a_day_ending_now_uses_hours_between_minutes() {
        let tiles = check(at(24, 10, 3, 20), at(25, 10, 3, 20));
        let periods: Vec<Period> = tiles.iter().map(|t| t.period).collect();
        // No whole calendar day fits: minutes, hours, minutes.
        assert_eq!(periods, [Period::Minute, Period::Hour, Period::Minute]);
        assert_eq!(
            (tiles[1].start, tiles[1].end),
            (at(24, 11, 0, 0), at(25, 10, 0, 0))
        );
    }

    #[test]
    fn long_ranges_use_days_in_the_middle() {
        let tiles = check(at(20, 22, 59, 0), at(25, 1, 30, 0));
        let periods: Vec<Period> = tiles.iter().map(|t| t.period).collect();
        assert_eq!(
            periods,
            [
                Period::Minute,
                Period::Hour,
                Period::Day,
                Period::Hour,
                Period::Minute
            ]
        );
        assert_eq!(
            (tiles[2].start, tiles[2].end),
            (at(21, 0, 0, 0), at(25, 0, 0, 0))
        );
    }

    #[test]
    fn aligned_ranges_need_no_finer_tiles() {
        let tiles = check(at(21, 0, 0, 0), at(23, 0, 0, 0));
        assert_eq!(
            tiles,
            [Tile {
                period: Period::Day,
                start: at(21, 0, 0, 0),
                end: at(23, 0, 0, 0)
            }]
        );
        let tiles = check(at(21, 5, 0, 0), at(21, 7, 0, 0));
        assert_eq!(tiles.len(), 1);
        assert_eq!(tiles[0].period, Period::Hour);
    }
}
