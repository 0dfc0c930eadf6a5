//! The one place where protobuf scalars become domain values and back.

use audit_core::{DomainError, SignalLocation, SignalStatus, rules};
use audit_proto::v1 as pb;
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use uuid::Uuid;

pub fn status_to_proto(status: SignalStatus) -> pb::SignalStatus {
    use pb::SignalStatus as P;
    match status {
        SignalStatus::Received => P::Received,
        SignalStatus::QueuedProcessing => P::QueuedProcessing,
        SignalStatus::Processing => P::Processing,
        SignalStatus::Approved => P::Approved,
        SignalStatus::Rejected => P::Rejected,
        SignalStatus::QueuedForwarding => P::QueuedForwarding,
        SignalStatus::Forwarding => P::Forwarding,
        SignalStatus::ForwardedSuccess => P::ForwardedSuccess,
        SignalStatus::ForwardedTimeout => P::ForwardedTimeout,
        SignalStatus::ForwardedHttpError => P::ForwardedHttpError,
        SignalStatus::ForwardedGenericError => P::ForwardedGenericError,
        SignalStatus::Discarded => P::Discarded,
        SignalStatus::Error => P::Error,
    }
}

pub fn location_to_proto(location: SignalLocation) -> pb::SignalLocation {
    use pb::SignalLocation as P;
    match location {
        SignalLocation::ProcessingQueue => P::ProcessingQueue,
        SignalLocation::ApprovedQueue => P::ApprovedQueue,
        SignalLocation::WorkerProcessing => P::WorkerProcessing,
        SignalLocation::WorkerForwarding => P::WorkerForwarding,
        SignalLocation::Completed => P::Completed,
        SignalLocation::Discarded => P::Discarded,
    }
}

/// A required status field: UNSPECIFIED and numbers outside the enum are rejected.
pub fn status(field: &str, value: i32) -> Result<SignalStatus, DomainError> {
    optional_status(field, value)?
        .ok_or_else(|| DomainError::invalid(field, "must be set to a pipeline status"))
}

/// A status filter: UNSPECIFIED means "not filtered".
pub fn optional_status(field: &str, value: i32) -> Result<Option<SignalStatus>, DomainError> {
    let status = pb::SignalStatus::try_from(value)
        .map_err(|_| DomainError::invalid(field, format!("unknown status {value}")))?;
    Ok(match status {
        pb::SignalStatus::Unspecified => None,
        pb::SignalStatus::Received => Some(SignalStatus::Received),
        pb::SignalStatus::QueuedProcessing => Some(SignalStatus::QueuedProcessing),
        pb::SignalStatus::Processing => Some(SignalStatus::Processing),
        pb::SignalStatus::Approved => Some(SignalStatus::Approved),
        pb::SignalStatus::Rejected => Some(SignalStatus::Rejected),
        pb::SignalStatus::QueuedForwarding => Some(SignalStatus::QueuedForwarding),
        pb::SignalStatus::Forwarding => Some(SignalStatus::Forwarding),
        pb::SignalStatus::ForwardedSuccess => Some(SignalStatus::ForwardedSuccess),
        pb::SignalStatus::ForwardedTimeout => Some(SignalStatus::ForwardedTimeout),
        pb::SignalStatus::ForwardedHttpError => Some(SignalStatus::ForwardedHttpError),
        pb::SignalStatus::ForwardedGenericError => Some(SignalStatus::ForwardedGenericError),
        pb::SignalStatus::Discarded => Some(SignalStatus::Discarded),
        pb::SignalStatus::Error => Some(SignalStatus::Error),
    })
}

pub fn location(field: &str, value: i32) -> Result<SignalLocation, DomainError> {
    optional_location(field, value)?
        .ok_or_else(|| DomainError::invalid(field, "must be set to a pipeline location"))
}

pub fn optional_location(field: &str, value: i32) -> Result<Option<SignalLocation>, DomainError> {
    let location = pb::SignalLocation::try_from(value)
        .map_err(|_| DomainError::invalid(field, format!("unknown location {value}")))?;
    Ok(match location {
        pb::SignalLocation::Unspecified => None,
        pb::SignalLocation::ProcessingQueue => Some(SignalLocation::ProcessingQueue),
        pb::SignalLocation::ApprovedQueue => Some(SignalLocation::ApprovedQueue),
        pb::SignalLocation::WorkerProcessing => Some(SignalLocation::WorkerProcessing),
        pb::SignalLocation::WorkerForwarding => Some(SignalLocation::WorkerForwarding),
        pb::SignalLocation::Completed => Some(SignalLocation::Completed),
        pb::SignalLocation::Discarded => Some(SignalLocation::Discarded),
    })
}

pub fn uuid(field: &str, value: &str) -> Result<Uuid, DomainError> {
    Uuid::parse_str(value)
        .map_err(|_| DomainError::invalid(field, format!("{value:?} is not a UUID")))
}

/// A timestamp from a request: a valid one that PostgreSQL can hold, cut to
/// the microseconds it keeps, so what is answered from memory is what a
/// later read returns.
pub fn timestamp(
    field: &str,
    value: &prost_types::Timestamp,
) -> Result<DateTime<Utc>, DomainError> {
    let at = u32::try_from(value.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .and_then(|nanos| DateTime::from_timestamp(value.seconds, nanos))
        .ok_or_else(|| DomainError::invalid(field, "timestamp out of range"))?;
    rules::storable_time(field, at.trunc_subsecs(6))
}

pub fn to_timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

pub fn duration(field: &str, value: &prost_types::Duration) -> Result<TimeDelta, DomainError> {
    if value.seconds < 0 || value.nanos < 0 {
        return Err(DomainError::invalid(field, "must not be negative"));
    }
    let delta = u32::try_from(value.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .and_then(|nanos| TimeDelta::new(value.seconds, nanos))
        .ok_or_else(|| DomainError::invalid(field, "duration out of range"))?;
    rules::storable_duration(field, delta)
}

pub fn to_duration(delta: TimeDelta) -> prost_types::Duration {
    prost_types::Duration {
        seconds: delta.num_seconds(),
        nanos: delta.subsec_nanos(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_protobuf() {
        for status in SignalStatus::ALL {
            let wire = status_to_proto(status) as i32;
            assert_eq!(super::status("s", wire), Ok(status));
        }
        assert!(super::status("event_type", 0).is_err());
        assert!(super::status("event_type", 99).is_err());
    }

    #[test]
    fn refuses_times_and_durations_postgres_cannot_hold() {
        let at = |seconds, nanos| timestamp("t", &prost_types::Timestamp { seconds, nanos });
        assert!(at(0, 0).is_ok());
        assert!(at(0, -1).is_err());
        assert!(at(0, 1_000_000_000).is_err());
        // 10000-01-01 is fine for PostgreSQL; 5000 BC is not.
        assert!(at(253_402_300_800, 0).is_ok());
        assert!(at(-219_950_000_000, 0).is_err());
        assert!(at(i64::MIN, 0).is_err());
        let span = |seconds| duration("d", &prost_types::Duration { seconds, nanos: 0 });
        assert!(span(3_600).is_ok());
        assert!(span(i64::MAX / 1_000_000 + 1).is_err());
        assert!(span(i64::MAX / 1_000).is_err());
    }

    #[test]
    fn times_keep_the_microseconds_postgres_keeps() {
        let at = timestamp(
            "t",
            &prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 123_456_789,
            },
        );
        assert_eq!(at.map(|t| t.timestamp_subsec_nanos()), Ok(123_456_000));
    }
}
