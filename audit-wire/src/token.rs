//! Page and resume tokens: what the reader hands a client to continue a
//! page or a tail later, as an opaque string (URL-safe base64 of JSON).
//! A page token carries the last row's sort key, so the next page costs an
//! index range scan however deep the client has paged; a resume token
//! carries where a tail stands.
//!
//! Tokens come back from clients, so [`decode_token`] checks a decoded one
//! like any other input. Here rather than in `audit-reader` so that the
//! fuzz target on token decoding (`fuzz/`) builds without the server.

use audit_core::DomainError;
use audit_core::rules::storable_time;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// What a list of signals is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SortField {
    CreatedAt,
    UpdatedAt,
    ProcessingTime,
    ErrorCount,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    Ascending,
    Descending,
}

/// Where the previous page of signals ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SignalCursor {
    /// Identifies the filter and sort the token was issued for.
    pub fingerprint: u64,
    pub sort: SortField,
    pub direction: Direction,
    /// The last row's sort value: a timestamp or a count in microseconds or
    /// units; `None` for a signal without processing time.
    pub ts: Option<DateTime<Utc>>,
    pub n: Option<i64>,
    pub signal_id: Uuid,
}

/// Where the previous page of events ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventCursor {
    /// Identifies the filter the token was issued for.
    pub fingerprint: u64,
    pub ts: DateTime<Utc>,
    pub sequence: i64,
}

/// Where a tail stands: the last delivered event's commit time and sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailPosition {
    pub committed_at: DateTime<Utc>,
    pub sequence: i64,
    /// The tail's transaction-id floor in effect then (audit-reader's
    /// `queries::tail`). Absent in tokens issued before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<i64>,
}

/// What a page or resume token carries. A decoded one is checked like any
/// other input: its times must be ones PostgreSQL can compare with (a
/// forged or corrupted token could carry 5000 BC, which the database would
/// refuse mid-query).
pub trait TokenCursor: Serialize + DeserializeOwned {
    fn check(&self, field: &str) -> Result<(), DomainError>;
}

impl TokenCursor for SignalCursor {
    fn check(&self, field: &str) -> Result<(), DomainError> {
        match self.ts {
            Some(ts) => storable_time(field, ts).map(drop),
            None => Ok(()),
        }
    }
}

impl TokenCursor for EventCursor {
    fn check(&self, field: &str) -> Result<(), DomainError> {
        storable_time(field, self.ts).map(drop)
    }
}

impl TokenCursor for TailPosition {
    fn check(&self, field: &str) -> Result<(), DomainError> {
        if self.floor.is_some_and(|floor| floor < 0) {
            return Err(DomainError::invalid(
                field,
                "not a token issued by this service",
            ));
        }
        storable_time(field, self.committed_at).map(drop)
    }
}

pub fn encode_token<T: TokenCursor>(cursor: &T) -> String {
    // Serialising these plain structs cannot fail.
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(cursor).unwrap_or_default())
}

/// `token` from the request field `field`: a cursor of kind `T`, or
/// INVALID_ARGUMENT naming the field.
pub fn decode_token<T: TokenCursor>(field: &str, token: &str) -> Result<T, DomainError> {
    let cursor: T = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| DomainError::invalid(field, "not a token issued by this service"))?;
    cursor.check(field)?;
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::page_token;
    use proptest::prelude::*;

    fn token(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Found by the proptest below: a well-formed token from before
    /// PostgreSQL's first day reached the database and failed there.
    #[test]
    fn a_token_with_an_unstorable_time_is_refused() {
        let forged = token(r#"{"fingerprint":1,"ts":"-5000-01-01T00:00:00Z","sequence":3}"#);
        let refused = decode_token::<EventCursor>("page_token", &forged).unwrap_err();
        assert!(refused.to_string().contains("page_token"), "{refused}");
        let forged = token(r#"{"committed_at":"-5000-01-01T00:00:00Z","sequence":3}"#);
        assert!(decode_token::<TailPosition>("resume_token", &forged).is_err());
        page_token(&forged);
    }

    /// The fuzz target's committed seeds are tokens of each kind this
    /// service issues, so libFuzzer mutates from cursors that decode.
    #[test]
    fn fuzz_seeds_are_usable_tokens() {
        let seed = |name: &str| {
            let path = format!(
                "{}/../fuzz/seeds/page_token/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        decode_token::<SignalCursor>("page_token", &seed("signals")).unwrap();
        decode_token::<EventCursor>("page_token", &seed("events")).unwrap();
        decode_token::<TailPosition>("resume_token", &seed("tail")).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_string_is_a_token_or_refused(text in "\\PC{0,200}") {
            page_token(&text);
        }

        #[test]
        fn well_formed_tokens_with_any_values_are_usable_or_refused(
            fingerprint in any::<u64>(),
            seconds in any::<i64>(),
            sequence in any::<i64>(),
            n in proptest::option::of(any::<i64>()),
        ) {
            let Some(ts) = chrono::DateTime::from_timestamp(seconds, 0) else {
                return Ok(());
            };
            let ts = serde_json::to_string(&ts).unwrap_or_default();
            for json in [
                format!(r#"{{"fingerprint":{fingerprint},"ts":{ts},"sequence":{sequence}}}"#),
                format!(r#"{{"committed_at":{ts},"sequence":{sequence}}}"#),
                format!(
                    r#"{{"fingerprint":{fingerprint},"sort":"CreatedAt","direction":"Ascending","ts":{ts},"n":{},"signal_id":"6a1f2c1e-9b0d-4c55-8f43-0c3d5e2a7b19"}}"#,
                    n.map_or("null".to_owned(), |n| n.to_string())
                ),
            ] {
                page_token(&token(&json));
            }
        }
    }
}
