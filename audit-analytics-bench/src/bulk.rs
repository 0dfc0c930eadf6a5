//! Millions of events generated inside PostgreSQL, deterministic for a
//! seed (`setseed`), in chunks so no transaction grows without bound. The
//! chunks are laid out in time order (chunk i of k fills the i-th k-th of
//! the 24 hours), and the rollups and analytics tables are brought up to
//! date after each, as the writer's jobs would have been while the history
//! was written: one catch-up pass over 30 M events at the end would be one
//! transaction over the whole day (the analytics pass is bounded to 15
//! minutes), and no running system ever does that.

use crate::Error;
use audit_db::{PoolConfig, build_pool};
use audit_writer::store::{analytics, rollups, status};
use diesel::sql_types::{BigInt, Double};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use std::time::{Duration, Instant};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// An empty, migrated database on the primary.
    #[arg(long, env = "AUDIT_DATABASE_URL")]
    database_url: String,
    /// Events to generate (about 5.8 per signal).
    #[arg(long, default_value_t = 10_000_000)]
    events: i64,
    /// Signals per chunk (one transaction each).
    #[arg(long, default_value_t = 200_000)]
    chunk: i64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// One chunk: signals `$1 + 1 ..= $1 + $2`, spread over the last 24 hours.
pub(crate) const GENERATE: &str = "
CREATE TEMP TABLE gen ON COMMIT DROP AS
SELECT md5('s' || g)::uuid AS id,
       (ARRAY['NASDAQ:AAPL','MSFT.US','NVDA','TSLA','AMZN.US','GOOGL','META','SPY','QQQ','IWM',
              'BTC-USD','ETH/USD','SOL-USD','EUR-USD','GBP/USD','USD_JPY','VOD.L','SAP.DE','BRK.B','JPM'])[1 + (random() * 19.999)::int % 20] AS ticker,
       now() - interval '5 minutes' - random() * interval '24 hours' AS t0,
       (random() * 100)::int AS outcome,
       (exp(random() * 3) * 100)::int AS total_ms,
       random() AS r
FROM generate_series($1 + 1, $1 + $2) AS g;

INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal,
                     current_status, current_location, created_at, updated_at, total_processing_time,
                     error_count, retry_count, tags)
SELECT id, ticker,
       upper(regexp_replace(regexp_replace(regexp_replace(ticker, '^.*:', ''), '\\.(US|L|DE)$', ''), '[/_-]', '', 'g')),
       CASE WHEN r < 0.5 THEN 'buy' ELSE 'sell' END, 'open', 10 + (r * 1000)::numeric(10, 2),
       jsonb_build_object('ticker', ticker, 'source', 'bulk'),
       (CASE WHEN outcome < 8 THEN 'rejected' WHEN outcome < 10 THEN 'error'
             WHEN outcome < 16 THEN 'forwarded_http_error' WHEN outcome < 20 THEN 'forwarded_timeout'
             ELSE 'forwarded_success' END)::signal_status,
       (CASE WHEN outcome < 10 THEN 'discarded' ELSE 'completed' END)::signal_location,
       t0, t0 + total_ms * interval '1 millisecond', total_ms * interval '1 millisecond',
       CASE WHEN outcome >= 8 AND outcome < 20 THEN 1 ELSE 0 END, 0, '{}'
FROM gen;

CREATE TEMP TABLE gen_events ON COMMIT DROP AS
SELECT md5(g.id::text || s.step)::uuid AS event_id, g.id AS signal_id,
       g.t0 + s.frac * g.total_ms * interval '1 millisecond' AS ts,
       s.status::signal_status AS event_type, s.location::signal_location AS location,
       'worker-' || (1 + (g.r * 8)::int % 8) AS worker_id,
       CASE WHEN s.status = 'rejected' THEN 'risk check rejected the order: position limit' END AS details,
       CASE WHEN s.status = 'error' THEN '{\"type\":\"validation\"}'::jsonb
            WHEN s.status = 'forwarded_timeout' THEN '{\"type\":\"timeout\"}'::jsonb END AS error_info,
       CASE WHEN s.status = 'forwarded_http_error' THEN (ARRAY[400, 429, 500, 502, 503])[1 + (g.r * 4.999)::int % 5]
            WHEN s.status = 'forwarded_success' THEN 200 END AS http_status
FROM gen g
CROSS JOIN LATERAL (VALUES
    (1, 0.0, 'received', 'processing_queue', true),
    (2, 0.05, 'queued_processing', 'processing_queue', true),
    (3, 0.2, 'processing', 'worker_processing', true),
    (4, 1.0, CASE WHEN g.outcome < 8 THEN 'rejected' ELSE 'error' END, 'discarded', g.outcome < 10),
    (5, 0.3, 'approved', 'approved_queue', g.outcome >= 10),
    (6, 0.4, 'forwarding', 'worker_forwarding', g.outcome >= 10),
    (7, 1.0, CASE WHEN g.outcome < 16 THEN 'forwarded_http_error' WHEN g.outcome < 20 THEN 'forwarded_timeout'
                  ELSE 'forwarded_success' END, 'completed', g.outcome >= 10)
) AS s(step, frac, status, location, happens)
WHERE s.happens;

INSERT INTO signal_event_ids (event_id, signal_id, ts) SELECT event_id, signal_id, ts FROM gen_events;
INSERT INTO signal_events (event_id, signal_id, ts, event_type, location, worker_id, details, error_info, http_status,
                           normalised_ticker)
SELECT e.event_id, e.signal_id, e.ts, e.event_type, e.location, e.worker_id, e.details, e.error_info, e.http_status,
       s.normalised_ticker
FROM gen_events e JOIN signals s ON s.signal_id = e.signal_id;
";

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub async fn run(args: Args) -> Result<(), Error> {
    let pool = build_pool(&PoolConfig {
        name: "primary".into(),
        url: args.database_url.clone(),
        min_idle: 0,
        max_size: 2,
        connect_timeout: Duration::from_secs(30),
        statement_timeout: Duration::from_secs(3_600),
        application_name: "audit-analytics-bench".into(),
        read_only: false,
        test_on_checkout: false,
    });
    let signals = (args.events as f64 / 5.8).ceil() as i64;
    let started = Instant::now();
    let mut conn = pool.get().await?;
    // A fraction in [-1, 1] for setseed, derived from the seed.
    let seed = (args.seed % 1_000_000) as f64 / 1_000_000.0;
    diesel::sql_query("SELECT setseed($1)")
        .bind::<Double, _>(seed)
        .execute(&mut conn)
        .await?;
    let chunks = (signals + args.chunk - 1) / args.chunk.max(1);
    let slice_secs = 86_400 / chunks.max(1);
    let (mut done, mut buckets, mut refreshing) = (0, 0, Duration::ZERO);
    for chunk in 0..chunks {
        let n = args.chunk.min(signals - done);
        // Multi-statement chunk with its own transaction; the bind-free
        // batch form cannot take parameters, so the bounds are inlined
        // (they are integers computed here, not input).
        let sql = GENERATE
            .replace(
                "random() * interval '24 hours'",
                &format!(
                    "({} + random()) * interval '{slice_secs} seconds'",
                    chunks - 1 - chunk
                ),
            )
            .replace("$1", &done.to_string())
            .replace("$2", &n.to_string());
        conn.batch_execute(&format!("BEGIN; {sql} COMMIT;")).await?;
        done += n;
        if chunk == 0 {
            // Statistics for millions of rows, not for the empty tables of
            // the migration, before the first refresh plans its joins.
            conn.batch_execute("ANALYZE").await?;
        }
        let refreshed = Instant::now();
        buckets += rollups::refresh(&pool).await?;
        analytics::refresh(&pool, analytics::Minutes::All).await?;
        // The writer's quality job, until the chunk's minutes are checked.
        while status::data_quality(&pool, chrono::Utc::now())
            .await?
            .minutes
            > 0
        {}
        refreshing += refreshed.elapsed();
        eprintln!(
            "bulk: {done}/{signals} signals ({:.0} s, refreshes and checks {:.0} s)",
            started.elapsed().as_secs_f64(),
            refreshing.as_secs_f64()
        );
    }
    let Count { n: events } = diesel::sql_query("SELECT count(*) AS n FROM signal_events")
        .get_result(&mut conn)
        .await?;
    conn.batch_execute("VACUUM ANALYZE").await?;
    println!(
        "bulk: {signals} signals, {events} events, {buckets} minute buckets; {:.0} s in all, \
         of which rollup + analytics refreshes and quality checks {:.0} s",
        started.elapsed().as_secs_f64(),
        refreshing.as_secs_f64()
    );
    Ok(())
}
