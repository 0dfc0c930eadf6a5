//! The reader's queries, grouped by what they read: [`signals`] (one signal
//! with its timeline, keyset pages of signals), [`events`] (keyset pages of
//! events), [`tail`] (new events in commit order) and [`analytics`]
//! (rollups, views and raw-event aggregates). Page tokens carry the last
//! row's sort key, so a page costs an index range scan however deep the
//! client has paged.

pub mod analytics;
pub mod events;
pub mod signals;
pub mod tail;

use audit_core::DomainError;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Serialize, de::DeserializeOwned};

pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 1000;

/// A page size from a request: 0 means the default.
pub fn page_size(field: &str, requested: i32) -> Result<i64, DomainError> {
    match i64::from(requested) {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if (1..=MAX_PAGE_SIZE).contains(&n) => Ok(n),
        n => Err(DomainError::invalid(
            field,
            format!("{n} is outside 1..={MAX_PAGE_SIZE}"),
        )),
    }
}

pub fn encode_token<T: Serialize>(cursor: &T) -> String {
    // Serialising these plain structs cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

pub fn decode_token<T: DeserializeOwned>(field: &str, token: &str) -> Result<T, DomainError> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| DomainError::invalid(field, "not a token issued by this service"))
}
