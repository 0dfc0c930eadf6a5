//! SignalAnalyticsService: request validation and thin handlers over
//! `audit_db::analytics` (rollups on the replica).

use crate::cache::AnswerCache;
use crate::request::{signal_filter, time_range};
use audit_core::convert::{to_duration, to_timestamp};
use audit_core::{DomainError, SignalStatus, normalise_ticker};
use audit_db::analytics::{
    self, Period, activity, errors, metrics, quality, regressions, search, stages, trends,
};
use audit_db::{PgPool, event_to_proto, invalid, reads};
use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_server::SignalAnalyticsService;
use chrono::{DateTime, TimeDelta, Utc};
use tonic::{Request, Response, Status};

/// More buckets than this in one answer is a mistake, not a dashboard.
const MAX_BUCKETS: i64 = 10_000;
const MAX_WINDOW: i32 = 1_000;
/// GetStageLatencies with `exact` reads raw events; a day of them takes
/// longer than the statement timeout on a busy system.
const MAX_EXACT_STAGE_HOURS: i64 = 6;

pub struct AnalyticsService {
    pool: PgPool,
    cache: AnswerCache,
}

impl AnalyticsService {
    pub fn new(pool: PgPool, cache: AnswerCache) -> Self {
        Self { pool, cache }
    }

    /// '*' (all tickers) or a normalised ticker that exists.
    async fn ticker(&self, ticker: &str) -> Result<String, Status> {
        let ticker = ticker.trim();
        if ticker.is_empty() {
            return Ok("*".into());
        }
        let normalised = normalise_ticker(ticker);
        if !analytics::ticker_exists(&self.pool, &normalised).await? {
            return Err(invalid(DomainError::invalid(
                "ticker",
                format!("no signal has ticker {normalised:?}"),
            )));
        }
        Ok(normalised)
    }
}

fn period(value: i32) -> Result<Period, Status> {
    match pb::BucketSize::try_from(value) {
        Ok(pb::BucketSize::Minute) => Ok(Period::Minute),
        Ok(pb::BucketSize::Hour) => Ok(Period::Hour),
        Ok(pb::BucketSize::Day) => Ok(Period::Day),
        _ => Err(invalid(DomainError::invalid(
            "bucket_size",
            "must be MINUTE, HOUR or DAY",
        ))),
    }
}

/// A closed range, bounded to `MAX_BUCKETS` buckets of `period`.
fn bounded_range(
    range: Option<&pb::TimeRange>,
    period: Period,
) -> Result<(DateTime<Utc>, DateTime<Utc>), Status> {
    let (Some(from), Some(to)) = time_range("time_range", range).map_err(invalid)? else {
        return Err(invalid(DomainError::invalid(
            "time_range",
            "start and end are required",
        )));
    };
    let buckets = (to - from).num_seconds() / period.seconds();
    if buckets > MAX_BUCKETS {
        return Err(invalid(DomainError::invalid(
            "time_range",
            format!(
                "{buckets} {} buckets is more than {MAX_BUCKETS}: use a larger bucket_size",
                period.as_str()
            ),
        )));
    }
    Ok((from, to))
}

fn series_metric(field: &str, value: i32) -> Result<metrics::SeriesMetric, Status> {
    match pb::Metric::try_from(value) {
        Ok(pb::Metric::Signals) => Ok(metrics::SeriesMetric::Signals),
        Ok(pb::Metric::Events) => Ok(metrics::SeriesMetric::Events),
        Ok(pb::Metric::ErrorEvents) => Ok(metrics::SeriesMetric::ErrorEvents),
        Ok(pb::Metric::ErrorRate) => Ok(metrics::SeriesMetric::ErrorRate),
        Ok(pb::Metric::SuccessRate) => Ok(metrics::SeriesMetric::SuccessRate),
        Ok(pb::Metric::AvgProcessingMs) => Ok(metrics::SeriesMetric::AvgProcessingMs),
        Ok(pb::Metric::P95ProcessingMs) => Ok(metrics::SeriesMetric::P95ProcessingMs),
        _ => Err(invalid(DomainError::invalid(field, "must name a metric"))),
    }
}

fn millis(ms: f64) -> Option<prost_types::Duration> {
    Some(micros(ms * 1000.0))
}

fn status_named(name: &str) -> i32 {
    SignalStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == name)
        .map_or(0, |s| pb::SignalStatus::from(s) as i32)
}

fn ratio(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn micros(us: f64) -> prost_types::Duration {
    to_duration(TimeDelta::microseconds(us.round() as i64))
}

fn bucket(row: metrics::MetricsRow) -> pb::MetricsBucket {
    let metrics::MetricsRow {
        period_start,
        period_end,
        counts: row,
        p50_us,
        p95_us,
        p99_us,
    } = row;
    let counts = [
        (SignalStatus::Received, row.total_signals),
        (SignalStatus::QueuedProcessing, row.queued_processing),
        (SignalStatus::Processing, row.processing),
        (SignalStatus::Approved, row.approved_signals),
        (SignalStatus::Rejected, row.rejected_signals),
        (SignalStatus::QueuedForwarding, row.queued_forwarding),
        (SignalStatus::Forwarding, row.forwarding),
        (SignalStatus::ForwardedSuccess, row.forwarded_success),
        (SignalStatus::ForwardedTimeout, row.forwarded_timeout),
        (SignalStatus::ForwardedHttpError, row.forwarded_http_error),
        (
            SignalStatus::ForwardedGenericError,
            row.forwarded_generic_error,
        ),
        (SignalStatus::Discarded, row.discarded),
        (SignalStatus::Error, row.error_status),
    ];
    let seconds = (period_end - period_start).num_milliseconds() as f64 / 1000.0;
    pb::MetricsBucket {
        start: Some(to_timestamp(period_start)),
        end: Some(to_timestamp(period_end)),
        signals: row.total_signals,
        events: row.total_events,
        events_by_status: counts
            .into_iter()
            .map(|(status, count)| pb::StatusCount {
                status: pb::SignalStatus::from(status).into(),
                count,
            })
            .collect(),
        error_events: row.error_events,
        terminal_events: row.terminal_events,
        throughput_per_second: if seconds > 0.0 {
            row.total_signals as f64 / seconds
        } else {
            0.0
        },
        success_rate: ratio(row.forwarded_success, row.terminal_events),
        error_rate: ratio(row.error_events, row.total_events),
        avg_processing_time: (row.terminal_events > 0)
            .then(|| micros(row.processing_time_sum_us as f64 / row.terminal_events as f64)),
        p50_processing_time: p50_us.map(micros),
        p95_processing_time: p95_us.map(micros),
        p99_processing_time: p99_us.map(micros),
    }
}

#[tonic::async_trait]
impl SignalAnalyticsService for AnalyticsService {
    #[tracing::instrument(skip_all)]
    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let request = request.into_inner();
        let period = period(request.bucket_size)?;
        let (from, to) = bounded_range(request.time_range.as_ref(), period)?;
        let ticker = self.ticker(&request.ticker).await?;
        let as_of = analytics::as_of(&self.pool).await?;
        let key = AnswerCache::key("GetMetrics", as_of.timestamp_micros(), &request);
        if let Some(answer) = self.cache.get(&key).await {
            return Ok(Response::new(answer));
        }
        let (buckets, total) = metrics::metrics(&self.pool, period, &ticker, from, to).await?;
        let answer = pb::GetMetricsResponse {
            buckets: buckets.into_iter().map(bucket).collect(),
            total: Some(bucket(total)),
            as_of: Some(to_timestamp(as_of)),
        };
        self.cache.put(key, &answer).await;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all)]
    async fn get_time_series(
        &self,
        request: Request<pb::GetTimeSeriesRequest>,
    ) -> Result<Response<pb::GetTimeSeriesResponse>, Status> {
        let request = request.into_inner();
        let period = period(request.bucket_size)?;
        let (from, to) = bounded_range(request.time_range.as_ref(), period)?;
        let metric = match pb::Metric::try_from(request.metric) {
            Ok(pb::Metric::Signals) => metrics::SeriesMetric::Signals,
            Ok(pb::Metric::Events) => metrics::SeriesMetric::Events,
            Ok(pb::Metric::ErrorEvents) => metrics::SeriesMetric::ErrorEvents,
            Ok(pb::Metric::ErrorRate) => metrics::SeriesMetric::ErrorRate,
            Ok(pb::Metric::SuccessRate) => metrics::SeriesMetric::SuccessRate,
            Ok(pb::Metric::AvgProcessingMs) => metrics::SeriesMetric::AvgProcessingMs,
            Ok(pb::Metric::P95ProcessingMs) => metrics::SeriesMetric::P95ProcessingMs,
            _ => {
                return Err(invalid(DomainError::invalid(
                    "metric",
                    "must name a metric",
                )));
            }
        };
        let window = match request.moving_average_window {
            0 => 5,
            w @ 1..=MAX_WINDOW => w,
            w => {
                return Err(invalid(DomainError::invalid(
                    "moving_average_window",
                    format!("{w} is outside 1..={MAX_WINDOW}"),
                )));
            }
        };
        let ticker = self.ticker(&request.ticker).await?;
        let as_of = analytics::as_of(&self.pool).await?;
        let key = AnswerCache::key("GetTimeSeries", as_of.timestamp_micros(), &request);
        if let Some(answer) = self.cache.get(&key).await {
            return Ok(Response::new(answer));
        }
        let points =
            metrics::time_series(&self.pool, period, &ticker, from, to, metric, window).await?;
        let answer = pb::GetTimeSeriesResponse {
            points: points
                .into_iter()
                .map(|p| pb::TimeSeriesPoint {
                    start: Some(to_timestamp(p.start)),
                    value: p.value,
                    moving_average: p.moving_average,
                    has_data: p.has_data,
                })
                .collect(),
            as_of: Some(to_timestamp(as_of)),
        };
        self.cache.put(key, &answer).await;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all)]
    async fn get_error_breakdown(
        &self,
        request: Request<pb::GetErrorBreakdownRequest>,
    ) -> Result<Response<pb::GetErrorBreakdownResponse>, Status> {
        let request = request.into_inner();
        // Answered from day, hour and minute error rollups, so the range
        // is bounded like an hourly series.
        let (from, to) = bounded_range(request.time_range.as_ref(), Period::Hour)?;
        let ticker = match self.ticker(&request.ticker).await?.as_str() {
            "*" => String::new(),
            other => other.to_owned(),
        };
        let as_of = analytics::as_of(&self.pool).await?;
        let key = AnswerCache::key("GetErrorBreakdown", as_of.timestamp_micros(), &request);
        if let Some(answer) = self.cache.get(&key).await {
            return Ok(Response::new(answer));
        }
        let rows = errors::breakdown(&self.pool, from, to, &ticker).await?;
        let pick = |dimension: &str| -> Vec<pb::ErrorCount> {
            rows.iter()
                .filter(|r| r.dimension == dimension)
                .map(|r| pb::ErrorCount {
                    key: r.key.clone(),
                    count: r.count,
                })
                .collect()
        };
        let by_type = pick("type");
        let answer = pb::GetErrorBreakdownResponse {
            total: by_type.iter().map(|c| c.count).sum(),
            by_type,
            by_http_status: pick("http_status"),
            by_ticker: pick("ticker"),
            by_stage: pick("stage"),
            as_of: Some(to_timestamp(as_of)),
        };
        self.cache.put(key, &answer).await;
        Ok(Response::new(answer))
    }

    #[tracing::instrument(skip_all)]
    async fn search_events(
        &self,
        request: Request<pb::SearchEventsRequest>,
    ) -> Result<Response<pb::SearchEventsResponse>, Status> {
        let request = request.into_inner();
        let query = request.query.trim();
        if query.is_empty() {
            return Err(invalid(DomainError::invalid("query", "must not be empty")));
        }
        let filter = signal_filter(&request.filter.unwrap_or_default()).map_err(invalid)?;
        let (from, to) = time_range("time_range", request.time_range.as_ref()).map_err(invalid)?;
        let limit = reads::page_size("limit", request.limit).map_err(invalid)?;
        let hits = search::search(&self.pool, query, &filter, from, to, limit).await?;
        Ok(Response::new(pb::SearchEventsResponse {
            hits: hits
                .into_iter()
                .map(|hit| pb::SearchHit {
                    event: Some(event_to_proto(hit.event)),
                    rank: hit.rank,
                    snippet: hit.snippet,
                })
                .collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn check_data_quality(
        &self,
        request: Request<pb::CheckDataQualityRequest>,
    ) -> Result<Response<pb::CheckDataQualityResponse>, Status> {
        let request = request.into_inner();
        let stuck_after = match request.stuck_after.as_ref() {
            Some(d) => audit_core::convert::duration("stuck_after", d).map_err(invalid)?,
            // The old in-memory tracker's rule.
            None => TimeDelta::seconds(30),
        };
        let now = Utc::now();
        let (from, to) =
            match time_range("summary_range", request.summary_range.as_ref()).map_err(invalid)? {
                (Some(from), Some(to)) => (from, to),
                (from, to) => (from.unwrap_or(now - TimeDelta::days(1)), to.unwrap_or(now)),
            };
        if (to - from) > TimeDelta::days(31) {
            return Err(invalid(DomainError::invalid(
                "summary_range",
                "at most 31 days are compared in one call",
            )));
        }
        let max_ids = match request.max_ids {
            0 => 100,
            n @ 1..=10_000 => i64::from(n),
            n => {
                return Err(invalid(DomainError::invalid(
                    "max_ids",
                    format!("{n} is outside 1..=10000"),
                )));
            }
        };
        let findings = quality::check(
            &self.pool,
            stuck_after.num_microseconds().unwrap_or(i64::MAX),
            from,
            to,
            max_ids,
        )
        .await?;
        Ok(Response::new(pb::CheckDataQualityResponse {
            findings: findings
                .into_iter()
                .map(|f| {
                    let (kind, description) = match f.check {
                        quality::Check::OrphanEvents => (
                            pb::FindingKind::OrphanEvents,
                            "event id claims without their event, or events without their claim",
                        ),
                        quality::Check::StuckSignals => (
                            pb::FindingKind::StuckSignals,
                            "signals in a non-terminal status for longer than stuck_after",
                        ),
                        quality::Check::CounterMismatch => (
                            pb::FindingKind::CounterMismatch,
                            "signals whose error_count or retry_count disagree with their events",
                        ),
                        quality::Check::SummaryMismatch => (
                            pb::FindingKind::SummaryMismatch,
                            "minute rollup buckets that raw events do not add up to \
                             (buckets awaiting the refresher are not compared)",
                        ),
                    };
                    pb::Finding {
                        kind: kind.into(),
                        count: f.count,
                        ids: f.ids,
                        description: description.into(),
                    }
                })
                .collect(),
            checked_at: Some(to_timestamp(now)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_stage_latencies(
        &self,
        request: Request<pb::GetStageLatenciesRequest>,
    ) -> Result<Response<pb::GetStageLatenciesResponse>, Status> {
        let request = request.into_inner();
        let (from, to) = if request.exact {
            let (from, to) = bounded_range(request.time_range.as_ref(), Period::Minute)?;
            if to - from > TimeDelta::hours(MAX_EXACT_STAGE_HOURS) {
                return Err(invalid(DomainError::invalid(
                    "exact",
                    format!(
                        "exact percentiles read raw events: time_range must span at most \
                         {MAX_EXACT_STAGE_HOURS} hours"
                    ),
                )));
            }
            (from, to)
        } else {
            // The hourly view: whole hours covering the range.
            let (from, to) = bounded_range(request.time_range.as_ref(), Period::Hour)?;
            let end = Period::Hour.floor(to);
            let end = if end < to {
                end + TimeDelta::hours(1)
            } else {
                end
            };
            (Period::Hour.floor(from), end)
        };
        let grouping = match pb::StageGrouping::try_from(request.group_by) {
            Ok(pb::StageGrouping::Unspecified | pb::StageGrouping::None) => stages::Grouping::None,
            Ok(pb::StageGrouping::Ticker) => stages::Grouping::Ticker,
            Ok(pb::StageGrouping::Worker) => stages::Grouping::Worker,
            Err(_) => {
                return Err(invalid(DomainError::invalid(
                    "group_by",
                    format!("unknown value {}", request.group_by),
                )));
            }
        };
        let ticker = match self.ticker(&request.ticker).await?.as_str() {
            "*" => String::new(),
            other => other.to_owned(),
        };
        let (rows, as_of) = if request.exact {
            // Raw events: as current as the replica's replay.
            let as_of = analytics::replica_as_of(&self.pool).await?;
            let rows = stages::exact(&self.pool, from, to, &ticker, grouping).await?;
            (rows, as_of)
        } else {
            stages::hourly(&self.pool, from, to, &ticker, grouping).await?
        };
        Ok(Response::new(pb::GetStageLatenciesResponse {
            stages: rows
                .into_iter()
                .map(|row| pb::StageLatency {
                    from_status: status_named(&row.from_stage),
                    to_status: status_named(&row.to_stage),
                    group: row.group_key,
                    count: row.count,
                    avg: millis(row.avg_ms),
                    p50: millis(row.p50_ms),
                    p95: millis(row.p95_ms),
                    p99: millis(row.p99_ms),
                    max: millis(row.max_ms),
                })
                .collect(),
            as_of: Some(to_timestamp(as_of)),
            time_range: Some(pb::TimeRange {
                start: Some(to_timestamp(from)),
                end: Some(to_timestamp(to)),
            }),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_trends(
        &self,
        request: Request<pb::GetTrendsRequest>,
    ) -> Result<Response<pb::GetTrendsResponse>, Status> {
        let request = request.into_inner();
        let period = period(request.bucket_size)?;
        let (from, to) = bounded_range(request.time_range.as_ref(), period)?;
        let ticker = self.ticker(&request.ticker).await?;
        let wanted = if request.metrics.is_empty() {
            vec![
                pb::Metric::Signals as i32,
                pb::Metric::ErrorRate as i32,
                pb::Metric::AvgProcessingMs as i32,
            ]
        } else {
            request.metrics.clone()
        };
        let as_of = analytics::as_of(&self.pool).await?;
        let mut out = Vec::with_capacity(wanted.len());
        for (i, metric) in wanted.into_iter().enumerate() {
            let series = series_metric(&format!("metrics[{i}]"), metric)?;
            let fit = trends::trend(&self.pool, period, &ticker, from, to, series).await?;
            let slope = fit.slope.unwrap_or(0.0);
            let r2 = fit.r2.unwrap_or(0.0);
            let direction = if fit.points < 3 || r2 < 0.25 || slope == 0.0 {
                pb::TrendDirection::Flat
            } else if slope > 0.0 {
                pb::TrendDirection::Up
            } else {
                pb::TrendDirection::Down
            };
            out.push(pb::Trend {
                metric,
                slope_per_hour: slope,
                r2,
                direction: direction.into(),
                points: fit.points,
            });
        }
        Ok(Response::new(pb::GetTrendsResponse {
            trends: out,
            as_of: Some(to_timestamp(as_of)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_correlations(
        &self,
        request: Request<pb::GetCorrelationsRequest>,
    ) -> Result<Response<pb::GetCorrelationsResponse>, Status> {
        let request = request.into_inner();
        let period = period(request.bucket_size)?;
        let (from, to) = bounded_range(request.time_range.as_ref(), period)?;
        let errors = match pb::Metric::try_from(request.metric) {
            Ok(pb::Metric::Unspecified | pb::Metric::Signals) => false,
            Ok(pb::Metric::ErrorEvents) => true,
            _ => {
                return Err(invalid(DomainError::invalid(
                    "metric",
                    "correlations use METRIC_SIGNALS or METRIC_ERROR_EVENTS",
                )));
            }
        };
        let tickers = if request.tickers.is_empty() {
            trends::busiest_tickers(&self.pool, period, from, to, 10).await?
        } else {
            if !(2..=50).contains(&request.tickers.len()) {
                return Err(invalid(DomainError::invalid(
                    "tickers",
                    "name 2 to 50 tickers",
                )));
            }
            let mut normalised = Vec::with_capacity(request.tickers.len());
            for ticker in &request.tickers {
                let t = self.ticker(ticker).await?;
                if !normalised.contains(&t) {
                    normalised.push(t);
                }
            }
            normalised
        };
        let as_of = analytics::as_of(&self.pool).await?;
        let pairs = trends::correlations(&self.pool, period, &tickers, from, to, errors).await?;
        Ok(Response::new(pb::GetCorrelationsResponse {
            tickers,
            pairs: pairs
                .into_iter()
                .map(|p| pb::Correlation {
                    ticker_a: p.ticker_a,
                    ticker_b: p.ticker_b,
                    coefficient: p.coefficient,
                    buckets: p.buckets,
                })
                .collect(),
            as_of: Some(to_timestamp(as_of)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn detect_regressions(
        &self,
        request: Request<pb::DetectRegressionsRequest>,
    ) -> Result<Response<pb::DetectRegressionsResponse>, Status> {
        let request = request.into_inner();
        let window = |field: &str, range: Option<&pb::TimeRange>| match time_range(field, range)
            .map_err(invalid)?
        {
            (Some(from), Some(to)) => Ok((from, to)),
            _ => Err(invalid(DomainError::invalid(
                field,
                "start and end are required",
            ))),
        };
        let baseline = window("baseline", request.baseline.as_ref())?;
        let recent = window("recent", request.recent.as_ref())?;
        if baseline.1 > recent.0 {
            return Err(invalid(DomainError::invalid(
                "baseline",
                "must end before recent starts",
            )));
        }
        // Minute rollups while both windows span at most MAX_BUCKETS
        // minutes, hour rollups beyond (bucket edges then round the windows
        // to whole hours), and no more than MAX_BUCKETS hours.
        let span = (recent.1 - baseline.0).num_seconds();
        let period = if span / Period::Minute.seconds() <= MAX_BUCKETS {
            Period::Minute
        } else {
            Period::Hour
        };
        if span / period.seconds() > MAX_BUCKETS {
            return Err(invalid(DomainError::invalid(
                "baseline",
                format!("baseline.start to recent.end is more than {MAX_BUCKETS} hours"),
            )));
        }
        let min_samples = if request.min_samples > 0 {
            request.min_samples
        } else {
            20
        };
        let ratio_limit = if request.latency_ratio > 0.0 {
            request.latency_ratio
        } else {
            1.5
        };
        let rise_limit = if request.error_rate_increase > 0.0 {
            request.error_rate_increase
        } else {
            0.02
        };
        let as_of = analytics::as_of(&self.pool).await?;
        let mut found = Vec::new();
        for w in regressions::windows(&self.pool, period, baseline, recent).await? {
            if let (Some(base), Some(now)) = (w.base_avg_ms, w.recent_avg_ms)
                && w.base_terminal >= min_samples
                && w.recent_terminal >= min_samples
                && base > 0.0
                && now / base >= ratio_limit
            {
                found.push(pb::Regression {
                    kind: pb::RegressionKind::Latency.into(),
                    ticker: w.ticker.clone(),
                    baseline_value: base,
                    recent_value: now,
                    change: now / base,
                    baseline_samples: w.base_terminal,
                    recent_samples: w.recent_terminal,
                    z: 0.0,
                    unit: "ms".into(),
                    baseline_p95_ms: w.base_p95_ms.unwrap_or(0.0),
                    recent_p95_ms: w.recent_p95_ms.unwrap_or(0.0),
                });
            }
            if w.base_events >= min_samples && w.recent_events >= min_samples {
                let p1 = w.base_errors as f64 / w.base_events as f64;
                let p2 = w.recent_errors as f64 / w.recent_events as f64;
                let pooled = (w.base_errors + w.recent_errors) as f64
                    / (w.base_events + w.recent_events) as f64;
                let se = (pooled
                    * (1.0 - pooled)
                    * (1.0 / w.base_events as f64 + 1.0 / w.recent_events as f64))
                    .sqrt();
                let z = if se > 0.0 { (p2 - p1) / se } else { 0.0 };
                if p2 - p1 >= rise_limit && z >= 3.0 {
                    found.push(pb::Regression {
                        kind: pb::RegressionKind::ErrorRate.into(),
                        ticker: w.ticker.clone(),
                        baseline_value: p1,
                        recent_value: p2,
                        change: p2 - p1,
                        baseline_samples: w.base_events,
                        recent_samples: w.recent_events,
                        z,
                        unit: "fraction".into(),
                        baseline_p95_ms: w.base_p95_ms.unwrap_or(0.0),
                        recent_p95_ms: w.recent_p95_ms.unwrap_or(0.0),
                    });
                }
            }
        }
        found.sort_by(|a, b| b.change.total_cmp(&a.change));
        Ok(Response::new(pb::DetectRegressionsResponse {
            regressions: found,
            as_of: Some(to_timestamp(as_of)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_ticker_activity(
        &self,
        request: Request<pb::GetTickerActivityRequest>,
    ) -> Result<Response<pb::GetTickerActivityResponse>, Status> {
        let request = request.into_inner();
        let (from, to) = bounded_range(request.time_range.as_ref(), Period::Day)?;
        let ticker = match self.ticker(&request.ticker).await?.as_str() {
            "*" => String::new(),
            other => other.to_owned(),
        };
        let (rows, as_of) = activity::daily(&self.pool, from, to, &ticker).await?;
        Ok(Response::new(pb::GetTickerActivityResponse {
            days: rows
                .into_iter()
                .map(|row| pb::TickerActivity {
                    day: Some(to_timestamp(row.day)),
                    ticker: row.normalised_ticker,
                    signals: row.signals,
                    succeeded: row.succeeded,
                    rejected: row.rejected,
                    failed: row.failed,
                    in_flight: row.in_flight,
                    errors: row.errors,
                    retries: row.retries,
                    avg_processing_time: row.avg_processing_ms.and_then(millis),
                    p95_processing_time: row.p95_processing_ms.and_then(millis),
                })
                .collect(),
            as_of: Some(to_timestamp(as_of)),
        }))
    }
}
