//! CheckDataQuality: orphans, stuck signals, counters and rollups that raw
//! events do not reproduce; from the writer's stored checks where a minute
//! has not changed since, live for the rest (`audit_db::quality`).

use super::{AnalyticsService, snapshot};
use crate::error::ReadError;
use audit_core::DomainError;
use audit_db::quality::{self, Check, Window};
use audit_proto::v1 as pb;
use audit_wire::convert::{self, to_timestamp};
use audit_wire::decode::time_range;
use chrono::{TimeDelta, Utc};

/// The old in-memory tracker's rule for "stuck".
const DEFAULT_STUCK_AFTER: TimeDelta = TimeDelta::seconds(30);
const MAX_SUMMARY_DAYS: i64 = 31;

pub(super) async fn check_data_quality(
    service: &AnalyticsService,
    request: pb::CheckDataQualityRequest,
) -> Result<pb::CheckDataQualityResponse, ReadError> {
    let stuck_after = match request.stuck_after.as_ref() {
        Some(d) => convert::duration("stuck_after", d)?,
        None => DEFAULT_STUCK_AFTER,
    };
    let now = Utc::now();
    let (from, to) = match time_range("summary_range", request.summary_range.as_ref())? {
        (Some(from), Some(to)) => (from, to),
        (from, to) => (from.unwrap_or(now - TimeDelta::days(1)), to.unwrap_or(now)),
    };
    if (to - from) > TimeDelta::days(MAX_SUMMARY_DAYS) {
        return Err(DomainError::invalid(
            "summary_range",
            format!("at most {MAX_SUMMARY_DAYS} days are compared in one call"),
        )
        .into());
    }
    let max_ids = match request.max_ids {
        0 => 100,
        n @ 1..=10_000 => i64::from(n),
        n => {
            return Err(
                DomainError::invalid("max_ids", format!("{n} is outside 1..=10000")).into(),
            );
        }
    };
    let stuck_after_us = stuck_after.num_microseconds().unwrap_or(i64::MAX);
    let window = Window { from, to };
    let mut conn = service.replicas.any().get().await?;
    // One snapshot: a rollup key the refresher takes mid-check cannot look
    // like a mismatch, nor a minute the quality job checks mid-call be
    // counted twice or missed.
    let (findings, stored_minutes) = snapshot(&mut conn)
        .run(async |conn| {
            let stuck = quality::stuck(conn, stuck_after_us, max_ids).await?;
            let stored = if request.live {
                quality::Stored {
                    minutes: Vec::new(),
                    findings: Vec::new(),
                }
            } else {
                quality::stored(conn, window, max_ids).await?
            };
            let mut parts = stored.findings;
            for range in quality::live_ranges(window, &stored.minutes) {
                parts.extend(quality::scan(conn, range, max_ids).await?);
            }
            // Every kind once, in the contract's order, 0 when clean; the
            // stuck signals apart, listed oldest first.
            parts.extend(
                Check::ALL
                    .into_iter()
                    .filter(|check| *check != Check::StuckSignals)
                    .map(|check| quality::Finding {
                        check,
                        count: 0,
                        ids: Vec::new(),
                    }),
            );
            let mut findings = quality::merge(parts, max_ids as usize);
            findings.push(stuck);
            findings.sort_by_key(|f| Check::ALL.iter().position(|c| *c == f.check));
            Ok::<_, ReadError>((findings, stored.minutes.len()))
        })
        .await?;
    Ok(pb::CheckDataQualityResponse {
        findings: findings.into_iter().map(finding).collect(),
        checked_at: Some(to_timestamp(now)),
        stored_minutes: i32::try_from(stored_minutes).unwrap_or(i32::MAX),
    })
}

fn finding(finding: quality::Finding) -> pb::Finding {
    let (kind, description) = match finding.check {
        Check::OrphanEvents => (
            pb::FindingKind::OrphanEvents,
            "event id claims without their event, or events without their claim \
             (signals with an event, or their latest one, in summary_range)",
        ),
        Check::StuckSignals => (
            pb::FindingKind::StuckSignals,
            "signals in a non-terminal status for longer than stuck_after",
        ),
        Check::CounterMismatch => (
            pb::FindingKind::CounterMismatch,
            "signals whose error_count or retry_count disagree with their events \
             (signals with an event, or their latest one, in summary_range)",
        ),
        Check::SummaryMismatch => (
            pb::FindingKind::SummaryMismatch,
            "minute rollup buckets that raw events do not add up to \
             (buckets awaiting the refresher are not compared)",
        ),
    };
    pb::Finding {
        kind: kind.into(),
        count: finding.count,
        ids: finding.ids,
        description: description.into(),
    }
}
