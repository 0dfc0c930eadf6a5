//! The replicas this reader spreads its calls over, and how a call picks one.
//!
//! Each replica has its own pool and its own health watcher, which every
//! `AUDIT_HEALTH_CHECK_MS` reads its replication status: it sets the
//! replica's gauges (`audit_reader_replica_up`, `audit_reader_replica_lag_seconds`)
//! and its `healthy` flag, and notes how far it has replayed. A call that
//! fails to get a connection takes its replica out at once; only the
//! watcher brings it back, so a replica that went down returns to rotation
//! by itself once it answers again.
//!
//! Picking ([`Replicas::any`], [`Replicas::for_token`]):
//! - a call without a consistency token goes to the next healthy replica in
//!   round-robin order;
//! - a call with a token goes to a healthy replica already known to have
//!   replayed it; else each healthy replica is asked once, in round-robin
//!   order, and the first that has it answers; else the reader polls them
//!   all until one gets there or the wait ends (UNAVAILABLE). Calls waiting
//!   on one replica share its position queries (one in flight at a time,
//!   its answer good for every call that asked before it was sent), so the
//!   poll period can be short without a query per waiting call. A lagging
//!   replica is thus skipped while another has the write, and the call
//!   waits for whichever catches up first otherwise;
//! - when no replica is marked healthy (at start-up, or all down) every
//!   replica is a candidate, so a call still tries and fails with the
//!   database's own error rather than one of ours.
//!
//! A call stays on the replica it picked: an analytics answer's snapshot
//! transaction, an export's pages and a tail's polls all run on one server.
//! `audit_reader_replica_calls_total` counts the calls each replica took.

use audit_core::Lsn;
use audit_db::{DbError, PgPool, PoolConfig, PooledConnection, build_pool, replication};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One replica: its pool and what the reader knows of it.
pub struct Replica {
    pool: PgPool,
    /// Set by the health watcher; cleared by it or by a call that could not
    /// get a connection.
    healthy: AtomicBool,
    /// The furthest replay position seen (health check or token wait);
    /// `u64::MAX` for a primary, 0 until known.
    replayed: AtomicU64,
    /// Held while a position query runs, with when the last one was sent
    /// and what it answered (see [`Replica::replayed_now`]).
    probe: tokio::sync::Mutex<Option<(Instant, u64)>>,
    calls: metrics::Counter,
}

impl Replica {
    fn new(pool: PgPool) -> Self {
        let calls = metrics::counter!("audit_reader_replica_calls_total", "replica" => pool.name().to_owned());
        Self {
            pool,
            healthy: AtomicBool::new(false),
            replayed: AtomicU64::new(0),
            probe: tokio::sync::Mutex::new(None),
            calls,
        }
    }

    /// `replica`, or `replica-N` with several: the `replica` label of its
    /// metrics and the `pool_name` of its pool's.
    pub fn name(&self) -> &str {
        self.pool.name()
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// A connection from this replica's pool; a failure takes the replica
    /// out of rotation until its health watcher sees it answer again.
    pub async fn get(&self) -> Result<PooledConnection<'_>, DbError> {
        match self.pool.get().await {
            Ok(conn) => Ok(conn),
            Err(error) => {
                let error = DbError::from(error);
                self.failed(&error);
                Err(error)
            }
        }
    }

    /// Passes `result` through, taking the replica out when it says the
    /// server is unreachable.
    pub fn observe<T>(&self, result: Result<T, DbError>) -> Result<T, DbError> {
        if let Err(error) = &result {
            self.failed(error);
        }
        result
    }

    fn failed(&self, error: &DbError) {
        if matches!(error, DbError::Unavailable(_)) && self.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(replica = self.name(), %error, "replica out of rotation");
            metrics::gauge!("audit_reader_replica_up", "replica" => self.name().to_owned())
                .set(0.0);
        }
    }

    fn note_replayed(&self, replayed: Option<&Lsn>) -> u64 {
        let position = match replayed {
            None => u64::MAX,
            Some(lsn) => lsn.position().unwrap_or(0),
        };
        self.replayed
            .fetch_max(position, Ordering::Relaxed)
            .max(position)
    }

    /// Where this replica has replayed to, as of a query sent after this
    /// call asked. Waiting calls take turns: a query sent after a call
    /// asked answers it too, so N calls waiting together cost one or two
    /// round trips, not N. A failed query is not shared (each call gets the
    /// database's own error from its own query).
    async fn replayed_now(&self) -> Result<u64, DbError> {
        let asked = Instant::now();
        let mut last = self.probe.lock().await;
        if let Some((sent, position)) = *last
            && sent >= asked
        {
            return Ok(position);
        }
        let sent = Instant::now();
        let replayed = self.observe(replication::replayed(&self.pool).await)?;
        let position = self.note_replayed(replayed.as_ref());
        *last = Some((sent, position));
        Ok(position)
    }

    /// Reads the replication status, sets the gauges and the health flag.
    pub async fn check(&self, timeout: Duration) -> Result<(), DbError> {
        let status = tokio::time::timeout(timeout, replication::replication_status(&self.pool))
            .await
            .unwrap_or_else(|_| {
                Err(DbError::Unavailable(format!(
                    "no answer to the health check within {timeout:?}"
                )))
            });
        let replica = self.name().to_owned();
        match status {
            Ok(status) => {
                let replayed = status.replay_lsn.map(Lsn::from_server);
                self.note_replayed(replayed.as_ref());
                metrics::gauge!("audit_reader_replica_up", "replica" => replica.clone()).set(1.0);
                metrics::gauge!("audit_reader_replica_lag_seconds", "replica" => replica.clone())
                    .set(status.replay_lag_us as f64 / 1e6);
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!(replica, "replica in rotation");
                }
                Ok(())
            }
            Err(error) => {
                metrics::gauge!("audit_reader_replica_up", "replica" => replica.clone()).set(0.0);
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(replica, %error, "replica out of rotation");
                }
                Err(error)
            }
        }
    }
}

/// Every replica of this reader, shared by all calls.
#[derive(Clone)]
pub struct Replicas {
    replicas: Arc<[Replica]>,
    next: Arc<AtomicUsize>,
}

impl Replicas {
    /// Builds one pool per replica without waiting for any of them.
    pub fn build(pools: &[PoolConfig]) -> Self {
        Self {
            replicas: pools
                .iter()
                .map(|config| Replica::new(build_pool(config)))
                .collect(),
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn all(&self) -> &[Replica] {
        &self.replicas
    }

    /// The candidates in round-robin order: the healthy replicas, or every
    /// replica when none is healthy.
    fn candidates(&self) -> Vec<&Replica> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.replicas.len();
        let order = (0..n).map(|i| &self.replicas[(start + i) % n]);
        let healthy: Vec<&Replica> = order.clone().filter(|r| r.is_healthy()).collect();
        if healthy.is_empty() {
            order.collect()
        } else {
            healthy
        }
    }

    fn chosen<'a>(&self, replica: &'a Replica) -> &'a Replica {
        replica.calls.increment(1);
        replica
    }

    /// The replica for a call without a consistency token.
    pub fn any(&self) -> &Replica {
        let candidates = self.candidates();
        // `build` is never given an empty list (the server refuses one).
        self.chosen(candidates.first().copied().unwrap_or(&self.replicas[0]))
    }

    /// The replica for a call that must see `lsn`: see the module doc.
    /// Polls every `poll` until `deadline`; UNAVAILABLE (`ReplicaBehind`)
    /// when no replica gets there in time.
    pub async fn for_token(
        &self,
        lsn: &Lsn,
        deadline: Instant,
        poll: Duration,
    ) -> Result<&Replica, DbError> {
        let wanted = lsn.position().unwrap_or(u64::MAX);
        let mut candidates = self.candidates();
        if let Some(known) = candidates
            .iter()
            .copied()
            .find(|r| r.replayed.load(Ordering::Relaxed) >= wanted)
        {
            return Ok(self.chosen(known));
        }
        loop {
            let mut furthest = None;
            let mut last_error = None;
            for &replica in &candidates {
                match replica.replayed_now().await {
                    Ok(position) if position >= wanted => return Ok(self.chosen(replica)),
                    Ok(position) => furthest = furthest.max(Some(position)),
                    Err(error) => last_error = Some(error),
                }
            }
            let Some(furthest) = furthest else {
                // None answered: the database's own error says why.
                return Err(last_error
                    .unwrap_or_else(|| DbError::Unavailable("no replica configured".to_owned())));
            };
            if Instant::now() + poll > deadline {
                return Err(DbError::ReplicaBehind {
                    wanted: lsn.to_string(),
                    replayed: format!("{:X}/{:X}", furthest >> 32, furthest & 0xFFFF_FFFF),
                });
            }
            tokio::time::sleep(poll).await;
            candidates = self.candidates();
        }
    }

    /// SERVING while at least one replica is healthy. When none is marked
    /// so (at start-up, before the watchers' first answers, or while all are
    /// down) every replica is checked now, so the reader reports SERVING as
    /// soon as one answers rather than a health period later.
    pub async fn healthy(&self, timeout: Duration) -> Result<(), NoReplica> {
        if self.replicas.iter().any(Replica::is_healthy) {
            return Ok(());
        }
        let checks = self.replicas.iter().map(|r| r.check(timeout));
        if futures::future::join_all(checks)
            .await
            .iter()
            .any(Result::is_ok)
        {
            Ok(())
        } else {
            Err(NoReplica)
        }
    }

    /// Starts one health watcher per replica (see the module doc); they run
    /// until their handles are aborted. A check that gets no answer within
    /// the period (at least a second) counts as down, so a replica whose
    /// connections hang is taken out as surely as one that refuses them.
    pub fn watch(&self, every: Duration) -> Vec<JoinHandle<()>> {
        let timeout = every.max(Duration::from_secs(1));
        (0..self.replicas.len())
            .map(|i| {
                let replicas = self.replicas.clone();
                tokio::spawn(async move {
                    let replica = &replicas[i];
                    let mut ticker = tokio::time::interval(every);
                    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        ticker.tick().await;
                        if let Err(error) = replica.check(timeout).await {
                            tracing::debug!(replica = replica.name(), %error, "replica unreachable");
                        }
                    }
                })
            })
            .collect()
    }

    /// Samples every pool's size gauges every `every` until aborted.
    pub fn watch_pools(&self, every: Duration) -> Vec<JoinHandle<()>> {
        self.replicas.iter().map(|r| r.pool.watch(every)).collect()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("no replica is reachable")]
pub struct NoReplica;
