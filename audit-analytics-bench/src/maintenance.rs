//! What the writer's periodic jobs cost per hour of traffic, on top of the
//! history already in the database: the figure that must stay flat as the
//! history grows (issue 11, "cost that does not grow with history").
//!
//! Brings every job up to date (untimed), then writes ONE hour of new
//! traffic (`--hour-events` events, generated like `bulk`, stamped in the
//! hour after the latest history so the hour holds only new data, however
//! the history was laid out) in `--slices` consecutive slices, running the
//! rollup and analytics refreshes after each slice as the writer's
//! schedule would (60 slices = a pass per minute of traffic, the default
//! AUDIT_ANALYTICS_REFRESH_SECS; each pass rebuilds the current hour so
//! far, which is the real cost), and the data-quality job once over the
//! hour's minutes (the writer's checks each minute once, after it ends). Reports each job's wall time and the CPU time of its
//! PostgreSQL backend
//! (utime + stime of the backend process from /proc, so only when the
//! server runs on this machine; `n/a` otherwise). All jobs run on one
//! pooled connection, so one backend does all their work.

use crate::Error;
use crate::bulk::GENERATE;
use audit_db::{PgPool, PoolConfig, build_pool};
use audit_writer::store::{analytics, rollups, status};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use std::future::Future;
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A migrated database on the primary, with its history (e.g. `bulk`).
    #[arg(long, env = "AUDIT_DATABASE_URL")]
    database_url: String,
    /// Events in the hour of new traffic (about 5.8 per signal). Keep it
    /// the same across history sizes to compare them.
    #[arg(long, default_value_t = 100_000)]
    hour_events: i64,
    /// Refresh passes over the hour (each after 1/slices of its traffic).
    #[arg(long, default_value_t = 60)]
    slices: i64,
}

#[derive(QueryableByName)]
struct Hour {
    #[diesel(sql_type = Text)]
    t: String,
}

/// Sums of one job's passes.
#[derive(Default)]
struct Cost {
    wall: f64,
    cpu: Option<f64>,
}

impl Cost {
    fn add(&mut self, wall: f64, cpu: Option<f64>, first: bool) {
        self.wall += wall;
        self.cpu = if first {
            cpu
        } else {
            self.cpu.zip(cpu).map(|(a, b)| a + b)
        };
    }
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// utime + stime of a process in seconds (Linux: fields 14 and 15 of
/// /proc/PID/stat, in clock ticks of 1/100 s on every mainstream kernel).
fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it do not.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// Runs `job`, returning its wall and backend CPU seconds.
async fn measure<T, Fut>(pid: i32, job: Fut) -> Result<(T, f64, Option<f64>), Error>
where
    Fut: Future<Output = Result<T, audit_db::DbError>>,
{
    let cpu = cpu_seconds(pid);
    let started = Instant::now();
    let value = job.await?;
    let wall = started.elapsed().as_secs_f64();
    let used = cpu.zip(cpu_seconds(pid)).map(|(a, b)| b - a);
    Ok((value, wall, used))
}

fn cpu_text(cpu: Option<f64>) -> String {
    cpu.map_or_else(|| "n/a".into(), |c| format!("{c:.2} s"))
}

async fn count(pool: &PgPool, sql: &str) -> Result<i64, Error> {
    let mut conn = pool.get().await?;
    let Count { n } = diesel::sql_query(sql).get_result(&mut conn).await?;
    Ok(n)
}

pub async fn run(args: Args) -> Result<(), Error> {
    // One connection for everything: the jobs' work all lands on the
    // backend whose CPU is read.
    let pool = build_pool(&PoolConfig {
        name: "primary".into(),
        url: args.database_url.clone(),
        min_idle: 1,
        max_size: 1,
        connect_timeout: Duration::from_secs(30),
        statement_timeout: Duration::from_secs(3_600),
        application_name: "audit-analytics-bench".into(),
        read_only: false,
        test_on_checkout: false,
    });
    let history = count(&pool, "SELECT count(*) AS n FROM signal_events").await?;
    // Catch up first: only the new hour is measured.
    rollups::refresh(&pool).await?;
    analytics::refresh(&pool, analytics::Minutes::All).await?;
    while status::data_quality(&pool, chrono::Utc::now())
        .await?
        .minutes
        > 0
    {}

    let slices = args.slices.clamp(1, 3_600);
    let signals = (args.hour_events as f64 / 5.8 / slices as f64).ceil() as i64;
    let mut offset = count(&pool, "SELECT count(*) AS n FROM signals").await? + 1_000_000_000;
    let pid = {
        let mut conn = pool.get().await?;
        let Pid { pid } = diesel::sql_query("SELECT pg_backend_pid() AS pid")
            .get_result(&mut conn)
            .await?;
        pid
    };
    // The hour after the latest event: new data only.
    let Hour { t: hour } = {
        let mut conn = pool.get().await?;
        diesel::sql_query(
            "SELECT COALESCE(date_trunc('hour', max(ts)) + interval '1 hour', \
                             date_trunc('hour', now()))::text AS t FROM signal_events",
        )
        .get_result(&mut conn)
        .await?
    };
    let (mut rollup, mut refresh) = (Cost::default(), Cost::default());
    let (mut minutes, mut stage_hours, mut activity_hours) = (0, 0, 0);
    for slice in 0..slices {
        {
            let mut conn = pool.get().await?;
            // Bounds inlined as in `bulk` (integers and a timestamp read
            // from the database, not input).
            let sql = GENERATE
                .replace(
                    "now() - interval '5 minutes' - random() * interval '24 hours'",
                    &format!(
                        "'{hour}'::timestamptz + ({slice} + random()) * interval '{} seconds'",
                        3_540 / slices
                    ),
                )
                .replace("md5('s' || g)", "md5('h' || g)")
                .replace("$1", &offset.to_string())
                .replace("$2", &signals.to_string());
            conn.batch_execute(&format!("BEGIN; {sql} COMMIT;")).await?;
            offset += signals;
        }
        let (keys, wall, cpu) = measure(pid, rollups::refresh(&pool)).await?;
        rollup.add(wall, cpu, slice == 0);
        minutes += keys;
        let (done, wall, cpu) =
            measure(pid, analytics::refresh(&pool, analytics::Minutes::All)).await?;
        refresh.add(wall, cpu, slice == 0);
        stage_hours += done.stage_hours;
        activity_hours += done.activity_hours;
    }
    let new = count(&pool, "SELECT count(*) AS n FROM signal_events").await? - history;
    // The hour lies after the latest history, ahead of the clock: every
    // minute counts as ended. The writer's job (every minute by default)
    // checks each minute once after it ends, as here.
    let (run, quality_wall, quality_cpu) = measure(
        pid,
        status::data_quality(&pool, chrono::Utc::now() + chrono::TimeDelta::days(2)),
    )
    .await?;
    let found: i64 = run.counts.iter().map(|(_, n)| n).sum();
    let checked = run.minutes;
    let total_cpu = rollup
        .cpu
        .zip(refresh.cpu)
        .zip(quality_cpu)
        .map(|((a, b), c)| a + b + c);
    println!(
        "maintenance: {history} events of history, then one hour of {new} new events \
         in {slices} slices, refreshes after each"
    );
    println!("{:<20} {:>10} {:>12}  work", "job", "wall", "backend cpu");
    println!(
        "{:<20} {:>8.2} s {:>12}  {minutes} minute keys in {slices} passes",
        "rollup_refresh",
        rollup.wall,
        cpu_text(rollup.cpu)
    );
    println!(
        "{:<20} {:>8.2} s {:>12}  {stage_hours} stage hours, {activity_hours} activity hours \
         rebuilt in {slices} passes",
        "analytics_refresh",
        refresh.wall,
        cpu_text(refresh.cpu)
    );
    println!(
        "{:<20} {:>8.2} s {:>12}  {checked} minutes checked and stored, {found} findings \
         (stuck signals included)",
        "data_quality",
        quality_wall,
        cpu_text(quality_cpu)
    );
    println!(
        "maintenance per hour of traffic: {:.2} s wall, {} backend cpu",
        rollup.wall + refresh.wall + quality_wall,
        cpu_text(total_cpu)
    );
    Ok(())
}
