//! What can go wrong between a service and PostgreSQL, classified by what a
//! caller can do about it. This crate knows no gRPC: each service maps these
//! variants to its own status codes (see the services' `error.rs`).

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DbError {
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} {id} already exists with different content: {reason}")]
    Conflict {
        what: &'static str,
        id: String,
        reason: String,
    },
    /// The connection was lost or refused, the pool could not hand one out
    /// in time, or the server is starting, stopping or full. Safe to retry.
    #[error("database unavailable, retry later: {0}")]
    Unavailable(String),
    /// The transaction lost a serialization race or a deadlock and was
    /// rolled back. Safe to retry.
    #[error("transaction aborted, retry: {0}")]
    Aborted(String),
    /// The replica has not replayed the caller's consistency token in time.
    #[error("replica has replayed up to {replayed} but the consistency token asks for {wanted}")]
    ReplicaBehind { wanted: String, replayed: String },
    #[error("statement timed out: {0}")]
    Timeout(String),
    /// Refused by the database because the connection is read-only.
    #[error("read-only connection: {0}")]
    ReadOnly(String),
    /// A value the database refuses to store (SQLSTATE class 22, data
    /// exception) that validation let through.
    #[error("value refused by the database: {0}")]
    BadValue(String),
    /// An event (or a signal's `received` event) whose time falls on a day
    /// `signal_events` has no partition for: a day past retention, whose
    /// partition was archived and dropped, or one further ahead than the
    /// partitions made in advance. The table has no default partition (it
    /// would stop retention from detaching concurrently), so PostgreSQL
    /// refuses the row and the statement fails whole: nothing was written.
    #[error(
        "timestamp {}: signal_events has no partition for day {} (past retention, or further ahead than the partitions made in advance); nothing was written",
        .at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        .at.date_naive()
    )]
    NoPartition { at: DateTime<Utc> },
    /// Anything else: a bug in a statement or in the schema.
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
        Self::BatchItem {
            item,
            source: Box::new(self),
        }
    }

    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }
}

/// Server messages that mark a failure as the server's state, not the
/// statement's. diesel-async does not expose the SQLSTATE of errors outside
/// a few constraint classes, so the rest is told apart by the server's
/// message (the clusters this project starts, and managed PostgreSQL, report
/// in English; `lc_messages` must stay `C` or `en_*` for this to hold).
const UNAVAILABLE: &[&str] = &[
    "terminating connection",     // 57P01 admin / 57P02 crash shutdown
    "the database system is",     // 57P03 starting up, shutting down, in recovery
    "too many clients already",   // 53300
    "too many connections",       // 53300 per role or database
    "remaining connection slots", // 53300 reserved slots
    "server closed the connection",
    "connection closed",
];
const ABORTED: &[&str] = &["deadlock detected", "could not serialize access"];
const TIMEOUT: &[&str] = &[
    "statement timeout",
    "lock timeout",
    "canceling statement due to user request",
];
const BAD_VALUE: &[&str] = &[
    "invalid byte sequence",
    "unsupported unicode escape sequence",
    "value too long",
    "out of range",
    "invalid input syntax",
    "too long for tsvector", // 54000
];

/// The row PostgreSQL could not route to a partition of `signal_events`:
/// its partition key from the error's detail, `Partition key of the failing
/// row contains (ts) = (2026-08-22 09:00:00+00).` (ISO `DateStyle`, the
/// default).
fn unrouted_time(message: &str, details: Option<&str>) -> Option<DateTime<Utc>> {
    if !message.starts_with("no partition of relation \"signal_events\"") {
        return None;
    }
    let value = details?.split_once("= (")?.1.rsplit_once(')')?.0;
    // Years before 1 AD print as "4714-11-24 00:00:00+00 BC": year N BC is
    // the proleptic year 1 - N.
    let (value, bc) = match value.strip_suffix(" BC") {
        Some(value) => (value, true),
        None => (value, false),
    };
    let at = DateTime::parse_from_str(value, "%Y-%m-%d %H:%M:%S%.f%#z").ok()?;
    let at = if bc { at.with_year(1 - at.year())? } else { at };
    Some(at.with_timezone(&Utc))
}

fn classify(message: &str) -> Option<fn(String) -> DbError> {
    let lower = message.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    if has(UNAVAILABLE) {
        Some(DbError::Unavailable)
    } else if has(ABORTED) {
        Some(DbError::Aborted)
    } else if has(TIMEOUT) {
        Some(DbError::Timeout)
    } else if has(BAD_VALUE) {
        Some(DbError::BadValue)
    } else {
        None
    }
}

impl From<diesel::result::Error> for DbError {
    fn from(error: diesel::result::Error) -> Self {
        use diesel::result::{DatabaseErrorKind as Kind, Error};
        match &error {
            Error::DatabaseError(Kind::ReadOnlyTransaction, info) => {
                Self::ReadOnly(info.message().to_owned())
            }
            // No SQLSTATE at all: the command never reached the server or
            // its answer never came back.
            Error::DatabaseError(Kind::ClosedConnection | Kind::UnableToSendCommand, info) => {
                Self::Unavailable(info.message().to_owned())
            }
            Error::DatabaseError(Kind::SerializationFailure, info) => {
                Self::Aborted(info.message().to_owned())
            }
            Error::DatabaseError(_, info) => {
                if let Some(at) = unrouted_time(info.message(), info.details()) {
                    return Self::NoPartition { at };
                }
                match classify(info.message()) {
                    Some(variant) => variant(info.message().to_owned()),
                    None => Self::Query(error),
                }
            }
            Error::BrokenTransactionManager => {
                Self::Unavailable("the connection's transaction state was lost".into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_server_messages() {
        let kind = |m: &str| classify(m).map(|f| std::mem::discriminant(&f(String::new())));
        let of = |e: DbError| Some(std::mem::discriminant(&e));
        assert_eq!(
            kind("terminating connection due to administrator command"),
            of(DbError::Unavailable(String::new()))
        );
        assert_eq!(
            kind("the database system is in recovery mode"),
            of(DbError::Unavailable(String::new()))
        );
        assert_eq!(
            kind("sorry, too many clients already"),
            of(DbError::Unavailable(String::new()))
        );
        assert_eq!(
            kind("deadlock detected"),
            of(DbError::Aborted(String::new()))
        );
        assert_eq!(
            kind("canceling statement due to statement timeout"),
            of(DbError::Timeout(String::new()))
        );
        assert_eq!(
            kind("invalid byte sequence for encoding \"UTF8\": 0x00"),
            of(DbError::BadValue(String::new()))
        );
        assert_eq!(kind("syntax error at or near \"SELEC\""), None);
    }

    #[test]
    fn reads_the_unrouted_time() {
        let message = "no partition of relation \"signal_events\" found for row";
        let at = unrouted_time(
            message,
            Some("Partition key of the failing row contains (ts) = (2026-08-22 09:00:00.25+00)."),
        );
        assert_eq!(
            at.map(|t| t.to_rfc3339()),
            Some("2026-08-22T09:00:00.250+00:00".to_owned())
        );
        let bc = unrouted_time(
            message,
            Some("Partition key of the failing row contains (ts) = (4714-11-24 00:00:00+00 BC)."),
        );
        assert_eq!(
            bc.map(|t| t.to_rfc3339()),
            Some("-4713-11-24T00:00:00+00:00".to_owned())
        );
        let shifted = unrouted_time(
            message,
            Some("Partition key of the failing row contains (ts) = (2026-08-22 23:30:00+05:30)."),
        );
        assert_eq!(
            shifted.map(|t| t.to_rfc3339()),
            Some("2026-08-22T18:00:00+00:00".to_owned())
        );
        assert_eq!(unrouted_time(message, None), None);
        assert_eq!(
            unrouted_time(
                "no partition of relation \"other\" found for row",
                Some("Partition key of the failing row contains (ts) = (2026-08-22 09:00:00+00).")
            ),
            None
        );
    }
}
