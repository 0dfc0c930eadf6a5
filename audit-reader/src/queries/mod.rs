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

/// What a page or resume token carries. Tokens come back from clients, so
/// a decoded one is checked like any other input: its times must be ones
/// PostgreSQL can compare with (a forged or corrupted token could carry
/// 5000 BC, which the database would refuse mid-query).
pub trait TokenCursor: DeserializeOwned {
    fn check(&self, field: &str) -> Result<(), DomainError>;
}

pub fn decode_token<T: TokenCursor>(field: &str, token: &str) -> Result<T, DomainError> {
    let cursor: T = URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| DomainError::invalid(field, "not a token issued by this service"))?;
    cursor.check(field)?;
    Ok(cursor)
}

/// Hostile tokens for machines (the `fuzz/` target and the proptests): any
/// string either decodes into a usable cursor of every kind or is refused,
/// never a panic; a decoded cursor survives its own round trip.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_token(token: &str) {
    fn round_trip<T: TokenCursor + Serialize + PartialEq + std::fmt::Debug>(token: &str) {
        if let Ok(cursor) = decode_token::<T>("page_token", token) {
            let again = decode_token::<T>("page_token", &encode_token(&cursor));
            assert_eq!(again.as_ref(), Ok(&cursor), "token {token:?}");
        }
    }
    round_trip::<signals::SignalCursor>(token);
    round_trip::<events::EventCursor>(token);
    round_trip::<tail::TailPosition>(token);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn token(json: &str) -> String {
        URL_SAFE_NO_PAD.encode(json)
    }

    /// Found by the proptest below: a well-formed token from before
    /// PostgreSQL's first day reached the database and failed there.
    #[test]
    fn a_token_with_an_unstorable_time_is_refused() {
        let forged = token(r#"{"fingerprint":1,"ts":"-5000-01-01T00:00:00Z","sequence":3}"#);
        let refused = decode_token::<events::EventCursor>("page_token", &forged).unwrap_err();
        assert!(refused.to_string().contains("page_token"), "{refused}");
        let forged = token(r#"{"committed_at":"-5000-01-01T00:00:00Z","sequence":3}"#);
        assert!(decode_token::<tail::TailPosition>("resume_token", &forged).is_err());
        fuzz_token(&forged);
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
        decode_token::<signals::SignalCursor>("page_token", &seed("signals")).unwrap();
        decode_token::<events::EventCursor>("page_token", &seed("events")).unwrap();
        decode_token::<tail::TailPosition>("resume_token", &seed("tail")).unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn any_string_is_a_token_or_refused(text in "\\PC{0,200}") {
            fuzz_token(&text);
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
                fuzz_token(&token(&json));
            }
        }
    }
}
