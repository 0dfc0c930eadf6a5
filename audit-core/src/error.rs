use thiserror::Error;

/// A request that cannot be applied, with the field (protobuf path) at fault.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },
}

impl DomainError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Prefixes the field with the path of the message that holds it
    /// (`signals[3].` + `price`), so batch errors point at the item.
    pub fn within(self, prefix: &str) -> Self {
        match self {
            Self::Invalid { field, reason } => Self::Invalid {
                field: format!("{prefix}{field}"),
                reason,
            },
        }
    }
}
