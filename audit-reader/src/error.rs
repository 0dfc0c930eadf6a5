//! Everything a reader call can fail with, and the ONE mapping of it to a
//! gRPC status.

use audit_core::DomainError;
use audit_db::DbError;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The request broke a rule; names the field.
    #[error(transparent)]
    Invalid(#[from] DomainError),
    #[error(transparent)]
    Store(#[from] DbError),
    /// A long call ended because the reader is stopping; the caller resumes
    /// elsewhere (tails from their last resume token).
    #[error(
        "the reader is shutting down, retry on another instance (a StreamEvents tail resumes with its last resume_token)"
    )]
    ShuttingDown,
    /// Something the reader itself got wrong: a bug.
    #[error("{0}")]
    Bug(String),
}

impl From<ReadError> for Status {
    fn from(error: ReadError) -> Self {
        let message = error.to_string();
        match error {
            ReadError::Invalid(_) => Status::invalid_argument(message),
            ReadError::Store(error) => audit_wire::db_status(error),
            ReadError::ShuttingDown => Status::unavailable(message),
            ReadError::Bug(_) => {
                tracing::error!(error = %message, "reader bug");
                Status::internal(message)
            }
        }
    }
}

impl From<diesel::result::Error> for ReadError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Store(error.into())
    }
}

impl<E: std::fmt::Display> From<bb8::RunError<E>> for ReadError {
    fn from(error: bb8::RunError<E>) -> Self {
        Self::Store(error.into())
    }
}

/// Runs a handler's work, where `?` turns any failure into a [`ReadError`],
/// and answers with it or with the error's one mapping to a status.
pub async fn respond<T>(
    work: impl Future<Output = Result<T, ReadError>>,
) -> Result<tonic::Response<T>, Status> {
    work.await.map(tonic::Response::new).map_err(Status::from)
}
