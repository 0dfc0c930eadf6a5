//! Latency histograms, and the CPU and memory of a process from /proc.

use hdrhistogram::Histogram;
use std::sync::OnceLock;
use std::time::Duration;

/// Microsecond latencies from 1 µs to 10 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    #[expect(
        clippy::expect_used,
        reason = "constant bounds that hdrhistogram accepts"
    )]
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// Records one latency; anything beyond the bounds counts as the bound.
pub fn record(histogram: &mut Histogram<u64>, elapsed: Duration) {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(micros.max(1));
}

/// Milliseconds at a quantile (0 when nothing was recorded).
pub fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

pub fn max_ms(histogram: &Histogram<u64>) -> f64 {
    histogram.max() as f64 / 1_000.0
}

/// CPU seconds (user + system) a process has used so far; `None` once it
/// is gone. `pid` is a number, or `self`.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is parenthesised and may hold spaces: count fields
    // after its closing parenthesis. utime and stime are fields 14 and 15 of
    // the line, so the 12th and 13th after the name.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / clock_ticks_per_second())
}

/// `getconf CLK_TCK`, asked once; 100 (Linux's value) if that fails.
fn clock_ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks: &f64| *ticks > 0.0)
            .unwrap_or(100.0)
    })
}

/// Busy and total jiffies of all cores since boot (/proc/stat); busy is
/// everything but idle and iowait.
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let times: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let total: u64 = times.iter().take(8).sum();
    let idle = times.get(3)? + times.get(4)?;
    Some((total - idle, total))
}

/// Peak resident set size so far (VmHWM), in MB (10^6 bytes).
pub fn peak_rss_mb(pid: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024.0 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds("self").is_some_and(|s| s >= 0.0));
        assert!(peak_rss_mb("self").is_some_and(|m| m > 0.0));
        assert_eq!(cpu_seconds("0"), None);
        assert!(machine_jiffies().is_some_and(|(busy, total)| busy <= total));
    }

    #[test]
    fn out_of_range_latencies_saturate() {
        let mut h = histogram();
        record(&mut h, Duration::ZERO);
        record(&mut h, Duration::from_secs(3_600));
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(max_ms(&h) >= 599_000.0);
    }
}
