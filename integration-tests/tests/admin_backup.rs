//! `audit-admin backup` / `restore-backup --to TIME` against a cluster with
//! WAL archiving to pgBackRest (`PG_CLUSTER_BACKUP=1 scripts/pg-cluster.sh`):
//! write, back up (full), write, back up (incremental), write, note a time,
//! write more, restore to that time into a fresh directory, and compare:
//! exactly the rows committed before that time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{BigInt, Text, Timestamptz};
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use integration_tests::{connect, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
        .join(name)
}

/// Stops the clusters of a test however it ends.
struct Clusters {
    dir: PathBuf,
    restored: PathBuf,
}

impl Drop for Clusters {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("backup.sh"))
            .arg("stop")
            .arg(&self.restored)
            .output();
        let _ = Command::new("bash")
            .arg(script("pg-cluster.sh"))
            .arg("stop")
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(QueryableByName)]
struct Probe {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Text)]
    sum: String,
}

async fn probe(url: &str, upto: i64) -> (i64, String) {
    let mut conn = connect(url).await;
    let Probe { n, sum } = diesel::sql_query(
        "SELECT count(*) AS n, COALESCE(md5(string_agg(p::text, ',' ORDER BY id)), '') AS sum \
         FROM probe p WHERE id <= $1",
    )
    .bind::<BigInt, _>(upto)
    .get_result(&mut conn)
    .await
    .unwrap();
    (n, sum)
}

async fn admin(args: &[String]) -> audit_admin::Output {
    let mut argv = vec!["audit-admin".to_owned()];
    argv.extend(args.iter().cloned());
    audit_admin::run(argv).await
}

#[tokio::test]
async fn backup_then_point_in_time_restore_holds_exactly_the_rows_before_the_time() {
    if Command::new("pgbackrest").arg("version").output().is_err() {
        panic!("pgbackrest is not installed (scripts/install-deps.sh installs it)");
    }
    let dir = tempfile::Builder::new()
        .prefix("audit-admin-backup-")
        .tempdir_in("/tmp")
        .unwrap()
        .keep();
    Command::new("chmod").arg("755").arg(&dir).status().unwrap();
    let clusters = Clusters {
        dir: dir.clone(),
        restored: dir.join("restored"),
    };
    let (primary, replica) = (free_port(), free_port());
    let started = Command::new("bash")
        .env("PG_CLUSTER_BACKUP", "1")
        .arg(script("pg-cluster.sh"))
        .args([
            "start",
            dir.to_str().unwrap(),
            &primary.to_string(),
            &replica.to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    let url = format!("postgres://postgres@127.0.0.1:{primary}/postgres");
    let config = dir.join("pgbackrest/pgbackrest.conf").display().to_string();
    let br = |more: &[&str]| {
        let mut args: Vec<String> = more.iter().map(|s| (*s).to_owned()).collect();
        args.push(format!("--pgbackrest-config={config}"));
        args
    };
    let mut conn = connect(&url).await;
    let insert = |from: i64, to: i64| {
        format!(
            "INSERT INTO probe SELECT g, md5(g::text), clock_timestamp() FROM generate_series({from}, {to}) g"
        )
    };
    conn.batch_execute(&format!(
        "CREATE TABLE probe (id bigint PRIMARY KEY, v text, at timestamptz); {}",
        insert(1, 100)
    ))
    .await
    .unwrap();

    let full = admin(&br(&["--json", "backup", "--type=full"])).await;
    assert_eq!(full.code, 0, "{full:?}");
    let full: serde_json::Value = serde_json::from_str(&full.stdout).unwrap();
    assert_eq!(full["kind"], "full");
    conn.batch_execute(&insert(101, 200)).await.unwrap();
    let incr = admin(&br(&["--json", "backup"])).await;
    assert_eq!(incr.code, 0, "{incr:?}");
    let incr: serde_json::Value = serde_json::from_str(&incr.stdout).unwrap();
    assert_eq!(incr["kind"], "incr");
    conn.batch_execute(&insert(201, 300)).await.unwrap();

    #[derive(QueryableByName)]
    struct Now {
        #[diesel(sql_type = Timestamptz)]
        at: DateTime<Utc>,
    }
    let Now { at } = diesel::sql_query("SELECT clock_timestamp() AS at")
        .get_result(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    conn.batch_execute(&insert(301, 400)).await.unwrap();
    // The WAL holding rows 301-400 (past the target) must be archived too,
    // so recovery can see where the target time falls.
    conn.batch_execute("SELECT pg_switch_wal()").await.unwrap();
    let info = admin(&br(&["--json", "backup-info"])).await;
    assert_eq!(info.code, 0, "{info:?}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&info.stdout)
            .unwrap()
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // Refused: a target that is not empty.
    let busy_target = dir.join("not-empty");
    std::fs::create_dir_all(&busy_target).unwrap();
    std::fs::write(busy_target.join("x"), "x").unwrap();
    let refused = admin(&br(&[
        "restore-backup",
        &format!("--to={}", at.to_rfc3339()),
        &format!("--target={}", busy_target.display()),
    ]))
    .await;
    assert_eq!(refused.code, 2);
    assert!(refused.stderr.contains("not empty"), "{}", refused.stderr);

    let port = free_port();
    let restored = admin(&br(&[
        "--json",
        "restore-backup",
        &format!("--to={}", at.to_rfc3339()),
        &format!("--target={}", clusters.restored.display()),
        &format!("--port={port}"),
        "--start",
    ]))
    .await;
    assert_eq!(restored.code, 0, "{restored:?}");
    let restored_url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let copy = probe(&restored_url, i64::MAX).await;
    assert_eq!(copy.0, 300, "the copy must hold exactly rows 1-300");
    assert_eq!(copy, probe(&url, 300).await);
    assert_eq!(probe(&url, i64::MAX).await.0, 400);
    let _ = Path::new(&clusters.dir);
}
