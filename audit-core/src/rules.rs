//! The rules a write request must pass, one function per kind of field.
//!
//! Everything a client can get wrong is caught here, before a transaction
//! starts, so a rejected request never leaves a trace in the database. That
//! includes what PostgreSQL itself would refuse, each found by sending it
//! to a real server (`integration-tests/tests/hostile.rs`):
//!
//! - NUL characters: `text` and `jsonb` cannot hold U+0000, so every text
//!   and JSON value is checked for them;
//! - text longer than its `VARCHAR(64)` column once normalised: upper-casing
//!   can lengthen a ticker (`ΐ` is one character, `Ϊ́` three);
//! - timestamps before PostgreSQL's first day (24 November 4714 BC; its last,
//!   in AD 294276, lies beyond what `chrono` represents);
//! - durations whose microseconds overflow an `interval`;
//! - event text whose full-text vector would pass PostgreSQL's 1 MiB
//!   tsvector limit.
//!
//! Prices need no bound beyond "finite and positive": `NUMERIC` without a
//! precision holds every finite `f64` exactly (1e300 and 5e-324 included).
//! Each function takes the field's name, used in the error.

use crate::{DomainError, normalise_ticker};
use bigdecimal::BigDecimal;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use std::str::FromStr;

/// Bounds on what one request may carry; all come from configuration.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest `original_signal_json`, `error_info_json`, `details` or `response_data`.
    pub max_payload_bytes: usize,
    /// How far ahead of the server clock a timestamp may be.
    pub max_clock_skew: TimeDelta,
    pub max_tags: usize,
    pub max_tag_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_payload_bytes: 64 * 1024,
            max_clock_skew: TimeDelta::minutes(5),
            max_tags: 32,
            max_tag_len: 64,
        }
    }
}

/// Ticker, side, action, worker id: short identifiers.
pub const MAX_SHORT_TEXT: usize = 64;
/// Free-text filters and search queries.
pub const MAX_QUERY_TEXT: usize = 256;
/// PostgreSQL refuses a tsvector of 1 MiB or more; an event's `details`,
/// `error_info` and `response_data` are indexed together (migration
/// `event_search`, `event_ticker_search`), and a vector is never larger than its text plus a few
/// bytes per word, so their sum stays well below.
pub const MAX_SEARCHABLE_TEXT: usize = 512 * 1024;

fn no_nul(field: &str, value: &str) -> Result<(), DomainError> {
    if value.contains('\0') {
        return Err(DomainError::invalid(
            field,
            "must not contain NUL (U+0000) characters",
        ));
    }
    Ok(())
}

/// A required short identifier, trimmed.
pub fn short_text(field: &str, value: &str) -> Result<String, DomainError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if value.len() > MAX_SHORT_TEXT {
        return Err(DomainError::invalid(
            field,
            format!("longer than {MAX_SHORT_TEXT} bytes"),
        ));
    }
    no_nul(field, value)?;
    Ok(value.to_owned())
}

/// Optional free text, stored as given; empty means absent.
pub fn optional_text(field: &str, value: &str, max: usize) -> Result<Option<String>, DomainError> {
    if value.len() > max {
        return Err(DomainError::invalid(
            field,
            format!("longer than {max} bytes"),
        ));
    }
    no_nul(field, value)?;
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// A filter or search string: trimmed, bounded; empty means "not filtered".
pub fn query_text(field: &str, value: &str) -> Result<Option<String>, DomainError> {
    let value = value.trim();
    optional_text(field, value, MAX_QUERY_TEXT)
}

/// The ticker as written and its normalised form (see [`normalise_ticker`]).
pub fn ticker(field: &str, value: &str) -> Result<(String, String), DomainError> {
    let ticker = short_text(field, value)?;
    let normalised = normalise_ticker(&ticker);
    if normalised.is_empty() {
        return Err(DomainError::invalid(
            field,
            "has no symbol after normalisation",
        ));
    }
    // The column counts characters; upper-casing can make more of them.
    let length = normalised.chars().count();
    if length > MAX_SHORT_TEXT {
        return Err(DomainError::invalid(
            field,
            format!("normalises to {length} characters, more than {MAX_SHORT_TEXT}"),
        ));
    }
    Ok((ticker, normalised))
}

pub fn price(field: &str, value: f64) -> Result<BigDecimal, DomainError> {
    if !value.is_finite() || value <= 0.0 {
        return Err(DomainError::invalid(
            field,
            format!("must be a finite number above 0, got {value}"),
        ));
    }
    // Through the shortest decimal string, so 0.1 is stored as 0.1 and not as
    // the binary fraction closest to it.
    BigDecimal::from_str(&value.to_string()).map_err(|e| DomainError::invalid(field, e.to_string()))
}

/// A JSON document; empty means absent.
pub fn json(
    field: &str,
    value: &str,
    limits: &Limits,
) -> Result<Option<serde_json::Value>, DomainError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    if value.len() > limits.max_payload_bytes {
        return Err(DomainError::invalid(
            field,
            format!(
                "{} bytes is larger than the limit of {} bytes",
                value.len(),
                limits.max_payload_bytes
            ),
        ));
    }
    let parsed: serde_json::Value = serde_json::from_str(value)
        .map_err(|e| DomainError::invalid(field, format!("not valid JSON: {e}")))?;
    if holds_nul(&parsed) {
        return Err(DomainError::invalid(
            field,
            "must not contain \\u0000 (PostgreSQL's jsonb cannot store it)",
        ));
    }
    Ok(Some(parsed))
}

fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        serde_json::Value::Null | serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
            false
        }
    }
}

/// Tags as stored: trimmed, unique, in the order given.
pub fn tags(field: &str, tags: &[String], limits: &Limits) -> Result<Vec<String>, DomainError> {
    if tags.len() > limits.max_tags {
        return Err(DomainError::invalid(
            field,
            format!("at most {} tags", limits.max_tags),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(tags.len());
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.trim();
        let item = format!("{field}[{i}]");
        if tag.is_empty() || tag.len() > limits.max_tag_len {
            return Err(DomainError::invalid(
                item,
                format!("must be 1 to {} bytes", limits.max_tag_len),
            ));
        }
        no_nul(&item, tag)?;
        if !out.iter().any(|seen| seen == tag) {
            out.push(tag.to_owned());
        }
    }
    Ok(out)
}

/// 0 means "no HTTP status".
pub fn http_status(field: &str, value: i32) -> Result<Option<i32>, DomainError> {
    match value {
        0 => Ok(None),
        status @ 100..=599 => Ok(Some(status)),
        other => Err(DomainError::invalid(
            field,
            format!("{other} is not an HTTP status (100-599, or 0 for none)"),
        )),
    }
}

/// The first instant PostgreSQL's `timestamptz` holds: 4714-11-24 00:00 UTC
/// BC (proleptic Gregorian; year -4713 in `chrono`'s astronomical count).
pub fn earliest_storable_time() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(-4713, 11, 24)
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Any timestamp from a request, read or write: one PostgreSQL can hold.
/// (Its upper bound, AD 294276, is past `chrono`'s AD 262143.)
pub fn storable_time(field: &str, at: DateTime<Utc>) -> Result<DateTime<Utc>, DomainError> {
    if at < earliest_storable_time() {
        return Err(DomainError::invalid(
            field,
            format!("{at} is before 4714-11-24 BC, the earliest time PostgreSQL stores"),
        ));
    }
    Ok(at)
}

/// Any duration from a request: one a PostgreSQL `interval` parameter can
/// carry (its microseconds fit in 64 bits, about 292,000 years).
pub fn storable_duration(field: &str, value: TimeDelta) -> Result<TimeDelta, DomainError> {
    if value.num_microseconds().is_none() {
        return Err(DomainError::invalid(
            field,
            "is longer than an interval holds (about 292,000 years)",
        ));
    }
    Ok(value)
}

/// An event's indexed text (details, error info, response) all together.
pub fn searchable_text(field: &str, parts: &[usize]) -> Result<(), DomainError> {
    let total: usize = parts.iter().sum();
    if total > MAX_SEARCHABLE_TEXT {
        return Err(DomainError::invalid(
            field,
            format!(
                "details, error_info_json and response_data hold {total} bytes together, more than the {MAX_SEARCHABLE_TEXT} the search index takes"
            ),
        ));
    }
    Ok(())
}

/// A client's timestamp, refused when it is further ahead of the server
/// clock than the configured skew.
pub fn not_in_future(
    field: &str,
    at: DateTime<Utc>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, DomainError> {
    if at > now + limits.max_clock_skew {
        return Err(DomainError::invalid(
            field,
            format!(
                "{at} is more than {}s ahead of the server clock",
                limits.max_clock_skew.num_seconds()
            ),
        ));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn field_of(err: DomainError) -> String {
        match err {
            DomainError::Invalid { field, .. } => field,
        }
    }

    #[test]
    fn checks_each_kind_of_field() {
        let limits = Limits::default();
        assert_eq!(ticker("ticker", " NASDAQ:AAPL ").unwrap().1, "AAPL");
        assert!(ticker("ticker", " ").is_err());
        assert!(ticker("ticker", "/-_").is_err());
        assert_eq!(price("price", 187.25).unwrap().to_string(), "187.25");
        assert!(price("price", f64::NAN).is_err());
        assert!(price("price", 0.0).is_err());
        assert!(json("j", "{", &limits).is_err());
        assert_eq!(json("j", "  ", &limits), Ok(None));
        assert_eq!(http_status("h", 0), Ok(None));
        assert!(http_status("h", 600).is_err());
        let now = Utc::now();
        assert!(not_in_future("t", now + TimeDelta::hours(1), &limits, now).is_err());
        assert_eq!(
            tags("tags", &["a".into(), " a ".into(), "b".into()], &limits).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(
            field_of(tags("tags", &["a".into(), "".into()], &limits).unwrap_err()),
            "tags[1]"
        );
    }

    #[test]
    fn refuses_nul_wherever_postgres_would() {
        let limits = Limits::default();
        assert_eq!(field_of(short_text("side", "b\0uy").unwrap_err()), "side");
        assert!(optional_text("details", "x\0", 100).is_err());
        assert!(query_text("query", "a\0b").is_err());
        assert!(json("j", r#"{"a":"\u0000"}"#, &limits).is_err());
        assert!(json("j", r#"{"\u0000":1}"#, &limits).is_err());
        assert!(json("j", r#"[[{"a":["x\u0000"]}]]"#, &limits).is_err());
        assert!(json("j", r#"{"a":"\\u0000"}"#, &limits).is_ok());
        assert_eq!(
            field_of(tags("tags", &["ok".into(), "n\0".into()], &limits).unwrap_err()),
            "tags[1]"
        );
    }

    #[test]
    fn refuses_what_postgres_columns_cannot_hold() {
        // 32 two-byte characters that upper-case to three characters each.
        let widening = "ΐ".repeat(32);
        assert_eq!(widening.len(), MAX_SHORT_TEXT);
        assert_eq!(field_of(ticker("ticker", &widening).unwrap_err()), "ticker");
        assert!(ticker("ticker", &"ΐ".repeat(21)).is_ok());
        assert!(ticker("ticker", &"A".repeat(64)).is_ok());

        let first = earliest_storable_time();
        assert_eq!(first.to_string(), "-4713-11-24 00:00:00 UTC");
        assert!(storable_time("t", first).is_ok());
        assert_eq!(
            field_of(storable_time("t", first - TimeDelta::microseconds(1)).unwrap_err()),
            "t"
        );
        assert!(storable_time("t", DateTime::<Utc>::MAX_UTC).is_ok());
        assert!(storable_time("t", DateTime::<Utc>::MIN_UTC).is_err());

        assert!(storable_duration("d", TimeDelta::days(365 * 290_000)).is_ok());
        assert!(storable_duration("d", TimeDelta::days(365 * 300_000)).is_err());
        assert!(storable_duration("d", TimeDelta::MAX).is_err());

        assert!(searchable_text("details", &[MAX_SEARCHABLE_TEXT, 0, 0]).is_ok());
        assert!(searchable_text("details", &[MAX_SEARCHABLE_TEXT, 1, 0]).is_err());

        for extreme in [1e300, f64::MAX, 5e-324, f64::MIN_POSITIVE] {
            let stored = price("price", extreme).unwrap();
            assert_eq!(stored.to_string().parse::<f64>().unwrap(), extreme);
        }
    }

    proptest! {
        #[test]
        fn accepted_tickers_fit_their_column(value in "\\PC{0,70}") {
            if let Ok((raw, normalised)) = ticker("ticker", &value) {
                prop_assert!(raw.chars().count() <= MAX_SHORT_TEXT);
                prop_assert!(normalised.chars().count() <= MAX_SHORT_TEXT);
            }
        }

        #[test]
        fn any_timestamp_is_either_storable_or_refused(secs in proptest::num::i64::ANY) {
            if let Some(at) = DateTime::from_timestamp(secs, 0) {
                prop_assert_eq!(storable_time("t", at).is_ok(), at >= earliest_storable_time());
            }
        }

        #[test]
        fn text_with_nul_is_always_refused(prefix in ".{0,20}", suffix in ".{0,20}") {
            let value = format!("{prefix}\0{suffix}");
            prop_assert!(optional_text("f", &value, 1000).is_err());
            prop_assert!(query_text("f", &value).is_err());
            let json_text = serde_json::to_string(&serde_json::json!({ "k": value })).unwrap();
            prop_assert!(json("f", &json_text, &Limits::default()).is_err());
        }

        #[test]
        fn accepted_short_text_is_trimmed_bounded_and_clean(value in "\\PC{0,80}") {
            if let Ok(text) = short_text("f", &value) {
                prop_assert!(!text.is_empty() && text.len() <= MAX_SHORT_TEXT);
                prop_assert_eq!(text.trim(), text.as_str());
                prop_assert!(!text.contains('\0'));
            }
        }

        #[test]
        fn accepted_tickers_normalise_to_clean_symbols(value in "[a-zA-Z0-9:./_ -]{0,30}") {
            if let Ok((_, normalised)) = ticker("ticker", &value) {
                prop_assert!(!normalised.is_empty());
                prop_assert!(!normalised.chars().any(|c| matches!(c, '/' | '-' | '_' | ' ' | ':')));
                prop_assert_eq!(normalised.to_uppercase(), normalised.clone());
            }
        }

        #[test]
        fn accepted_prices_are_positive(value in proptest::num::f64::ANY) {
            if let Ok(p) = price("price", value) {
                prop_assert!(p > 0);
            }
        }
    }
}
