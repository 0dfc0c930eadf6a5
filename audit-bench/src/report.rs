//! The table (a row per phase as it finishes), the ratios issues 5 and 11
//! set targets for, and one JSON line with everything for scripts.

use crate::args::{IngestArgs, PhaseName};
use crate::measure::{max_ms, quantile_ms};
use crate::phases::Measured;
use serde_json::{Value, json};

pub enum Outcome {
    Measured(Measured),
    /// The writer does not implement the RPC (yet).
    Unavailable(String),
    Failed(String),
}

pub struct Report {
    config: Value,
    /// `--events-reference-rate`, when set.
    events_reference_rate: Option<f64>,
    /// `--seed-limit-rate`, when set.
    seed_limit_rate: Option<f64>,
    phases: Vec<(PhaseName, Outcome)>,
    pub writer_peak_rss_mb: Option<f64>,
}

/// Targets on the 2-core reference machine (issue 5; the event ones issue 11).
const UNARY_OVER_NAIVE: f64 = 5.0;
const STREAM_OVER_BATCHED: f64 = 0.5;
const HALF_PEAK_P99_MS: f64 = 20.0;
const WRITER_RSS_MB: f64 = 150.0;
const EVENTS_OVER_NAIVE: f64 = 5.0;
const STREAM_EVENTS_OVER_BATCHED: f64 = 0.8;
const EVENTS_OVER_REFERENCE: f64 = 3.0;
const STREAM_OVER_SEED_LIMIT: f64 = 0.85;

impl Report {
    pub fn new(args: &IngestArgs) -> Self {
        let config = json!({
            "signals_per_phase": args.signals,
            "duration_secs": args.duration_secs,
            "clients": args.clients,
            "unary_concurrency": args.unary_concurrency,
            "channels": args.channels,
            "streams": args.streams,
            "window": args.window,
            "chunk_size": args.chunk_size,
            "writer_pool": args.writer_pool,
            "paced_rate": args.paced_rate,
            "events_paced_rate": args.events_paced_rate,
            "events_reference_rate": args.events_reference_rate,
            "seed_limit_rate": args.seed_limit_rate,
            "seed": args.seed,
        });
        Self {
            config,
            events_reference_rate: (args.events_reference_rate > 0.0)
                .then_some(args.events_reference_rate),
            seed_limit_rate: (args.seed_limit_rate > 0.0).then_some(args.seed_limit_rate),
            phases: Vec::new(),
            writer_peak_rss_mb: None,
        }
    }

    pub fn print_header(&self) {
        println!("audit-bench ingest {}", self.config);
        println!(
            "{:<14} {:>7} {:>7} {:>10} {:<8} {:>8} {:>8} {:>8} {:>8}  {:<20} {:>15} {:>9} {:>8} {:>7}  setup",
            "phase",
            "items",
            "secs",
            "rate/s",
            "unit",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "latency per",
            "writer cpu",
            "bench cpu",
            "machine",
            "refused",
        );
    }

    /// Records a phase and prints its row.
    pub fn add(&mut self, phase: PhaseName, outcome: Outcome) {
        match &outcome {
            Outcome::Measured(m) => {
                let seconds = m.usage.elapsed.as_secs_f64();
                let share = |cpu: Option<f64>| cpu.map(|c| 100.0 * c / seconds.max(1e-9));
                println!(
                    "{:<14} {:>7} {:>7.2} {:>10} {:<8} {:>8.2} {:>8.2} {:>8.2} {:>8.2}  {:<20} {:>15} {:>9} {:>8} {:>7}  {}",
                    phase.as_str(),
                    m.tally.items,
                    seconds,
                    thousands(m.rate()),
                    m.unit.as_str(),
                    quantile_ms(&m.tally.latency, 0.50),
                    quantile_ms(&m.tally.latency, 0.95),
                    quantile_ms(&m.tally.latency, 0.99),
                    max_ms(&m.tally.latency),
                    m.latency_of,
                    match (m.usage.writer_cpu, share(m.usage.writer_cpu)) {
                        (Some(c), Some(p)) => format!("{c:.2} s ({p:.0}%)"),
                        _ => "-".into(),
                    },
                    share(m.usage.bench_cpu).map_or("-".into(), |p| format!("{p:.0}%")),
                    m.usage
                        .machine_busy
                        .map_or("-".into(), |b| format!("{:.0}%", 100.0 * b)),
                    m.tally.refused,
                    m.setup,
                );
            }
            Outcome::Unavailable(why) => {
                println!("{:<14} not available: {why}", phase.as_str());
            }
            Outcome::Failed(error) => println!("{:<14} FAILED: {error}", phase.as_str()),
        }
        self.phases.push((phase, outcome));
    }

    fn measured(&self, phase: PhaseName) -> Option<&Measured> {
        self.phases.iter().find_map(|(p, outcome)| match outcome {
            Outcome::Measured(m) if *p == phase => Some(m),
            _ => None,
        })
    }

    /// Items per second of a measured phase.
    pub fn rate(&self, phase: PhaseName) -> Option<f64> {
        self.measured(phase).map(Measured::rate)
    }

    pub fn any_failed(&self) -> bool {
        self.phases
            .iter()
            .any(|(_, outcome)| matches!(outcome, Outcome::Failed(_)))
    }

    fn targets(&self) -> Vec<Target> {
        let ratio = |a: PhaseName, b: PhaseName| Some(self.rate(a)? / self.rate(b)?);
        vec![
            Target {
                key: "unary_over_naive",
                label: "unary / naive",
                value: ratio(PhaseName::Unary, PhaseName::Naive),
                shown: |v| format!("{v:.2}x"),
                target: ">= 5x",
                met: |v| v >= UNARY_OVER_NAIVE,
            },
            Target {
                key: "stream_over_batched",
                label: "stream / batched",
                value: ratio(PhaseName::Stream, PhaseName::Batched),
                shown: |v| format!("{:.0}%", 100.0 * v),
                target: ">= 50%",
                met: |v| v >= STREAM_OVER_BATCHED,
            },
            Target {
                key: "stream_over_seed_limit",
                label: "stream / seed-schema limit",
                value: self
                    .rate(PhaseName::Stream)
                    .zip(self.seed_limit_rate)
                    .map(|(rate, limit)| rate / limit),
                shown: |v| format!("{:.0}%", 100.0 * v),
                target: ">= 85%",
                met: |v| v >= STREAM_OVER_SEED_LIMIT,
            },
            Target {
                key: "unary_half_p99_ms",
                label: "p99 at half of unary peak",
                value: self
                    .measured(PhaseName::UnaryHalf)
                    .map(|m| quantile_ms(&m.tally.latency, 0.99)),
                shown: |v| format!("{v:.1} ms"),
                target: "< 20 ms",
                met: |v| v < HALF_PEAK_P99_MS,
            },
            Target {
                key: "events_over_naive_events",
                label: "events / naive-events",
                value: ratio(PhaseName::Events, PhaseName::NaiveEvents),
                shown: |v| format!("{v:.2}x"),
                target: ">= 5x",
                met: |v| v >= EVENTS_OVER_NAIVE,
            },
            Target {
                key: "stream_events_over_batched_events",
                label: "stream-events / batched-events",
                value: ratio(PhaseName::StreamEvents, PhaseName::BatchedEvents),
                shown: |v| format!("{:.0}%", 100.0 * v),
                target: ">= 80%",
                met: |v| v >= STREAM_EVENTS_OVER_BATCHED,
            },
            Target {
                key: "events_half_p99_ms",
                label: "p99 at half of events peak",
                value: self
                    .measured(PhaseName::EventsHalf)
                    .map(|m| quantile_ms(&m.tally.latency, 0.99)),
                shown: |v| format!("{v:.1} ms"),
                target: "< 20 ms",
                met: |v| v < HALF_PEAK_P99_MS,
            },
            Target {
                key: "events_over_reference",
                label: "events / reference rate",
                value: self
                    .rate(PhaseName::Events)
                    .zip(self.events_reference_rate)
                    .map(|(rate, reference)| rate / reference),
                shown: |v| format!("{v:.2}x"),
                target: ">= 3x",
                met: |v| v >= EVENTS_OVER_REFERENCE,
            },
            Target {
                key: "writer_peak_rss_mb",
                label: "writer peak RSS",
                value: self.writer_peak_rss_mb,
                shown: |v| format!("{v:.1} MB"),
                target: "< 150 MB",
                met: |v| v < WRITER_RSS_MB,
            },
        ]
    }

    /// The ratios with PASS/MISS, then the JSON line.
    pub fn print_summary(&self) {
        println!();
        println!("{:<31} {:>10}  {:<9} verdict", "target", "measured", "goal");
        let targets = self.targets();
        for t in &targets {
            println!(
                "{:<31} {:>10}  {:<9} {}",
                t.label,
                t.value.map_or("n/a".into(), t.shown),
                t.target,
                t.verdict()
            );
        }
        println!("{}", self.to_json(&targets));
    }

    fn to_json(&self, targets: &[Target]) -> Value {
        let phases: serde_json::Map<String, Value> = self
            .phases
            .iter()
            .map(|(phase, outcome)| (phase.as_str().to_owned(), phase_json(outcome)))
            .collect();
        let targets: serde_json::Map<String, Value> = targets
            .iter()
            .map(|t| {
                let value =
                    json!({"value": t.value.map(round3), "goal": t.target, "verdict": t.verdict()});
                (t.key.to_owned(), value)
            })
            .collect();
        json!({
            "bench": "ingest",
            "config": self.config,
            "phases": phases,
            "targets": targets,
            "writer_peak_rss_mb": self.writer_peak_rss_mb.map(round3),
        })
    }
}

fn phase_json(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Measured(m) => {
            let seconds = m.usage.elapsed.as_secs_f64();
            let latency = &m.tally.latency;
            json!({
                "status": "measured",
                "setup": m.setup,
                "unit": m.unit.as_str(),
                "items": m.tally.items,
                "seconds": round3(seconds),
                "per_second": round3(m.rate()),
                "latency_per": m.latency_of,
                "p50_ms": round3(quantile_ms(latency, 0.50)),
                "p95_ms": round3(quantile_ms(latency, 0.95)),
                "p99_ms": round3(quantile_ms(latency, 0.99)),
                "max_ms": round3(max_ms(latency)),
                "writer_cpu_s": m.usage.writer_cpu.map(round3),
                "bench_cpu_s": m.usage.bench_cpu.map(round3),
                "machine_busy": m.usage.machine_busy.map(round3),
                "refused": m.tally.refused,
            })
        }
        Outcome::Unavailable(why) => json!({"status": "not_available", "reason": why}),
        Outcome::Failed(error) => json!({"status": "failed", "error": error}),
    }
}

struct Target {
    key: &'static str,
    label: &'static str,
    value: Option<f64>,
    shown: fn(f64) -> String,
    target: &'static str,
    met: fn(f64) -> bool,
}

impl Target {
    fn verdict(&self) -> &'static str {
        match self.value {
            Some(v) if (self.met)(v) => "PASS",
            Some(_) => "MISS",
            None => "n/a",
        }
    }
}

/// Three decimals are plenty for JSON readers (and for diffs of it).
fn round3(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

/// 12345.6 → "12,346".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_975.0), "1,975");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
