//! The dashboard questions, each answered twice in the same run: by the
//! reader's RPC (rollups on the replica) and by a query over raw events on
//! the same replica. Requests are shifted by a second each iteration so the
//! reader's answer cache never helps (a cached figure is reported apart).

use crate::Error;
use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_client::SignalAnalyticsServiceClient;
use chrono::{DateTime, TimeDelta, Utc};
use diesel::sql_types::Timestamptz;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use hdrhistogram::Histogram;
use std::future::Future;
use std::time::Instant;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, default_value = "http://127.0.0.1:50052")]
    reader: String,
    /// The replica, for the raw-event queries.
    #[arg(long)]
    replica_url: String,
    /// Calls per RPC.
    #[arg(long, default_value_t = 200)]
    iterations: u64,
    /// Runs of each raw-event query (they are slow).
    #[arg(long, default_value_t = 5)]
    raw_iterations: u64,
}

fn histogram() -> Result<Histogram<u64>, Error> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

async fn time<F, Fut>(iterations: u64, mut call: F) -> Result<Histogram<u64>, Error>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let mut h = histogram()?;
    for i in 0..iterations {
        let at = Instant::now();
        call(i).await?;
        h.record(
            u64::try_from(at.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1),
        )?;
    }
    Ok(h)
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

fn range(end: DateTime<Utc>, shift: u64) -> Option<pb::TimeRange> {
    let end = end - TimeDelta::seconds(i64::try_from(shift).unwrap_or(0));
    Some(pb::TimeRange {
        start: Some(audit_core::convert::to_timestamp(
            end - TimeDelta::hours(24),
        )),
        end: Some(audit_core::convert::to_timestamp(end)),
    })
}

const RAW_METRICS: &str = "SELECT date_trunc('hour', e.ts) AS b, count(*) AS events, \
    count(*) FILTER (WHERE e.event_type = 'received') AS signals, \
    count(*) FILTER (WHERE e.error_info IS NOT NULL OR e.http_status >= 400) AS errors, \
    percentile_cont(0.99) WITHIN GROUP (ORDER BY e.ts - s.created_at) \
        FILTER (WHERE e.event_type IN ('rejected','forwarded_success','forwarded_timeout', \
                'forwarded_http_error','forwarded_generic_error','discarded','error')) AS p99 \
    FROM signal_events e JOIN signals s ON s.signal_id = e.signal_id \
    WHERE e.ts >= $1 AND e.ts < $2 GROUP BY 1";
const RAW_SERIES: &str = "SELECT date_trunc('minute', ts) AS b, count(*) FROM signal_events \
    WHERE event_type = 'received' AND ts >= $1 AND ts < $2 GROUP BY 1 ORDER BY 1";
const RAW_ERRORS: &str = "SELECT COALESCE(e.error_info ->> 'type', 'http') AS t, e.http_status, \
    s.normalised_ticker, e.event_type, count(*) \
    FROM signal_events e JOIN signals s ON s.signal_id = e.signal_id \
    WHERE (e.error_info IS NOT NULL OR e.http_status >= 400) AND e.ts >= $1 AND e.ts < $2 \
    GROUP BY GROUPING SETS ((1), (2), (3), (4))";

async fn raw(conn: &mut AsyncPgConnection, sql: &str, end: DateTime<Utc>) -> Result<(), Error> {
    diesel::sql_query(sql)
        .bind::<Timestamptz, _>(end - TimeDelta::hours(24))
        .bind::<Timestamptz, _>(end)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn run(args: Args) -> Result<(), Error> {
    let client = SignalAnalyticsServiceClient::connect(args.reader.clone()).await?;
    let end = Utc::now();
    let n = args.iterations;
    println!(
        "analytics bench: {n} calls per RPC, {} runs per raw query, last 24 h",
        args.raw_iterations
    );
    println!(
        "{:<34} {:>10} {:>10} {:>12} {:>12} {:>9}",
        "question", "rpc p50", "rpc p99", "raw p50", "raw p99", "speed-up"
    );

    let metrics = time(n, |i| {
        let mut c = client.clone();
        async move {
            c.get_metrics(pb::GetMetricsRequest {
                time_range: range(end, i),
                bucket_size: pb::BucketSize::Hour.into(),
                ticker: String::new(),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let metrics_raw = time(args.raw_iterations, |_| {
        raw_owned(&args.replica_url, RAW_METRICS, end)
    })
    .await?;
    row("GetMetrics (24 h, hourly)", &metrics, &metrics_raw);

    let series = time(n, |i| {
        let mut c = client.clone();
        async move {
            c.get_time_series(pb::GetTimeSeriesRequest {
                time_range: range(end, i),
                bucket_size: pb::BucketSize::Minute.into(),
                metric: pb::Metric::Signals.into(),
                moving_average_window: 15,
                ..Default::default()
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let series_raw = time(args.raw_iterations, |_| {
        raw_owned(&args.replica_url, RAW_SERIES, end)
    })
    .await?;
    row("GetTimeSeries (24 h, per minute)", &series, &series_raw);

    let errors = time(n, |i| {
        let mut c = client.clone();
        async move {
            c.get_error_breakdown(pb::GetErrorBreakdownRequest {
                time_range: range(end, i),
                ticker: String::new(),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    let errors_raw = time(args.raw_iterations, |_| {
        raw_owned(&args.replica_url, RAW_ERRORS, end)
    })
    .await?;
    row("GetErrorBreakdown (24 h)", &errors, &errors_raw);

    let cached = time(n, |_| {
        let mut c = client.clone();
        async move {
            c.get_metrics(pb::GetMetricsRequest {
                time_range: range(end, 0),
                bucket_size: pb::BucketSize::Hour.into(),
                ticker: String::new(),
            })
            .await?;
            Ok(())
        }
    })
    .await?;
    println!(
        "{:<34} {:>8.2}ms {:>8.2}ms",
        "GetMetrics, cached answer",
        ms(&cached, 0.5),
        ms(&cached, 0.99)
    );
    Ok(())
}

async fn raw_owned(url: &str, sql: &'static str, end: DateTime<Utc>) -> Result<(), Error> {
    // A fresh connection per run, like a dashboard without a warm session.
    let mut conn = AsyncPgConnection::establish(url).await?;
    raw(&mut conn, sql, end).await
}

fn row(name: &str, rpc: &Histogram<u64>, raw: &Histogram<u64>) {
    let speedup = ms(raw, 0.5) / ms(rpc, 0.5).max(0.001);
    let verdict = if ms(rpc, 0.99) < 50.0 && speedup >= 20.0 {
        "PASS"
    } else {
        "MISS"
    };
    println!(
        "{name:<34} {:>8.2}ms {:>8.2}ms {:>10.1}ms {:>10.1}ms {:>8.0}x  {verdict} (p99 < 50 ms and >= 20x)",
        ms(rpc, 0.5),
        ms(rpc, 0.99),
        ms(raw, 0.5),
        ms(raw, 0.99),
        speedup
    );
}
