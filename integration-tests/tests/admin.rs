//! `audit-admin` against the real primary: migrations and the writer's
//! schema guard, partitions, data-quality checks, and the job locks that
//! keep the writer's periodic jobs to one writer at a time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_db::leader::{Job, Turn, with_job_lock};
use audit_db::{PgPool, PoolConfig, build_pool};
use diesel::QueryableByName;
use diesel::sql_types::Timestamptz;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use integration_tests::{cluster, connect, fresh_database, wait_until, writer_args};
use std::time::Duration;

async fn admin(url: &str, args: &[&str]) -> audit_admin::Output {
    let mut argv = vec!["audit-admin".to_owned(), format!("--database-url={url}")];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    audit_admin::run(argv).await
}

fn json(output: &audit_admin::Output) -> serde_json::Value {
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", output.stdout))
}

fn pool(url: &str) -> PgPool {
    build_pool(&PoolConfig {
        name: "admin-test".into(),
        url: url.to_owned(),
        min_idle: 0,
        max_size: 4,
        connect_timeout: Duration::from_secs(5),
        statement_timeout: Duration::from_secs(30),
        application_name: "admin-test".into(),
        read_only: false,
        test_on_checkout: false,
    })
}

#[tokio::test]
async fn migrate_status_down_and_the_writers_guard_against_a_newer_schema() {
    let cluster = cluster().await;
    let url = cluster.primary_url(&fresh_database(cluster).await);

    let status = admin(&url, &["--json", "migrate", "status"]).await;
    assert_eq!(status.code, 0, "{status:?}");
    let status = json(&status);
    assert_eq!(status["pending"], serde_json::json!([]));
    assert_eq!(
        status["applied"].as_array().map(Vec::len),
        Some(audit_migrations::known().len())
    );

    // Destructive without --yes: refused, nothing reverted.
    let refused = admin(&url, &["migrate", "down"]).await;
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("without --yes"),
        "{}",
        refused.stderr
    );
    assert!(
        audit_migrations::status(&url)
            .await
            .unwrap()
            .pending
            .is_empty()
    );

    // One step down and up again.
    let down = admin(&url, &["--json", "migrate", "down", "--yes"]).await;
    assert_eq!(down.code, 0, "{down:?}");
    assert_eq!(json(&down)["reverted"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        audit_migrations::status(&url).await.unwrap().pending.len(),
        1
    );
    let up = admin(&url, &["migrate", "up"]).await;
    assert_eq!(up.code, 0, "{up:?}");
    assert!(
        audit_migrations::status(&url)
            .await
            .unwrap()
            .pending
            .is_empty()
    );

    // A newer release migrated the database: the writer refuses to start,
    // and status names the unknown version.
    let mut conn = connect(&url).await;
    conn.batch_execute(
        "INSERT INTO __diesel_schema_migrations (version) VALUES ('20991231000000')",
    )
    .await
    .unwrap();
    let error = audit_writer::server::check_schema(&writer_args(url.clone()))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        error.contains("newer than this build") && error.contains("20991231000000"),
        "{error}"
    );
    let mut allowed = writer_args(url.clone());
    allowed.allow_newer_schema = true;
    assert!(audit_writer::server::check_schema(&allowed).await.is_ok());
    let status = admin(&url, &["migrate", "status"]).await;
    assert!(
        status.stdout.contains("unknown  20991231000000"),
        "{}",
        status.stdout
    );
    let down = admin(&url, &["migrate", "down", "--yes"]).await;
    assert_eq!(down.code, 2, "{down:?}");

    // An unreachable database does not stop the writer from starting.
    let unreachable = writer_args("postgres://postgres@127.0.0.1:1/nothing".into());
    assert!(
        audit_writer::server::check_schema(&unreachable)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn partitions_are_listed_and_created_ahead_and_back() {
    let cluster = cluster().await;
    let url = cluster.primary_url(&fresh_database(cluster).await);
    let from = (chrono::Utc::now() - chrono::TimeDelta::days(12)).date_naive();

    let ensured = admin(
        &url,
        &[
            "--json",
            "partitions",
            "ensure",
            "--ahead-days=10",
            &format!("--from={from}"),
        ],
    )
    .await;
    assert_eq!(ensured.code, 0, "{ensured:?}");
    let created = json(&ensured)["created"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        created.contains(&serde_json::json!(from.to_string())),
        "{created:?}"
    );
    // Idempotent.
    let again = admin(
        &url,
        &[
            "--json",
            "partitions",
            "ensure",
            "--ahead-days=10",
            &format!("--from={from}"),
        ],
    )
    .await;
    assert_eq!(json(&again)["created"], serde_json::json!([]));

    let list = admin(&url, &["--json", "partitions", "list", "--exact"]).await;
    assert_eq!(list.code, 0, "{list:?}");
    let list = json(&list);
    let days: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["day"].as_str().map(ToOwned::to_owned))
        .collect();
    assert!(days.contains(&from.to_string()));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|p| p["day"].is_string()),
        "a default partition is listed: {list}"
    );

    // A day without a partition takes no event (there is no default
    // partition to catch it) until `ensure` makes it.
    let old = (chrono::Utc::now() - chrono::TimeDelta::days(40)).date_naive();
    let insert = format!(
        "INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal, created_at, updated_at) \
         VALUES ('00000000-0000-0000-0000-000000000001', 'A', 'A', 'buy', 'open', 1, '{{}}', '{old} 10:00+00', '{old} 10:00+00'); \
         INSERT INTO signal_events (event_id, signal_id, ts, event_type, location, normalised_ticker) \
         VALUES (gen_random_uuid(), '00000000-0000-0000-0000-000000000001', '{old} 10:00+00', 'received', 'processing_queue', 'A');"
    );
    let mut conn = connect(&url).await;
    let refused = conn
        .batch_execute(&format!("BEGIN; {insert} COMMIT;"))
        .await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("no partition")),
        "{refused:?}"
    );
    conn.batch_execute("ROLLBACK").await.unwrap();
    let ensured = admin(
        &url,
        &["--json", "partitions", "ensure", &format!("--from={old}")],
    )
    .await;
    assert_eq!(ensured.code, 0, "{ensured:?}");
    assert!(
        json(&ensured)["created"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(old.to_string()))
    );
    conn.batch_execute(&insert).await.unwrap();
}

#[derive(QueryableByName)]
struct Ticker {
    #[diesel(sql_type = diesel::sql_types::Text)]
    normalised_ticker: String,
}

#[derive(QueryableByName)]
struct Starts {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    processing_starts: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    forwarding_starts: i32,
}

/// The migration that keeps retry counting's start counters on the signal
/// row counts the events stored before it.
#[tokio::test]
async fn the_start_counters_migration_counts_the_events_already_stored() {
    let cluster = cluster().await;
    let url = cluster.primary_url(&fresh_database(cluster).await);
    // Back to the schema before it: it and every migration after it.
    let mut reverted = Vec::new();
    while !reverted
        .iter()
        .any(|v: &String| v.starts_with("20261206000100"))
    {
        let last = audit_migrations::revert_last(&url, 1).await.unwrap();
        assert!(
            !last.is_empty(),
            "never reverted 20261206000100: {reverted:?}"
        );
        reverted.extend(last);
    }
    let mut conn = connect(&url).await;
    let signal = "00000000-0000-0000-0000-00000000c0de";
    let mut sql = format!(
        "INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal, created_at, updated_at) \
         VALUES ('{signal}', 'A', 'A', 'buy', 'open', 1, '{{}}', now(), now()); \
         INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal, created_at, updated_at) \
         VALUES ('00000000-0000-0000-0000-0000000000f0', 'B', 'B', 'buy', 'open', 1, '{{}}', now(), now());"
    );
    for kind in [
        "processing",
        "processing",
        "approved",
        "forwarding",
        "forwarding",
        "forwarding",
    ] {
        sql.push_str(&format!(
            " INSERT INTO signal_events (event_id, signal_id, ts, event_type, location) \
             VALUES (gen_random_uuid(), '{signal}', now(), '{kind}', 'worker_processing');"
        ));
    }
    sql.push_str(
        " INSERT INTO signal_events (event_id, signal_id, ts, event_type, location) \
         VALUES (gen_random_uuid(), '00000000-0000-0000-0000-0000000000f0', now(), 'received', 'processing_queue');",
    );
    conn.batch_execute(&sql).await.unwrap();
    audit_migrations::run_pending(&url).await.unwrap();
    let counted: Vec<Starts> = diesel::sql_query(
        "SELECT processing_starts, forwarding_starts FROM signals ORDER BY signal_id DESC",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let counted: Vec<(i32, i32)> = counted
        .iter()
        .map(|s| (s.processing_starts, s.forwarding_starts))
        .collect();
    assert_eq!(counted, vec![(2, 3), (0, 0)]);
    // Events recorded before they carried their signal's ticker get it
    // from the signal (2026-12-07-000100).
    let tickers: Vec<Ticker> = diesel::sql_query(
        "SELECT DISTINCT normalised_ticker FROM signal_events ORDER BY normalised_ticker",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let tickers: Vec<&str> = tickers
        .iter()
        .map(|t| t.normalised_ticker.as_str())
        .collect();
    assert_eq!(tickers, vec!["A", "B"]);
}

#[tokio::test]
async fn check_exits_one_on_findings() {
    let cluster = cluster().await;
    let url = cluster.primary_url(&fresh_database(cluster).await);
    let clean = admin(&url, &["--json", "check"]).await;
    assert_eq!(clean.code, 0, "{clean:?}");
    assert!(
        json(&clean)
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["count"] == 0)
    );

    // An event id claimed without its event.
    let mut conn = connect(&url).await;
    conn.batch_execute(
        "INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal, created_at, updated_at) \
         VALUES ('00000000-0000-0000-0000-000000000002', 'A', 'A', 'buy', 'open', 1, '{}', now(), now()); \
         INSERT INTO signal_event_ids VALUES ('00000000-0000-0000-0000-0000000000ee', '00000000-0000-0000-0000-000000000002', now());",
    )
    .await
    .unwrap();
    let found = admin(&url, &["check"]).await;
    assert_eq!(found.code, 1, "{found:?}");
    assert!(
        found.stdout.contains("orphan_events      1")
            && found
                .stdout
                .contains("00000000-0000-0000-0000-0000000000ee"),
        "{}",
        found.stdout
    );

    // A check already running elsewhere: refused, exit 2.
    let pool = pool(&url);
    let turn = with_job_lock(&pool, Job::QualityCheck, async || {
        let busy = admin(&url, &["check"]).await;
        Ok::<_, audit_db::DbError>(busy)
    })
    .await
    .unwrap();
    let Turn::Ran(busy) = turn else {
        panic!("lock not taken")
    };
    assert_eq!(busy.code, 2);
    assert!(busy.stderr.contains("in progress"), "{}", busy.stderr);
}

#[tokio::test]
async fn a_job_runs_in_one_place_at_a_time() {
    let cluster = cluster().await;
    let url = cluster.primary_url(&fresh_database(cluster).await);
    let pool = pool(&url);
    // Two contenders for the same job: the second is told it is busy; a
    // different job is not affected.
    let turn = with_job_lock(&pool, Job::AnalyticsRefresh, async || {
        let second = with_job_lock(&pool, Job::AnalyticsRefresh, async || {
            Ok::<_, audit_db::DbError>(())
        })
        .await?;
        let other = with_job_lock(&pool, Job::RollupRefresh, async || {
            Ok::<_, audit_db::DbError>(())
        })
        .await?;
        Ok::<_, audit_db::DbError>((second, other))
    })
    .await
    .unwrap();
    assert_eq!(turn, Turn::Ran((Turn::Busy, Turn::Ran(()))));
    // Released afterwards.
    assert_eq!(
        with_job_lock(&pool, Job::AnalyticsRefresh, async || Ok::<
            _,
            audit_db::DbError,
        >(1))
        .await
        .unwrap(),
        Turn::Ran(1)
    );
}

#[derive(QueryableByName)]
struct RefreshedAt {
    #[diesel(sql_type = Timestamptz)]
    refreshed_at: chrono::DateTime<chrono::Utc>,
}

async fn analytics_refreshed_at(url: &str) -> chrono::DateTime<chrono::Utc> {
    let mut conn = connect(url).await;
    let RefreshedAt { refreshed_at } =
        diesel::sql_query("SELECT refreshed_at FROM analytics_state")
            .get_result(&mut conn)
            .await
            .unwrap();
    refreshed_at
}

/// The writer's analytics refresh skips its turns while another writer
/// holds the job, and runs once it is free.
#[tokio::test]
async fn the_writers_analytics_refresh_waits_for_the_job_lock() {
    let cluster = cluster().await;
    let url = cluster.primary_url(&fresh_database(cluster).await);
    let holder_pool = pool(&url);
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let (taken, is_taken) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        with_job_lock(&holder_pool, Job::AnalyticsRefresh, async || {
            let _ = taken.send(());
            let _ = released.await;
            Ok::<_, audit_db::DbError>(())
        })
        .await
    });
    is_taken.await.unwrap();
    // As of an hour ago: a scheduled pass moves it to the current minute
    // (it takes only ended minutes, and as_of never goes back), while the
    // migration left it at the migration's own time, often within this
    // minute already.
    diesel::sql_query("UPDATE analytics_state SET refreshed_at = now() - interval '1 hour'")
        .execute(&mut connect(&url).await)
        .await
        .unwrap();
    let before = analytics_refreshed_at(&url).await;
    // A writer refreshing every second, on the database whose job is held.
    let mut args = writer_args(url.clone());
    args.analytics_refresh_secs = 1;
    let writer = integration_tests::spawn_writer(args).await;
    // Three of its periods pass with the job held elsewhere: no refresh.
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert_eq!(
        analytics_refreshed_at(&url).await,
        before,
        "refreshed while another held the job"
    );
    let _ = release.send(());
    assert_eq!(holder.await.unwrap().unwrap(), Turn::Ran(()));
    wait_until(
        "the analytics refresh once the job is free",
        Duration::from_secs(15),
        Duration::from_millis(100),
        async || (analytics_refreshed_at(&url).await != before).then_some(()),
    )
    .await;
    writer.shutdown().await;
}

#[tokio::test]
async fn help_is_everywhere() {
    for args in [
        vec!["--help"],
        vec!["migrate", "--help"],
        vec!["migrate", "down", "--help"],
        vec!["partitions", "ensure", "--help"],
        vec!["retention", "run", "--help"],
        vec!["restore", "--help"],
        vec!["check", "--help"],
    ] {
        let output = admin("postgres://unused", &args).await;
        assert_eq!(output.code, 0, "{args:?}");
        assert!(
            output.stdout.contains("Usage"),
            "{args:?}: {}",
            output.stdout
        );
    }
    let bad = admin("postgres://unused", &["retention", "frobnicate"]).await;
    assert_eq!(bad.code, 2);
}
