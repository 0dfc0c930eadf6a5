use crate::DomainError;
use diesel_derive_enum::DbEnum;

/// The statuses the pipeline really has; an event's type is the status it
/// moves its signal to. PostgreSQL type `signal_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, DbEnum)]
pub enum SignalStatus {
    Received,
    QueuedProcessing,
    Processing,
    Approved,
    Rejected,
    QueuedForwarding,
    Forwarding,
    ForwardedSuccess,
    ForwardedTimeout,
    ForwardedHttpError,
    ForwardedGenericError,
    Discarded,
    Error,
}

impl SignalStatus {
    pub const ALL: [SignalStatus; 13] = [
        Self::Received,
        Self::QueuedProcessing,
        Self::Processing,
        Self::Approved,
        Self::Rejected,
        Self::QueuedForwarding,
        Self::Forwarding,
        Self::ForwardedSuccess,
        Self::ForwardedTimeout,
        Self::ForwardedHttpError,
        Self::ForwardedGenericError,
        Self::Discarded,
        Self::Error,
    ];

    /// Statuses after which the signal's life is over. A signal's
    /// `total_processing_time` is the time from its creation to the LATEST
    /// terminal event (see [`crate::SignalState`]). PostgreSQL has the same
    /// definition as `signal_status_is_terminal(signal_status)`; a test
    /// checks that the two agree.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Rejected
                | Self::ForwardedSuccess
                | Self::ForwardedTimeout
                | Self::ForwardedHttpError
                | Self::ForwardedGenericError
                | Self::Discarded
                | Self::Error
        )
    }

    /// Steps whose second and later occurrences for one signal are retries.
    pub fn starts_work(self) -> bool {
        matches!(self, Self::Processing | Self::Forwarding)
    }

    /// The name used in PostgreSQL and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::QueuedProcessing => "queued_processing",
            Self::Processing => "processing",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::QueuedForwarding => "queued_forwarding",
            Self::Forwarding => "forwarding",
            Self::ForwardedSuccess => "forwarded_success",
            Self::ForwardedTimeout => "forwarded_timeout",
            Self::ForwardedHttpError => "forwarded_http_error",
            Self::ForwardedGenericError => "forwarded_generic_error",
            Self::Discarded => "discarded",
            Self::Error => "error",
        }
    }

    /// The status PostgreSQL or a client spelled `name`; an unknown name is
    /// an error, never a default.
    pub fn from_name(field: &str, name: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| DomainError::invalid(field, format!("unknown status {name:?}")))
    }
}

/// The component holding a signal. PostgreSQL type `signal_location`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, DbEnum)]
pub enum SignalLocation {
    ProcessingQueue,
    ApprovedQueue,
    WorkerProcessing,
    WorkerForwarding,
    Completed,
    Discarded,
}

impl SignalLocation {
    pub const ALL: [SignalLocation; 6] = [
        Self::ProcessingQueue,
        Self::ApprovedQueue,
        Self::WorkerProcessing,
        Self::WorkerForwarding,
        Self::Completed,
        Self::Discarded,
    ];

    /// The location PostgreSQL or a file spelled `name`; unknown is an error.
    pub fn from_name(field: &str, name: &str) -> Result<Self, DomainError> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == name)
            .ok_or_else(|| DomainError::invalid(field, format!("unknown location {name:?}")))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ProcessingQueue => "processing_queue",
            Self::ApprovedQueue => "approved_queue",
            Self::WorkerProcessing => "worker_processing",
            Self::WorkerForwarding => "worker_forwarding",
            Self::Completed => "completed",
            Self::Discarded => "discarded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_fail() {
        for status in SignalStatus::ALL {
            assert_eq!(SignalStatus::from_name("s", status.as_str()), Ok(status));
        }
        assert!(SignalStatus::from_name("s", "unknown").is_err());
        assert!(SignalStatus::from_name("s", "").is_err());
    }
}
