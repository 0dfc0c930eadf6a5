//! SearchEvents: full-text search over the generated `search` tsvector
//! (GIN-indexed) of signal_events, restricted by the ListSignals filter.
//!
//! The filter's normalised ticker becomes one more lexeme of the searched
//! query (every event's vector holds its ticker, see the migration
//! `event_ticker_search`), so the index finds only that ticker's matches; the
//! rest of the filter is checked on each match's signal, and only when the
//! filter says more than the ticker. diesel builds the query and the filter;
//! the text-search operators and functions are SQL fragments since diesel has
//! no DSL for them.

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

/// The tsquery text of the lexeme the generated column adds for a ticker:
/// quoted, so that no character of the ticker is read as query syntax.
fn ticker_lexeme(normalised_ticker: &str) -> String {
    let escaped = normalised_ticker.replace('\\', "\\\\").replace('\'', "''");
    format!("'TICKER:{escaped}'")
}

#[tracing::instrument(name = "SELECT signal_events", skip_all, fields(otel.kind = "client", db.system.name = "postgresql", db.operation.name = "SELECT", db.collection.name = "signal_events"))]
pub async fn search(
    conn: &mut AsyncPgConnection,
    query: &str,
    filter: &SignalFilter,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<SearchHit>, DbError> {
    let rank = || {
        sql::<Float>("ts_rank(search, websearch_to_tsquery('english', ")
            .bind::<Text, _>(query.to_owned())
            .sql("))")
    };
    let mut rest = filter.clone();
    let mut q = signal_events::table.into_boxed();
    q = match rest.normalised_ticker.take() {
        // Words that are all stop words make an empty query, which matches
        // nothing on its own; `&&` would leave the ticker's lexeme alone and
        // match all of the ticker's events, hence the `numnode` guard.
        Some(ticker) => q.filter(
            sql::<Bool>("search @@ (websearch_to_tsquery('english', ")
                .bind::<Text, _>(query.to_owned())
                .sql(") && ")
                .bind::<Text, _>(ticker_lexeme(&ticker))
                .sql("::tsquery) AND numnode(websearch_to_tsquery('english', ")
                .bind::<Text, _>(query.to_owned())
                .sql(")) > 0"),
        ),
        None => q.filter(
            sql::<Bool>("search @@ websearch_to_tsquery('english', ")
                .bind::<Text, _>(query.to_owned())
                .sql(")"),
        ),
    };
    let unrestricted = SignalFilter {
        tag_match: rest.tag_match,
        ..SignalFilter::default()
    };
    if rest != unrestricted {
        q = q.filter(signal_events::signal_id.eq_any(filtered(&rest).select(signals::signal_id)));
    }
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

#[cfg(test)]
mod tests {
    use super::ticker_lexeme;

    #[test]
    fn ticker_lexeme_quotes_what_tsquery_would_read_as_syntax() {
        assert_eq!(ticker_lexeme("AAPL"), "'TICKER:AAPL'");
        assert_eq!(ticker_lexeme("BRK.B"), "'TICKER:BRK.B'");
        assert_eq!(ticker_lexeme("O'NE\\IL"), "'TICKER:O''NE\\\\IL'");
    }
}
