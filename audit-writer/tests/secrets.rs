//! No password reaches `--help`, the logs or an error message: the binary
//! runs with a database URL holding one against a port where nothing
//! listens, and everything it prints is searched for it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "Pa55-wr1ter-S3CRET";

fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn writer(args: &[&str], url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_audit-writer"));
    command
        .args(args)
        .env("AUDIT_DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    command
}

#[test]
fn the_database_password_is_in_no_help_log_or_error() {
    let url = format!(
        "postgres://app:{PASSWORD}@127.0.0.1:{}/signal_audit?sslmode=prefer",
        dead_port()
    );

    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["migrate", "--help"],
    ] {
        let output = writer(args, &url).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains("AUDIT_DATABASE_URL") || args == ["--help"],
            "{text}"
        );
        assert!(
            !text.contains(PASSWORD),
            "{args:?} shows the password:\n{text}"
        );
    }

    // A failing connection's error, as the migrate command logs it.
    let output = writer(&["migrate"], &url).output().unwrap();
    assert!(!output.status.success());
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains("cannot connect to PostgreSQL"), "{logs}");
    assert!(
        !logs.contains(PASSWORD),
        "migrate logs the password:\n{logs}"
    );

    // The server's logs while its database is unreachable.
    let mut child = writer(&["serve"], &url)
        .env("AUDIT_AUTH", "off")
        .env("AUDIT_WRITER_LISTEN", "127.0.0.1:0")
        .env("AUDIT_HEALTH_CHECK_MS", "50")
        .env("AUDIT_POOL_TIMEOUT_MS", "200")
        .env("AUDIT_POOL_MIN", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = read_until(&mut child, &["database unreachable"]);
    assert!(logs.contains("database unreachable"), "{logs}");
    assert!(!logs.contains(PASSWORD), "serve logs the password:\n{logs}");
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
