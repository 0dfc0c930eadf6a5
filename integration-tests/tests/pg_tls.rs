//! TLS to PostgreSQL: this test binary's own cluster is switched to
//! `ssl = on` with certificates generated here (rcgen). `require` encrypts,
//! `verify-full` checks the CA and the host name, `verify-ca` only the CA;
//! a wrong CA or host name is refused with a clear error; the services and
//! migrations connect the same way.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use diesel::QueryableByName;
use diesel::sql_types::Bool;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use integration_tests::pki::{Issued, TestCa, write};
use integration_tests::{Cluster, channel, cluster, connect, fresh_database, new_signal};
use integration_tests::{spawn_writer, writer_args};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
}

async fn uses_tls(conn: &mut AsyncPgConnection) -> bool {
    let Ssl { ssl } = diesel::sql_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .get_result(conn)
        .await
        .unwrap();
    ssl
}

/// Installs `server` as the primary's certificate and (re)loads it.
async fn serve_certificate(cluster: &Cluster, dir: &Path, server: &Issued) {
    let cert = write(dir, "server.crt", &server.cert_pem);
    let key = write(dir, "server.key", &server.key_pem);
    // PostgreSQL wants its key private to its own OS user.
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if root {
        for file in [&cert, &key] {
            assert!(
                Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(file)
                    .status()
                    .unwrap()
                    .success()
            );
        }
    }
    assert!(
        Command::new("chmod")
            .arg("600")
            .arg(&key)
            .status()
            .unwrap()
            .success()
    );
    let mut admin = connect(&cluster.primary_url("postgres")).await;
    // One statement per call: ALTER SYSTEM refuses a transaction block.
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        "ALTER SYSTEM SET ssl = on".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }
}

/// The primary URL for `db` with TLS parameters.
fn url(cluster: &Cluster, db: &str, params: &str) -> String {
    format!("{}?{params}", cluster.primary_url(db))
}

/// Connects with retries while the reload settles; the last error otherwise.
async fn try_connect(url: &str) -> Result<AsyncPgConnection, String> {
    let mut last = String::new();
    for _ in 0..40 {
        match audit_db::establish(url).await {
            Ok(conn) => return Ok(conn),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(last)
}

fn path_param(path: &Path) -> String {
    path.display().to_string().replace('/', "%2F")
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmodes_require_verify_ca_and_verify_full_against_a_tls_primary() {
    let cluster = cluster().await;
    let db = fresh_database(cluster).await;
    let dir: PathBuf = cluster.dir.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new("database ca");
    let other_ca = TestCa::new("some other ca");
    let ca_file = write(&dir, "ca.pem", &ca.pem);
    let other_ca_file = write(&dir, "other-ca.pem", &other_ca.pem);
    serve_certificate(cluster, &dir, &ca.server(&["127.0.0.1"])).await;

    // require: encrypted (the server's certificate is not checked).
    let mut conn = try_connect(&url(cluster, &db, "sslmode=require"))
        .await
        .unwrap();
    assert!(uses_tls(&mut conn).await);
    // disable: plaintext, as asked.
    let mut conn = audit_db::establish(&url(cluster, &db, "sslmode=disable"))
        .await
        .unwrap();
    assert!(!uses_tls(&mut conn).await);
    // The default (prefer) takes TLS when offered.
    let mut conn = audit_db::establish(&cluster.primary_url(&db))
        .await
        .unwrap();
    assert!(uses_tls(&mut conn).await);

    // verify-full with the right CA and host: encrypted and authenticated.
    let verify_full = url(
        cluster,
        &db,
        &format!("sslmode=verify-full&sslrootcert={}", path_param(&ca_file)),
    );
    let mut conn = audit_db::establish(&verify_full).await.unwrap();
    assert!(uses_tls(&mut conn).await);

    // A CA that did not sign the server's certificate: refused, saying why.
    let error = audit_db::establish(&url(
        cluster,
        &db,
        &format!("sslmode=verify-ca&sslrootcert={}", other_ca_file.display()),
    ))
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );

    // The services and migrations connect through the same path.
    assert!(
        !audit_migrations::applied(&verify_full)
            .await
            .unwrap()
            .is_empty()
    );
    let writer = spawn_writer(writer_args(verify_full.clone())).await;
    let recorded = SignalWriterServiceClient::new(channel(writer.addr).await)
        .record_signal(pb::RecordSignalRequest {
            signal: Some(new_signal("AAPL")),
        })
        .await;
    assert!(recorded.is_ok(), "{recorded:?}");
    writer.shutdown().await;

    // A certificate for another host: verify-full refuses it, verify-ca
    // (chain only) accepts it.
    serve_certificate(cluster, &dir, &ca.server(&["db.example"])).await;
    let mut refused = Ok(());
    for _ in 0..40 {
        refused = audit_db::establish(&verify_full).await.map(|_| ());
        if refused.is_err() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let error = refused.err().unwrap().to_string();
    assert!(
        error.contains("invalid peer certificate") && error.contains("not valid for name"),
        "{error}"
    );
    let verify_ca = url(
        cluster,
        &db,
        &format!("sslmode=verify-ca&sslrootcert={}", ca_file.display()),
    );
    let mut conn = audit_db::establish(&verify_ca).await.unwrap();
    assert!(uses_tls(&mut conn).await);

    // A server without TLS: require refuses to go on in plaintext.
    let mut admin = connect(&cluster.primary_url("postgres")).await;
    for sql in ["ALTER SYSTEM SET ssl = off", "SELECT pg_reload_conf()"] {
        admin.batch_execute(sql).await.unwrap();
    }
    let mut refused = Ok(());
    for _ in 0..40 {
        refused = audit_db::establish(&url(cluster, &db, "sslmode=require"))
            .await
            .map(|_| ());
        if refused.is_err() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let error = refused.err().unwrap().to_string();
    assert!(error.contains("TLS"), "{error}");
}
