//! GetTickerActivity: per day and ticker, summed from the hourly activity table.

use super::{AnalyticsService, bounded_range, millis, snapshot, ticker_scope};
use crate::error::ReadError;
use crate::queries::analytics::activity;
use audit_core::Period;
use audit_proto::v1 as pb;
use audit_wire::convert::to_timestamp;

pub(super) async fn get_ticker_activity(
    service: &AnalyticsService,
    request: pb::GetTickerActivityRequest,
) -> Result<pb::GetTickerActivityResponse, ReadError> {
    let (from, to) = bounded_range("time_range", request.time_range.as_ref(), Period::Day)?;
    let mut conn = service.replicas.any().get().await?;
    let (rows, as_of) = snapshot(&mut conn)
        .run(async |conn| {
            let ticker = ticker_scope(conn, "ticker", &request.ticker).await?;
            Ok::<_, ReadError>(activity::daily(conn, from, to, &ticker).await?)
        })
        .await?;
    Ok(pb::GetTickerActivityResponse {
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
    })
}
