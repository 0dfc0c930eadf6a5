//! One signal with its timeline, and keyset pages of signals.

use audit_core::{SignalLocation, SignalStatus};
use audit_db::models::{EventRow, SignalRow, interval_to_delta};
use audit_db::schema::{signal_events, signals};
use audit_db::{DbError, PgPool};
use audit_wire::token::{Direction, SignalCursor, SortField};
use chrono::{DateTime, TimeDelta, Utc};
use diesel::pg::Pg;
use diesel::pg::data_types::PgInterval;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TagMatch {
    #[default]
    Any,
    All,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SignalFilter {
    pub ticker: Option<String>,
    pub normalised_ticker: Option<String>,
    pub statuses: Vec<SignalStatus>,
    pub location: Option<SignalLocation>,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub updated_from: Option<DateTime<Utc>>,
    pub updated_to: Option<DateTime<Utc>>,
    pub errors_only: bool,
    pub min_processing_time: Option<TimeDelta>,
    pub max_processing_time: Option<TimeDelta>,
    pub tags: Vec<String>,
    pub tag_match: TagMatch,
}

#[derive(Debug, Clone)]
pub struct SignalQuery {
    pub filter: SignalFilter,
    pub sort: SortField,
    pub direction: Direction,
    pub page_size: i64,
    pub after: Option<SignalCursor>,
    pub include_total: bool,
    /// Identifies the filter and sort a token was issued for.
    pub fingerprint: u64,
}

#[derive(Debug)]
pub struct SignalPage {
    pub signals: Vec<SignalRow>,
    pub next: Option<SignalCursor>,
    pub total: Option<i64>,
}

fn micros(delta: TimeDelta) -> PgInterval {
    PgInterval::from_microseconds(delta.num_microseconds().unwrap_or(i64::MAX))
}

pub(crate) fn filtered(filter: &SignalFilter) -> signals::BoxedQuery<'static, Pg> {
    let mut q = signals::table.into_boxed();
    if let Some(ticker) = &filter.ticker {
        q = q.filter(signals::ticker.eq(ticker.clone()));
    }
    if let Some(ticker) = &filter.normalised_ticker {
        q = q.filter(signals::normalised_ticker.eq(ticker.clone()));
    }
    if !filter.statuses.is_empty() {
        q = q.filter(signals::current_status.eq_any(filter.statuses.clone()));
    }
    if let Some(location) = filter.location {
        q = q.filter(signals::current_location.eq(location));
    }
    if let Some(from) = filter.created_from {
        q = q.filter(signals::created_at.ge(from));
    }
    if let Some(to) = filter.created_to {
        q = q.filter(signals::created_at.lt(to));
    }
    if let Some(from) = filter.updated_from {
        q = q.filter(signals::updated_at.ge(from));
    }
    if let Some(to) = filter.updated_to {
        q = q.filter(signals::updated_at.lt(to));
    }
    if filter.errors_only {
        q = q.filter(signals::error_count.gt(0));
    }
    if let Some(min) = filter.min_processing_time {
        q = q.filter(signals::total_processing_time.ge(micros(min)));
    }
    if let Some(max) = filter.max_processing_time {
        q = q.filter(signals::total_processing_time.le(micros(max)));
    }
    if !filter.tags.is_empty() {
        q = match filter.tag_match {
            TagMatch::Any => q.filter(signals::tags.overlaps_with(filter.tags.clone())),
            TagMatch::All => q.filter(signals::tags.contains(filter.tags.clone())),
        };
    }
    q
}

/// Orders by a non-null column and the id, continuing after `$after`.
macro_rules! keyset {
    ($q:expr, $col:expr, $dir:expr, $after:expr) => {{
        let q = $q;
        let q = match $after {
            Some((value, id)) => match $dir {
                Direction::Ascending => q.filter(
                    $col.gt(value)
                        .or($col.eq(value).and(signals::signal_id.gt(id))),
                ),
                Direction::Descending => q.filter(
                    $col.lt(value)
                        .or($col.eq(value).and(signals::signal_id.lt(id))),
                ),
            },
            None => q,
        };
        match $dir {
            Direction::Ascending => q.order(($col.asc(), signals::signal_id.asc())),
            Direction::Descending => q.order(($col.desc(), signals::signal_id.desc())),
        }
    }};
}

#[tracing::instrument(name = "SELECT signals", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signals"))]
pub async fn list_signals(pool: &PgPool, query: &SignalQuery) -> Result<SignalPage, DbError> {
    let mut conn = pool.get().await?;
    let q = filtered(&query.filter);
    let after = query.after.as_ref();
    let id = after.map(|c| c.signal_id);
    let dir = query.direction;
    let q = match query.sort {
        SortField::CreatedAt => keyset!(
            q,
            signals::created_at,
            dir,
            after.and_then(|c| c.ts).zip(id)
        ),
        SortField::UpdatedAt => keyset!(
            q,
            signals::updated_at,
            dir,
            after.and_then(|c| c.ts).zip(id)
        ),
        SortField::ErrorCount => keyset!(
            q,
            signals::error_count,
            dir,
            after
                .and_then(|c| c.n)
                .and_then(|n| i32::try_from(n).ok())
                .zip(id)
        ),
        SortField::ProcessingTime => processing_time_keyset(q, dir, after),
    };
    let mut rows: Vec<SignalRow> = q
        .select(SignalRow::as_select())
        .limit(query.page_size + 1)
        .load(&mut conn)
        .await?;
    let next = if rows.len() as i64 > query.page_size {
        rows.truncate(query.page_size as usize);
        rows.last().map(|last| SignalCursor {
            fingerprint: query.fingerprint,
            sort: query.sort,
            direction: query.direction,
            ts: match query.sort {
                SortField::CreatedAt => Some(last.created_at),
                SortField::UpdatedAt => Some(last.updated_at),
                _ => None,
            },
            n: match query.sort {
                SortField::ErrorCount => Some(i64::from(last.error_count)),
                SortField::ProcessingTime => last
                    .total_processing_time
                    .as_ref()
                    .and_then(|i| interval_to_delta(i).num_microseconds()),
                _ => None,
            },
            signal_id: last.signal_id,
        })
    } else {
        None
    };
    let total = if query.include_total {
        Some(
            filtered(&query.filter)
                .count()
                .get_result(&mut conn)
                .await?,
        )
    } else {
        None
    };
    Ok(SignalPage {
        signals: rows,
        next,
        total,
    })
}

/// Processing time is NULL until a signal finishes; those rows sort last in
/// both directions, so the keyset has to step over the NULL boundary.
fn processing_time_keyset(
    q: signals::BoxedQuery<'static, Pg>,
    dir: Direction,
    after: Option<&SignalCursor>,
) -> signals::BoxedQuery<'static, Pg> {
    use signals::{signal_id, total_processing_time as col};
    let q = match (after, dir) {
        (None, _) => q,
        (Some(c), Direction::Ascending) => match c.n {
            Some(us) => {
                let v = PgInterval::from_microseconds(us);
                q.filter(
                    col.gt(v)
                        .or(col.eq(v).and(signal_id.gt(c.signal_id)))
                        .or(col.is_null()),
                )
            }
            None => q.filter(col.is_null().and(signal_id.gt(c.signal_id))),
        },
        (Some(c), Direction::Descending) => match c.n {
            Some(us) => {
                let v = PgInterval::from_microseconds(us);
                q.filter(
                    col.lt(v)
                        .or(col.eq(v).and(signal_id.lt(c.signal_id)))
                        .or(col.is_null()),
                )
            }
            None => q.filter(col.is_null().and(signal_id.lt(c.signal_id))),
        },
    };
    match dir {
        Direction::Ascending => q.order((col.asc().nulls_last(), signal_id.asc())),
        Direction::Descending => q.order((col.desc().nulls_last(), signal_id.desc())),
    }
}

#[tracing::instrument(name = "SELECT signals", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signals"))]
pub async fn get_signal(
    pool: &PgPool,
    signal_id: Uuid,
) -> Result<(SignalRow, Vec<EventRow>), DbError> {
    let mut conn = pool.get().await?;
    let signal = signals::table
        .find(signal_id)
        .select(SignalRow::as_select())
        .first(&mut conn)
        .await
        .optional()?
        .ok_or_else(|| DbError::not_found("signal", signal_id))?;
    let events = signal_events::table
        .filter(signal_events::signal_id.eq(signal_id))
        .order((signal_events::ts.asc(), signal_events::sequence.asc()))
        .select(EventRow::as_select())
        .load(&mut conn)
        .await?;
    Ok((signal, events))
}
