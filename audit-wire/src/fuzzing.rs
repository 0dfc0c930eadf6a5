//! Where machines look for hostile input: raw bytes, as they could arrive in
//! a gRPC message, through protobuf decoding and [`crate::decode`]
//! ([`write_request`]), and any string as a page or resume token
//! ([`page_token`]). The same entry points serve the libFuzzer targets in
//! `fuzz/` (cargo fuzz) and the proptests (below and in [`crate::token`]),
//! which run with `cargo test`.
//!
//! They panic only when a rule is broken: decoding must never panic, and
//! whatever validation accepts must be storable as it is (no NUL, columns'
//! lengths, PostgreSQL's time range, a positive price); a token decodes into
//! a cursor that survives its own round trip, or is refused.

use crate::decode;
use crate::token::{
    EventCursor, SignalCursor, TailPosition, TokenCursor, decode_token, encode_token,
};
use audit_core::rules::{self, Limits};
use audit_core::{NewEvent, NewSignal};
use audit_proto::v1 as pb;
use chrono::{DateTime, Utc};
use prost::Message;

/// A fixed clock, so that a crash found once reproduces.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
}

/// `bytes` as a NewSignal, a NewEvent and a RecordBatchRequest, each
/// validated when it decodes.
pub fn write_request(bytes: &[u8]) {
    let limits = Limits::default();
    if let Ok(signal) = pb::NewSignal::decode(bytes)
        && let Ok(signal) = decode::new_signal(&signal, &limits, now())
    {
        assert_storable_signal(&signal);
    }
    if let Ok(event) = pb::NewEvent::decode(bytes)
        && let Ok(event) = decode::new_event(&event, &limits, now())
    {
        assert_storable_event(&event);
    }
    if let Ok(batch) = pb::RecordBatchRequest::decode(bytes) {
        for signal in &batch.signals {
            if let Ok(signal) = decode::new_signal(signal, &limits, now()) {
                assert_storable_signal(&signal);
            }
        }
        for event in &batch.events {
            if let Ok(event) = decode::new_event(event, &limits, now()) {
                assert_storable_event(&event);
            }
        }
    }
}

/// `token` as a page token of each kind and as a resume token: a usable
/// cursor or a refusal, never a panic.
pub fn page_token(token: &str) {
    fn round_trip<T: TokenCursor + PartialEq + std::fmt::Debug>(token: &str) {
        if let Ok(cursor) = decode_token::<T>("page_token", token) {
            let again = decode_token::<T>("page_token", &encode_token(&cursor));
            assert_eq!(again.as_ref(), Ok(&cursor), "token {token:?}");
        }
    }
    round_trip::<SignalCursor>(token);
    round_trip::<EventCursor>(token);
    round_trip::<TailPosition>(token);
}

fn assert_short(field: &str, value: &str) {
    assert!(!value.contains('\0'), "{field} holds NUL: {value:?}");
    assert!(
        value.chars().count() <= rules::MAX_SHORT_TEXT,
        "{field} does not fit VARCHAR(64): {value:?}"
    );
}

fn assert_json(field: &str, value: &serde_json::Value) {
    assert!(
        !value.to_string().contains("\\u0000"),
        "{field} holds NUL: {value}"
    );
}

fn assert_time(field: &str, at: DateTime<Utc>) {
    assert!(
        at >= rules::earliest_storable_time(),
        "{field} before PostgreSQL's range: {at}"
    );
}

fn assert_storable_signal(signal: &NewSignal) {
    assert_short("ticker", &signal.ticker);
    assert_short("normalised_ticker", &signal.normalised_ticker);
    assert_short("side", &signal.side);
    assert_short("action", &signal.action);
    assert!(signal.price > 0, "price {}", signal.price);
    assert_json("original_signal", &signal.original_signal);
    assert_time("received_at", signal.received_at);
    for tag in &signal.tags {
        assert_short("tag", tag);
    }
}

fn assert_storable_event(event: &NewEvent) {
    assert_time("timestamp", event.timestamp);
    if let Some(worker) = &event.worker_id {
        assert_short("worker_id", worker);
    }
    for text in [&event.details, &event.response_data].into_iter().flatten() {
        assert!(!text.contains('\0'), "text holds NUL: {text:?}");
    }
    if let Some(info) = &event.error_info {
        assert_json("error_info", info);
    }
    if let Some(status) = event.http_status {
        assert!((100..=599).contains(&status), "http_status {status}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn good_signal() -> pb::NewSignal {
        pb::NewSignal {
            ticker: "NASDAQ:AAPL".into(),
            side: "buy".into(),
            action: "open".into(),
            price: 187.25,
            original_signal_json: r#"{"raw":"buy AAPL"}"#.into(),
            tags: vec!["a".into()],
            ..Default::default()
        }
    }

    fn good_event() -> pb::NewEvent {
        pb::NewEvent {
            event_id: "6a1f2c1e-9b0d-4c55-8f43-0c3d5e2a7b19".into(),
            signal_id: "7a1f2c1e-9b0d-4c55-8f43-0c3d5e2a7b19".into(),
            event_type: pb::SignalStatus::Processing as i32,
            location: pb::SignalLocation::WorkerProcessing as i32,
            worker_id: "w-1".into(),
            details: "queued".into(),
            error_info_json: r#"{"e":1}"#.into(),
            http_status: 502,
            ..Default::default()
        }
    }

    /// The fuzz target's committed seeds are the valid messages it mutates
    /// from: each decodes and passes validation, so libFuzzer starts past
    /// protobuf and into the rules.
    #[test]
    fn fuzz_seeds_are_valid_requests() {
        let seed = |name: &str| {
            let path = format!(
                "{}/../fuzz/seeds/write_request/{name}",
                env!("CARGO_MANIFEST_DIR")
            );
            std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
        };
        let signal = pb::NewSignal::decode(seed("signal").as_slice()).unwrap();
        assert!(decode::new_signal(&signal, &Limits::default(), now()).is_ok());
        let event = pb::NewEvent::decode(seed("event").as_slice()).unwrap();
        assert!(decode::new_event(&event, &Limits::default(), now()).is_ok());
        let batch = pb::RecordBatchRequest::decode(seed("batch").as_slice()).unwrap();
        assert_eq!((batch.signals, batch.events), (vec![signal], vec![event]));
    }

    /// Regression inputs: each once broke a rule (kept whatever found them).
    #[test]
    fn known_hostile_inputs_stay_refused() {
        let wide_ticker = pb::NewSignal {
            ticker: "ΐ".repeat(32),
            ..good_signal()
        };
        let ancient = pb::NewEvent {
            timestamp: Some(prost_types::Timestamp {
                seconds: -220_000_000_000,
                nanos: 0,
            }),
            ..good_event()
        };
        write_request(&wide_ticker.encode_to_vec());
        write_request(&ancient.encode_to_vec());
        let batch = pb::RecordBatchRequest {
            signals: vec![wide_ticker],
            events: vec![ancient],
        };
        write_request(&batch.encode_to_vec());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        /// Random bytes: mostly refused by protobuf, never a panic.
        #[test]
        fn random_bytes_never_break_a_rule(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            write_request(&bytes);
        }

        /// Valid messages with bytes flipped, cut or spliced: past protobuf,
        /// into validation.
        #[test]
        fn mutated_messages_never_break_a_rule(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
            which in 0..3usize,
        ) {
            let mut bytes = match which {
                0 => good_signal().encode_to_vec(),
                1 => good_event().encode_to_vec(),
                _ => pb::RecordBatchRequest {
                    signals: vec![good_signal()],
                    events: vec![good_event()],
                }
                .encode_to_vec(),
            };
            for (at, byte) in edits {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            bytes.truncate(cut.index(bytes.len() + 1));
            write_request(&bytes);
        }

        /// Hostile field values in well-formed messages.
        #[test]
        fn hostile_fields_never_break_a_rule(
            text in "\\PC{0,70}",
            nul_at in 0..8usize,
            seconds in any::<i64>(),
            price in any::<f64>(),
        ) {
            let head: String = text.chars().take(nul_at).collect();
            let with_nul = format!("{head}\0{text}");
            let signal = pb::NewSignal {
                ticker: text.clone(),
                side: with_nul.clone(),
                price,
                received_at: Some(prost_types::Timestamp { seconds, nanos: 0 }),
                tags: vec![text.clone()],
                ..good_signal()
            };
            let event = pb::NewEvent {
                worker_id: text.clone(),
                details: with_nul,
                timestamp: Some(prost_types::Timestamp { seconds, nanos: 0 }),
                ..good_event()
            };
            write_request(&signal.encode_to_vec());
            write_request(&pb::NewSignal { ticker: text, ..good_signal() }.encode_to_vec());
            write_request(&event.encode_to_vec());
        }
    }
}
