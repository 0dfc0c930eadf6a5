//! What an operator command can fail with. Every variant's message says what
//! went wrong and, where it helps, what to do; [`AdminError::exit_code`] is
//! the one place that turns failures into exit codes.

use audit_db::DbError;
use audit_migrations::MigrationError;
use chrono::NaiveDate;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    /// A destructive command without `--yes`.
    #[error("refusing to {0} without --yes")]
    NeedsConfirmation(String),
    /// Bad input: a flag, a file's content, a day.
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
    /// Another run of the same job holds its cluster-wide lock.
    #[error("another {0} run is in progress (its lock is held); nothing was done")]
    Busy(&'static str),
    #[error("day {0} was never archived (no manifest at {1})")]
    NotArchived(NaiveDate, String),
    /// An archive that does not match its manifest, or a manifest that does
    /// not match the database.
    #[error("archive {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("archive store: {0}")]
    Store(#[from] object_store::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A day or table in a state this command cannot continue from.
    #[error("{0}")]
    State(String),
}

impl AdminError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn corrupt(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// 1 is reserved for "ran, and found differences" (check, verify); every
    /// failure is 2, like a usage error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Db(_)
            | AdminError::Migration(_)
            | AdminError::NeedsConfirmation(_)
            | AdminError::Invalid { .. }
            | AdminError::Busy(_)
            | AdminError::NotArchived(..)
            | AdminError::Corrupt { .. }
            | AdminError::Store(_)
            | AdminError::Io(_)
            | AdminError::State(_) => 2,
        }
    }
}

impl From<diesel::result::Error> for AdminError {
    fn from(error: diesel::result::Error) -> Self {
        Self::Db(DbError::from(error))
    }
}
