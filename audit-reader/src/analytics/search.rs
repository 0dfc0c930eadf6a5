//! SearchEvents: full-text search over event details, errors and responses.

use super::{AnalyticsService, snapshot};
use crate::error::ReadError;
use crate::queries::analytics::search;
use crate::queries::page_size;
use crate::request::signal_filter;
use audit_core::{DomainError, rules};
use audit_proto::v1 as pb;
use audit_wire::decode::time_range;
use audit_wire::encode::event_to_proto;

pub(super) async fn search_events(
    service: &AnalyticsService,
    request: pb::SearchEventsRequest,
) -> Result<pb::SearchEventsResponse, ReadError> {
    let query = rules::query_text("query", &request.query)?
        .ok_or_else(|| DomainError::invalid("query", "must not be empty"))?;
    let filter = signal_filter(&request.filter.unwrap_or_default())?;
    let (from, to) = time_range("time_range", request.time_range.as_ref())?;
    let limit = page_size("limit", request.limit)?;
    let mut conn = service.replicas.any().get().await?;
    let hits = snapshot(&mut conn)
        .run(async |conn| {
            Ok::<_, ReadError>(search::search(conn, &query, &filter, from, to, limit).await?)
        })
        .await?;
    Ok(pb::SearchEventsResponse {
        hits: hits
            .into_iter()
            .map(|hit| pb::SearchHit {
                event: Some(event_to_proto(hit.event)),
                rank: hit.rank,
                snippet: hit.snippet,
            })
            .collect(),
    })
}
