//! Least-privilege database roles: a login user granted `audit_writer` runs
//! the whole write path and its periodic jobs, yet cannot drop or truncate a
//! table nor change or delete an event; one granted `audit_reader` serves
//! reads and cannot write, even on the primary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_reader_service_client::SignalReaderServiceClient;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use diesel_async::SimpleAsyncConnection;
use integration_tests::{
    Cluster, channel, cluster, connect, fresh_database, new_event, new_signal, reader_args,
    spawn_reader, spawn_writer, wait_replica, writer_args,
};

/// A login user of `group` (trust authentication on the test cluster),
/// created once per test binary.
async fn login_user(cluster: &Cluster, group: &str) -> String {
    let user = format!("{group}_login_{}", std::process::id());
    let mut admin = connect(&cluster.primary_url("postgres")).await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}') THEN \
             CREATE ROLE {user} LOGIN IN ROLE {group}; END IF; END $$"
        ))
        .await
        .unwrap();
    user
}

fn url_as(cluster: &Cluster, port: u16, user: &str, db: &str) -> String {
    let _ = cluster;
    format!("postgres://{user}@127.0.0.1:{port}/{db}")
}

/// Runs `sql` and returns the error text, or "ok".
async fn try_sql(url: &str, sql: &str) -> String {
    let mut conn = connect(url).await;
    match conn.batch_execute(sql).await {
        Ok(()) => "ok".into(),
        Err(error) => error.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_writer_role_writes_and_maintains_but_cannot_destroy() {
    let cluster = cluster().await;
    let db = fresh_database(cluster).await;
    let user = login_user(cluster, "audit_writer").await;
    let url = url_as(cluster, cluster.primary_port, &user, &db);

    // The whole write path through the service, as the writer role.
    let writer = spawn_writer(writer_args(url.clone())).await;
    let mut client = SignalWriterServiceClient::new(channel(writer.addr).await);
    let signal = client
        .record_signal(pb::RecordSignalRequest {
            signal: Some(new_signal("AAPL")),
        })
        .await
        .unwrap()
        .into_inner()
        .signal
        .unwrap();
    client
        .record_event(pb::RecordEventRequest {
            event: Some(new_event(
                &signal.signal_id,
                pb::SignalStatus::Processing,
                pb::SignalLocation::ProcessingQueue,
                None,
            )),
        })
        .await
        .unwrap();
    client
        .add_tags(pb::AddTagsRequest {
            signal_id: signal.signal_id.clone(),
            tags: vec!["vip".into()],
        })
        .await
        .unwrap();

    // Its periodic jobs: rollups, the hourly analytics tables, partitions.
    let pool = audit_db::build_pool(&writer_args(url.clone()).pool());
    audit_writer::store::rollups::refresh(&pool).await.unwrap();
    let analytics = audit_writer::store::analytics::refresh(
        &pool,
        audit_writer::store::analytics::Minutes::All,
    )
    .await
    .unwrap();
    assert!(analytics.stage_hours >= 1 && analytics.activity_hours >= 1);
    audit_writer::store::maintenance::run_partition_maintenance(&pool)
        .await
        .unwrap();

    // What it must never do.
    for sql in [
        "DROP TABLE signals",
        "DROP TABLE signal_events",
        "TRUNCATE signal_events",
        "TRUNCATE signals CASCADE",
        "DELETE FROM signal_events",
        "UPDATE signal_events SET details = 'rewritten'",
        "DELETE FROM signal_event_ids",
        "DELETE FROM signals",
        "ALTER TABLE signals ADD COLUMN x int",
        "CREATE TABLE sneaky (i int)",
        "DROP TABLE stage_latency_hourly",
        "TRUNCATE ticker_activity_hourly",
    ] {
        let answer = try_sql(&url, sql).await;
        assert!(
            answer.contains("permission denied") || answer.contains("must be owner"),
            "{sql}: {answer}"
        );
    }
    // A partition reached directly is no way round it.
    let mut owner = connect(&cluster.primary_url(&db)).await;
    let partition = integration_tests::any_event_partition(&mut owner).await;
    let answer = try_sql(&url, &format!("DELETE FROM {partition}")).await;
    assert!(answer.contains("permission denied"), "{answer}");

    // Nothing was lost.
    assert_eq!(
        integration_tests::count_rows(&mut owner, "signal_events").await,
        2
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_reader_role_reads_and_cannot_write_even_on_the_primary() {
    let cluster = cluster().await;
    let db = fresh_database(cluster).await;
    let user = login_user(cluster, "audit_reader").await;
    let primary = url_as(cluster, cluster.primary_port, &user, &db);
    let replica = url_as(cluster, cluster.replica_port, &user, &db);

    let mut owner = connect(&cluster.primary_url(&db)).await;
    owner
        .batch_execute(
            "INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, \
             original_signal, current_status, current_location, created_at, updated_at) VALUES \
             (gen_random_uuid(), 'AAPL', 'AAPL', 'buy', 'open', 1, '{}', 'received', \
              'processing_queue', now(), now())",
        )
        .await
        .unwrap();
    assert_eq!(
        try_sql(&primary, "SELECT count(*) FROM signals").await,
        "ok"
    );
    for sql in [
        "INSERT INTO signal_event_ids VALUES (gen_random_uuid(), gen_random_uuid(), now())",
        "UPDATE signals SET tags = '{x}'",
        "DELETE FROM signals",
        "TRUNCATE rollup_dirty",
        "SELECT audit_maintain_partitions()",
        "DROP TABLE ticker_activity_hourly",
        "DELETE FROM stage_latency_hourly",
    ] {
        let answer = try_sql(&primary, sql).await;
        assert!(
            answer.contains("permission denied") || answer.contains("must be owner"),
            "{sql}: {answer}"
        );
    }

    // The reader service runs as this role on the replica.
    wait_replica(cluster).await;
    let reader = spawn_reader(reader_args(replica)).await;
    let listed = SignalReaderServiceClient::new(channel(reader.addr).await)
        .list_signals(pb::ListSignalsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.signals.len(), 1);
}

/// The writer's schema guard and `audit-admin migrate status` read diesel's
/// bookkeeping as the service roles, which may not create that table: the
/// guard must still refuse a newer schema (not skip the check), and status
/// must list the migrations.
#[tokio::test(flavor = "multi_thread")]
async fn the_service_roles_see_the_schema_version() {
    let cluster = cluster().await;
    let db = fresh_database(cluster).await;
    let writer = url_as(
        cluster,
        cluster.primary_port,
        &login_user(cluster, "audit_writer").await,
        &db,
    );
    let admin = url_as(
        cluster,
        cluster.primary_port,
        &login_user(cluster, "audit_admin").await,
        &db,
    );
    let known = audit_migrations::known();

    // Read, not skipped: every migration applied, none unknown.
    let status = audit_migrations::ensure_known(&writer).await.unwrap();
    assert_eq!(status.applied, known);
    let listed = audit_admin::run([
        "audit-admin".to_owned(),
        format!("--database-url={admin}"),
        "--json".into(),
        "migrate".into(),
        "status".into(),
    ])
    .await;
    assert_eq!(listed.code, 0, "{listed:?}");
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(listed["applied"], serde_json::json!(known));
    assert_eq!(listed["pending"], serde_json::json!([]));

    // A newer release migrated the database.
    let mut owner = connect(&cluster.primary_url(&db)).await;
    owner
        .batch_execute("INSERT INTO __diesel_schema_migrations (version) VALUES ('20991231000000')")
        .await
        .unwrap();
    let refused = audit_writer::server::check_schema(&writer_args(writer.clone()))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("newer than this build") && refused.contains("20991231000000"),
        "the writer role started against a newer schema: {refused:?}"
    );
    let listed = audit_admin::run([
        "audit-admin".to_owned(),
        format!("--database-url={admin}"),
        "migrate".into(),
        "status".into(),
    ])
    .await;
    assert_eq!(listed.code, 0, "{listed:?}");
    assert!(
        listed.stdout.contains("unknown  20991231000000"),
        "{}",
        listed.stdout
    );
    // The roles read the bookkeeping, never change it.
    let answer = try_sql(
        &writer,
        "DELETE FROM __diesel_schema_migrations WHERE version = '20991231000000'",
    )
    .await;
    assert!(answer.contains("permission denied"), "{answer}");
}
