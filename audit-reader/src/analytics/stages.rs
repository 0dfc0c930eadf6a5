//! GetStageLatencies: time between consecutive pipeline steps, from the
//! hourly views (whole hours) or, with `exact`, from raw events.

use super::{AnalyticsService, bounded_range, millis, snapshot, ticker_scope};
use crate::error::ReadError;
use crate::queries::analytics::{self as queries, stages};
use audit_core::{DomainError, Period, SignalStatus};
use audit_proto::v1 as pb;
use audit_wire::convert::{status_to_proto, to_timestamp};
use chrono::TimeDelta;

/// `exact` reads raw events; a day of them takes longer than the statement
/// timeout on a busy system.
const MAX_EXACT_STAGE_HOURS: i64 = 6;

pub(super) async fn get_stage_latencies(
    service: &AnalyticsService,
    request: pb::GetStageLatenciesRequest,
) -> Result<pb::GetStageLatenciesResponse, ReadError> {
    let (from, to) = if request.exact {
        let (from, to) = bounded_range("time_range", request.time_range.as_ref(), Period::Minute)?;
        if to - from > TimeDelta::hours(MAX_EXACT_STAGE_HOURS) {
            return Err(DomainError::invalid(
                "exact",
                format!(
                    "exact percentiles read raw events: time_range must span at most \
                     {MAX_EXACT_STAGE_HOURS} hours"
                ),
            )
            .into());
        }
        (from, to)
    } else {
        let (from, to) = bounded_range("time_range", request.time_range.as_ref(), Period::Hour)?;
        Period::Hour.widen(from, to)
    };
    let grouping = match pb::StageGrouping::try_from(request.group_by) {
        Ok(pb::StageGrouping::Unspecified | pb::StageGrouping::None) => stages::Grouping::None,
        Ok(pb::StageGrouping::Ticker) => stages::Grouping::Ticker,
        Ok(pb::StageGrouping::Worker) => stages::Grouping::Worker,
        Err(_) => {
            return Err(DomainError::invalid(
                "group_by",
                format!("unknown value {}", request.group_by),
            )
            .into());
        }
    };
    let mut conn = service.replicas.any().get().await?;
    let (rows, as_of) = snapshot(&mut conn)
        .run(async |conn| {
            let ticker = ticker_scope(conn, "ticker", &request.ticker).await?;
            if request.exact {
                // Raw events: as current as the replica's replay.
                let as_of = queries::replica_as_of(conn).await?;
                let rows = stages::exact(conn, from, to, &ticker, grouping).await?;
                Ok::<_, ReadError>((rows, as_of))
            } else {
                Ok(stages::hourly(conn, from, to, &ticker, grouping).await?)
            }
        })
        .await?;
    let stages = rows
        .into_iter()
        .map(|row| {
            Ok(pb::StageLatency {
                from_status: status_to_proto(SignalStatus::from_name(
                    "from_stage",
                    &row.from_stage,
                )?)
                .into(),
                to_status: status_to_proto(SignalStatus::from_name("to_stage", &row.to_stage)?)
                    .into(),
                group: row.group_key,
                count: row.count,
                avg: millis(row.avg_ms),
                p50: millis(row.p50_ms),
                p95: millis(row.p95_ms),
                p99: millis(row.p99_ms),
                max: millis(row.max_ms),
            })
        })
        .collect::<Result<Vec<_>, DomainError>>()
        // A stage name the database holds is one of the enum's: a bug otherwise.
        .map_err(|e| ReadError::Bug(format!("stage latency row: {e}")))?;
    Ok(pb::GetStageLatenciesResponse {
        stages,
        as_of: Some(to_timestamp(as_of)),
        time_range: Some(pb::TimeRange {
            start: Some(to_timestamp(from)),
            end: Some(to_timestamp(to)),
        }),
    })
}
