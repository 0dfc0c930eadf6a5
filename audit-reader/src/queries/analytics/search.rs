//! SearchEvents: full-text search over the generated `search` tsvector
//! (GIN-indexed) of signal_events, restricted by the ListSignals filter.
//!
//! diesel builds the query and the filter; the text-search operators and
//! functions are SQL fragments since diesel has no DSL for them.

use crate::queries::signals::{SignalFilter, filtered};
use audit_db::DbError;
use audit_db::models::EventRow;
use audit_db::schema::{signal_events, signals};
use chrono::{DateTime, Utc};
use diesel::dsl::sql;
use diesel::prelude::*;
use diesel::sql_types::{Bool, Float, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub event: EventRow,
    pub rank: f32,
    pub snippet: String,
}

/// The text every event is searched on, as the generated column builds it.
const DOCUMENT: &str = "coalesce(details, '') || ' ' || coalesce(error_info::text, '') || ' ' || coalesce(response_data, '')";

#[tracing::instrument(name = "SELECT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_events"))]
pub async fn search(
    conn: &mut AsyncPgConnection,
    query: &str,
    filter: &SignalFilter,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<SearchHit>, DbError> {
    let tsquery = |prefix: &str| {
        sql::<Bool>(&format!("{prefix}websearch_to_tsquery('english', "))
            .bind::<Text, _>(query.to_owned())
            .sql(")")
    };
    let rank = || {
        sql::<Float>("ts_rank(search, websearch_to_tsquery('english', ")
            .bind::<Text, _>(query.to_owned())
            .sql("))")
    };
    let mut q = signal_events::table
        .filter(signal_events::signal_id.eq_any(filtered(filter).select(signals::signal_id)))
        .filter(tsquery("search @@ "))
        .into_boxed();
    if let Some(from) = from {
        q = q.filter(signal_events::ts.ge(from));
    }
    if let Some(to) = to {
        q = q.filter(signal_events::ts.lt(to));
    }
    let rows: Vec<(EventRow, f32, String)> = q
        .select((
            EventRow::as_select(),
            rank(),
            sql::<Text>(&format!(
                "ts_headline('english', {DOCUMENT}, websearch_to_tsquery('english', "
            ))
            .bind::<Text, _>(query.to_owned())
            .sql("), 'StartSel=[, StopSel=], MaxFragments=2, MaxWords=20, MinWords=5')"),
        ))
        // By the rank expression itself: a positional `ORDER BY 2` would
        // name the second column of the expanded EventRow, not the rank.
        .order((
            rank().desc(),
            signal_events::ts.desc(),
            signal_events::sequence.desc(),
        ))
        .limit(limit)
        .load(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(event, rank, snippet)| SearchHit {
            event,
            rank,
            snippet,
        })
        .collect())
}
