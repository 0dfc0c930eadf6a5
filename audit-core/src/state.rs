//! The signal state machine: how a signal's current state follows from its
//! events. The writer applies new events through [`SignalState::apply`]; the
//! rules are order-independent, so events that arrive late (or out of order
//! across retries) give the same state as if they had arrived in time order.

use crate::{NewEvent, SignalLocation, SignalStatus};
use chrono::{DateTime, TimeDelta, Utc};

/// What a signal row keeps about its life besides the immutable request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalState {
    pub status: SignalStatus,
    pub location: SignalLocation,
    pub created_at: DateTime<Utc>,
    /// The timestamp of the event that set `status` and `location`.
    pub updated_at: DateTime<Utc>,
    /// From creation to the latest terminal event, when there is one.
    pub total_processing_time: Option<TimeDelta>,
    pub error_count: i32,
    pub retry_count: i32,
}

impl SignalState {
    /// A signal as it is stored when it is received: no event applied yet.
    pub fn received(at: DateTime<Utc>) -> Self {
        Self {
            status: SignalStatus::Received,
            location: SignalLocation::ProcessingQueue,
            created_at: at,
            updated_at: at,
            total_processing_time: None,
            error_count: 0,
            retry_count: 0,
        }
    }

    /// Applies one new event. `earlier_starts` is how many events of the same
    /// type the signal already had: a second processing or forwarding step
    /// is a retry.
    pub fn apply(&mut self, event: &NewEvent, earlier_starts: i64) {
        // The latest event by timestamp owns the current state; a late event
        // is history only. Ties go to the one applied last.
        if event.timestamp >= self.updated_at {
            self.status = event.event_type;
            self.location = event.location;
            self.updated_at = event.timestamp;
        }
        if event.is_error() {
            self.error_count += 1;
        }
        if event.event_type.starts_work() && earlier_starts > 0 {
            self.retry_count += 1;
        }
        if event.event_type.is_terminal() {
            // The latest terminal event: a timeout followed by a successful
            // retry counts until the success, whatever the arrival order.
            let elapsed = (event.timestamp - self.created_at).max(TimeDelta::zero());
            if self
                .total_processing_time
                .is_none_or(|current| current < elapsed)
            {
                self.total_processing_time = Some(elapsed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;
    use uuid::Uuid;

    fn event(
        kind: SignalStatus,
        location: SignalLocation,
        offset_ms: i64,
        failed: bool,
    ) -> NewEvent {
        NewEvent {
            event_id: Uuid::new_v4(),
            signal_id: Uuid::nil(),
            event_type: kind,
            location,
            timestamp: start() + TimeDelta::milliseconds(offset_ms),
            worker_id: None,
            details: None,
            error_info: None,
            http_status: failed.then_some(503),
            response_data: None,
            recorded_by: None,
        }
    }

    fn start() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default()
    }

    /// Applies events in the given order, counting starts as the writer does.
    fn replay(events: &[NewEvent]) -> SignalState {
        let mut state = SignalState::received(start());
        let mut starts: HashMap<SignalStatus, i64> = HashMap::new();
        for e in events {
            let seen = starts.entry(e.event_type).or_insert(0);
            state.apply(e, *seen);
            if e.event_type.starts_work() {
                *seen += 1;
            }
        }
        state
    }

    #[test]
    fn a_late_event_is_history_only() {
        let forwarded = event(
            SignalStatus::ForwardedSuccess,
            SignalLocation::Completed,
            900,
            false,
        );
        let processing = event(
            SignalStatus::Processing,
            SignalLocation::WorkerProcessing,
            100,
            false,
        );
        let state = replay(&[forwarded, processing]);
        assert_eq!(state.status, SignalStatus::ForwardedSuccess);
        assert_eq!(state.location, SignalLocation::Completed);
        assert_eq!(
            state.total_processing_time,
            Some(TimeDelta::milliseconds(900))
        );
    }

    #[test]
    fn counts_retries_errors_and_the_latest_terminal_event() {
        let state = replay(&[
            event(
                SignalStatus::Forwarding,
                SignalLocation::WorkerForwarding,
                10,
                false,
            ),
            event(
                SignalStatus::ForwardedTimeout,
                SignalLocation::WorkerForwarding,
                20,
                true,
            ),
            event(
                SignalStatus::Forwarding,
                SignalLocation::WorkerForwarding,
                30,
                false,
            ),
            event(
                SignalStatus::ForwardedSuccess,
                SignalLocation::Completed,
                40,
                false,
            ),
        ]);
        assert_eq!(state.retry_count, 1);
        assert_eq!(state.error_count, 1);
        assert_eq!(
            state.total_processing_time,
            Some(TimeDelta::milliseconds(40))
        );
        assert_eq!(state.status, SignalStatus::ForwardedSuccess);
    }

    #[test]
    fn events_before_creation_count_zero_processing_time() {
        let state = replay(&[event(
            SignalStatus::Rejected,
            SignalLocation::Discarded,
            -50,
            false,
        )]);
        assert_eq!(state.total_processing_time, Some(TimeDelta::zero()));
        assert_eq!(state.status, SignalStatus::Received);
    }

    const LOCATIONS: [SignalLocation; 6] = [
        SignalLocation::ProcessingQueue,
        SignalLocation::ApprovedQueue,
        SignalLocation::WorkerProcessing,
        SignalLocation::WorkerForwarding,
        SignalLocation::Completed,
        SignalLocation::Discarded,
    ];

    /// Up to 12 events with distinct timestamps within ±1 s of creation.
    fn timeline() -> impl Strategy<Value = Vec<NewEvent>> {
        let one = (
            0..SignalStatus::ALL.len(),
            0..LOCATIONS.len(),
            any::<bool>(),
            -1_000i64..1_000,
        );
        proptest::collection::vec(one, 0..12).prop_map(|specs| {
            let mut seen = std::collections::HashSet::new();
            specs
                .into_iter()
                .filter(|spec| seen.insert(spec.3))
                .map(|(kind, location, failed, offset)| {
                    event(SignalStatus::ALL[kind], LOCATIONS[location], offset, failed)
                })
                .collect()
        })
    }

    proptest! {
        /// Any arrival order of the same events gives the state that time
        /// order gives. Timestamps are distinct: for equal ones the rule is
        /// "the later arrival wins", and time order itself is ambiguous.
        #[test]
        fn arrival_order_does_not_matter(
            (events, arrival) in timeline().prop_flat_map(|events| {
                (Just(events.clone()), Just(events).prop_shuffle())
            })
        ) {
            let mut in_time = events;
            in_time.sort_by_key(|e| e.timestamp);
            prop_assert_eq!(replay(&arrival), replay(&in_time));
        }
    }
}
