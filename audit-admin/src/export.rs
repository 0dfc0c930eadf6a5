//! `export`: signals (created in a time range, optionally of one ticker)
//! with all their events, in the tracker format `import` and `verify` read,
//! in pages of signals keyed by (created_at, signal_id).

use crate::cli::ExportArgs;
use crate::dump::EVENT_COLUMNS;
use crate::error::AdminError;
use crate::report::{self, Report};
use crate::{db, tracker};
use audit_db::PgPool;
use audit_db::models::{EventRow, SignalRow};
use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use serde::Serialize;
use std::collections::HashMap;
use std::io::Write;
use uuid::Uuid;

const PAGE: i64 = 500;

#[derive(Serialize)]
struct Exported {
    file: String,
    signals: usize,
    events: usize,
}

pub async fn run(pool: &PgPool, args: &ExportArgs) -> Result<Report, AdminError> {
    let name = args.output.display().to_string();
    let file = std::fs::File::create(&args.output)
        .map_err(|e| AdminError::invalid(name.clone(), format!("cannot create: {e}")))?;
    let mut out = std::io::BufWriter::new(file);
    let mut conn = db::connection(pool).await?;
    let spinner = report::spinner("exporting");
    let (mut signals, mut events) = (0usize, 0usize);
    let mut after: Option<(DateTime<Utc>, Uuid)> = None;
    loop {
        let page: Vec<SignalRow> = diesel::sql_query(
            "SELECT * FROM signals \
             WHERE ($1::timestamptz IS NULL OR created_at >= $1) \
               AND ($2::timestamptz IS NULL OR created_at < $2) \
               AND ($3::text IS NULL OR normalised_ticker = $3) \
               AND ($4::timestamptz IS NULL OR (created_at, signal_id) > ($4, $5)) \
             ORDER BY created_at, signal_id LIMIT $6",
        )
        .bind::<Nullable<Timestamptz>, _>(args.from)
        .bind::<Nullable<Timestamptz>, _>(args.to)
        .bind::<Nullable<Text>, _>(args.ticker.as_deref())
        .bind::<Nullable<Timestamptz>, _>(after.map(|a| a.0))
        .bind::<SqlUuid, _>(after.map_or(Uuid::nil(), |a| a.1))
        .bind::<BigInt, _>(PAGE)
        .load(&mut conn)
        .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.signal_id));
        let ids: Vec<Uuid> = page.iter().map(|s| s.signal_id).collect();
        let rows: Vec<EventRow> = diesel::sql_query(format!(
            "SELECT {EVENT_COLUMNS} FROM signal_events WHERE signal_id = ANY($1) \
             ORDER BY signal_id, ts, sequence"
        ))
        .bind::<Array<SqlUuid>, _>(&ids)
        .load(&mut conn)
        .await?;
        let mut by_signal: HashMap<Uuid, Vec<EventRow>> = HashMap::new();
        for row in rows {
            by_signal.entry(row.signal_id).or_default().push(row);
        }
        for signal in &page {
            let own = by_signal.remove(&signal.signal_id).unwrap_or_default();
            events += own.len();
            let record = tracker::from_rows(signal, &own);
            let line = serde_json::to_string(&record).map_err(|e| {
                AdminError::State(format!("cannot encode {}: {e}", signal.signal_id))
            })?;
            writeln!(out, "{line}")?;
        }
        signals += page.len();
        spinner.set_message(format!("exported {signals} signals"));
    }
    out.flush()?;
    spinner.finish_and_clear();
    let text = format!(
        "exported {} signals with {} events to {name}",
        report::count(signals as i64),
        report::count(events as i64)
    );
    Ok(Report::new(
        &Exported {
            file: name,
            signals,
            events,
        },
        text,
    ))
}
