use audit_db::DbError;
use tonic::{Code, Status};

/// The gRPC status for a storage failure. Retryable failures say so in
/// their message; INTERNAL is kept for what can only be a bug.
pub fn db_status(error: DbError) -> Status {
    let message = error.to_string();
    match error {
        DbError::NotFound { .. } => Status::not_found(message),
        DbError::Conflict { .. } => Status::already_exists(message),
        DbError::Unavailable(_) | DbError::ReplicaBehind { .. } => Status::unavailable(message),
        DbError::Aborted(_) => Status::aborted(message),
        DbError::Timeout(_) => Status::deadline_exceeded(message),
        DbError::ReadOnly(_) | DbError::NoPartition { .. } => Status::failed_precondition(message),
        DbError::BadValue(_) => Status::invalid_argument(message),
        DbError::BatchItem { item, source } => {
            let inner = db_status(*source);
            Status::new(inner.code(), format!("{item}: {}", inner.message()))
        }
        DbError::Query(error) => {
            tracing::error!(%error, "unexpected database error");
            Status::new(Code::Internal, "internal database error")
        }
    }
}
