//! gRPC over TLS: mutual TLS refuses clients without a certificate from the
//! configured CA, identifies the ones with one, and certificates reload
//! under a running server without dropping calls in flight. Certificates
//! are generated per test (rcgen).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use integration_tests::pki::{Issued, TestCa, write};
use integration_tests::{auth_on, cluster, fresh_database, new_signal, spawn_writer, writer_args};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// A TLS channel to `addr` trusting `ca_pem`, presenting `identity` if any.
async fn tls_channel(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .domain_name("localhost");
    if let Some(id) = identity {
        tls = tls.identity(Identity::from_pem(&id.cert_pem, &id.key_pem));
    }
    Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// RecordSignal over a fresh TLS connection: the answer's recorded_by, or
/// why the connection or call failed.
async fn record(
    addr: SocketAddr,
    ca_pem: &str,
    identity: Option<&Issued>,
) -> Result<String, String> {
    let channel = tls_channel(addr, ca_pem, identity)
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    SignalWriterServiceClient::new(channel)
        .record_signal(pb::RecordSignalRequest {
            signal: Some(new_signal("AAPL")),
        })
        .await
        .map(|r| r.into_inner().signal.unwrap_or_default().recorded_by)
        .map_err(|status| format!("call: {status:?}"))
}

fn server_files(dir: &Path, server: &Issued) {
    write(dir, "server.crt", &server.cert_pem);
    write(dir, "server.key", &server.key_pem);
}

#[tokio::test(flavor = "multi_thread")]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_ca() {
    let cluster = cluster().await;
    let db = fresh_database(cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("audit test ca");
    let rogue = TestCa::new("rogue ca");
    server_files(dir.path(), &ca.server(&["localhost", "127.0.0.1"]));
    let ca_file = write(dir.path(), "client-ca.pem", &ca.pem);

    let mut args = writer_args(cluster.primary_url(&db));
    args.security.tls.tls_cert_file = Some(dir.path().join("server.crt"));
    args.security.tls.tls_key_file = Some(dir.path().join("server.key"));
    args.security.tls.tls_client_ca_file = Some(ca_file);
    auth_on(
        &mut args.security.auth,
        dir.path(),
        &[],
        &[("writer", "ingest-bot")],
    );
    let writer = spawn_writer(args).await;
    let addr = writer.addr;

    // A client certificate from the CA, mapped to a caller: admitted, and
    // the rows it writes name it.
    let good = ca.client("ingest-bot");
    let mut admitted = Err(String::new());
    for _ in 0..50 {
        admitted = record(addr, &ca.pem, Some(&good)).await;
        if admitted.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(admitted, Ok("ingest-bot".to_owned()));

    // No certificate, or one from another CA: the handshake is refused.
    let none = record(addr, &ca.pem, None).await;
    assert!(none.is_err(), "{none:?}");
    let forged = record(addr, &ca.pem, Some(&rogue.client("ingest-bot"))).await;
    assert!(forged.is_err(), "{forged:?}");
    // A valid certificate nobody mapped to a role: UNAUTHENTICATED.
    let stranger = record(addr, &ca.pem, Some(&ca.client("stranger"))).await;
    assert!(
        stranger
            .as_ref()
            .is_err_and(|e| e.contains("Unauthenticated") && e.contains("stranger")),
        "{stranger:?}"
    );
    // A client that does not trust the server's CA gives up on its own.
    let distrust = record(addr, &rogue.pem, Some(&good)).await;
    assert!(distrust.is_err(), "{distrust:?}");
    // Plaintext against a TLS port goes nowhere.
    let plain = async {
        let channel = Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        SignalWriterServiceClient::new(channel)
            .record_signal(pb::RecordSignalRequest {
                signal: Some(new_signal("AAPL")),
            })
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
    .await;
    assert!(plain.is_err(), "{plain:?}");

    // grpcurl (grpc-go: needs ALPN h2) with -cacert and a client certificate.
    if which("grpcurl") {
        let client_crt = write(dir.path(), "client.crt", &good.cert_pem);
        let client_key = write(dir.path(), "client.key", &good.key_pem);
        let ca_pem = write(dir.path(), "ca.pem", &ca.pem);
        let output = tokio::process::Command::new("grpcurl")
            .arg("-cacert")
            .arg(&ca_pem)
            .arg("-cert")
            .arg(&client_crt)
            .arg("-key")
            .arg(&client_key)
            .arg("-servername")
            .arg("localhost")
            .arg(addr.to_string())
            .arg("list")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("signal_audit.v1.SignalWriterService"),
            "grpcurl: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_certificate_is_picked_up_without_dropping_a_call_in_flight() {
    let cluster = cluster().await;
    let db = fresh_database(cluster).await;
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new("old ca");
    let new_ca = TestCa::new("new ca");
    server_files(dir.path(), &old_ca.server(&["localhost", "127.0.0.1"]));

    let mut args = writer_args(cluster.primary_url(&db));
    args.security.tls.tls_cert_file = Some(dir.path().join("server.crt"));
    args.security.tls.tls_key_file = Some(dir.path().join("server.key"));
    args.security.tls.tls_reload_secs = 1;
    let writer = spawn_writer(args).await;
    let addr = writer.addr;

    // An Ingest stream opened under the old certificate...
    let mut channel = None;
    for _ in 0..50 {
        if let Ok(c) = tls_channel(addr, &old_ca.pem, None).await {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut client = SignalWriterServiceClient::new(channel.unwrap());
    let (chunks, outbound) = tokio::sync::mpsc::channel(4);
    let mut acks = client
        .ingest(tokio_stream::wrappers::ReceiverStream::new(outbound))
        .await
        .unwrap()
        .into_inner();
    let chunk = |id| pb::IngestRequest {
        chunk_id: id,
        signals: vec![new_signal("MSFT")],
        events: vec![],
    };
    chunks.send(chunk(1)).await.unwrap();
    assert_eq!(acks.message().await.unwrap().unwrap().code, 0);

    // ...the files change; new connections get the new certificate...
    server_files(dir.path(), &new_ca.server(&["localhost", "127.0.0.1"]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while record(addr, &new_ca.pem, None).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old = record(addr, &old_ca.pem, None).await;
    assert!(old.is_err(), "still serving the old certificate: {old:?}");

    // ...and the stream opened before carries on.
    chunks.send(chunk(2)).await.unwrap();
    let ack = acks.message().await.unwrap().unwrap();
    assert_eq!((ack.chunk_id, ack.code), (2, 0), "{ack:?}");
    drop(chunks);
    assert!(acks.message().await.unwrap().is_none());
}
