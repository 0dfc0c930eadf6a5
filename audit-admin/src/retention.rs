//! `retention show|set|run`: data past retention leaves the live tables,
//! archived first, never by deleting events row by row.
//!
//! A run, under the cluster-wide retention lock (a second run fails at once):
//!
//! 1. **Events**, one day partition at a time, oldest first: detach it from
//!    `signal_events` with `DETACH PARTITION … CONCURRENTLY`, from this
//!    job itself and outside any transaction (it cannot run inside one, nor
//!    inside a function: pg_partman's own retention detaches in a function
//!    and so takes ACCESS EXCLUSIVE on the parent, blocking every writer and
//!    reader). Its first phase only takes SHARE UPDATE EXCLUSIVE, which
//!    writers and readers do not conflict with; its second waits for the
//!    transactions that still use the partition. Each attempt is bounded by
//!    `lock_timeout` and retried with a growing pause; an attempt that gave
//!    up in the second phase leaves the partition "pending detach", and the
//!    next attempt (or the next run) completes it with `DETACH … FINALIZE`.
//!    PostgreSQL refuses CONCURRENTLY while the table has a DEFAULT
//!    partition: the schema has none (migration
//!    `2026-12-05-000100_no_default_partition`), and a run refuses to start
//!    if one was put back. Then archive the detached table, read the archive
//!    back and verify it; delete the day's event-id claims in small batches;
//!    record the day in `archived_days` and move the raw-events horizon;
//!    only then DROP the table. A run that stops anywhere resumes from the
//!    detached (or pending) table.
//! 2. **Signals** leave with the day of their latest event (`updated_at`),
//!    once every event of theirs has left and the day is past the signals'
//!    retention: written to `signals-purged.jsonl.zst` in that day's
//!    archive, verified, then deleted in batches of [`SIGNAL_BATCH`], each
//!    its own short transaction (no writer waits on more than a batch).
//! 3. **Rollups** of each period past its retention are deleted in batches;
//!    hourly and daily rollups of a day whose raw events left are kept (by
//!    default for a year and forever), and the horizon in
//!    `retention_horizon` keeps the rollup refresher from recomputing any
//!    bucket whose sources have left.

use crate::archive::{Archive, PartKind};
use crate::cli::{Global, RetentionRunArgs, RetentionSetArgs};
use crate::db;
use crate::dump;
use crate::error::AdminError;
use crate::partitions::{self, Partition, quote};
use crate::policy::{self, Kind, Policy};
use crate::report::{self, Report};
use audit_db::PgPool;
use audit_db::leader::{Job, Turn, with_job_lock};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, BigInt, Bool, Date, Nullable, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;
use uuid::Uuid;

/// Signals deleted per transaction.
pub const SIGNAL_BATCH: usize = 1_000;
/// Claims and rollup rows deleted per transaction.
const ROW_BATCH: i64 = 5_000;

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

pub async fn show(pool: &PgPool) -> Result<Report, AdminError> {
    let mut conn = db::connection(pool).await?;
    let policy = policy::load(&mut conn).await?;
    Ok(describe(&policy, Utc::now().date_naive()))
}

#[derive(Serialize)]
struct KindRow {
    kind: Kind,
    keep_days: Option<u32>,
    first_day_kept: Option<NaiveDate>,
}

fn describe(policy: &Policy, today: NaiveDate) -> Report {
    let rows: Vec<KindRow> = Kind::ALL
        .into_iter()
        .map(|kind| KindRow {
            kind,
            keep_days: policy.get(kind),
            first_day_kept: policy.cutoff(kind, today),
        })
        .collect();
    let mut text = String::new();
    for row in &rows {
        let keep = row
            .keep_days
            .map_or("forever".to_owned(), |d| format!("{d} days"));
        let from = row
            .first_day_kept
            .map_or(String::new(), |d| format!("  (keeps {d} onwards)"));
        text.push_str(&format!("{:<16} {keep}{from}\n", row.kind.name()));
    }
    Report::new(&rows, text.trim_end().to_owned())
}

pub async fn set(pool: &PgPool, args: &RetentionSetArgs) -> Result<Report, AdminError> {
    let kind = Kind::parse(&args.kind)?;
    let keep = policy::parse_keep(kind.name(), &args.keep)?;
    let mut conn = db::connection(pool).await?;
    let mut policy = policy::load(&mut conn).await?;
    policy.set(kind, keep);
    policy.validate()?;
    policy::store(&mut conn, kind, keep).await?;
    Ok(describe(&policy, Utc::now().date_naive()))
}

/// What a run did (or, with --dry-run, would do) to one day of events.
#[derive(Debug, Serialize)]
pub struct DayOutcome {
    pub day: NaiveDate,
    pub table: String,
    pub events: i64,
    pub signals_archived: u64,
    /// `concurrently in N attempt(s)`, `finalized …` (a detach interrupted
    /// after its first phase, completed) or `already detached` (a resumed
    /// run).
    pub detach: String,
    pub archive: String,
}

#[derive(Debug, Default, Serialize)]
pub struct RunOutcome {
    pub dry_run: bool,
    pub policy: Option<Policy>,
    pub days: Vec<DayOutcome>,
    pub signals_deleted: i64,
    pub signal_days: Vec<NaiveDate>,
    pub minute_rollups_deleted: i64,
    pub hour_rollups_deleted: i64,
    pub day_rollups_deleted: i64,
}

fn run_policy(conn_policy: Policy, args: &RetentionRunArgs) -> Result<Policy, AdminError> {
    let mut policy = conn_policy;
    let overrides = [
        (Kind::RawEvents, &args.raw_events, "--raw-events"),
        (Kind::Signals, &args.signals, "--signals"),
        (
            Kind::MinuteRollups,
            &args.minute_rollups,
            "--minute-rollups",
        ),
        (Kind::HourRollups, &args.hour_rollups, "--hour-rollups"),
        (Kind::DayRollups, &args.day_rollups, "--day-rollups"),
    ];
    for (kind, value, flag) in overrides {
        if let Some(value) = value {
            policy.set(kind, policy::parse_keep(flag, value)?);
        }
    }
    policy.validate()?;
    Ok(policy)
}

pub async fn run(
    pool: &PgPool,
    global: &Global,
    args: &RetentionRunArgs,
) -> Result<Report, AdminError> {
    // Bad flags fail before anything else, even before the database is asked.
    for (value, flag) in [
        (&args.raw_events, "--raw-events"),
        (&args.signals, "--signals"),
        (&args.minute_rollups, "--minute-rollups"),
        (&args.hour_rollups, "--hour-rollups"),
        (&args.day_rollups, "--day-rollups"),
    ] {
        if let Some(value) = value {
            policy::parse_keep(flag, value)?;
        }
    }
    if !args.dry_run && !args.yes {
        return Err(AdminError::NeedsConfirmation(
            "archive and drop data past retention (use --dry-run to see what would leave)".into(),
        ));
    }
    let archive = Archive::open(&args.archive.archive_url)?;
    let turn = with_job_lock(pool, Job::Retention, async || {
        let mut conn = db::connection(pool).await?;
        let policy = run_policy(policy::load(&mut conn).await?, args)?;
        run_locked(
            &mut conn,
            global,
            args,
            &archive,
            policy,
            Utc::now().date_naive(),
        )
        .await
    })
    .await?;
    let Turn::Ran(outcome) = turn else {
        return Err(AdminError::Busy(Job::Retention.name()));
    };
    let text = summary(&outcome, &archive);
    Ok(Report::new(&outcome, text))
}

fn summary(outcome: &RunOutcome, archive: &Archive) -> String {
    let verb = if outcome.dry_run {
        "would leave"
    } else {
        "left"
    };
    let mut text = String::new();
    for d in &outcome.days {
        text.push_str(&format!(
            "{}  {:>12} events  {:>10} signals  {} {verb}{}\n",
            d.day,
            report::count(d.events),
            report::count(d.signals_archived as i64),
            d.table,
            if outcome.dry_run {
                String::new()
            } else {
                format!(" (detach: {}; archive: {})", d.detach, d.archive)
            }
        ));
    }
    if outcome.days.is_empty() {
        text.push_str("no day of events is past retention\n");
    }
    text.push_str(&format!(
        "signals {verb}: {}; minute/hour/day rollup rows {verb}: {}/{}/{}",
        report::count(outcome.signals_deleted),
        report::count(outcome.minute_rollups_deleted),
        report::count(outcome.hour_rollups_deleted),
        report::count(outcome.day_rollups_deleted),
    ));
    if !outcome.dry_run && !outcome.days.is_empty() {
        text.push_str(&format!("\narchive: {}", archive.location));
    }
    text
}

#[derive(QueryableByName)]
struct TableName {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    detach_pending: bool,
}

/// Day partitions left detached by an interrupted run (in `public`, named
/// like pg_partman's children, no longer children of signal_events), and
/// children whose concurrent detach was interrupted (`detach pending`).
async fn leftovers(
    conn: &mut AsyncPgConnection,
) -> Result<Vec<(NaiveDate, String, bool)>, AdminError> {
    let rows: Vec<TableName> = diesel::sql_query(
        "SELECT c.relname::text AS name, COALESCE(i.inhdetachpending, false) AS detach_pending \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_inherits i ON i.inhrelid = c.oid \
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname ~ '^signal_events_p[0-9_]+$' \
           AND (i.inhrelid IS NULL OR i.inhdetachpending)",
    )
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| table_day(&r.name).map(|d| (d, r.name, r.detach_pending)))
        .collect())
}

/// The day in a pg_partman child's name (`signal_events_p20261125` or
/// `signal_events_p2026_11_25`).
pub fn table_day(name: &str) -> Option<NaiveDate> {
    let digits: String = name
        .strip_prefix("signal_events_p")?
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    NaiveDate::parse_from_str(&digits, "%Y%m%d").ok()
}

async fn run_locked(
    conn: &mut AsyncPgConnection,
    global: &Global,
    args: &RetentionRunArgs,
    archive: &Archive,
    policy: Policy,
    today: NaiveDate,
) -> Result<RunOutcome, AdminError> {
    let mut outcome = RunOutcome {
        dry_run: args.dry_run,
        policy: Some(policy),
        ..RunOutcome::default()
    };
    // 1. Events.
    if let Some(cutoff) = policy.cutoff(Kind::RawEvents, today) {
        let children = partitions::children(conn).await?;
        // Left by an interrupted run (detached, or pending detach): first,
        // since PostgreSQL allows one pending detach per table at a time.
        let mut leftovers = leftovers(conn).await?;
        leftovers.sort();
        let mut due: Vec<(NaiveDate, String, bool)> = children
            .iter()
            .filter_map(|p: &Partition| p.day.map(|d| (d, p.name.clone(), false)))
            .filter(|(d, name, _)| *d < cutoff && !leftovers.iter().any(|l| &l.1 == name))
            .collect();
        due.sort();
        let mut due: Vec<(NaiveDate, String, bool)> = leftovers
            .into_iter()
            .map(|(day, name, pending)| (day, name, !pending))
            .chain(due)
            .collect();
        due.truncate(args.max_days);
        if !args.dry_run
            && !due.is_empty()
            && let Some(default) = children.iter().find(|p| p.day.is_none())
        {
            return Err(AdminError::State(format!(
                "signal_events has a default partition ({}): PostgreSQL cannot DETACH … CONCURRENTLY \
                 while one exists, and retention will not lock out writers with a plain DETACH; \
                 apply migration 2026-12-05-000100_no_default_partition (`audit-admin migrate up`)",
                default.name
            )));
        }
        for (day, table, detached) in due {
            let events = partitions::count_rows(conn, &table).await?;
            if args.dry_run {
                outcome.days.push(DayOutcome {
                    day,
                    table,
                    events,
                    signals_archived: 0,
                    detach: String::new(),
                    archive: String::new(),
                });
                continue;
            }
            let detach = if detached {
                "already detached".to_owned()
            } else {
                detach_concurrently(conn, global, &table).await?
            };
            let manifest = dump::archive_table(conn, archive, day, &table, events).await?;
            delete_claims(conn, &table, day).await?;
            record_archived(conn, archive, &manifest, day).await?;
            db::ddl(
                conn,
                global,
                &format!("DROP TABLE public.{}", quote(&table)),
            )
            .await?;
            outcome.days.push(DayOutcome {
                day,
                table,
                events,
                signals_archived: manifest.rows(PartKind::Signals),
                detach,
                archive: archive.describe(day, "manifest.json"),
            });
        }
    }
    // 2. Signals.
    if let Some(cutoff) = policy.cutoff(Kind::Signals, today) {
        for day in signal_days(conn, cutoff, args.dry_run, &outcome).await? {
            let deleted = purge_signals(conn, archive, day, args.dry_run).await?;
            outcome.signals_deleted += deleted;
            outcome.signal_days.push(day);
        }
    }
    // 3. Rollups.
    for (kind, period) in [
        (Kind::MinuteRollups, "minute"),
        (Kind::HourRollups, "hour"),
        (Kind::DayRollups, "day"),
    ] {
        let Some(cutoff) = policy.cutoff(kind, today) else {
            continue;
        };
        let deleted = purge_rollups(conn, kind, period, midnight(cutoff), args.dry_run).await?;
        match kind {
            Kind::MinuteRollups => outcome.minute_rollups_deleted = deleted,
            Kind::HourRollups => outcome.hour_rollups_deleted = deleted,
            _ => outcome.day_rollups_deleted = deleted,
        }
    }
    Ok(outcome)
}

#[derive(QueryableByName)]
struct DetachState {
    #[diesel(sql_type = Text)]
    state: String,
}

/// Where a day partition stands: `attached`, `pending` (a concurrent detach
/// stopped after its first phase) or `detached`.
async fn detach_state(conn: &mut AsyncPgConnection, table: &str) -> Result<String, AdminError> {
    let rows: Vec<DetachState> = diesel::sql_query(
        "SELECT CASE WHEN i.inhrelid IS NULL THEN 'detached' \
                     WHEN i.inhdetachpending THEN 'pending' ELSE 'attached' END AS state \
         FROM pg_class c \
         LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = 'public.signal_events'::regclass \
         WHERE c.oid = to_regclass($1)",
    )
    .bind::<Text, _>(format!("public.{}", quote(table)))
    .load(conn)
    .await?;
    rows.into_iter()
        .next()
        .map(|r| r.state)
        .ok_or_else(|| AdminError::State(format!("table {table} is gone")))
}

/// Detaches `table` from `signal_events` without locking out writers:
/// `DETACH PARTITION … CONCURRENTLY`, each attempt bounded by
/// `lock_timeout`. An attempt that gives up in the second phase (waiting for
/// transactions that still use the partition) has already committed the
/// first and left the partition pending detach, where CONCURRENTLY is
/// refused: the state is read before every attempt, and a pending partition
/// is completed with `DETACH … FINALIZE` instead. Says what it took.
async fn detach_concurrently(
    conn: &mut AsyncPgConnection,
    global: &Global,
    table: &str,
) -> Result<String, AdminError> {
    let detach = format!(
        "ALTER TABLE public.signal_events DETACH PARTITION public.{}",
        quote(table)
    );
    let mut finalized = false;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sql = match detach_state(conn, table).await?.as_str() {
            "detached" => break,
            "pending" => {
                finalized = true;
                format!("{detach} FINALIZE")
            }
            _ => format!("{detach} CONCURRENTLY"),
        };
        match db::ddl_once(conn, global, &sql).await {
            Ok(()) => break,
            Err(error) if db::is_lock_timeout(&error) && attempt < global.lock_retries.max(1) => {
                tracing::info!(attempt, sql = %sql, "lock not granted in time, retrying");
                tokio::time::sleep(db::backoff(attempt)).await;
            }
            Err(error) => {
                return Err(AdminError::State(format!(
                    "detaching {table} (attempt {attempt}): {error}; the next run resumes it"
                )));
            }
        }
    }
    Ok(if finalized {
        format!("finalized (an interrupted concurrent detach) in {attempt} attempt(s)")
    } else {
        format!("concurrently in {attempt} attempt(s)")
    })
}

#[derive(QueryableByName)]
struct LastSequence {
    #[diesel(sql_type = Nullable<BigInt>)]
    last: Option<i64>,
}

/// Deletes the event-id claims of the detached day's events, a batch per
/// statement, walking the detached table by sequence.
async fn delete_claims(
    conn: &mut AsyncPgConnection,
    table: &str,
    day: NaiveDate,
) -> Result<(), AdminError> {
    let sql = format!(
        "WITH batch AS (SELECT sequence, event_id FROM {} WHERE sequence > $1 ORDER BY sequence LIMIT $2), \
              gone AS (DELETE FROM signal_event_ids i USING batch b \
                       WHERE i.event_id = b.event_id AND i.ts >= $3 AND i.ts < $4) \
         SELECT max(sequence) AS last FROM batch",
        quote(table)
    );
    let mut last = i64::MIN;
    loop {
        let LastSequence { last: next } = diesel::sql_query(&sql)
            .bind::<BigInt, _>(last)
            .bind::<BigInt, _>(ROW_BATCH)
            .bind::<Timestamptz, _>(midnight(day))
            .bind::<Timestamptz, _>(midnight(day + TimeDelta::days(1)))
            .get_result(conn)
            .await?;
        match next {
            Some(next) => last = next,
            None => return Ok(()),
        }
    }
}

async fn record_archived(
    conn: &mut AsyncPgConnection,
    archive: &Archive,
    manifest: &crate::archive::Manifest,
    day: NaiveDate,
) -> Result<(), AdminError> {
    let events = manifest.part(PartKind::Events);
    diesel::sql_query(
        "INSERT INTO archived_days (day, location, events, signals, events_sha256) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (day) DO UPDATE SET location = EXCLUDED.location, events = EXCLUDED.events, \
             signals = EXCLUDED.signals, events_sha256 = EXCLUDED.events_sha256, archived_at = now()",
    )
    .bind::<Date, _>(day)
    .bind::<Text, _>(archive.describe(day, "manifest.json"))
    .bind::<BigInt, _>(events.map_or(0, |p| p.rows as i64))
    .bind::<BigInt, _>(manifest.rows(PartKind::Signals) as i64)
    .bind::<Text, _>(events.map_or(String::new(), |p| p.content_sha256.clone()))
    .execute(conn)
    .await?;
    set_horizon(conn, Kind::RawEvents, midnight(day + TimeDelta::days(1))).await
}

/// Moves a kind's horizon forward (never back).
async fn set_horizon(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    horizon: DateTime<Utc>,
) -> Result<(), AdminError> {
    diesel::sql_query(
        "INSERT INTO retention_horizon (kind, horizon) VALUES ($1, $2) \
         ON CONFLICT (kind) DO UPDATE SET horizon = GREATEST(retention_horizon.horizon, EXCLUDED.horizon)",
    )
    .bind::<Text, _>(kind.name())
    .bind::<Timestamptz, _>(horizon)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Day {
    #[diesel(sql_type = Date)]
    day: NaiveDate,
}

/// Archived days whose signals are due to leave.
async fn signal_days(
    conn: &mut AsyncPgConnection,
    cutoff: NaiveDate,
    dry_run: bool,
    outcome: &RunOutcome,
) -> Result<Vec<NaiveDate>, AdminError> {
    let mut days: Vec<NaiveDate> = diesel::sql_query(
        "SELECT day FROM archived_days WHERE signals_purged_at IS NULL AND day < $1 ORDER BY day",
    )
    .bind::<Date, _>(cutoff)
    .load::<Day>(conn)
    .await?
    .into_iter()
    .map(|d| d.day)
    .collect();
    if dry_run {
        // Days this run would archive would also lose their signals.
        days.extend(outcome.days.iter().map(|d| d.day).filter(|d| *d < cutoff));
        days.sort();
        days.dedup();
    }
    Ok(days)
}

#[derive(QueryableByName)]
struct SignalId {
    #[diesel(sql_type = SqlUuid)]
    signal_id: Uuid,
}

/// Signals whose latest event is on `day` and that have no event left in
/// the live tables.
const DUE_SIGNALS: &str = "SELECT s.signal_id FROM signals s \
     WHERE s.updated_at >= $1 AND s.updated_at < $2 \
       AND NOT EXISTS (SELECT 1 FROM signal_events e WHERE e.signal_id = s.signal_id) \
     ORDER BY s.signal_id";

/// Archives (into the day's archive) and deletes the signals that end on
/// `day`; returns how many left (or would leave).
async fn purge_signals(
    conn: &mut AsyncPgConnection,
    archive: &Archive,
    day: NaiveDate,
    dry_run: bool,
) -> Result<i64, AdminError> {
    let (from, to) = (midnight(day), midnight(day + TimeDelta::days(1)));
    let ids: Vec<Uuid> = diesel::sql_query(DUE_SIGNALS)
        .bind::<Timestamptz, _>(from)
        .bind::<Timestamptz, _>(to)
        .load::<SignalId>(conn)
        .await?
        .into_iter()
        .map(|s| s.signal_id)
        .collect();
    if dry_run {
        return Ok(ids.len() as i64);
    }
    let Some(mut manifest) = archive.manifest(day).await? else {
        return Err(AdminError::NotArchived(
            day,
            archive.describe(day, "manifest.json"),
        ));
    };
    if !ids.is_empty() {
        let buf = dump::signals_by_id(conn, PartKind::SignalsPurged, &ids).await?;
        // A run interrupted after writing the part but before deleting
        // leaves signals behind: the new part holds those, and replaces it.
        let part = archive.put_part(day, buf).await?;
        manifest.parts.retain(|p| p.kind != PartKind::SignalsPurged);
        manifest.parts.push(part);
        archive.put_manifest(&manifest).await?;
    }
    let bar = report::bar(ids.len() as u64, "deleting signals");
    let mut deleted = 0;
    for chunk in ids.chunks(SIGNAL_BATCH) {
        // The conditions again: a signal that got an event since it was
        // archived stays.
        deleted += diesel::sql_query(
            "DELETE FROM signals s WHERE s.signal_id = ANY($1) \
               AND s.updated_at >= $2 AND s.updated_at < $3 \
               AND NOT EXISTS (SELECT 1 FROM signal_events e WHERE e.signal_id = s.signal_id)",
        )
        .bind::<Array<SqlUuid>, _>(chunk)
        .bind::<Timestamptz, _>(from)
        .bind::<Timestamptz, _>(to)
        .execute(conn)
        .await? as i64;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    diesel::sql_query("UPDATE archived_days SET signals_purged_at = now() WHERE day = $1")
        .bind::<Date, _>(day)
        .execute(conn)
        .await?;
    Ok(deleted)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// The hourly analytics tables (stage latencies, ticker activity) keep the
/// hour rollups' retention: they are hour rollups too.
const HOURLY_ANALYTICS: [&str; 3] = [
    "stage_latency_hourly",
    "stage_latency_hourly_by_ticker",
    "ticker_activity_hourly",
];

/// The minute tables the hourly analytics tables are summed from keep the
/// minute rollups' retention. The minute horizon this moves keeps the
/// refresher from summing an hour some of whose minutes have left.
const MINUTE_ANALYTICS: [&str; 2] = ["stage_latency_minutely", "ticker_activity_minutely"];

/// Which rows of each table `period` rollups older than `$2` are (`$1` is
/// the period): both summary tables, and for minutes and hours the
/// analytics tables.
fn rollup_tables(period: &str) -> Vec<(&'static str, &'static str)> {
    let mut tables = vec![
        (
            "signal_metrics_summary",
            "period_type = $1::metrics_period AND period_start < $2",
        ),
        (
            "signal_error_summary",
            "period_type = $1::metrics_period AND period_start < $2",
        ),
    ];
    match period {
        "minute" => tables.extend(MINUTE_ANALYTICS.map(|t| (t, "$1 = 'minute' AND minute < $2"))),
        "hour" => tables.extend(HOURLY_ANALYTICS.map(|t| (t, "$1 = 'hour' AND hour < $2"))),
        _ => {}
    }
    tables
}

/// Deletes the `period` rollups older than `cutoff` from both summary
/// tables (and, for hours, the hourly analytics tables), a batch per
/// statement, and moves the kind's horizon.
async fn purge_rollups(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    period: &str,
    cutoff: DateTime<Utc>,
    dry_run: bool,
) -> Result<i64, AdminError> {
    if dry_run {
        let mut total = 0;
        for (table, old) in rollup_tables(period) {
            let Count { n } =
                diesel::sql_query(format!("SELECT count(*) AS n FROM {table} WHERE {old}"))
                    .bind::<Text, _>(period)
                    .bind::<Timestamptz, _>(cutoff)
                    .get_result(conn)
                    .await?;
            total += n;
        }
        return Ok(total);
    }
    // The horizon first: from here on the refresher leaves these buckets
    // alone, so it cannot rebuild a coarser bucket from half-deleted rows.
    set_horizon(conn, kind, cutoff).await?;
    let mut total = 0;
    for (table, old) in rollup_tables(period) {
        loop {
            let n = diesel::sql_query(format!(
                "DELETE FROM {table} WHERE ctid = ANY(ARRAY( \
                     SELECT ctid FROM {table} WHERE {old} LIMIT $3))"
            ))
            .bind::<Text, _>(period)
            .bind::<Timestamptz, _>(cutoff)
            .bind::<BigInt, _>(ROW_BATCH)
            .execute(conn)
            .await?;
            total += n as i64;
            if n == 0 {
                break;
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_days_from_partition_names() {
        assert_eq!(
            table_day("signal_events_p20261125"),
            NaiveDate::from_ymd_opt(2026, 11, 25)
        );
        assert_eq!(
            table_day("signal_events_p2026_11_25"),
            NaiveDate::from_ymd_opt(2026, 11, 25)
        );
        assert_eq!(table_day("signal_events_default"), None);
    }
}
