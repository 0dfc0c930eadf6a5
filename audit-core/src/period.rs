use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use std::fmt;

/// Rollup bucket sizes, as the `metrics_period` enum spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Minute,
    Hour,
    Day,
}

impl Period {
    pub const ALL: [Period; 3] = [Self::Minute, Self::Hour, Self::Day];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minute => "minute",
            Self::Hour => "hour",
            Self::Day => "day",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => 86_400,
        }
    }

    pub fn delta(self) -> TimeDelta {
        TimeDelta::seconds(self.seconds())
    }

    /// The start of the bucket holding `t`, as `date_trunc` gives it in a
    /// UTC session (every pool sets its time zone to UTC).
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        // Truncation to minutes, hours or days of the Unix epoch cannot
        // fail for timestamps PostgreSQL stores.
        t.duration_trunc(self.delta()).unwrap_or(t)
    }

    /// The first bucket start at or after `t`.
    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let down = self.floor(t);
        if down == t { t } else { down + self.delta() }
    }

    /// The smallest range of whole buckets covering `[from, to)`.
    pub fn widen(self, from: DateTime<Utc>, to: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.floor(from), self.ceil(to))
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn widens_to_whole_buckets() {
        let (from, to) = Period::Hour.widen(at("2026-01-01T10:15:00Z"), at("2026-01-01T12:00:01Z"));
        assert_eq!(from, at("2026-01-01T10:00:00Z"));
        assert_eq!(to, at("2026-01-01T13:00:00Z"));
        let aligned = at("2026-01-01T10:00:00Z");
        assert_eq!(Period::Hour.widen(aligned, aligned), (aligned, aligned));
        assert_eq!(
            Period::Day.floor(at("2026-01-01T23:59:59Z")),
            at("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            Period::Minute.ceil(at("2026-01-01T10:00:00.5Z")),
            at("2026-01-01T10:01:00Z")
        );
    }
}
