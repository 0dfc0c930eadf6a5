//! `partitions list|ensure`: the daily partitions of `signal_events`.
//!
//! pg_partman names and premakes them (`signal_events_pYYYYMMDD`, a week
//! ahead, from the writer's maintenance job); `ensure` creates any day of a
//! range that is missing through pg_partman too, so its template (indexes,
//! ownership) applies, but with a `lock_timeout` and retries: creating a
//! partition locks the parent, and an unbounded wait there would queue every
//! writer behind it. The table has no default partition (so retention can
//! detach concurrently): an event on a day without a partition is refused,
//! and `import` and `restore` create the past days they need here.

use crate::cli::{Global, PartitionsEnsureArgs, PartitionsListArgs};
use crate::db;
use crate::error::AdminError;
use crate::report::{self, Report};
use audit_db::PgPool;
use chrono::{NaiveDate, NaiveDateTime, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Bool, Text, Timestamptz};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

/// One child of `signal_events`.
#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    pub name: String,
    /// The UTC day it holds; `None` for the default partition.
    pub day: Option<NaiveDate>,
    pub rows: i64,
    /// Whether `rows` was counted (`--exact`) or is the planner's estimate.
    pub exact: bool,
    pub bytes: i64,
}

#[derive(QueryableByName)]
struct Child {
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Text)]
    bound: String,
    #[diesel(sql_type = BigInt)]
    estimated_rows: i64,
    #[diesel(sql_type = BigInt)]
    bytes: i64,
}

/// The day of a range bound `FOR VALUES FROM ('2026-11-25 00:00:00+00') TO (…)`
/// (the session's time zone is UTC); `None` for `DEFAULT` or anything else.
pub fn bound_day(bound: &str) -> Option<NaiveDate> {
    let from = bound.split("FROM ('").nth(1)?.split('\'').next()?;
    let stamp = from.trim_end_matches("+00");
    NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.date())
}

/// Every partition, oldest day first, the default partition last.
pub async fn children(conn: &mut AsyncPgConnection) -> Result<Vec<Partition>, AdminError> {
    let rows: Vec<Child> = diesel::sql_query(
        "SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound, \
                GREATEST(c.reltuples, 0)::bigint AS estimated_rows, \
                pg_total_relation_size(c.oid) AS bytes \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'public.signal_events'::regclass",
    )
    .load(conn)
    .await?;
    let mut partitions: Vec<Partition> = rows
        .into_iter()
        .map(|c| Partition {
            day: bound_day(&c.bound),
            name: c.name,
            rows: c.estimated_rows,
            exact: false,
            bytes: c.bytes,
        })
        .collect();
    partitions.sort_by_key(|p| (p.day.is_none(), p.day));
    Ok(partitions)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Exact row count of one table (a name read from the catalog, quoted).
pub async fn count_rows(conn: &mut AsyncPgConnection, table: &str) -> Result<i64, AdminError> {
    let Count { n } = diesel::sql_query(format!("SELECT count(*) AS n FROM {}", quote(table)))
        .get_result(conn)
        .await?;
    Ok(n)
}

/// A quoted identifier.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

pub async fn list(pool: &PgPool, args: &PartitionsListArgs) -> Result<Report, AdminError> {
    let mut conn = db::connection(pool).await?;
    let mut partitions = children(&mut conn).await?;
    if args.exact {
        let bar = report::bar(partitions.len() as u64, "counting rows");
        for p in &mut partitions {
            p.rows = count_rows(&mut conn, &p.name).await?;
            p.exact = true;
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    let mut text = format!(
        "{:<32} {:<10} {:>14} {:>10}\n",
        "partition", "day", "rows", "size"
    );
    for p in &partitions {
        let day = p.day.map_or("default".to_owned(), |d| d.to_string());
        let rows = if p.exact {
            report::count(p.rows)
        } else {
            format!("~{}", report::count(p.rows))
        };
        text.push_str(&format!(
            "{:<32} {:<10} {:>14} {:>10}\n",
            p.name,
            day,
            rows,
            report::size(p.bytes)
        ));
    }
    let total: i64 = partitions.iter().map(|p| p.bytes).sum();
    text.push_str(&format!(
        "{} partitions, {}",
        partitions.len(),
        report::size(total)
    ));
    Ok(Report::new(&partitions, text))
}

#[derive(Serialize)]
struct Ensured {
    created: Vec<NaiveDate>,
    existing: usize,
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

/// Creates the partitions of `days` that are missing; returns those created.
/// On a schema with a default partition (before migration
/// `2026-12-05-000100_no_default_partition`), fails (creating none of the
/// rest) on a day whose events already sit in it: PostgreSQL refuses a
/// partition over them.
pub async fn ensure_days(
    conn: &mut AsyncPgConnection,
    global: &Global,
    days: &[NaiveDate],
) -> Result<Vec<NaiveDate>, AdminError> {
    let existing = children(conn).await?;
    let default = existing
        .iter()
        .find(|p| p.day.is_none())
        .map(|p| p.name.clone());
    let missing: Vec<NaiveDate> = days
        .iter()
        .copied()
        .filter(|d| !existing.iter().any(|p| p.day == Some(*d)))
        .collect();
    let bar = report::bar(missing.len() as u64, "creating partitions");
    let mut created = Vec::new();
    for day in missing {
        if let Some(default) = &default {
            let start = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
            let Flag { flag } = diesel::sql_query(format!(
                "SELECT EXISTS (SELECT 1 FROM {} WHERE ts >= $1 AND ts < $2) AS flag",
                quote(default)
            ))
            .bind::<Timestamptz, _>(start)
            .bind::<Timestamptz, _>(start + TimeDelta::days(1))
            .get_result(conn)
            .await?;
            if flag {
                return Err(AdminError::State(format!(
                    "events of {day} already sit in the default partition {default}; move them into \
                     their own partition first (CALL partman.partition_data_proc('public.signal_events'))"
                )));
            }
        }
        // The date is formatted by chrono, never taken from input text.
        db::ddl(
            conn,
            global,
            &format!(
                "SELECT partman.create_partition_time('public.signal_events', ARRAY['{day} 00:00:00+00'::timestamptz])"
            ),
        )
        .await?;
        created.push(day);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(created)
}

pub async fn ensure(
    pool: &PgPool,
    global: &Global,
    args: &PartitionsEnsureArgs,
) -> Result<Report, AdminError> {
    let today = Utc::now().date_naive();
    let first = args.from.unwrap_or(today).min(today);
    let last = today + TimeDelta::days(i64::from(args.ahead_days));
    let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
    let mut conn = db::connection(pool).await?;
    let created = ensure_days(&mut conn, global, &days).await?;
    let text = if created.is_empty() {
        format!(
            "all {} days from {first} to {last} have a partition",
            days.len()
        )
    } else {
        format!(
            "created {} partition(s): {}",
            created.len(),
            created
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let ensured = Ensured {
        existing: days.len() - created.len(),
        created,
    };
    Ok(Report::new(&ensured, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_range_bounds() {
        assert_eq!(
            bound_day("FOR VALUES FROM ('2026-11-25 00:00:00+00') TO ('2026-11-26 00:00:00+00')"),
            NaiveDate::from_ymd_opt(2026, 11, 25)
        );
        assert_eq!(bound_day("DEFAULT"), None);
    }

    #[test]
    fn quotes_identifiers() {
        assert_eq!(
            quote("signal_events_p20261125"),
            "\"signal_events_p20261125\""
        );
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
