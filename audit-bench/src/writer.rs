//! The writer under test: `audit-writer serve` as a child process, so the
//! bench knows its pid (for CPU and peak RSS) and it runs exactly as in
//! production. The child is killed when this handle is dropped, on success,
//! on error and when the bench is interrupted.

use crate::BenchError;
use crate::args::IngestArgs;
use audit_proto::v1::signal_writer_service_server::SERVICE_NAME;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

pub struct WriterProcess {
    child: Child,
    pid: String,
    endpoint: Endpoint,
}

impl WriterProcess {
    /// Starts the writer on `--writer-listen` and waits until its health
    /// service reports SERVING.
    pub async fn start(args: &IngestArgs) -> Result<Self, BenchError> {
        let listen = args.writer_listen;
        // Else a writer left running from an earlier bench would answer
        // in place of the one started here.
        std::net::TcpListener::bind(listen).map_err(|e| {
            BenchError::Writer(format!(
                "cannot listen on {listen} (--writer-listen): {e}; is another writer running?"
            ))
        })?;
        let pool = args.writer_pool.to_string();
        let child = Command::new(&args.writer_bin)
            .arg("serve")
            .env("AUDIT_DATABASE_URL", &args.database_url)
            .env("AUDIT_WRITER_LISTEN", listen.to_string())
            // Measures the write path; callers are not authenticated here.
            .env("AUDIT_AUTH", "off")
            .env("AUDIT_POOL_MIN", &pool)
            .env("AUDIT_POOL_MAX", &pool)
            .env("RUST_LOG", &args.writer_log)
            // Only 127.0.0.1: no trace export wherever the environment points.
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Writer(format!("cannot start {}: {e}", args.writer_bin)))?;
        let pid = child
            .id()
            .ok_or_else(|| BenchError::Writer("the writer exited at once".into()))?
            .to_string();
        let endpoint = Endpoint::from_shared(format!("http://{listen}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(args.call_timeout_secs.max(1)))
            .tcp_nodelay(true);
        let mut writer = Self {
            child,
            pid,
            endpoint,
        };
        writer
            .wait_serving(Duration::from_secs(args.startup_timeout_secs))
            .await?;
        Ok(writer)
    }

    async fn wait_serving(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(BenchError::Writer(format!(
                    "the writer exited during start-up ({status})"
                )));
            }
            let last = match self.health().await {
                Ok(ServingStatus::Serving) => return Ok(()),
                Ok(status) => format!("health {status:?}"),
                Err(error) => error.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(BenchError::Writer(format!(
                    "not SERVING within {} s: {last}",
                    timeout.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn health(&self) -> Result<ServingStatus, BenchError> {
        let response = HealthClient::new(self.channel().await?)
            .check(HealthCheckRequest {
                service: SERVICE_NAME.into(),
            })
            .await
            .map_err(|status| BenchError::call("Health.Check", status))?;
        Ok(ServingStatus::try_from(response.into_inner().status).unwrap_or_default())
    }

    /// A new HTTP/2 connection to the writer.
    pub async fn channel(&self) -> Result<Channel, BenchError> {
        Ok(self.endpoint.connect().await?)
    }

    /// Fails once the writer has exited: nothing after that would measure it.
    pub fn ensure_running(&mut self) -> Result<(), BenchError> {
        match self.child.try_wait()? {
            Some(status) => Err(BenchError::Writer(format!("the writer exited ({status})"))),
            None => Ok(()),
        }
    }

    /// Kills the writer and waits for it: its work is committed, and a
    /// graceful drain would only add time nobody measures.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }

    /// The pid, as /proc names it.
    pub fn pid(&self) -> &str {
        &self.pid
    }
}
