//! The reader's queries, grouped by what they read: [`signals`] (one signal
//! with its timeline, keyset pages of signals), [`events`] (keyset pages of
//! events), [`tail`] (new events in commit order) and [`analytics`]
//! (rollups, views and raw-event aggregates). Page tokens carry the last
//! row's sort key, so a page costs an index range scan however deep the
//! client has paged; the tokens and their cursors are `audit_wire::token`'s.

pub mod analytics;
pub mod events;
pub mod signals;
pub mod tail;

use audit_core::DomainError;

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
