//! `check`: the data-quality checks of CheckDataQuality (the queries live in
//! `audit_db::quality`; this runs the same ones on the primary, in one snapshot,
//! under the job's cluster-wide lock so a scheduled run and a manual one do
//! not both scan).

use crate::cli::CheckArgs;
use crate::error::AdminError;
use crate::report::{self, Report};
use audit_db::PgPool;
use audit_db::leader::{Job, Turn, with_job_lock};
use audit_db::quality;
use chrono::{TimeDelta, Utc};
use serde::Serialize;

#[derive(Serialize)]
struct Finding {
    check: &'static str,
    count: i64,
    ids: Vec<String>,
}

pub async fn run(pool: &PgPool, args: &CheckArgs) -> Result<Report, AdminError> {
    if args.summary_hours < 1 || args.summary_hours > 31 * 24 {
        return Err(AdminError::invalid(
            "--summary-hours",
            "must be between 1 and 744 (31 days)",
        ));
    }
    let to = Utc::now();
    let from = to - TimeDelta::hours(args.summary_hours);
    let stuck_us = args.stuck_after_secs.saturating_mul(1_000_000);
    let max_ids = args.max_ids.clamp(1, 10_000);
    let turn = with_job_lock(pool, Job::QualityCheck, async || {
        let mut conn = crate::db::connection(pool).await?;
        let spinner = report::spinner("checking data quality");
        let findings = conn
            .build_transaction()
            .read_only()
            .repeatable_read()
            .run(async |conn| {
                let window = quality::Window { from, to };
                quality::check(conn, stuck_us, window, max_ids).await
            })
            .await;
        spinner.finish_and_clear();
        Ok::<_, AdminError>(findings?)
    })
    .await?;
    let Turn::Ran(findings) = turn else {
        return Err(AdminError::Busy(Job::QualityCheck.name()));
    };
    let findings: Vec<Finding> = findings
        .into_iter()
        .map(|f| Finding {
            check: f.check.as_str(),
            count: f.count,
            ids: f.ids,
        })
        .collect();
    let found = findings.iter().any(|f| f.count > 0);
    let mut text = String::new();
    for f in &findings {
        text.push_str(&format!("{:<18} {}", f.check, f.count));
        if !f.ids.is_empty() {
            text.push_str(&format!("  {}", f.ids.join(" ")));
        }
        text.push('\n');
    }
    text.push_str(if found {
        "problems found"
    } else {
        "no problems found"
    });
    Ok(Report::new(&findings, text).with_findings(found))
}
