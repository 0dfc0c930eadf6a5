//! `archive --day D` (write a live day's archive, drop nothing) and
//! `restore --day D` (bring an archived day back into the live tables, so
//! the reader serves it again).
//!
//! Restore verifies every part first, then, in ONE transaction, inserts the
//! day's signals that are not live (the copy taken when they left, else the
//! one taken with the events), the events with their original sequence
//! numbers, and their id claims: either the whole day is back or nothing
//! is. It refuses a day that still has live events. The rollups are left
//! as they are: the day is behind the retention horizon, so the refresher
//! does not recompute it, and its hourly/daily rollups were kept anyway.
//! The next `retention run` takes the day out again (reusing the identical
//! archive).

use crate::archive::{Archive, Lines, PartKind};
use crate::cli::{DayArgs, Global};
use crate::db;
use crate::dump::{self, EVENT_COLUMNS};
use crate::error::AdminError;
use crate::partitions;
use crate::report::{self, Report};
use audit_db::PgPool;
use audit_db::leader::{Job, Turn, with_job_lock};
use chrono::NaiveDate;
use diesel::sql_types::{Date, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

/// Rows per INSERT.
const BATCH: usize = 2_000;

#[derive(Serialize)]
struct Archived {
    day: NaiveDate,
    events: u64,
    signals: u64,
    manifest: String,
}

/// Archives a day that is still live (a consistent snapshot of it).
pub async fn archive_day(pool: &PgPool, args: &DayArgs) -> Result<Report, AdminError> {
    let archive = Archive::open(&args.archive.archive_url)?;
    let mut conn = db::connection(pool).await?;
    let table = partitions::children(&mut conn)
        .await?
        .into_iter()
        .find(|p| p.day == Some(args.day))
        .map(|p| p.name)
        .ok_or_else(|| {
            AdminError::invalid(
                "--day",
                format!("{} has no partition in the database", args.day),
            )
        })?;
    let archive_ref = &archive;
    let table_ref = &table;
    let day = args.day;
    let manifest = conn
        .build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| {
            let rows = partitions::count_rows(conn, table_ref).await?;
            dump::archive_table(conn, archive_ref, day, table_ref, rows).await
        })
        .await?;
    let archived = Archived {
        day,
        events: manifest.rows(PartKind::Events),
        signals: manifest.rows(PartKind::Signals),
        manifest: archive.describe(day, "manifest.json"),
    };
    let text = format!(
        "archived {day}: {} events, {} signals, verified, at {}",
        report::count(archived.events as i64),
        report::count(archived.signals as i64),
        archived.manifest
    );
    Ok(Report::new(&archived, text))
}

#[derive(Serialize)]
struct Restored {
    day: NaiveDate,
    events: u64,
    signals_inserted: u64,
}

pub async fn restore(pool: &PgPool, global: &Global, args: &DayArgs) -> Result<Report, AdminError> {
    let archive = Archive::open(&args.archive.archive_url)?;
    let day = args.day;
    // Retention and restore of one day must not interleave.
    let turn = with_job_lock(pool, Job::Retention, async || {
        let mut conn = db::connection(pool).await?;
        restore_locked(&mut conn, global, &archive, day).await
    })
    .await?;
    let Turn::Ran(restored) = turn else {
        return Err(AdminError::Busy(Job::Retention.name()));
    };
    let text = format!(
        "restored {day}: {} events, {} signals brought back",
        report::count(restored.events as i64),
        report::count(restored.signals_inserted as i64)
    );
    Ok(Report::new(&restored, text))
}

async fn restore_locked(
    conn: &mut AsyncPgConnection,
    global: &Global,
    archive: &Archive,
    day: NaiveDate,
) -> Result<Restored, AdminError> {
    let manifest = archive
        .manifest(day)
        .await?
        .ok_or_else(|| AdminError::NotArchived(day, archive.describe(day, "manifest.json")))?;
    let events_part = manifest
        .part(PartKind::Events)
        .ok_or_else(|| {
            AdminError::corrupt(archive.describe(day, "manifest.json"), "no events part")
        })?
        .clone();
    // Everything is read and checked before anything is written.
    let events = archive.read_part(day, &events_part).await?;
    let mut signal_parts: Vec<Lines> = Vec::new();
    for kind in [PartKind::SignalsPurged, PartKind::Signals] {
        if let Some(part) = manifest.part(kind) {
            signal_parts.push(archive.read_part(day, part).await?);
        }
    }
    if let Some(live) = partitions::children(conn)
        .await?
        .into_iter()
        .find(|p| p.day == Some(day))
    {
        let rows = partitions::count_rows(conn, &live.name).await?;
        if rows > 0 {
            return Err(AdminError::State(format!(
                "{day} still has {rows} live events in {}; restore brings back only a day that left",
                live.name
            )));
        }
    }
    partitions::ensure_days(conn, global, &[day]).await?;
    let bar = report::bar(events_part.rows, "restoring events");
    let signals_inserted = conn
        .transaction::<_, AdminError, _>(async |conn| {
            let mut inserted = 0u64;
            for lines in &signal_parts {
                inserted += insert_json(
                    conn,
                    // An archive written before signals had start counters
                    // has no such keys: zero here, counted again below.
                    "INSERT INTO signals SELECT * FROM json_populate_recordset( \
                         json_populate_record(NULL::signals, \
                             '{\"processing_starts\": 0, \"forwarding_starts\": 0}'), $1::json) \
                     ON CONFLICT (signal_id) DO NOTHING",
                    lines,
                    None,
                )
                .await?;
            }
            insert_json(
                conn,
                &format!(
                    "WITH rows AS (SELECT * FROM json_populate_recordset(NULL::signal_events, $1::json)), \
                          claims AS (INSERT INTO signal_event_ids (event_id, signal_id, ts) \
                                     SELECT event_id, signal_id, ts FROM rows ON CONFLICT DO NOTHING) \
                     INSERT INTO signal_events ({EVENT_COLUMNS}, normalised_ticker) \
                     SELECT {EVENT_COLUMNS}, \
                            (SELECT s.normalised_ticker FROM signals s WHERE s.signal_id = rows.signal_id) \
                     FROM rows"
                ),
                &events,
                Some(&bar),
            )
            .await?;
            // Start counters (how many processing and forwarding events a
            // signal has, for retry counting) of the day's signals that
            // have none although they have such events: rows restored from
            // an archive older than the counters.
            diesel::sql_query(
                "UPDATE signals AS s \
                 SET processing_starts = c.processing, forwarding_starts = c.forwarding \
                 FROM (SELECT signal_id, \
                              count(*) FILTER (WHERE event_type = 'processing') AS processing, \
                              count(*) FILTER (WHERE event_type = 'forwarding') AS forwarding \
                       FROM signal_events \
                       WHERE signal_id IN (SELECT signal_id FROM signal_events \
                                           WHERE ts >= ($1::date::timestamp AT TIME ZONE 'UTC') \
                                             AND ts < (($1::date + 1)::timestamp AT TIME ZONE 'UTC')) \
                       GROUP BY signal_id) AS c \
                 WHERE s.signal_id = c.signal_id \
                   AND s.processing_starts = 0 AND s.forwarding_starts = 0 \
                   AND c.processing + c.forwarding > 0",
            )
            .bind::<Date, _>(day)
            .execute(conn)
            .await?;
            // The day is live again: a later retention run archives it anew.
            diesel::sql_query("DELETE FROM archived_days WHERE day = $1")
                .bind::<Date, _>(day)
                .execute(conn)
                .await?;
            Ok(inserted)
        })
        .await?;
    bar.finish_and_clear();
    Ok(Restored {
        day,
        events: events_part.rows,
        signals_inserted,
    })
}

/// Runs `sql` with `$1` bound to JSON arrays of [`BATCH`] lines at a time;
/// returns the rows it reports.
async fn insert_json(
    conn: &mut AsyncPgConnection,
    sql: &str,
    lines: &Lines,
    bar: Option<&indicatif::ProgressBar>,
) -> Result<u64, AdminError> {
    let mut total = 0u64;
    let mut batch: Vec<&str> = Vec::with_capacity(BATCH);
    let mut flush = async |batch: &mut Vec<&str>| -> Result<u64, AdminError> {
        let json = format!("[{}]", batch.join(","));
        let n = diesel::sql_query(sql)
            .bind::<Text, _>(json)
            .execute(conn)
            .await?;
        if let Some(bar) = bar {
            bar.inc(batch.len() as u64);
        }
        batch.clear();
        Ok(n as u64)
    };
    for line in lines.iter() {
        batch.push(line);
        if batch.len() == BATCH {
            total += flush(&mut batch).await?;
        }
    }
    if !batch.is_empty() {
        total += flush(&mut batch).await?;
    }
    Ok(total)
}
