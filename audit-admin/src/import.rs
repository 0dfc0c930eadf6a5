//! `import FILE`: a snapshot of the old tracker into the database, through
//! the write path of `Ingest` (`audit_writer::store::record_batch`: the same
//! rules, state machine, idempotency and rollup triggers), in chunks of one
//! transaction each.
//!
//! The whole file is read and checked first, so a malformed line stops the
//! import before anything is written, naming the line. The partitions of
//! every day the file's events fall on are created next (`signal_events`
//! has no default partition: an event without its day's partition is
//! refused). Importing is idempotent: a
//! signal or event already stored with the same content counts as a
//! duplicate, so an interrupted import is resumed by running it again.

use crate::cli::{Global, ImportArgs};
use crate::error::AdminError;
use crate::report::{self, Report};
use crate::{db, partitions, tracker};
use audit_core::{NewEvent, NewSignal};
use audit_db::{DbError, PgPool};
use chrono::NaiveDate;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Serialize)]
pub struct Imported {
    pub lines: usize,
    pub signals_created: usize,
    pub events_created: usize,
    pub duplicates: usize,
    pub partitions_created: Vec<NaiveDate>,
    pub seconds: f64,
    pub items_per_second: f64,
}

/// The line a batch item came from: `signals[i]` / `events[j]` of a chunk.
fn item_line(item: &str, signal_lines: &[usize], event_lines: &[usize]) -> Option<usize> {
    let (list, rest) = item.split_once('[')?;
    let index: usize = rest.split(']').next()?.parse().ok()?;
    match list {
        "signals" => signal_lines.get(index).copied(),
        "events" => event_lines.get(index).copied(),
        _ => None,
    }
}

pub async fn run(pool: &PgPool, global: &Global, args: &ImportArgs) -> Result<Report, AdminError> {
    if !(1..=5_000).contains(&args.chunk_items) {
        return Err(AdminError::invalid(
            "--chunk-items",
            "must be 1 to 5000 (the Ingest chunk limit)",
        ));
    }
    let started = Instant::now();
    let name = args.file.display().to_string();
    let lines = tracker::read_file(&args.file)?;
    // Every day an event lands on, the signals' `received` events included
    // (stamped with created_at), past or (within the clock skew) ahead: the
    // table has no default partition to catch the rest.
    let mut days: Vec<NaiveDate> = lines
        .iter()
        .flat_map(|(line, _)| line.signal.events.iter().map(|e| e.timestamp.date_naive()))
        .chain(
            lines
                .iter()
                .map(|(line, _)| line.signal.created_at.date_naive()),
        )
        .collect();
    days.sort();
    days.dedup();
    let mut conn = db::connection(pool).await?;
    let partitions_created = partitions::ensure_days(&mut conn, global, &days).await?;
    drop(conn);

    let bar = report::bar(lines.len() as u64, "importing");
    let mut imported = Imported {
        lines: lines.len(),
        signals_created: 0,
        events_created: 0,
        duplicates: 0,
        partitions_created,
        seconds: 0.0,
        items_per_second: 0.0,
    };
    let mut items = 0usize;
    let mut done_through = 0usize;
    let mut chunk: (Vec<NewSignal>, Vec<NewEvent>, Vec<usize>, Vec<usize>) = Default::default();
    let mut iter = lines.into_iter().peekable();
    while let Some((line, checked)) = iter.next() {
        chunk.2.push(line.number);
        chunk.0.push(checked.signal);
        chunk
            .3
            .extend(std::iter::repeat_n(line.number, checked.events.len()));
        chunk.1.extend(checked.events);
        let size = chunk.0.len() + chunk.1.len();
        if size < args.chunk_items && iter.peek().is_some() {
            continue;
        }
        let (signals, events, signal_lines, event_lines) = std::mem::take(&mut chunk);
        let last = signal_lines.last().copied().unwrap_or(done_through);
        let count = signals.len();
        match audit_writer::store::record_batch(pool, signals, events).await {
            Ok(committed) => {
                imported.signals_created += committed.value.signals_created;
                imported.events_created += committed.value.events_created;
                imported.duplicates += committed.value.duplicates;
                items += size;
                done_through = last;
                bar.inc(count as u64);
            }
            Err(DbError::BatchItem { item, source }) => {
                bar.abandon();
                let at = item_line(&item, &signal_lines, &event_lines).unwrap_or(last);
                return Err(AdminError::invalid(
                    format!("{name}:{at}"),
                    format!(
                        "{source} (lines up to {done_through} are imported; fix the line and run the import again)"
                    ),
                ));
            }
            Err(error) => {
                bar.abandon();
                return Err(AdminError::State(format!(
                    "{name}: {error} (lines up to {done_through} are imported; run the import again to resume)"
                )));
            }
        }
    }
    bar.finish_and_clear();
    imported.seconds = started.elapsed().as_secs_f64();
    imported.items_per_second = items as f64 / imported.seconds.max(1e-9);
    let text = format!(
        "{} lines: {} signals and {} events created, {} duplicates; {} partitions created; {:.1} s ({:.0} items/s)",
        report::count(imported.lines as i64),
        report::count(imported.signals_created as i64),
        report::count(imported.events_created as i64),
        report::count(imported.duplicates as i64),
        imported.partitions_created.len(),
        imported.seconds,
        imported.items_per_second
    );
    Ok(Report::new(&imported, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_items_map_back_to_lines() {
        assert_eq!(item_line("signals[1]", &[3, 7], &[]), Some(7));
        assert_eq!(item_line("events[2]", &[3], &[3, 3, 4]), Some(4));
        assert_eq!(item_line("events[9]", &[3], &[3]), None);
        assert_eq!(item_line("tags", &[3], &[3]), None);
    }
}
