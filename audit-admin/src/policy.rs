//! The retention policy: how many whole days each kind of data stays in the
//! live tables (table `retention_policy`, overridable per run), and the
//! cut-off day that follows from it.

use crate::error::AdminError;
use chrono::{NaiveDate, TimeDelta};
use diesel::QueryableByName;
use diesel::sql_types::{Integer, Nullable, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    RawEvents,
    Signals,
    MinuteRollups,
    HourRollups,
    DayRollups,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::RawEvents,
        Kind::Signals,
        Kind::MinuteRollups,
        Kind::HourRollups,
        Kind::DayRollups,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::RawEvents => "raw_events",
            Kind::Signals => "signals",
            Kind::MinuteRollups => "minute_rollups",
            Kind::HourRollups => "hour_rollups",
            Kind::DayRollups => "day_rollups",
        }
    }

    pub fn parse(text: &str) -> Result<Kind, AdminError> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == text)
            .ok_or_else(|| {
                AdminError::invalid(
                    "kind",
                    format!(
                        "unknown kind {text:?}; one of raw_events, signals, minute_rollups, hour_rollups, day_rollups"
                    ),
                )
            })
    }
}

/// Whole days (`90`, `90d`) or `forever` (`None`). Anything shorter than a
/// day, or not in whole days, is refused: data leaves by whole days.
pub fn parse_keep(field: &str, text: &str) -> Result<Option<u32>, AdminError> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("forever") {
        return Ok(None);
    }
    let digits = text.strip_suffix('d').unwrap_or(text);
    match digits.parse::<u32>() {
        Ok(0) => Err(AdminError::invalid(
            field,
            "retention must be at least 1 day (0 would drop today's data)",
        )),
        Ok(days) => Ok(Some(days)),
        Err(_) => Err(AdminError::invalid(
            field,
            format!(
                "{text:?} is not a retention: give whole days (e.g. 90 or 90d, at least 1) or `forever`"
            ),
        )),
    }
}

/// Days kept per kind; `None` keeps forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub raw_events: Option<u32>,
    pub signals: Option<u32>,
    pub minute_rollups: Option<u32>,
    pub hour_rollups: Option<u32>,
    pub day_rollups: Option<u32>,
}

impl Policy {
    pub fn get(&self, kind: Kind) -> Option<u32> {
        match kind {
            Kind::RawEvents => self.raw_events,
            Kind::Signals => self.signals,
            Kind::MinuteRollups => self.minute_rollups,
            Kind::HourRollups => self.hour_rollups,
            Kind::DayRollups => self.day_rollups,
        }
    }

    pub fn set(&mut self, kind: Kind, keep: Option<u32>) {
        match kind {
            Kind::RawEvents => self.raw_events = keep,
            Kind::Signals => self.signals = keep,
            Kind::MinuteRollups => self.minute_rollups = keep,
            Kind::HourRollups => self.hour_rollups = keep,
            Kind::DayRollups => self.day_rollups = keep,
        }
    }

    /// Signals leave with the day of their latest event, so they cannot
    /// leave before their events do.
    pub fn validate(&self) -> Result<(), AdminError> {
        let longer = |a: Option<u32>, b: Option<u32>| match (a, b) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a >= b,
        };
        if !longer(self.signals, self.raw_events) {
            return Err(AdminError::invalid(
                "signals",
                "signals must be kept at least as long as raw events (a signal leaves with its last event's day)",
            ));
        }
        Ok(())
    }

    /// The first day kept: days before it leave. `None`: nothing leaves.
    pub fn cutoff(&self, kind: Kind, today: NaiveDate) -> Option<NaiveDate> {
        self.get(kind)
            .map(|days| today - TimeDelta::days(i64::from(days)))
    }
}

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Text)]
    kind: String,
    #[diesel(sql_type = Nullable<Integer>)]
    keep_days: Option<i32>,
}

/// The configured policy.
pub async fn load(conn: &mut AsyncPgConnection) -> Result<Policy, AdminError> {
    let rows: Vec<Row> = diesel::sql_query("SELECT kind, keep_days FROM retention_policy")
        .load(conn)
        .await?;
    // Defaults for a kind missing from the table: keep it.
    let mut policy = Policy {
        raw_events: None,
        signals: None,
        minute_rollups: None,
        hour_rollups: None,
        day_rollups: None,
    };
    for row in rows {
        if let Ok(kind) = Kind::parse(&row.kind) {
            policy.set(kind, row.keep_days.and_then(|d| u32::try_from(d).ok()));
        }
    }
    Ok(policy)
}

pub async fn store(
    conn: &mut AsyncPgConnection,
    kind: Kind,
    keep: Option<u32>,
) -> Result<(), AdminError> {
    diesel::sql_query(
        "INSERT INTO retention_policy (kind, keep_days, updated_at) VALUES ($1, $2, now()) \
         ON CONFLICT (kind) DO UPDATE SET keep_days = EXCLUDED.keep_days, updated_at = now()",
    )
    .bind::<Text, _>(kind.name())
    .bind::<Nullable<Integer>, _>(keep.and_then(|d| i32::try_from(d).ok()))
    .execute(conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_whole_days_or_forever() {
        assert_eq!(parse_keep("x", "90").ok(), Some(Some(90)));
        assert_eq!(parse_keep("x", "30d").ok(), Some(Some(30)));
        assert_eq!(parse_keep("x", "forever").ok(), Some(None));
        for bad in ["0", "0d", "12h", "-1", "1.5", ""] {
            assert!(parse_keep("x", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn signals_outlive_their_events() {
        let mut policy = Policy {
            raw_events: Some(90),
            signals: Some(90),
            minute_rollups: Some(30),
            hour_rollups: Some(365),
            day_rollups: None,
        };
        assert!(policy.validate().is_ok());
        policy.signals = Some(30);
        assert!(policy.validate().is_err());
        policy.signals = None;
        assert!(policy.validate().is_ok());
        policy.raw_events = None;
        policy.signals = Some(400);
        assert!(policy.validate().is_err());
    }

    #[test]
    fn cutoff_keeps_whole_days() {
        let today = NaiveDate::from_ymd_opt(2026, 12, 1).unwrap_or_default();
        let policy = Policy {
            raw_events: Some(1),
            signals: None,
            minute_rollups: None,
            hour_rollups: None,
            day_rollups: None,
        };
        assert_eq!(
            policy.cutoff(Kind::RawEvents, today),
            NaiveDate::from_ymd_opt(2026, 11, 30)
        );
        assert_eq!(policy.cutoff(Kind::Signals, today), None);
    }
}
