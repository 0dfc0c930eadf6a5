//! The write path's statements in constant shape: every column travels as
//! one array parameter and `unnest` turns the arrays back into rows, so the
//! SQL text is the same for one row or five thousand.
//!
//! Why: diesel marks multi-row `VALUES` inserts, upserts and `sql_query` as
//! not cacheable, and diesel-async then prepares every such statement afresh
//! (a Parse round trip, a plan, then the Bind/Execute round trip). These
//! types carry a static [`QueryId`], so diesel-async prepares each once per
//! connection and every later call is a single round trip with a cached
//! plan. Group commit issues several of them per transaction, so this is
//! where the round trips of a unary write went.
//!
//! Raw SQL: diesel's DSL has no `INSERT … SELECT FROM unnest(…)` or
//! `UPDATE … FROM unnest(…)`, and cannot name the signals' start counters
//! (see `audit_db::schema`). Rows come back through `QueryableByName`.
//!
//! Public so that the bench's naive baseline runs the same statements one
//! row at a time.

use audit_core::NewEvent;
use audit_db::models::SignalRow;
use bigdecimal::BigDecimal;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::result::QueryResult;
use diesel::sql_types::{
    Array, BigInt, Int4, Jsonb, Nullable, Numeric, Text, Timestamptz, Untyped, Uuid as SqlUuid,
};
use uuid::Uuid;

/// A statement whose SQL never changes: cacheable by type, rows untyped.
macro_rules! constant_statement {
    ($name:ident) => {
        impl QueryId for $name {
            type QueryId = $name;
            const HAS_STATIC_QUERY_ID: bool = true;
        }
        impl Query for $name {
            type SqlType = Untyped;
        }
    };
    ($name:ident<'_>) => {
        impl QueryId for $name<'_> {
            type QueryId = $name<'static>;
            const HAS_STATIC_QUERY_ID: bool = true;
        }
        impl Query for $name<'_> {
            type SqlType = Untyped;
        }
    };
}

/// The `signals` columns [`SignalRow`] reads.
const SIGNAL_COLUMNS: &str = "signal_id, ticker, normalised_ticker, side, action, price, \
    original_signal, current_status, current_location, created_at, updated_at, \
    total_processing_time, error_count, retry_count, tags, recorded_by";

/// The `signal_events` columns `EventRow` reads.
const EVENT_COLUMNS: &str = "sequence, event_id, signal_id, ts, event_type, location, worker_id, \
    details, error_info, http_status, response_data, recorded_at, recorded_by";

/// New signals (status `received`) with their first event and its id claim,
/// in one statement (data-modifying CTEs): ids already stored are skipped,
/// and only the signals inserted get a `received` event. The inserted
/// signal rows come back.
pub struct InsertSignals<'a> {
    ids: Vec<Uuid>,
    tickers: Vec<&'a str>,
    normalised: Vec<&'a str>,
    sides: Vec<&'a str>,
    actions: Vec<&'a str>,
    prices: Vec<&'a BigDecimal>,
    payloads: Vec<&'a serde_json::Value>,
    received: Vec<DateTime<Utc>>,
    // text[] per row cannot ride in a 1-D array: each row's tags as a JSON array.
    tags: Vec<serde_json::Value>,
    received_ids: Vec<Uuid>,
    recorded_by: Vec<Option<&'a str>>,
}

impl<'a> InsertSignals<'a> {
    /// `received_ids[i]` is the id of `rows[i]`'s first event.
    pub fn new(rows: &'a [SignalRow], received_ids: Vec<Uuid>) -> Self {
        Self {
            ids: rows.iter().map(|r| r.signal_id).collect(),
            tickers: rows.iter().map(|r| r.ticker.as_str()).collect(),
            normalised: rows.iter().map(|r| r.normalised_ticker.as_str()).collect(),
            sides: rows.iter().map(|r| r.side.as_str()).collect(),
            actions: rows.iter().map(|r| r.action.as_str()).collect(),
            prices: rows.iter().map(|r| &r.price).collect(),
            payloads: rows.iter().map(|r| &r.original_signal).collect(),
            received: rows.iter().map(|r| r.created_at).collect(),
            tags: rows.iter().map(|r| serde_json::json!(r.tags)).collect(),
            received_ids,
            recorded_by: rows.iter().map(|r| r.recorded_by.as_deref()).collect(),
        }
    }
}

constant_statement!(InsertSignals<'_>);

impl QueryFragment<Pg> for InsertSignals<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH t AS (SELECT * FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.tickers)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.normalised)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.sides)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.actions)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Numeric>, _>(&self.prices)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Jsonb>, _>(&self.payloads)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.received)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Jsonb>, _>(&self.tags)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.received_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.recorded_by)?;
        out.push_sql(
            ") AS t(id, ticker, normalised, side, action, price, payload, at, tags, received_id, by)), \
             ins AS ( \
                 INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, \
                     original_signal, current_status, current_location, created_at, updated_at, \
                     error_count, retry_count, tags, recorded_by) \
                 SELECT id, ticker, normalised, side, action, price, payload, 'received', \
                        'processing_queue', at, at, 0, 0, \
                        ARRAY(SELECT jsonb_array_elements_text(tags)), by \
                 FROM t ON CONFLICT (signal_id) DO NOTHING RETURNING ",
        );
        out.push_sql(SIGNAL_COLUMNS);
        out.push_sql(
            "), claims AS ( \
                 INSERT INTO signal_event_ids (event_id, signal_id, ts) \
                 SELECT t.received_id, ins.signal_id, ins.created_at FROM ins JOIN t ON t.id = ins.signal_id), \
             events AS ( \
                 INSERT INTO signal_events (event_id, signal_id, ts, event_type, location, recorded_by, \
                     normalised_ticker) \
                 SELECT t.received_id, ins.signal_id, ins.created_at, 'received', 'processing_queue', \
                        ins.recorded_by, ins.normalised_ticker \
                 FROM ins JOIN t ON t.id = ins.signal_id) \
             SELECT * FROM ins",
        );
        Ok(())
    }
}

/// Locks the signals with these ids (`FOR NO KEY UPDATE`, in id order) and
/// reads them with their start counters, which `schema.rs` cannot declare
/// (see there).
pub struct LockSignals {
    ids: Vec<Uuid>,
}

impl LockSignals {
    pub fn new(ids: &[Uuid]) -> Self {
        Self { ids: ids.to_vec() }
    }
}

constant_statement!(LockSignals);

impl QueryFragment<Pg> for LockSignals {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("SELECT ");
        out.push_sql(SIGNAL_COLUMNS);
        out.push_sql(", processing_starts, forwarding_starts FROM signals WHERE signal_id = ANY(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(") ORDER BY signal_id FOR NO KEY UPDATE");
        Ok(())
    }
}

/// A signal under the transaction's row lock, with how many processing and
/// forwarding events it already has (for retry counting).
#[derive(Debug, QueryableByName)]
pub struct LockedSignal {
    #[diesel(embed)]
    pub signal: SignalRow,
    #[diesel(sql_type = Int4)]
    pub processing_starts: i32,
    #[diesel(sql_type = Int4)]
    pub forwarding_starts: i32,
}

/// Events in one statement: claims each id (ids already taken are skipped),
/// inserts the events whose claim this statement took, and returns them
/// (`created` true) together with the stored events of the ids that were
/// claimed before it (`created` false: replays, answered from the stored
/// event). Only events of existing signals are claimed; each inserted event
/// carries its signal's normalised ticker (read in the same probe).
///
/// All parts of a statement see the same snapshot, so the replay lookup
/// never sees this statement's own claims: an id it returns was claimed
/// earlier. An id claimed by a transaction that committed after the
/// snapshot (the claim waited for it, then skipped) comes back in neither
/// part; the caller looks those up again (`events::load_replays`).
pub struct ClaimEvents<'a> {
    event_ids: Vec<Uuid>,
    signal_ids: Vec<Uuid>,
    times: Vec<DateTime<Utc>>,
    types: Vec<&'static str>,
    locations: Vec<&'static str>,
    workers: Vec<Option<&'a str>>,
    details: Vec<Option<&'a str>>,
    errors: Vec<Option<&'a serde_json::Value>>,
    http: Vec<Option<i32>>,
    responses: Vec<Option<&'a str>>,
    recorded_by: Vec<Option<&'a str>>,
}

impl<'a> ClaimEvents<'a> {
    /// `events` must not repeat an (event id, signal id) pair. When one id
    /// comes with several signals, the first one with an existing signal
    /// takes the claim (ids are claimed in id order, then input order: two
    /// transactions claiming common ids wait for each other in one order,
    /// never in a cycle).
    pub fn new(events: &[&'a NewEvent]) -> Self {
        Self {
            event_ids: events.iter().map(|e| e.event_id).collect(),
            signal_ids: events.iter().map(|e| e.signal_id).collect(),
            times: events.iter().map(|e| e.timestamp).collect(),
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            locations: events.iter().map(|e| e.location.as_str()).collect(),
            workers: events.iter().map(|e| e.worker_id.as_deref()).collect(),
            details: events.iter().map(|e| e.details.as_deref()).collect(),
            errors: events.iter().map(|e| e.error_info.as_ref()).collect(),
            http: events.iter().map(|e| e.http_status).collect(),
            responses: events.iter().map(|e| e.response_data.as_deref()).collect(),
            recorded_by: events.iter().map(|e| e.recorded_by.as_deref()).collect(),
        }
    }
}

constant_statement!(ClaimEvents<'_>);

impl QueryFragment<Pg> for ClaimEvents<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("WITH u AS (SELECT * FROM unnest(");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.event_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<SqlUuid>, _>(&self.signal_ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.times)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.types)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.locations)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.workers)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.details)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Jsonb>>, _>(&self.errors)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Int4>>, _>(&self.http)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.responses)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<Text>>, _>(&self.recorded_by)?;
        out.push_sql(
            ") WITH ORDINALITY AS u(e, s, ts, t, l, w, d, ei, hs, rd, rb, n)), \
             known AS MATERIALIZED ( \
                 SELECT u.*, x.normalised_ticker AS tk FROM u JOIN signals x ON x.signal_id = u.s), \
             claimed AS ( \
                 INSERT INTO signal_event_ids (event_id, signal_id, ts) \
                 SELECT k.e, k.s, k.ts FROM known k \
                 ORDER BY k.e, k.n \
                 ON CONFLICT DO NOTHING RETURNING event_id, signal_id), \
             inserted AS ( \
                 INSERT INTO signal_events (event_id, signal_id, ts, event_type, location, \
                     worker_id, details, error_info, http_status, response_data, recorded_by, \
                     normalised_ticker) \
                 SELECT k.e, k.s, k.ts, k.t::signal_status, k.l::signal_location, k.w, k.d, \
                        k.ei, k.hs, k.rd, k.rb, k.tk \
                 FROM known k JOIN claimed c ON c.event_id = k.e AND c.signal_id = k.s \
                 RETURNING ",
        );
        out.push_sql(EVENT_COLUMNS);
        out.push_sql(") SELECT true AS created, ");
        out.push_sql(EVENT_COLUMNS);
        out.push_sql(" FROM inserted UNION ALL SELECT false, ");
        push_prefixed(&mut out, "e.", EVENT_COLUMNS);
        out.push_sql(
            " FROM u JOIN signal_event_ids k ON k.event_id = u.e \
             JOIN signal_events e ON e.signal_id = k.signal_id AND e.ts = k.ts \
                 AND e.event_id = k.event_id \
             WHERE NOT EXISTS (SELECT 1 FROM claimed c WHERE c.event_id = u.e)",
        );
        Ok(())
    }
}

/// `COMMIT`, sent like every other statement of the write path. diesel-async
/// sends a statement once it has its prepared form, in the order they ask
/// for it; `batch_execute` skips that queue and is sent at once, so a
/// COMMIT sent that way could reach the server before an UPDATE still
/// being prepared (the first on each connection), which would then run
/// after the transaction, outside it.
#[derive(Debug, Clone, Copy)]
pub struct Commit;

constant_statement!(Commit);

impl QueryFragment<Pg> for Commit {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql("COMMIT");
        Ok(())
    }
}

/// `columns` (comma-separated), each with `prefix`.
fn push_prefixed(out: &mut AstPass<'_, '_, Pg>, prefix: &str, columns: &str) {
    for (i, column) in columns.split(", ").enumerate() {
        if i > 0 {
            out.push_sql(", ");
        }
        out.push_sql(prefix);
        out.push_sql(column.trim());
    }
}

/// The new state of every signal a batch's events changed, in one statement.
/// Nothing comes back: the caller computed the rows (and read the rest of
/// them under the lock), so returning them would only ship the payloads
/// back.
#[derive(Default)]
pub struct UpdateSignals {
    pub ids: Vec<Uuid>,
    pub statuses: Vec<&'static str>,
    pub locations: Vec<&'static str>,
    pub updated: Vec<DateTime<Utc>>,
    pub errors: Vec<i32>,
    pub retries: Vec<i32>,
    pub totals_us: Vec<Option<i64>>,
    pub processing_starts: Vec<i32>,
    pub forwarding_starts: Vec<i32>,
}

constant_statement!(UpdateSignals);

impl QueryFragment<Pg> for UpdateSignals {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_sql(
            "UPDATE signals AS s SET \
                 current_status = v.status::signal_status, \
                 current_location = v.location::signal_location, \
                 updated_at = v.updated_at, \
                 error_count = v.error_count, \
                 retry_count = v.retry_count, \
                 total_processing_time = v.total_us * interval '1 microsecond', \
                 processing_starts = v.processing_starts, \
                 forwarding_starts = v.forwarding_starts \
             FROM unnest(",
        );
        out.push_bind_param::<Array<SqlUuid>, _>(&self.ids)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.statuses)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Text>, _>(&self.locations)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Timestamptz>, _>(&self.updated)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.errors)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.retries)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Nullable<BigInt>>, _>(&self.totals_us)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.processing_starts)?;
        out.push_sql(", ");
        out.push_bind_param::<Array<Int4>, _>(&self.forwarding_starts)?;
        out.push_sql(
            ") AS v(signal_id, status, location, updated_at, error_count, retry_count, total_us, \
                    processing_starts, forwarding_starts) \
             WHERE s.signal_id = v.signal_id",
        );
        Ok(())
    }
}
