//! No password reaches audit-admin's `--help` or a failing connection's
//! error: the binary runs with a database URL holding one against a port
//! where nothing listens, and everything it prints is searched for it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "tests fail loudly on purpose"
)]

use std::process::{Command, Stdio};

const PASSWORD: &str = "Pa55-adm1n-S3CRET";

fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn admin(args: &[&str], url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_audit-admin"));
    command
        .args(args)
        .env("AUDIT_DATABASE_URL", url)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "debug")
        .stdin(Stdio::null());
    command
}

#[test]
fn the_database_password_is_in_no_help_or_error() {
    let url = format!(
        "postgres://ops:{PASSWORD}@127.0.0.1:{}/signal_audit?sslmode=prefer",
        dead_port()
    );
    for args in [
        &["--help"][..],
        &["migrate", "status", "--help"],
        &["retention", "show", "--help"],
        &["check", "--help"],
    ] {
        let output = admin(args, &url).output().unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(text.contains("AUDIT_DATABASE_URL"), "{args:?}:\n{text}");
        assert!(
            !text.contains(PASSWORD),
            "{args:?} shows the password:\n{text}"
        );
    }

    for args in [&["migrate", "status"][..], &["check"]] {
        let output = admin(args, &url).output().unwrap();
        assert!(
            !output.status.success(),
            "{args:?} reached no database yet succeeded"
        );
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(!printed.trim().is_empty(), "{args:?} failed silently");
        assert!(
            !printed.contains(PASSWORD),
            "{args:?} prints the password:\n{printed}"
        );
    }
}
