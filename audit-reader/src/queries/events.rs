//! Keyset pages of events, oldest first.

use audit_core::SignalStatus;
use audit_db::models::EventRow;
use audit_db::schema::signal_events;
use audit_db::{DbError, PgPool};
use audit_wire::token::EventCursor;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub signal_id: Option<Uuid>,
    pub event_type: Option<SignalStatus>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// A page request for events, checked.
#[derive(Debug, Clone)]
pub struct EventQuery {
    pub filter: EventFilter,
    pub page_size: i64,
    pub after: Option<EventCursor>,
    /// Identifies the filter a token was issued for.
    pub fingerprint: u64,
}

#[tracing::instrument(name = "SELECT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_events"))]
pub async fn list_events(
    pool: &PgPool,
    query: &EventQuery,
) -> Result<(Vec<EventRow>, Option<EventCursor>), DbError> {
    use signal_events::{sequence, ts};
    let (filter, page_size, fingerprint) = (&query.filter, query.page_size, query.fingerprint);
    let mut conn = pool.get().await?;
    let mut q = signal_events::table.into_boxed();
    if let Some(id) = filter.signal_id {
        q = q.filter(signal_events::signal_id.eq(id));
    }
    if let Some(kind) = filter.event_type {
        q = q.filter(signal_events::event_type.eq(kind));
    }
    if let Some(from) = filter.from {
        q = q.filter(ts.ge(from));
    }
    if let Some(to) = filter.to {
        q = q.filter(ts.lt(to));
    }
    if let Some(c) = &query.after {
        q = q.filter(ts.gt(c.ts).or(ts.eq(c.ts).and(sequence.gt(c.sequence))));
    }
    let mut rows: Vec<EventRow> = q
        .order((ts.asc(), sequence.asc()))
        .select(EventRow::as_select())
        .limit(page_size + 1)
        .load(&mut conn)
        .await?;
    let next = if rows.len() as i64 > page_size {
        rows.truncate(page_size as usize);
        rows.last().map(|last| EventCursor {
            fingerprint,
            ts: last.ts,
            sequence: last.sequence,
        })
    } else {
        None
    };
    Ok((rows, next))
}
