//! Everything a writer call can fail with, and the ONE mapping of it to a
//! gRPC status.

use audit_core::DomainError;
use audit_db::DbError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The request broke a rule; names the field.
    #[error(transparent)]
    Invalid(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] DbError),
    /// No capacity left for this call; the caller should back off and retry.
    #[error("writer saturated: {0}")]
    Saturated(&'static str),
    /// The message is larger than the service accepts.
    #[error("{0}")]
    TooLarge(String),
    #[error(
        "the writer is shutting down, retry on another instance (an Ingest producer resends the chunks not acknowledged)"
    )]
    ShuttingDown,
    /// A task of the writer itself failed: a bug.
    #[error("{0}")]
    Bug(String),
}

impl From<WriteError> for Status {
    fn from(error: WriteError) -> Self {
        let message = error.to_string();
        match error {
            WriteError::Invalid(_) => Status::invalid_argument(message),
            WriteError::Store(error) => audit_wire::db_status(error),
            WriteError::Saturated(_) | WriteError::TooLarge(_) => {
                Status::resource_exhausted(message)
            }
            WriteError::ShuttingDown => Status::unavailable(message),
            WriteError::Bug(_) => {
                tracing::error!(error = %message, "writer bug");
                Status::internal(message)
            }
        }
    }
}
