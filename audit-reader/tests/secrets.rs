//! No password reaches `--help` or the logs: the reader runs with replica
//! and Redis URLs holding passwords against ports where nothing listens,
//! and everything it prints is searched for them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "Pa55-re4der-S3CRET";
const REDIS_PASSWORD: &str = "r3dis-S3CRET";

fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn reader(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_audit-reader"));
    command
        .args(args)
        .env(
            "AUDIT_REPLICA_URL",
            format!(
                "postgres://app:{PASSWORD}@127.0.0.1:{}/signal_audit",
                dead_port()
            ),
        )
        .env(
            "AUDIT_REDIS_URL",
            format!("rediss://:{REDIS_PASSWORD}@127.0.0.1:{}/0", dead_port()),
        )
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    command
}

#[test]
fn passwords_are_in_no_help_or_log() {
    for args in [&["--help"][..], &["serve", "--help"]] {
        let output = reader(args).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        for secret in [PASSWORD, REDIS_PASSWORD] {
            assert!(!text.contains(secret), "{args:?} shows a password:\n{text}");
        }
    }

    let mut child = reader(&["serve"])
        .env("AUDIT_AUTH", "off")
        .env("AUDIT_READER_LISTEN", "127.0.0.1:0")
        .env("AUDIT_HEALTH_CHECK_MS", "50")
        .env("AUDIT_POOL_TIMEOUT_MS", "200")
        .env("AUDIT_POOL_MIN", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = read_until(
        &mut child,
        &["redis cache unavailable", "database unreachable"],
    );
    assert!(logs.contains("redis cache unavailable"), "{logs}");
    assert!(logs.contains("database unreachable"), "{logs}");
    for secret in [PASSWORD, REDIS_PASSWORD] {
        assert!(!logs.contains(secret), "serve logs a password:\n{logs}");
    }
}

/// The child's stderr until every marker appeared (or 60 s passed), then
/// the child is killed.
fn read_until(child: &mut std::process::Child, markers: &[&str]) -> String {
    let stderr = child.stderr.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut logs = String::new();
    while !markers.iter().all(|m| logs.contains(m)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match received.recv_timeout(left) {
            Ok(line) => {
                logs.push_str(&line);
                logs.push('\n');
            }
            Err(_) => break,
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    logs
}
