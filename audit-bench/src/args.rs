//! `audit-bench ingest` options. Every option has an `AUDIT_BENCH_…`
//! variable and a default, so `--help` is the reference.

use clap::{Args, ValueEnum};

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// An empty, migrated database on the primary (its tables are truncated
    /// between phases). Only 127.0.0.1 / localhost URLs are accepted.
    #[arg(
        long,
        env = "AUDIT_BENCH_DATABASE_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:17532/bench"
    )]
    pub database_url: String,
    /// The writer binary to start (`serve`) and measure.
    #[arg(
        long,
        env = "AUDIT_BENCH_WRITER_BIN",
        default_value = "target/release/audit-writer"
    )]
    pub writer_bin: String,
    /// Where the writer child listens. Below the kernel's ephemeral range
    /// (32768-60999 on Linux), so no client connection can be holding it as
    /// its source port; a port in use fails the bench naming it.
    #[arg(
        long,
        env = "AUDIT_BENCH_WRITER_LISTEN",
        default_value = "127.0.0.1:17051"
    )]
    pub writer_listen: std::net::SocketAddr,
    /// Concurrent clients of the naive and batched baselines (N).
    #[arg(long, env = "AUDIT_BENCH_CLIENTS", default_value_t = 8)]
    pub clients: usize,
    /// Items per phase: signals, or events in the event phases.
    #[arg(long, env = "AUDIT_BENCH_SIGNALS", default_value_t = 40_000)]
    pub signals: usize,
    /// Also end each phase after this many seconds (0: only --signals bounds it).
    #[arg(long, env = "AUDIT_BENCH_DURATION_SECS", default_value_t = 0)]
    pub duration_secs: u64,
    /// Items per record_batch call (batched, batched-events) and per Ingest
    /// chunk (stream, stream-events).
    #[arg(long, env = "AUDIT_BENCH_CHUNK_SIZE", default_value_t = 200)]
    pub chunk_size: usize,
    /// Seed of every generated signal and event: the same seed writes the same rows.
    #[arg(long, env = "AUDIT_BENCH_SEED", default_value_t = 1)]
    pub seed: u64,
    /// Concurrent unary calls in flight (unary and events phases). Group
    /// commit gathers concurrent calls, so this is its largest possible group.
    #[arg(long, env = "AUDIT_BENCH_UNARY_CONCURRENCY", default_value_t = 128)]
    pub unary_concurrency: usize,
    /// HTTP/2 connections the unary callers share.
    #[arg(long, env = "AUDIT_BENCH_CHANNELS", default_value_t = 4)]
    pub channels: usize,
    /// Concurrent Ingest streams (stream and stream-events phases).
    #[arg(long, env = "AUDIT_BENCH_STREAMS", default_value_t = 4)]
    pub streams: usize,
    /// Unacknowledged chunks per Ingest stream (K).
    #[arg(long, env = "AUDIT_BENCH_WINDOW", default_value_t = 4)]
    pub window: usize,
    /// Calls per second of unary-half (0: half of the rate unary reached).
    #[arg(long, env = "AUDIT_BENCH_PACED_RATE", default_value_t = 0.0)]
    pub paced_rate: f64,
    /// Calls per second of events-half (0: half of the rate events reached).
    #[arg(long, env = "AUDIT_BENCH_EVENTS_PACED_RATE", default_value_t = 0.0)]
    pub events_paced_rate: f64,
    /// An events rate to compare this run's with (for example the events
    /// phase of an earlier writer on the same machine); 0: none. The
    /// summary then shows events / reference against the 3x goal.
    #[arg(long, env = "AUDIT_BENCH_EVENTS_REFERENCE_RATE", default_value_t = 0.0)]
    pub events_reference_rate: f64,
    /// PostgreSQL's own batched-ingest limit for the migration plan's
    /// minimal schema on the same cluster, in signals per second
    /// (`pg_seed_limit.sh`, which scripts/bench-ingest.sh runs before each
    /// run); 0: none. The summary then shows stream / seed-schema limit
    /// against the 85 % goal.
    #[arg(long, env = "AUDIT_BENCH_SEED_LIMIT_RATE", default_value_t = 0.0)]
    pub seed_limit_rate: f64,
    /// Phases to run, in this order; unary-half needs unary before it
    /// unless --paced-rate is set, events-half needs events before it
    /// unless --events-paced-rate is set.
    #[arg(
        long,
        env = "AUDIT_BENCH_PHASES",
        value_delimiter = ',',
        default_value = "naive,batched,unary,unary-half,stream,naive-events,batched-events,events,events-half,stream-events"
    )]
    pub phases: Vec<PhaseName>,
    /// Writer pool size (AUDIT_POOL_MIN and AUDIT_POOL_MAX of the child).
    /// Other AUDIT_* variables of this environment reach the writer as they are.
    #[arg(long, env = "AUDIT_BENCH_WRITER_POOL", default_value_t = 16)]
    pub writer_pool: u32,
    /// RUST_LOG of the writer child.
    #[arg(long, env = "AUDIT_BENCH_WRITER_LOG", default_value = "warn")]
    pub writer_log: String,
    /// Deadline of every call and chunk acknowledgement.
    #[arg(long, env = "AUDIT_BENCH_CALL_TIMEOUT_SECS", default_value_t = 30)]
    pub call_timeout_secs: u64,
    /// How long the writer may take to report SERVING.
    #[arg(long, env = "AUDIT_BENCH_STARTUP_TIMEOUT_SECS", default_value_t = 30)]
    pub startup_timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PhaseName {
    /// One transaction per signal straight on PostgreSQL (the baseline).
    Naive,
    /// `record_batch` with --chunk-size signals per call, no gRPC (the limit).
    Batched,
    /// RecordSignal, one signal per call, closed loop (group commit).
    Unary,
    /// RecordSignal paced open-loop at half the unary rate.
    UnaryHalf,
    /// Ingest streams with chunks and a window of chunks in flight.
    Stream,
    /// One transaction per event straight on PostgreSQL: lock the signal,
    /// claim the id, insert the event, update the signal (the events baseline).
    NaiveEvents,
    /// `record_batch` with --chunk-size events per call, no gRPC (the events limit).
    BatchedEvents,
    /// RecordEvent for existing signals, a pipeline mix, closed loop.
    Events,
    /// RecordEvent paced open-loop at half the events rate.
    EventsHalf,
    /// Ingest streams carrying events.
    StreamEvents,
}

impl PhaseName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::Batched => "batched",
            Self::Unary => "unary",
            Self::UnaryHalf => "unary-half",
            Self::Stream => "stream",
            Self::NaiveEvents => "naive-events",
            Self::BatchedEvents => "batched-events",
            Self::Events => "events",
            Self::EventsHalf => "events-half",
            Self::StreamEvents => "stream-events",
        }
    }

    /// Mixed into the seed so phases write different ids.
    pub fn tag(self) -> u64 {
        match self {
            Self::Naive => 1,
            Self::Batched => 2,
            Self::Unary => 3,
            Self::UnaryHalf => 4,
            Self::Stream => 5,
            Self::Events => 6,
            Self::NaiveEvents => 7,
            Self::BatchedEvents => 8,
            Self::EventsHalf => 9,
            Self::StreamEvents => 10,
        }
    }
}

impl IngestArgs {
    /// Refuses options that would make a phase meaningless or unbounded.
    pub fn check(&self) -> Result<(), String> {
        let positive = [
            ("--clients", self.clients),
            ("--signals", self.signals),
            ("--chunk-size", self.chunk_size),
            ("--unary-concurrency", self.unary_concurrency),
            ("--channels", self.channels),
            ("--streams", self.streams),
            ("--window", self.window),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{name} must be at least 1"));
        }
        if self.writer_pool == 0 {
            return Err("--writer-pool must be at least 1".into());
        }
        if !self.writer_listen.ip().is_loopback() {
            return Err("--writer-listen must be a loopback address (127.0.0.1:PORT)".into());
        }
        let rates = [
            ("--paced-rate", self.paced_rate),
            ("--events-paced-rate", self.events_paced_rate),
            ("--events-reference-rate", self.events_reference_rate),
        ];
        if let Some((name, _)) = rates.iter().find(|(_, r)| !(r.is_finite() && *r >= 0.0)) {
            return Err(format!("{name} must be a rate (0: not set)"));
        }
        let position = |p| self.phases.iter().position(|x| *x == p);
        let paced = [
            (
                PhaseName::Unary,
                PhaseName::UnaryHalf,
                self.paced_rate,
                "--paced-rate",
            ),
            (
                PhaseName::Events,
                PhaseName::EventsHalf,
                self.events_paced_rate,
                "--events-paced-rate",
            ),
        ];
        for (peak, half, rate, option) in paced {
            if position(half).is_none() || rate > 0.0 {
                continue;
            }
            match (position(peak), position(half)) {
                (Some(p), Some(h)) if p < h => {}
                _ => {
                    return Err(format!(
                        "--phases: {} needs {} before it, or {option}",
                        half.as_str(),
                        peak.as_str()
                    ));
                }
            }
        }
        loopback_host(&self.database_url)
            .map(|_| ())
            .ok_or_else(|| {
                "--database-url must be a postgres:// URL on 127.0.0.1 or localhost".to_owned()
            })
    }
}

/// The host of a `postgres://` URL when it is the loopback interface: the
/// bench truncates tables, so it never points at another machine.
fn loopback_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))?;
    let authority = rest.split(['/', '?']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    matches!(host, "127.0.0.1" | "localhost" | "::1").then_some(host)
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn only_loopback_urls_pass() {
        assert_eq!(
            loopback_host("postgres://postgres@127.0.0.1:17532/bench"),
            Some("127.0.0.1")
        );
        assert_eq!(
            loopback_host("postgresql://u:p@localhost/bench?sslmode=disable"),
            Some("localhost")
        );
        assert_eq!(loopback_host("postgres://[::1]:5/b"), Some("::1"));
        assert_eq!(loopback_host("postgres://db.example.com/bench"), None);
        assert_eq!(loopback_host("postgres://127.0.0.1@db.example.com/b"), None);
        assert_eq!(loopback_host("host=127.0.0.1 dbname=bench"), None);
    }
}
