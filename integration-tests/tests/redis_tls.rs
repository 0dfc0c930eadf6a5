//! The reader's shared cache over `rediss://`: a Redis started here with TLS
//! only (certificates from rcgen) and a password. Two readers' caches share
//! an answer through it when they trust its CA; one that does not trust it
//! never connects.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use audit_proto::v1 as pb;
use audit_reader::cache::AnswerCache;
use integration_tests::pki::{TestCa, write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Kills the Redis server this test started.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_shares_answers_over_rediss() {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("redis-server is not installed (scripts/install-deps.sh installs it)");
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("redis ca");
    let server = ca.server(&["localhost", "127.0.0.1"]);
    let cert = write(dir.path(), "redis.crt", &server.cert_pem);
    let key = write(dir.path(), "redis.key", &server.key_pem);
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    // redis-server binds it later: a port no client connection can be using.
    let port = integration_tests::free_port();
    let _redis = Server(
        Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--tls-port", &port.to_string(), "--tls-auth-clients", "no"])
            .arg("--tls-cert-file")
            .arg(&cert)
            .arg("--tls-key-file")
            .arg(&key)
            .arg("--tls-ca-cert-file")
            .arg(&ca_file)
            .args(["--requirepass", "cache-pw"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let url = format!("rediss://:cache-pw@127.0.0.1:{port}/0");
    let ttl = Duration::from_secs(60);
    let answer = pb::ConsistencyToken {
        lsn: "0/16B3748".into(),
    };

    // Redis may still be starting: retry the first cache until it connects.
    let mut shared = None;
    for _ in 0..50 {
        let cache = AnswerCache::new(ttl, 100, Some(&url), Some(&ca_file)).await;
        cache.put("k".into(), &answer).await;
        let other = AnswerCache::new(ttl, 100, Some(&url), Some(&ca_file)).await;
        if let Some(got) = other.get::<pb::ConsistencyToken>("k").await {
            shared = Some(got);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        shared,
        Some(answer),
        "no answer came back through rediss://"
    );

    // Without the CA (system roots only) the server is not trusted: no
    // shared answers, and no failed call either.
    let untrusting = AnswerCache::new(ttl, 100, Some(&url), None).await;
    assert_eq!(untrusting.get::<pb::ConsistencyToken>("k").await, None);
}
