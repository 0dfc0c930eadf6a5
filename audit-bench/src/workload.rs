//! What the bench writes, generated from the seed: item `i` of a phase is
//! the same signal (same id, ticker, price, payload) on every run with the
//! same `--seed`, whichever worker happens to send it.

use crate::args::PhaseName;
use audit_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TICKERS: &[&str] = &[
    "NASDAQ:AAPL",
    "MSFT.US",
    "BTC-USD",
    "ETH/USD",
    "SPY",
    "QQQ",
    "TSLA",
    "NVDA",
];

/// Generates a phase's items.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    seed: u64,
    phase: PhaseName,
}

impl Workload {
    pub fn new(seed: u64, phase: PhaseName) -> Self {
        Self { seed, phase }
    }

    /// The random stream of item `index` for one purpose, independent of
    /// every other item and purpose.
    fn rng(&self, index: usize, purpose: Purpose) -> StdRng {
        let stream = splitmix64(self.seed) ^ (self.phase.tag() << 8) ^ purpose as u64;
        StdRng::seed_from_u64(splitmix64(splitmix64(stream) ^ index as u64))
    }

    /// Signal `index` as a producer would send it (received_at left to the
    /// server, like most producers).
    pub fn signal(&self, index: usize) -> pb::NewSignal {
        let mut rng = self.rng(index, Purpose::Signal);
        let ticker = TICKERS[rng.random_range(0..TICKERS.len())];
        let price = f64::from(rng.random_range(1_000..500_000u32)) / 100.0;
        let strategy = rng.random_range(0..10);
        let side = if rng.random_bool(0.5) { "buy" } else { "sell" };
        pb::NewSignal {
            signal_id: uuid_from(&mut rng).to_string(),
            ticker: ticker.into(),
            side: side.into(),
            action: "open".into(),
            price,
            original_signal_json: format!(
                r#"{{"source":"audit-bench","ticker":"{ticker}","side":"{side}","price":{price},"strategy":"momentum-{strategy}"}}"#
            ),
            tags: vec!["bench".into()],
            received_at: None,
        }
    }

    /// Signals `range` as one batch or chunk.
    pub fn signals(&self, range: std::ops::Range<usize>) -> Vec<pb::NewSignal> {
        range.map(|i| self.signal(i)).collect()
    }

    /// A second id for item `index` (the naive baseline's received event).
    pub fn event_id(&self, index: usize) -> uuid::Uuid {
        uuid_from(&mut self.rng(index, Purpose::EventId))
    }

    /// The events a worker records for signal `index` after it was received,
    /// in order. The mix follows a forwarding pipeline: most signals are
    /// approved and forwarded; some are rejected, some forwards fail with an
    /// HTTP error, some time out and succeed on a second attempt (a retry).
    pub fn pipeline(&self, index: usize, signal_id: &str) -> Vec<pb::NewEvent> {
        use pb::SignalLocation as L;
        use pb::SignalStatus as S;
        let mut rng = self.rng(index, Purpose::Pipeline);
        let worker = format!("bench-worker-{}", rng.random_range(0..16));
        let roll = rng.random_range(0..100);
        let mut steps: Vec<(S, L, Outcome)> =
            vec![(S::Processing, L::WorkerProcessing, Outcome::Step)];
        if roll < 4 {
            steps.push((S::Rejected, L::Discarded, Outcome::Step));
        } else {
            steps.push((S::Approved, L::ApprovedQueue, Outcome::Step));
            steps.push((S::Forwarding, L::WorkerForwarding, Outcome::Step));
            if roll < 10 {
                steps.push((S::ForwardedHttpError, L::Completed, Outcome::HttpError));
            } else if roll < 14 {
                steps.push((S::ForwardedTimeout, L::WorkerForwarding, Outcome::Timeout));
                steps.push((S::Forwarding, L::WorkerForwarding, Outcome::Step));
                steps.push((S::ForwardedSuccess, L::Completed, Outcome::Success));
            } else {
                steps.push((S::ForwardedSuccess, L::Completed, Outcome::Success));
            }
        }
        steps
            .into_iter()
            .map(|(status, location, outcome)| {
                let mut event = pb::NewEvent {
                    event_id: uuid_from(&mut rng).to_string(),
                    signal_id: signal_id.to_owned(),
                    event_type: status as i32,
                    location: location as i32,
                    timestamp: None,
                    worker_id: worker.clone(),
                    ..Default::default()
                };
                match outcome {
                    Outcome::Step => {}
                    Outcome::Success => {
                        event.http_status = 200;
                        event.response_data = r#"{"accepted":true}"#.into();
                    }
                    Outcome::HttpError => {
                        event.http_status = 502;
                        event.error_info_json = r#"{"error":"bad gateway","attempt":1}"#.into();
                    }
                    Outcome::Timeout => {
                        event.details = "no answer within 5 s".into();
                        event.error_info_json = r#"{"error":"timeout","attempt":1}"#.into();
                    }
                }
                event
            })
            .collect()
    }
}

#[derive(Clone, Copy)]
enum Purpose {
    Signal = 1,
    EventId = 2,
    Pipeline = 3,
}

enum Outcome {
    Step,
    Success,
    HttpError,
    Timeout,
}

/// A random (version 4) UUID drawn from `rng`.
fn uuid_from(rng: &mut StdRng) -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rng.random()).into_uuid()
}

/// Spreads nearby seeds (0, 1, 2 …) over the whole u64 range.
fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_core::rules::Limits;
    use audit_wire::decode::{new_event, new_signal};

    #[test]
    fn same_seed_same_items_other_seed_other_ids() {
        let a = Workload::new(1, PhaseName::Unary);
        let b = Workload::new(2, PhaseName::Unary);
        let c = Workload::new(1, PhaseName::Stream);
        assert_eq!(a.signal(7), a.signal(7));
        assert_ne!(a.signal(7).signal_id, a.signal(8).signal_id);
        assert_ne!(a.signal(7).signal_id, b.signal(7).signal_id);
        assert_ne!(a.signal(7).signal_id, c.signal(7).signal_id);
        assert_ne!(a.event_id(7).to_string(), a.signal(7).signal_id);
    }

    #[test]
    fn generated_items_pass_validation() {
        let workload = Workload::new(1, PhaseName::Events);
        let now = chrono::Utc::now();
        let mut lengths = std::collections::BTreeSet::new();
        for i in 0..500 {
            let signal = workload.signal(i);
            assert!(new_signal(&signal, &Limits::default(), now).is_ok());
            let events = workload.pipeline(i, &signal.signal_id);
            lengths.insert(events.len());
            for event in &events {
                assert!(
                    new_event(event, &Limits::default(), now).is_ok(),
                    "{event:?}"
                );
            }
        }
        // Rejected (2), http error / success (4) and timeout + retry (6).
        assert_eq!(lengths.into_iter().collect::<Vec<_>>(), vec![2, 4, 6]);
    }
}
