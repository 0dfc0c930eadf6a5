//! TLS to PostgreSQL: this test binary's own cluster is switched to
//! `ssl = on` with certificates generated here (rcgen). `require` encrypts,
//! `verify-full` checks the CA and the host name, `verify-ca` only the CA;
//! a wrong CA or host name is refused with a clear error; the services and
//! migrations connect the same way. Client certificates (`sslcert` and
//! `sslkey`) log in a user whose `pg_hba.conf` line says `cert`.
//!
//! Both tests reconfigure the one primary of this binary, so they take
//! [`SERVER_TLS`] in turn.

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
use integration_tests::{spawn_writer, wait_until, writer_args};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The primary's TLS settings are this binary's shared state: one test at a
/// time changes them.
static SERVER_TLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _server = SERVER_TLS.lock().await;
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

#[derive(QueryableByName)]
struct Who {
    #[diesel(sql_type = diesel::sql_types::Text)]
    user_name: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    client_dn: String,
}

/// The login role the `cert` line of pg_hba.conf is for.
const CERT_USER: &str = "audit_cert_client";
/// In the URL on purpose: `cert` authentication ignores it, and no error
/// may repeat it.
const URL_PASSWORD: &str = "pw-never-shown-7c1e";

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_log_in_a_cert_user_and_no_certificate_or_a_foreign_one_is_refused() {
    let _server = SERVER_TLS.lock().await;
    let cluster = cluster().await;
    let db = fresh_database(cluster).await;
    let dir: PathBuf = cluster.dir.join("tls-client");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new("database ca");
    let other_ca = TestCa::new("some other ca");
    let ca_file = write(&dir, "ca.pem", &ca.pem);
    let client = ca.client(CERT_USER);
    let client_cert = write(&dir, "client.crt", &client.cert_pem);
    let client_key = write(&dir, "client.key", &client.key_pem);
    // Same name, wrong issuer.
    let foreign = other_ca.client(CERT_USER);
    let foreign_cert = write(&dir, "foreign.crt", &foreign.cert_pem);
    let foreign_key = write(&dir, "foreign.key", &foreign.key_pem);
    // Right issuer, another user's name.
    let stranger = ca.client("someone_else");
    let stranger_cert = write(&dir, "stranger.crt", &stranger.cert_pem);
    let stranger_key = write(&dir, "stranger.key", &stranger.key_pem);

    // The server: TLS with `ca` as the CA client certificates must chain
    // to, and CERT_USER allowed in only with a certificate naming it (the
    // first matching pg_hba.conf line decides, so it goes on top). The
    // role writes as the writer service would.
    let mut admin = connect(&cluster.primary_url("postgres")).await;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{CERT_USER}') \
             THEN CREATE ROLE {CERT_USER} LOGIN IN ROLE audit_writer; END IF; END $$"
        ))
        .await
        .unwrap();
    #[derive(QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        hba_file: String,
    }
    let Setting { hba_file } = diesel::sql_query("SHOW hba_file")
        .get_result(&mut admin)
        .await
        .unwrap();
    let hba = std::fs::read_to_string(&hba_file).unwrap();
    // Rewritten in place: the file keeps its owner (postgres).
    std::fs::write(
        &hba_file,
        format!("hostssl all {CERT_USER} 127.0.0.1/32 cert\n{hba}"),
    )
    .unwrap();
    serve_certificate(cluster, &dir, &ca.server(&["127.0.0.1"])).await;
    for sql in [
        format!("ALTER SYSTEM SET ssl_ca_file = '{}'", ca_file.display()),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        admin.batch_execute(&sql).await.unwrap();
    }

    let cert_url = |cert: &Path, key: &Path| {
        format!(
            "postgres://{CERT_USER}:{URL_PASSWORD}@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            cluster.primary_port,
            path_param(&ca_file),
            path_param(cert),
            path_param(key),
        )
    };
    let with_cert = cert_url(&client_cert, &client_key);

    // A valid client certificate: logged in as the user it names, and the
    // server saw the certificate.
    let mut conn = wait_until(
        "the primary to accept the client certificate",
        Duration::from_secs(20),
        Duration::from_millis(50),
        async || audit_db::establish(&with_cert).await.ok(),
    )
    .await;
    let who: Who = diesel::sql_query(
        "SELECT current_user::text AS user_name, coalesce(client_dn, '') AS client_dn \
         FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    assert_eq!(who.user_name, CERT_USER);
    assert_eq!(who.client_dn, format!("/CN={CERT_USER}"));

    // The writer service connects the same way. (Not audit_migrations:
    // diesel's bookkeeping runs CREATE TABLE IF NOT EXISTS, which a login
    // of audit_writer may not; the other test covers migrations over TLS.)
    let writer = spawn_writer(writer_args(with_cert.clone())).await;
    let recorded = SignalWriterServiceClient::new(channel(writer.addr).await)
        .record_signal(pb::RecordSignalRequest {
            signal: Some(new_signal("AAPL")),
        })
        .await;
    assert!(recorded.is_ok(), "{recorded:?}");
    writer.shutdown().await;

    let no_secret = |error: &str| {
        assert!(
            !error.contains(URL_PASSWORD),
            "the password leaked: {error}"
        );
        for key in [&client.key_pem, &foreign.key_pem] {
            let body = key.lines().nth(1).unwrap();
            assert!(!error.contains(body), "key material leaked: {error}");
        }
    };

    // No certificate: the server refuses, saying a certificate is needed.
    let without = format!(
        "postgres://{CERT_USER}:{URL_PASSWORD}@127.0.0.1:{}/{db}?sslmode=verify-full&sslrootcert={}",
        cluster.primary_port,
        path_param(&ca_file),
    );
    let error = audit_db::establish(&without)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("connection requires a valid client certificate"),
        "{error}"
    );
    no_secret(&error);

    // A certificate from a CA the server does not trust: the handshake is
    // refused, and the error says it was the client certificate, naming
    // its file.
    let error = audit_db::establish(&cert_url(&foreign_cert, &foreign_key))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("received fatal alert: UnknownCA")
            && error.contains(&format!(
                "the server refused the client certificate sslcert {}",
                foreign_cert.display()
            )),
        "{error}"
    );
    no_secret(&error);

    // A trusted certificate for someone else: not this user.
    let error = audit_db::establish(&cert_url(&stranger_cert, &stranger_key))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains(&format!(
            "certificate authentication failed for user \"{CERT_USER}\""
        )),
        "{error}"
    );
    no_secret(&error);

    // Mistakes in the URL are named before any connection is tried.
    let error = audit_db::establish(&format!("{without}&sslcert={}", path_param(&client_cert)))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("sslcert needs sslkey"), "{error}");
    let error = audit_db::establish(&cert_url(&client_cert, &client_cert))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("sslkey") && error.contains("no usable private key"),
        "{error}"
    );
    no_secret(&error);

    // Leave the primary as the other test expects to find it (a hostssl
    // line is only a warning while ssl is off, but it is not left behind).
    std::fs::write(&hba_file, &hba).unwrap();
    for sql in [
        "ALTER SYSTEM RESET ssl_ca_file",
        "ALTER SYSTEM SET ssl = off",
        "SELECT pg_reload_conf()",
    ] {
        admin.batch_execute(sql).await.unwrap();
    }
}
