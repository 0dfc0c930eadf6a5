//! SignalAnalyticsService: one module per RPC family, mirroring the query
//! modules of [`crate::queries::analytics`]. Each handler decodes its
//! request, then reads its rows and their `as_of` in ONE read-only
//! transaction on one pooled connection ([`AnalyticsService::snapshot`]),
//! and encodes the answer. The judgement calls (regression tests, trend
//! direction) are pure functions in their module, unit-tested alone.

mod activity;
mod dashboards;
mod quality;
mod regressions;
mod search;
mod stages;
mod trends;

use crate::cache::AnswerCache;
use crate::error::{ReadError, respond};
use crate::queries::analytics::{self as queries, metrics::SeriesMetric};
use crate::replica::Replicas;
use audit_core::{DomainError, Period, TickerScope, normalise_ticker, rules};
use audit_proto::v1 as pb;
use audit_proto::v1::signal_analytics_service_server::SignalAnalyticsService;
use audit_wire::decode::closed_range;
use chrono::{DateTime, TimeDelta, Utc};
use diesel_async::AsyncPgConnection;
use diesel_async::pg::TransactionBuilder;
use futures::future::BoxFuture;
use tonic::{Request, Response, Status};

/// More buckets than this in one answer is a mistake, not a dashboard.
const MAX_BUCKETS: i64 = 10_000;

pub struct AnalyticsService {
    /// Each answer reads from ONE replica, picked per call: its snapshot
    /// transaction cannot span servers.
    replicas: Replicas,
    cache: AnswerCache,
}

impl AnalyticsService {
    pub fn new(replicas: Replicas, cache: AnswerCache) -> Self {
        Self { replicas, cache }
    }

    /// An answer computed from the rollups: in one snapshot the ticker is
    /// checked and the rollups' `as_of` read, and the answer is cached under
    /// that version (see [`Self::cached`]).
    async fn rollup_answer<T>(
        &self,
        rpc: &'static str,
        request: &impl prost::Message,
        ticker: &str,
        compute: impl for<'c> FnOnce(
            &'c mut AsyncPgConnection,
            TickerScope,
            DateTime<Utc>,
        ) -> BoxFuture<'c, Result<T, ReadError>>
        + Send,
    ) -> Result<T, ReadError>
    where
        T: prost::Message + Default + Send,
    {
        let mut conn = self.replicas.any().get().await?;
        snapshot(&mut conn)
            .run(async |conn| {
                let scope = ticker_scope(conn, "ticker", ticker).await?;
                let as_of = queries::as_of(conn).await?;
                self.cached(rpc, as_of, request, compute(conn, scope, as_of))
                    .await
            })
            .await
    }

    /// The cached answer of `rpc` for `request` at the rollup version
    /// `as_of`, or `compute`'s, which is then cached.
    async fn cached<T: prost::Message + Default>(
        &self,
        rpc: &str,
        as_of: DateTime<Utc>,
        request: &impl prost::Message,
        compute: impl Future<Output = Result<T, ReadError>>,
    ) -> Result<T, ReadError> {
        let key = AnswerCache::key(rpc, as_of.timestamp_micros(), request);
        if let Some(answer) = self.cache.get(&key).await {
            return Ok(answer);
        }
        let answer = compute.await?;
        self.cache.put(key, &answer).await;
        Ok(answer)
    }
}

/// One answer's transaction: read-only, one snapshot for every query.
fn snapshot(conn: &mut AsyncPgConnection) -> TransactionBuilder<'_, AsyncPgConnection> {
    conn.build_transaction().read_only().repeatable_read()
}

/// All tickers, or one normalised ticker that some signal has.
async fn ticker_scope(
    conn: &mut AsyncPgConnection,
    field: &str,
    ticker: &str,
) -> Result<TickerScope, ReadError> {
    let Some(ticker) = rules::query_text(field, ticker)? else {
        return Ok(TickerScope::All);
    };
    let normalised = normalise_ticker(&ticker);
    if !queries::ticker_exists(conn, &normalised).await? {
        return Err(
            DomainError::invalid(field, format!("no signal has ticker {normalised:?}")).into(),
        );
    }
    Ok(TickerScope::One(normalised))
}

fn period(value: i32) -> Result<Period, DomainError> {
    match pb::BucketSize::try_from(value) {
        Ok(pb::BucketSize::Minute) => Ok(Period::Minute),
        Ok(pb::BucketSize::Hour) => Ok(Period::Hour),
        Ok(pb::BucketSize::Day) => Ok(Period::Day),
        _ => Err(DomainError::invalid(
            "bucket_size",
            "must be MINUTE, HOUR or DAY",
        )),
    }
}

/// A closed range, bounded to `MAX_BUCKETS` buckets of `period`.
fn bounded_range(
    field: &str,
    range: Option<&pb::TimeRange>,
    period: Period,
) -> Result<(DateTime<Utc>, DateTime<Utc>), DomainError> {
    let (from, to) = closed_range(field, range)?;
    let buckets = (to - from).num_seconds() / period.seconds();
    if buckets > MAX_BUCKETS {
        return Err(DomainError::invalid(
            field,
            format!(
                "{buckets} {period} buckets is more than {MAX_BUCKETS}: use a larger bucket_size"
            ),
        ));
    }
    Ok((from, to))
}

fn series_metric(field: &str, value: i32) -> Result<SeriesMetric, DomainError> {
    match pb::Metric::try_from(value) {
        Ok(pb::Metric::Signals) => Ok(SeriesMetric::Signals),
        Ok(pb::Metric::Events) => Ok(SeriesMetric::Events),
        Ok(pb::Metric::ErrorEvents) => Ok(SeriesMetric::ErrorEvents),
        Ok(pb::Metric::ErrorRate) => Ok(SeriesMetric::ErrorRate),
        Ok(pb::Metric::SuccessRate) => Ok(SeriesMetric::SuccessRate),
        Ok(pb::Metric::AvgProcessingMs) => Ok(SeriesMetric::AvgProcessingMs),
        Ok(pb::Metric::P95ProcessingMs) => Ok(SeriesMetric::P95ProcessingMs),
        _ => Err(DomainError::invalid(field, "must name a metric")),
    }
}

/// A duration in (fractional) milliseconds, rounded to the microsecond.
fn millis(ms: f64) -> Option<prost_types::Duration> {
    Some(micros(ms * 1000.0))
}

fn micros(us: f64) -> prost_types::Duration {
    audit_wire::convert::to_duration(TimeDelta::microseconds(us.round() as i64))
}

#[tonic::async_trait]
impl SignalAnalyticsService for AnalyticsService {
    #[tracing::instrument(skip_all)]
    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        respond(dashboards::get_metrics(self, request.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_time_series(
        &self,
        request: Request<pb::GetTimeSeriesRequest>,
    ) -> Result<Response<pb::GetTimeSeriesResponse>, Status> {
        respond(dashboards::get_time_series(self, request.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_error_breakdown(
        &self,
        request: Request<pb::GetErrorBreakdownRequest>,
    ) -> Result<Response<pb::GetErrorBreakdownResponse>, Status> {
        respond(dashboards::get_error_breakdown(self, request.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn search_events(
        &self,
        request: Request<pb::SearchEventsRequest>,
    ) -> Result<Response<pb::SearchEventsResponse>, Status> {
        respond(search::search_events(self, request.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn check_data_quality(
        &self,
        request: Request<pb::CheckDataQualityRequest>,
    ) -> Result<Response<pb::CheckDataQualityResponse>, Status> {
        respond(quality::check_data_quality(self, request.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_stage_latencies(
        &self,
        request: Request<pb::GetStageLatenciesRequest>,
    ) -> Result<Response<pb::GetStageLatenciesResponse>, Status> {
        respond(stages::get_stage_latencies(self, request.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_trends(
        &self,
        request: Request<pb::GetTrendsRequest>,
    ) -> Result<Response<pb::GetTrendsResponse>, Status> {
        respond(trends::get_trends(self, request.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_correlations(
        &self,
        request: Request<pb::GetCorrelationsRequest>,
    ) -> Result<Response<pb::GetCorrelationsResponse>, Status> {
        respond(trends::get_correlations(self, request.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn detect_regressions(
        &self,
        request: Request<pb::DetectRegressionsRequest>,
    ) -> Result<Response<pb::DetectRegressionsResponse>, Status> {
        respond(regressions::detect_regressions(self, request.into_inner())).await
    }

    #[tracing::instrument(skip_all)]
    async fn get_ticker_activity(
        &self,
        request: Request<pb::GetTickerActivityRequest>,
    ) -> Result<Response<pb::GetTickerActivityResponse>, Status> {
        respond(activity::get_ticker_activity(self, request.into_inner())).await
    }
}
