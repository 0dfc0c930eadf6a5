use crate::SignalStatus;
use chrono::{DateTime, TimeDelta, Utc};

/// Time a signal spent between two consecutive steps of its timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageDuration {
    pub from: SignalStatus,
    pub to: SignalStatus,
    pub spent: TimeDelta,
}

/// The stages of a timeline given in time order (the order the reader lists
/// events in): each step to the next. Equal timestamps give zero, never a
/// negative duration.
pub fn stage_durations(timeline: &[(SignalStatus, DateTime<Utc>)]) -> Vec<StageDuration> {
    timeline
        .windows(2)
        .map(|pair| StageDuration {
            from: pair[0].0,
            to: pair[1].0,
            spent: (pair[1].1 - pair[0].1).max(TimeDelta::zero()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stage_per_consecutive_pair() {
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        let timeline = [
            (SignalStatus::Received, t0),
            (SignalStatus::Processing, t0 + TimeDelta::milliseconds(40)),
            (SignalStatus::Approved, t0 + TimeDelta::milliseconds(40)),
        ];
        let stages = stage_durations(&timeline);
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].spent, TimeDelta::milliseconds(40));
        assert_eq!(stages[1].from, SignalStatus::Processing);
        assert_eq!(stages[1].spent, TimeDelta::zero());
        assert!(stage_durations(&timeline[..1]).is_empty());
    }
}
