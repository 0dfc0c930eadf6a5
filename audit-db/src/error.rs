use audit_core::DomainError;
use thiserror::Error;

/// What can go wrong between a service and PostgreSQL.
#[derive(Debug, Error)]
pub enum DbError {
    #[error(transparent)]
    Invalid(#[from] DomainError),
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {id} already exists with different content: {reason}")]
    Conflict {
        what: &'static str,
        id: String,
        reason: String,
    },
    /// The pool could not hand out a connection in time, or the server is gone.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The replica has not replayed the caller's consistency token in time.
    #[error("replica has replayed up to {replayed} but the consistency token asks for {wanted}")]
    ReplicaBehind { wanted: String, replayed: String },
    /// The writer has no capacity left; the caller should back off and retry.
    #[error("writer saturated: {0}")]
    Overloaded(String),
    #[error("statement timed out: {0}")]
    Timeout(String),
    /// Refused by the database because the connection is read-only.
    #[error("read-only connection: {0}")]
    ReadOnly(String),
    #[error("database error: {0}")]
    Query(diesel::result::Error),
    /// An error about one item of a batch; `item` is its field path (`events[3]`).
    #[error("{item}: {source}")]
    BatchItem {
        item: String,
        #[source]
        source: Box<DbError>,
    },
}

impl DbError {
    pub fn in_item(self, item: String) -> Self {
        match self {
            Self::Invalid(domain) => Self::Invalid(domain.within(&format!("{item}."))),
            other => Self::BatchItem {
                item,
                source: Box::new(other),
            },
        }
    }
}

impl From<diesel::result::Error> for DbError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        match &error {
            Error::DatabaseError(DatabaseErrorKind::ReadOnlyTransaction, info) => {
                Self::ReadOnly(info.message().to_owned())
            }
            Error::DatabaseError(DatabaseErrorKind::ClosedConnection, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            Error::DatabaseError(_, info) if info.message().contains("statement timeout") => {
                Self::Timeout(info.message().to_owned())
            }
            _ => Self::Query(error),
        }
    }
}

impl<E: std::fmt::Display> From<bb8::RunError<E>> for DbError {
    fn from(error: bb8::RunError<E>) -> Self {
        match error {
            bb8::RunError::User(e) => Self::Unavailable(e.to_string()),
            bb8::RunError::TimedOut => {
                Self::Unavailable("timed out waiting for a pooled connection".into())
            }
        }
    }
}

/// The one mapping from database-layer errors to gRPC statuses, used by both
/// services so a given failure reads the same whichever one reports it.
impl From<DbError> for tonic::Status {
    fn from(error: DbError) -> Self {
        use diesel::result::{DatabaseErrorKind, Error};
        use tonic::Status;
        let message = error.to_string();
        match error {
            DbError::Invalid(_) => Status::invalid_argument(message),
            DbError::NotFound { .. } => Status::not_found(message),
            DbError::Conflict { .. } => Status::already_exists(message),
            DbError::Unavailable(_) | DbError::ReplicaBehind { .. } => Status::unavailable(message),
            DbError::Timeout(_) => Status::deadline_exceeded(message),
            DbError::Overloaded(_) => Status::resource_exhausted(message),
            DbError::ReadOnly(_) => Status::failed_precondition(message),
            DbError::BatchItem { item, source } => {
                let inner = Status::from(*source);
                Status::new(inner.code(), format!("{item}: {}", inner.message()))
            }
            DbError::Query(Error::DatabaseError(kind, info)) => match kind {
                DatabaseErrorKind::UniqueViolation => {
                    Status::already_exists(info.message().to_owned())
                }
                DatabaseErrorKind::ForeignKeyViolation => {
                    Status::not_found(info.message().to_owned())
                }
                DatabaseErrorKind::CheckViolation | DatabaseErrorKind::NotNullViolation => {
                    Status::invalid_argument(info.message().to_owned())
                }
                DatabaseErrorKind::SerializationFailure => {
                    Status::aborted(info.message().to_owned())
                }
                _ => {
                    tracing::error!(error = %message, "unexpected database error");
                    Status::internal("internal database error")
                }
            },
            DbError::Query(error) => {
                tracing::error!(%error, "unexpected database error");
                Status::internal("internal database error")
            }
        }
    }
}

/// Validation failures are INVALID_ARGUMENT, through the same mapping.
pub fn invalid(error: DomainError) -> tonic::Status {
    tonic::Status::from(DbError::from(error))
}
