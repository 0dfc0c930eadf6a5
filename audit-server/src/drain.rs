//! Shutdown that always finishes.
//!
//! tonic's graceful shutdown stops accepting and then waits for every open
//! call, with no limit (hyperium/tonic#1820): a client tailing StreamEvents
//! or holding an Ingest stream open would keep the process alive until
//! Kubernetes kills it. So a service hands a [`Shutdown`] to every task
//! that feeds a long-lived stream; when it fires, those tasks end their
//! streams with UNAVAILABLE (saying how to resume), unary calls in flight
//! finish on their own, and [`bounded`] gives the whole drain at most the
//! configured grace period before the server future is dropped anyway
//! (which also covers connections that never answer, hyperium/hyper#4170).

use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The drain option both services take; flatten into a service's `ServeArgs`.
#[derive(Debug, Clone, clap::Args)]
pub struct ShutdownArgs {
    /// Longest drain after SIGTERM, in seconds: open streams end at once,
    /// unary calls in flight get this long, then the process exits anyway.
    /// Keep it below Kubernetes' terminationGracePeriodSeconds (30 s).
    #[arg(long, env = "AUDIT_SHUTDOWN_GRACE_SECS", default_value_t = 20.0)]
    pub shutdown_grace_secs: f64,
}

impl ShutdownArgs {
    pub fn grace(&self) -> Duration {
        Duration::try_from_secs_f64(self.shutdown_grace_secs).unwrap_or(Duration::ZERO)
    }
}

/// Fires once, when the service starts draining, and says how long the
/// drain may take; cheap to clone into every stream task.
#[derive(Debug, Clone)]
pub struct Shutdown {
    token: CancellationToken,
    grace: Duration,
}

impl Shutdown {
    pub fn new(grace: Duration) -> Self {
        Self {
            token: CancellationToken::new(),
            grace,
        }
    }

    /// A shutdown that fires when `signal` resolves (SIGTERM, a test's stop).
    pub fn on(signal: impl Future<Output = ()> + Send + 'static, grace: Duration) -> Self {
        let shutdown = Self::new(grace);
        let token = shutdown.token.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = signal => token.cancel(),
                // Nobody holds the shutdown any more: nothing to signal.
                () = token.cancelled() => {}
            }
        });
        shutdown
    }

    /// Starts the drain; later calls do nothing.
    pub fn begin(&self) {
        self.token.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The longest the drain may take once begun.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Resolves once the drain has begun (at once if it already has).
    pub async fn draining(&self) {
        self.token.cancelled().await;
    }
}

/// Runs `serving` to completion, or until the grace period after the drain
/// began, whichever comes first; `None` when the grace period ran out.
pub async fn bounded<F: Future>(serving: F, shutdown: &Shutdown) -> Option<F::Output> {
    tokio::select! {
        output = serving => Some(output),
        () = async {
            shutdown.draining().await;
            tokio::time::sleep(shutdown.grace).await;
        } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_drain_is_cut_off_after_the_grace_period() {
        let shutdown = Shutdown::new(Duration::from_secs(20));
        let never_finishes = std::future::pending::<()>();
        let started = tokio::time::Instant::now();
        let cut = tokio::spawn({
            let shutdown = shutdown.clone();
            async move { bounded(never_finishes, &shutdown).await }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            !cut.is_finished(),
            "no deadline runs before the drain begins"
        );
        shutdown.begin();
        assert_eq!(cut.await.ok(), Some(None));
        assert_eq!(started.elapsed(), Duration::from_secs(80));
    }

    #[tokio::test(start_paused = true)]
    async fn a_drain_that_finishes_in_time_returns_its_output() {
        let shutdown = Shutdown::new(Duration::from_secs(20));
        shutdown.begin();
        let quick = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            7
        };
        assert_eq!(bounded(quick, &shutdown).await, Some(7));
    }

    #[tokio::test]
    async fn a_signal_starts_the_drain() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Shutdown::on(
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(1),
        );
        assert!(!shutdown.is_draining());
        let _ = tx.send(());
        shutdown.draining().await;
        assert!(shutdown.is_draining());
    }
}
