//! `audit-admin` itself, built with the integration tests so that a test
//! can run it as a process with an environment of its own (an archive
//! store's `AWS_*` credentials and endpoint, which a test must not set in
//! its own process).

use std::io::Write;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let output = audit_admin::run(std::env::args_os()).await;
    let _ = std::io::stdout().write_all(output.stdout.as_bytes());
    let _ = std::io::stderr().write_all(output.stderr.as_bytes());
    ExitCode::from(output.code)
}
