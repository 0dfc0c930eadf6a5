//! Protobuf read requests into [`crate::queries`] queries, with every bad
//! argument reported against its field.

use crate::queries::events::{EventFilter, EventQuery};
use crate::queries::page_size;
use crate::queries::signals::{SignalFilter, SignalQuery, TagMatch};
use audit_core::rules::{self, Limits};
use audit_core::{DomainError, normalise_ticker};
use audit_proto::v1 as pb;
use audit_wire::convert;
use audit_wire::decode::time_range;
use audit_wire::token::{Direction, EventCursor, SignalCursor, SortField, decode_token};
use prost::Message;

/// FNV-1a: a stable hash of the request shape a page token belongs to.
fn fingerprint(parts: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter() {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash = hash.rotate_left(5);
    }
    hash
}

pub fn signal_filter(filter: &pb::SignalFilter) -> Result<SignalFilter, DomainError> {
    let statuses = filter
        .statuses
        .iter()
        .enumerate()
        .map(|(i, s)| convert::status(&format!("filter.statuses[{i}]"), *s))
        .collect::<Result<Vec<_>, _>>()?;
    let (created_from, created_to) = time_range("filter.created", filter.created.as_ref())?;
    let (updated_from, updated_to) = time_range("filter.updated", filter.updated.as_ref())?;
    let min_processing_time = filter
        .min_processing_time
        .as_ref()
        .map(|d| convert::duration("filter.min_processing_time", d))
        .transpose()?;
    let max_processing_time = filter
        .max_processing_time
        .as_ref()
        .map(|d| convert::duration("filter.max_processing_time", d))
        .transpose()?;
    if let (Some(min), Some(max)) = (min_processing_time, max_processing_time)
        && min > max
    {
        return Err(DomainError::invalid(
            "filter.min_processing_time",
            "is greater than filter.max_processing_time",
        ));
    }
    let tag_match = match pb::TagMatch::try_from(filter.tag_match) {
        Ok(pb::TagMatch::Unspecified | pb::TagMatch::Any) => TagMatch::Any,
        Ok(pb::TagMatch::All) => TagMatch::All,
        Err(_) => {
            return Err(DomainError::invalid(
                "filter.tag_match",
                format!("unknown value {}", filter.tag_match),
            ));
        }
    };
    Ok(SignalFilter {
        ticker: rules::query_text("filter.ticker", &filter.ticker)?,
        normalised_ticker: rules::query_text(
            "filter.normalised_ticker",
            &filter.normalised_ticker,
        )?
        .map(|t| normalise_ticker(&t)),
        statuses,
        location: convert::optional_location("filter.location", filter.location)?,
        created_from,
        created_to,
        updated_from,
        updated_to,
        errors_only: filter.errors_only,
        min_processing_time,
        max_processing_time,
        tags: rules::tags("filter.tags", &filter.tags, &Limits::default())?,
        tag_match,
    })
}

pub fn signal_query(request: &pb::ListSignalsRequest) -> Result<SignalQuery, DomainError> {
    let filter_message = request.filter.clone().unwrap_or_default();
    let filter = signal_filter(&filter_message)?;
    let sort = match pb::SignalSortField::try_from(request.sort_by) {
        Ok(pb::SignalSortField::Unspecified | pb::SignalSortField::CreatedAt) => {
            SortField::CreatedAt
        }
        Ok(pb::SignalSortField::UpdatedAt) => SortField::UpdatedAt,
        Ok(pb::SignalSortField::ProcessingTime) => SortField::ProcessingTime,
        Ok(pb::SignalSortField::ErrorCount) => SortField::ErrorCount,
        Err(_) => {
            return Err(DomainError::invalid(
                "sort_by",
                format!("unknown value {}", request.sort_by),
            ));
        }
    };
    let direction = match pb::SortDirection::try_from(request.direction) {
        Ok(pb::SortDirection::Unspecified | pb::SortDirection::Descending) => Direction::Descending,
        Ok(pb::SortDirection::Ascending) => Direction::Ascending,
        Err(_) => {
            return Err(DomainError::invalid(
                "direction",
                format!("unknown value {}", request.direction),
            ));
        }
    };
    let fingerprint = fingerprint(&[
        &filter_message.encode_to_vec(),
        &request.sort_by.to_le_bytes(),
        &request.direction.to_le_bytes(),
    ]);
    let after = if request.page_token.is_empty() {
        None
    } else {
        let cursor: SignalCursor = decode_token("page_token", &request.page_token)?;
        if cursor.fingerprint != fingerprint || cursor.sort != sort || cursor.direction != direction
        {
            return Err(DomainError::invalid(
                "page_token",
                "was issued for a different filter or sort order",
            ));
        }
        Some(cursor)
    };
    Ok(SignalQuery {
        filter,
        sort,
        direction,
        page_size: page_size("page_size", request.page_size)?,
        after,
        include_total: request.include_total_count,
        fingerprint,
    })
}

pub fn event_query(request: &pb::ListEventsRequest) -> Result<EventQuery, DomainError> {
    let signal_id = rules::query_text("signal_id", &request.signal_id)?
        .map(|id| convert::uuid("signal_id", &id))
        .transpose()?;
    let (from, to) = time_range("time_range", request.time_range.as_ref())?;
    let fingerprint = fingerprint(&[
        request.signal_id.as_bytes(),
        &request.event_type.to_le_bytes(),
        &request.time_range.unwrap_or_default().encode_to_vec(),
    ]);
    let after = if request.page_token.is_empty() {
        None
    } else {
        let cursor: EventCursor = decode_token("page_token", &request.page_token)?;
        if cursor.fingerprint != fingerprint {
            return Err(DomainError::invalid(
                "page_token",
                "was issued for a different filter",
            ));
        }
        Some(cursor)
    };
    Ok(EventQuery {
        filter: EventFilter {
            signal_id,
            event_type: convert::optional_status("event_type", request.event_type)?,
            from,
            to,
        },
        page_size: page_size("page_size", request.page_size)?,
        after,
        fingerprint,
    })
}
