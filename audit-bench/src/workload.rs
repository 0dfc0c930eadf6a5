//! What the bench writes, generated from the seed: item `i` of a phase is
//! the same signal (same id, ticker, price, payload) on every run with the
//! same `--seed`, whichever worker happens to send it.

use crate::args::PhaseName;
use crate::phases::Budget;
use audit_proto::v1 as pb;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// Many signals' pipelines interleaved, as a relay in front of many workers
/// forwards them: each [`EventFeed::next`] call takes the next event of
/// different signals in turn (round robin over up to `active` signals
/// started at once), so a chunk holds at most one event per signal and a
/// signal comes back only after every other active one had its turn. A
/// finished signal's place goes to the next stored signal.
pub struct EventFeed {
    workload: Workload,
    /// The next stored signal to start, shared by every feed of a phase.
    next_signal: Arc<AtomicUsize>,
    stored: usize,
    active: usize,
    pipelines: VecDeque<VecDeque<pb::NewEvent>>,
}

impl EventFeed {
    /// A feed over signals `0..stored` of `workload` (already stored).
    pub fn new(
        workload: Workload,
        next_signal: Arc<AtomicUsize>,
        stored: usize,
        active: usize,
    ) -> Self {
        Self {
            workload,
            next_signal,
            stored,
            active: active.max(1),
            pipelines: VecDeque::new(),
        }
    }

    /// Up to `n` events of different signals, each claimed from `budget`;
    /// empty when the budget or the stored signals are spent.
    pub fn next(&mut self, n: usize, budget: &Budget) -> Vec<pb::NewEvent> {
        while self.pipelines.len() < self.active {
            let index = self.next_signal.fetch_add(1, Ordering::Relaxed);
            if index >= self.stored {
                break;
            }
            let signal_id = self.workload.signal(index).signal_id;
            self.pipelines
                .push_back(self.workload.pipeline(index, &signal_id).into());
        }
        // Taken from the front and put back at the end: no signal twice.
        let take = n.min(self.pipelines.len());
        let mut events = Vec::with_capacity(take);
        for _ in 0..take {
            if budget.claim(1).is_none() {
                break;
            }
            let Some(mut pipeline) = self.pipelines.pop_front() else {
                break;
            };
            events.extend(pipeline.pop_front());
            if !pipeline.is_empty() {
                self.pipelines.push_back(pipeline);
            }
        }
        events
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
    fn a_feed_interleaves_signals_and_keeps_each_pipeline_in_order() {
        let workload = Workload::new(1, PhaseName::StreamEvents);
        let budget = Budget::new(1_000);
        let mut feed = EventFeed::new(workload, Arc::new(AtomicUsize::new(0)), 40, 8);
        let mut sent: Vec<pb::NewEvent> = Vec::new();
        loop {
            let chunk = feed.next(5, &budget);
            if chunk.is_empty() {
                break;
            }
            let mut signals: Vec<&str> = chunk.iter().map(|e| e.signal_id.as_str()).collect();
            signals.sort_unstable();
            signals.dedup();
            assert_eq!(
                signals.len(),
                chunk.len(),
                "one event per signal in a chunk"
            );
            sent.extend(chunk);
        }
        let mut want: Vec<pb::NewEvent> = Vec::new();
        for i in 0..40 {
            want.extend(workload.pipeline(i, &workload.signal(i).signal_id));
        }
        assert_eq!(
            sent.len(),
            want.len(),
            "every stored signal's pipeline, whole"
        );
        for i in 0..40 {
            let id = workload.signal(i).signal_id;
            let of = |events: &[pb::NewEvent]| -> Vec<String> {
                events
                    .iter()
                    .filter(|e| e.signal_id == id)
                    .map(|e| e.event_id.clone())
                    .collect()
            };
            assert_eq!(of(&sent), of(&want), "signal {i} in pipeline order");
        }
        let short = Budget::new(3);
        let mut feed = EventFeed::new(workload, Arc::new(AtomicUsize::new(0)), 40, 8);
        assert_eq!(feed.next(5, &short).len(), 3, "stops with the budget");
        assert!(feed.next(5, &short).is_empty());
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
