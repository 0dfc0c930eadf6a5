//! The `ingest` run: check the database, start the writer, run the chosen
//! phases on emptied tables, report.

use crate::BenchError;
use crate::args::{IngestArgs, PhaseName};
use crate::measure::peak_rss_mb;
use crate::phases::{self, Context, Measured};
use crate::report::{Outcome, Report};
use crate::writer::WriterProcess;
use audit_db::{DbError, PgPool, PoolConfig, build_pool};
use diesel::QueryableByName;
use diesel::sql_types::Bool;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use std::time::Duration;

pub async fn run(args: IngestArgs) -> Result<Report, BenchError> {
    args.check().map_err(BenchError::Options)?;
    let pool = build_pool(&PoolConfig {
        name: "primary".into(),
        url: args.database_url.clone(),
        min_idle: 0,
        max_size: u32::try_from(args.clients + 1).unwrap_or(u32::MAX),
        connect_timeout: Duration::from_secs(10),
        statement_timeout: Duration::from_secs(args.call_timeout_secs.max(60)),
        application_name: "audit-bench".into(),
        read_only: false,
        test_on_checkout: false,
    });
    ensure_empty(&pool).await?;
    let mut writer = WriterProcess::start(&args).await?;
    let mut report = Report::new(&args);
    report.print_header();
    for &phase in &args.phases {
        writer.ensure_running()?;
        reset(&pool).await?;
        let cx = Context {
            args: &args,
            pool: &pool,
            writer: &writer,
        };
        let outcome = outcome(run_phase(&cx, phase, &report).await);
        report.add(phase, outcome);
    }
    reset(&pool).await?;
    report.writer_peak_rss_mb = peak_rss_mb(writer.pid());
    writer.stop().await;
    report.print_summary();
    Ok(report)
}

async fn run_phase(
    cx: &Context<'_>,
    phase: PhaseName,
    report: &Report,
) -> Result<Measured, BenchError> {
    match phase {
        PhaseName::Naive => phases::naive::run(cx).await,
        PhaseName::Batched => phases::batched::run(cx).await,
        PhaseName::Unary => phases::unary::closed_loop(cx).await,
        PhaseName::UnaryHalf if cx.args.paced_rate > 0.0 => {
            phases::unary::paced_signals(cx, cx.args.paced_rate).await
        }
        PhaseName::UnaryHalf => match report.rate(PhaseName::Unary) {
            Some(peak) => phases::unary::paced_signals(cx, peak / 2.0).await,
            None => Err(BenchError::Options(
                "unary-half needs a measured unary phase, or --paced-rate".into(),
            )),
        },
        PhaseName::Stream => phases::stream::run(cx).await,
        PhaseName::NaiveEvents => phases::naive_events::run(cx).await,
        PhaseName::BatchedEvents => phases::events::batched(cx).await,
        PhaseName::Events => phases::events::run(cx).await,
        PhaseName::EventsHalf if cx.args.events_paced_rate > 0.0 => {
            phases::events::paced(cx, cx.args.events_paced_rate).await
        }
        PhaseName::EventsHalf => match report.rate(PhaseName::Events) {
            Some(peak) => phases::events::paced(cx, peak / 2.0).await,
            None => Err(BenchError::Options(
                "events-half needs a measured events phase, or --events-paced-rate".into(),
            )),
        },
        PhaseName::StreamEvents => phases::stream::run_events(cx).await,
    }
}

/// An RPC the writer does not implement (yet) makes its phase "not
/// available" rather than failed: the other phases still mean something.
fn outcome(result: Result<Measured, BenchError>) -> Outcome {
    match result {
        Ok(measured) => Outcome::Measured(measured),
        Err(BenchError::Call { call, status }) if status.code() == tonic::Code::Unimplemented => {
            Outcome::Unavailable(format!("{call} answered UNIMPLEMENTED"))
        }
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    flag: bool,
}

/// The bench truncates tables between phases: refuse a database that holds
/// anything, in case the URL points at data someone cares about.
async fn ensure_empty(pool: &PgPool) -> Result<(), BenchError> {
    let mut conn = pool.get().await.map_err(DbError::from)?;
    let Flag { flag: has_rows } = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM signals) OR EXISTS (SELECT 1 FROM signal_events) AS flag",
    )
    .get_result(&mut conn)
    .await
    .map_err(BenchError::query)?;
    if has_rows {
        return Err(BenchError::Options(
            "--database-url: the database is not empty; the bench needs an empty, migrated \
             database because it truncates its tables"
                .into(),
        ));
    }
    Ok(())
}

/// Every phase starts from empty tables and a fresh checkpoint, so no phase
/// pays for the previous one's index growth or dirty pages.
/// The TRUNCATE can deadlock with the writer's partition maintenance (both
/// lock `signals` and `signal_events`); the detector aborts one of them, so
/// it is simply tried again.
async fn reset(pool: &PgPool) -> Result<(), BenchError> {
    let mut conn = pool.get().await.map_err(DbError::from)?;
    let mut attempts = 0;
    loop {
        let reset = conn
            .batch_execute("TRUNCATE signals, signal_event_ids, signal_events CASCADE; CHECKPOINT;")
            .await
            .map_err(DbError::from);
        match reset {
            Err(DbError::Aborted(_)) if attempts < 5 => attempts += 1,
            other => return other.map_err(BenchError::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unimplemented_is_not_available_other_errors_fail() {
        let unimplemented = BenchError::call("Ingest", tonic::Status::unimplemented("no"));
        assert!(matches!(
            outcome(Err(unimplemented)),
            Outcome::Unavailable(why) if why == "Ingest answered UNIMPLEMENTED"
        ));
        let invalid = BenchError::call("Ingest", tonic::Status::invalid_argument("signals[0]"));
        assert!(matches!(outcome(Err(invalid)), Outcome::Failed(_)));
    }
}
