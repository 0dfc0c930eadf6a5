//! The services and the database servers as the processes they are, for
//! the faults only a process suffers: kill -9, SIGTERM, a crash.
//!
//! The services run from this crate's `writer-process` and
//! `reader-process` binaries, which are the services' own
//! `command::run` (so SIGTERM goes through the real signal handling); a
//! test passes their path from `env!("CARGO_BIN_EXE_…")`, which Cargo sets
//! for integration tests only.

use crate::{Cluster, free_port, reader_flags, wait_until, writer_flags};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A service process; killed (SIGKILL) when dropped if still running.
pub struct ServerProcess {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl ServerProcess {
    /// Starts the writer binary `exe` on `database_url` with the test
    /// flags, then `extra` (later flags win), listening on `port` (free
    /// when `None`).
    pub fn writer(exe: &str, database_url: &str, extra: &[String], port: Option<u16>) -> Self {
        Self::start(exe, writer_flags(database_url), extra, port)
    }

    /// Starts the reader binary `exe` on `replica_url`, as [`Self::writer`].
    pub fn reader(exe: &str, replica_url: &str, extra: &[String], port: Option<u16>) -> Self {
        Self::start(exe, reader_flags(replica_url), extra, port)
    }

    fn start(exe: &str, flags: Vec<String>, extra: &[String], port: Option<u16>) -> Self {
        let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or_else(free_port)));
        let mut args = vec!["serve".to_owned(), format!("--listen={addr}")];
        args.extend(flags.into_iter().filter(|f| !f.starts_with("--listen=")));
        args.extend(extra.iter().cloned());
        let log = std::env::temp_dir().join(format!(
            "audit-process-{}-{}.log",
            std::process::id(),
            addr.port()
        ));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let stderr = file.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = Command::new(exe)
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {exe}: {e}"));
        Self { child, addr, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaps the process.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: what Kubernetes sends first.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("kill -TERM: {e}"));
        assert!(status.success(), "kill -TERM {} failed", self.pid());
    }

    /// The exit status once the process has exited, polling up to `timeout`.
    pub async fn exited_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the process reports `want` for the overall health entry.
    pub async fn wait_health(&self, want: ServingStatus, timeout: Duration) {
        let addr = self.addr;
        let log = self.log.clone();
        wait_until(
            &format!("{addr} reporting {want:?} (log {})", log.display()),
            timeout,
            Duration::from_millis(20),
            async || health_is(addr, want).await.then_some(()),
        )
        .await;
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill9();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Whether the service at `addr` answers the health check with `want`.
pub async fn health_is(addr: SocketAddr, want: ServingStatus) -> bool {
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
        return false;
    };
    let Ok(channel) = endpoint
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
    else {
        return false;
    };
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    matches!(answer, Ok(r) if r.get_ref().status == want as i32)
}

/// Which server of the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Primary,
    Replica,
    /// The second replica of a cluster started with two.
    Replica2,
}

impl Server {
    fn dir(self, cluster: &Cluster) -> PathBuf {
        cluster.dir.join(match self {
            Self::Primary => "primary",
            Self::Replica => "replica",
            Self::Replica2 => "replica2",
        })
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Stops one server of the cluster with `pg_ctl stop -m mode` (`immediate`
/// is a crash: no checkpoint, recovery on the next start).
pub fn stop_server(cluster: &Cluster, server: Server, mode: &str) {
    let pg_ctl = std::env::var("PG_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/lib/postgresql/15/bin"))
        .join("pg_ctl");
    let dir = server.dir(cluster);
    let mut command = if running_as_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&pg_ctl);
        c
    } else {
        Command::new(&pg_ctl)
    };
    let output = command
        .arg("-D")
        .arg(&dir)
        .args(["-m", mode, "-w", "stop"])
        .current_dir(&cluster.dir)
        .output()
        .unwrap_or_else(|e| panic!("pg_ctl stop: {e}"));
    assert!(
        output.status.success(),
        "pg_ctl stop -m {mode} {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Starts whatever server of the cluster is down (pg-cluster.sh start is
/// idempotent) and returns once the replica streams again.
pub fn start_cluster_again(cluster: &Cluster) {
    cluster.start();
}
