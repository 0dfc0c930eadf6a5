//! `verify FILE`: compares a snapshot of the old tracker with the database,
//! signal by signal and field by field — the consistency check of the
//! migration plan's dual-write phase. Every difference is reported (signal
//! missing, signal extra, a field, an event); exit code 1 when there is any.
//!
//! Events are compared in time order (ties in file order / sequence). The
//! signal's own `received` event is compared on everything but its id (the
//! write path derives that id from the signal id). "Extra" signals are
//! those the database holds, created within the file's first and last
//! `created_at`, that the file does not have.

use crate::cli::VerifyArgs;
use crate::db;
use crate::dump::EVENT_COLUMNS;
use crate::error::AdminError;
use crate::report::{self, Report};
use crate::tracker::{self, TrackedEvent, TrackedSignal};
use audit_db::PgPool;
use audit_db::models::{EventRow, SignalRow};
use diesel::sql_types::{Array, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

const PAGE: usize = 500;

#[derive(Debug, Serialize, PartialEq)]
pub struct Difference {
    pub signal_id: Uuid,
    /// The file's line; `None` for a signal only the database has.
    pub line: Option<usize>,
    pub field: String,
    pub file: serde_json::Value,
    pub database: serde_json::Value,
}

#[derive(Serialize)]
struct Verified {
    signals: usize,
    differences: Vec<Difference>,
}

fn value<T: Serialize>(v: T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

/// Every difference between a file's record and the stored signal.
pub fn compare(line: usize, file: &TrackedSignal, db: &TrackedSignal) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut diff = |field: String, a: serde_json::Value, b: serde_json::Value| {
        if a != b {
            out.push(Difference {
                signal_id: file.signal_id,
                line: Some(line),
                field,
                file: a,
                database: b,
            });
        }
    };
    diff("ticker".into(), value(&file.ticker), value(&db.ticker));
    diff("side".into(), value(&file.side), value(&db.side));
    diff("action".into(), value(&file.action), value(&db.action));
    let price = |p: &serde_json::Value| {
        tracker::price(p).map_or(p.clone(), |d| value(d.normalized().to_string()))
    };
    diff("price".into(), price(&file.price), price(&db.price));
    diff(
        "original_signal".into(),
        file.original_signal.clone(),
        db.original_signal.clone(),
    );
    diff(
        "created_at".into(),
        value(file.created_at),
        value(db.created_at),
    );
    diff("status".into(), value(&file.status), value(&db.status));
    diff(
        "location".into(),
        value(&file.location),
        value(&db.location),
    );
    // Optional in the file: compared when present.
    if file.updated_at.is_some() {
        diff(
            "updated_at".into(),
            value(file.updated_at),
            value(db.updated_at),
        );
    }
    if file.error_count.is_some() {
        diff(
            "error_count".into(),
            value(file.error_count),
            value(db.error_count),
        );
    }
    if file.retry_count.is_some() {
        diff(
            "retry_count".into(),
            value(file.retry_count),
            value(db.retry_count),
        );
    }
    if file.total_processing_time_us.is_some() {
        diff(
            "total_processing_time_us".into(),
            value(file.total_processing_time_us),
            value(db.total_processing_time_us),
        );
    }
    let set = |t: &[String]| {
        let mut t: Vec<String> = t.iter().map(|s| s.trim().to_owned()).collect();
        t.sort();
        t.dedup();
        t
    };
    diff("tags".into(), value(set(&file.tags)), value(set(&db.tags)));
    let mut file_events: Vec<(usize, &TrackedEvent)> = file.events.iter().enumerate().collect();
    file_events.sort_by_key(|(i, e)| (e.timestamp, *i));
    let received = tracker::received_index(file);
    if file_events.len() != db.events.len() {
        diff(
            "events.count".into(),
            value(file_events.len()),
            value(db.events.len()),
        );
    }
    for (position, ((index, a), b)) in file_events.iter().zip(&db.events).enumerate() {
        let field = |f: &str| format!("events[{position}].{f}");
        if a.event_id.is_some() && Some(*index) != received {
            diff(field("event_id"), value(a.event_id), value(b.event_id));
        }
        diff(field("timestamp"), value(a.timestamp), value(b.timestamp));
        diff(
            field("event_type"),
            value(&a.event_type),
            value(&b.event_type),
        );
        diff(field("location"), value(&a.location), value(&b.location));
        diff(field("worker_id"), value(&a.worker_id), value(&b.worker_id));
        diff(field("details"), value(&a.details), value(&b.details));
        let json = |v: &Option<serde_json::Value>| v.clone().filter(|v| !v.is_null());
        diff(
            field("error_info"),
            value(json(&a.error_info)),
            value(json(&b.error_info)),
        );
        let status = |s: Option<i32>| s.filter(|s| *s != 0);
        diff(
            field("http_status"),
            value(status(a.http_status)),
            value(status(b.http_status)),
        );
        diff(
            field("response_data"),
            value(&a.response_data),
            value(&b.response_data),
        );
    }
    out
}

pub async fn run(pool: &PgPool, args: &VerifyArgs) -> Result<Report, AdminError> {
    let lines = tracker::read_file(&args.file)?;
    let mut conn = db::connection(pool).await?;
    let bar = report::bar(lines.len() as u64, "verifying");
    let mut differences = Vec::new();
    for page in lines.chunks(PAGE) {
        let ids: Vec<Uuid> = page.iter().map(|(l, _)| l.signal.signal_id).collect();
        let signals: Vec<SignalRow> =
            diesel::sql_query("SELECT * FROM signals WHERE signal_id = ANY($1)")
                .bind::<Array<SqlUuid>, _>(&ids)
                .load(&mut conn)
                .await?;
        let events: Vec<EventRow> = diesel::sql_query(format!(
            "SELECT {EVENT_COLUMNS} FROM signal_events WHERE signal_id = ANY($1) \
             ORDER BY signal_id, ts, sequence"
        ))
        .bind::<Array<SqlUuid>, _>(&ids)
        .load(&mut conn)
        .await?;
        let mut by_signal: HashMap<Uuid, Vec<EventRow>> = HashMap::new();
        for e in events {
            by_signal.entry(e.signal_id).or_default().push(e);
        }
        let stored: HashMap<Uuid, &SignalRow> = signals.iter().map(|s| (s.signal_id, s)).collect();
        for (line, _) in page {
            match stored.get(&line.signal.signal_id) {
                None => differences.push(Difference {
                    signal_id: line.signal.signal_id,
                    line: Some(line.number),
                    field: "signal".into(),
                    file: value("present"),
                    database: value("missing"),
                }),
                Some(row) => {
                    let own = by_signal.remove(&row.signal_id).unwrap_or_default();
                    differences.extend(compare(
                        line.number,
                        &line.signal,
                        &tracker::from_rows(row, &own),
                    ));
                }
            }
        }
        bar.inc(page.len() as u64);
    }
    bar.finish_and_clear();
    // Signals the database has in the file's time span and the file has not.
    let span = lines.iter().map(|(l, _)| l.signal.created_at);
    if let (Some(first), Some(last)) = (span.clone().min(), span.max()) {
        let known: HashSet<Uuid> = lines.iter().map(|(l, _)| l.signal.signal_id).collect();
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = SqlUuid)]
            signal_id: Uuid,
        }
        let ids: Vec<Id> = diesel::sql_query(
            "SELECT signal_id FROM signals WHERE created_at >= $1 AND created_at <= $2 ORDER BY created_at, signal_id",
        )
        .bind::<Timestamptz, _>(first)
        .bind::<Timestamptz, _>(last)
        .load(&mut conn)
        .await?;
        for id in ids.into_iter().filter(|i| !known.contains(&i.signal_id)) {
            differences.push(Difference {
                signal_id: id.signal_id,
                line: None,
                field: "signal".into(),
                file: value("missing"),
                database: value("present"),
            });
        }
    }
    let found = !differences.is_empty();
    let mut text = String::new();
    for d in &differences {
        let line = d.line.map_or("-".to_owned(), |l| l.to_string());
        text.push_str(&format!(
            "{} (line {line}) {}: file {} database {}\n",
            d.signal_id, d.field, d.file, d.database
        ));
    }
    text.push_str(&format!(
        "{} signals checked, {} difference(s)",
        report::count(lines.len() as i64),
        differences.len()
    ));
    let verified = Verified {
        signals: lines.len(),
        differences,
    };
    Ok(Report::new(&verified, text).with_findings(found))
}
