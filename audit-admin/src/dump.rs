//! Reading a day's rows out of PostgreSQL into archive parts, and writing
//! them back. Rows travel as `row_to_json` text and come back through
//! `json_populate_recordset` over the same row type, so PostgreSQL does
//! every conversion both ways and a restored row is the archived row.

use crate::archive::{Archive, Manifest, Part, PartKind, PartWriter};
use crate::error::AdminError;
use crate::partitions::quote;
use crate::report;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

/// The columns of `signal_events` an archive holds: all but the copy of the
/// signal's normalised ticker, which restore takes from the restored signal
/// (so archives written before events carried it restore the same way).
pub const EVENT_COLUMNS: &str = "sequence, event_id, signal_id, ts, event_type, location, worker_id, \
    details, error_info, http_status, response_data, recorded_at, recorded_by";

/// Rows per round trip.
const BATCH: i64 = 10_000;

#[derive(QueryableByName)]
struct EventLine {
    #[diesel(sql_type = BigInt)]
    sequence: i64,
    #[diesel(sql_type = Timestamptz)]
    ts: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    line: String,
}

#[derive(QueryableByName)]
struct SignalLine {
    #[diesel(sql_type = Timestamptz)]
    updated_at: DateTime<Utc>,
    #[diesel(sql_type = Text)]
    line: String,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = SqlUuid)]
    signal_id: Uuid,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = Nullable<Text>)]
    version: Option<String>,
}

/// The newest applied migration.
pub async fn schema_version(conn: &mut AsyncPgConnection) -> Result<String, AdminError> {
    let Version { version } =
        diesel::sql_query("SELECT max(version)::text AS version FROM __diesel_schema_migrations")
            .get_result(conn)
            .await?;
    Ok(version.unwrap_or_default())
}

/// Every event of `table` (a day partition, attached or detached), in
/// sequence order, read in keyset batches.
pub async fn events_part(
    conn: &mut AsyncPgConnection,
    table: &str,
    expected_rows: i64,
) -> Result<crate::archive::PartBuf, AdminError> {
    let mut writer = PartWriter::new(PartKind::Events)?;
    let bar = report::bar(expected_rows.max(0) as u64, "reading events");
    let sql = format!(
        "SELECT t.sequence, t.ts, row_to_json(t)::text AS line FROM ( \
             SELECT {EVENT_COLUMNS} FROM {} WHERE sequence > $1 ORDER BY sequence LIMIT $2) t \
         ORDER BY t.sequence",
        quote(table)
    );
    let mut last = i64::MIN;
    loop {
        let rows: Vec<EventLine> = diesel::sql_query(&sql)
            .bind::<BigInt, _>(last)
            .bind::<BigInt, _>(BATCH)
            .load(conn)
            .await?;
        let Some(end) = rows.last().map(|r| r.sequence) else {
            break;
        };
        for row in &rows {
            writer.push(&row.line, Some(row.ts))?;
        }
        bar.inc(rows.len() as u64);
        last = end;
    }
    bar.finish_and_clear();
    writer.finish()
}

/// The signals `table`'s events belong to, as they are now, by id.
pub async fn signals_part(
    conn: &mut AsyncPgConnection,
    table: &str,
) -> Result<crate::archive::PartBuf, AdminError> {
    let ids: Vec<Id> = diesel::sql_query(format!(
        "SELECT DISTINCT signal_id FROM {} ORDER BY signal_id",
        quote(table)
    ))
    .load(conn)
    .await?;
    let ids: Vec<Uuid> = ids.into_iter().map(|i| i.signal_id).collect();
    signals_by_id(conn, PartKind::Signals, &ids).await
}

/// The given signals, in id order.
pub async fn signals_by_id(
    conn: &mut AsyncPgConnection,
    kind: PartKind,
    ids: &[Uuid],
) -> Result<crate::archive::PartBuf, AdminError> {
    let mut writer = PartWriter::new(kind)?;
    for chunk in ids.chunks(BATCH as usize) {
        let rows: Vec<SignalLine> = diesel::sql_query(
            "SELECT s.updated_at, row_to_json(s)::text AS line FROM signals s \
             WHERE s.signal_id = ANY($1) ORDER BY s.signal_id",
        )
        .bind::<Array<SqlUuid>, _>(chunk)
        .load(conn)
        .await?;
        for row in &rows {
            writer.push(&row.line, Some(row.updated_at))?;
        }
    }
    writer.finish()
}

/// Writes (and verifies) the archive of `day` from `table`, unless an
/// archive of exactly these events exists already (a run resumed after a
/// crash, or a restored day leaving again), which is verified and kept.
/// Fails when an archive of the day exists with different events.
pub async fn archive_table(
    conn: &mut AsyncPgConnection,
    archive: &Archive,
    day: NaiveDate,
    table: &str,
    rows: i64,
) -> Result<Manifest, AdminError> {
    let events = events_part(conn, table, rows).await?;
    if events.part.rows != rows as u64 {
        return Err(AdminError::State(format!(
            "{table} changed while it was read ({} rows read, {rows} counted)",
            events.part.rows
        )));
    }
    if let Some(existing) = archive.manifest(day).await? {
        let same = existing
            .part(PartKind::Events)
            .is_some_and(|p| p.content_sha256 == events.part.content_sha256);
        if !same {
            return Err(AdminError::State(format!(
                "{} already holds a different archive of {day}; move it away (or restore it) first",
                archive.describe(day, "manifest.json")
            )));
        }
        verify(archive, &existing).await?;
        return Ok(existing);
    }
    let signals = signals_part(conn, table).await?;
    let mut parts: Vec<Part> = Vec::new();
    parts.push(archive.put_part(day, events).await?);
    parts.push(archive.put_part(day, signals).await?);
    let manifest = Manifest {
        format: crate::archive::FORMAT.into(),
        format_version: crate::archive::FORMAT_VERSION,
        day,
        schema_version: schema_version(conn).await?,
        created_at: Utc::now(),
        parts,
    };
    archive.put_manifest(&manifest).await?;
    Ok(manifest)
}

/// Reads every part of a manifest back and checks it.
pub async fn verify(archive: &Archive, manifest: &Manifest) -> Result<(), AdminError> {
    for part in &manifest.parts {
        archive.read_part(manifest.day, part).await?;
    }
    Ok(())
}
