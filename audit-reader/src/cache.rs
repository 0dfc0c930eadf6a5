//! Cache of hot analytics answers.
//!
//! An answer is stored under the RPC, the request's bytes and the version of
//! the data it was computed from: the rollups' refresh time as the replica
//! has replayed it. New rollups reach the replica with a new version, so a
//! cached answer can never outlive the data it was built on, whatever its
//! TTL; the TTL only bounds memory and staleness of the version lookup.
//!
//! The in-process layer (moka) is always on; a shared Redis layer is used
//! when `AUDIT_REDIS_URL` is set, so several readers share their work.
//! `rediss://` URLs connect over TLS (rustls), trusting the system's CA
//! bundle or, when `AUDIT_REDIS_CA_FILE` is set, that CA (PEM) instead.
//! Redis being unreachable never fails a call: the answer is computed.
//! Each look-up counts in `audit_reader_cache_requests_total` by tier
//! (`memory`, `redis`) and result (`hit`, `miss`).

use moka::future::Cache;
use prost::Message;
use std::time::Duration;

/// A Redis client for `url`; `rediss://` trusts `ca_file` when given.
fn redis_client(url: &str, ca_file: Option<&std::path::Path>) -> redis::RedisResult<redis::Client> {
    match ca_file {
        None => redis::Client::open(url),
        Some(path) => {
            let root_cert = std::fs::read(path).map_err(|error| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cannot read the Redis CA file",
                    format!("{}: {error}", path.display()),
                ))
            })?;
            redis::Client::build_with_tls(
                url,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
        }
    }
}

#[derive(Clone)]
pub struct AnswerCache {
    local: Cache<String, Vec<u8>>,
    redis: Option<redis::aio::ConnectionManager>,
    ttl: Duration,
}

impl AnswerCache {
    pub async fn new(
        ttl: Duration,
        max_entries: u64,
        redis_url: Option<&str>,
        redis_ca_file: Option<&std::path::Path>,
    ) -> Self {
        let redis = match redis_url {
            Some(url) => match redis_client(url, redis_ca_file) {
                Ok(client) => match client.get_connection_manager().await {
                    Ok(manager) => Some(manager),
                    Err(error) => {
                        tracing::warn!(%error, "redis cache unavailable; using the in-process cache only");
                        None
                    }
                },
                Err(error) => {
                    // The error never quotes the URL (it may hold a password).
                    tracing::warn!(%error, "invalid AUDIT_REDIS_URL or AUDIT_REDIS_CA_FILE; using the in-process cache only");
                    None
                }
            },
            None => None,
        };
        for tier in ["memory"]
            .into_iter()
            .chain(redis.as_ref().map(|_| "redis"))
        {
            for result in ["hit", "miss"] {
                lookup(tier, result).increment(0);
            }
        }
        Self {
            local: Cache::builder()
                .time_to_live(ttl)
                .max_capacity(max_entries)
                .build(),
            redis,
            ttl,
        }
    }

    /// The key of an answer: RPC, data version and a hash of the request.
    pub fn key(rpc: &str, version: i64, request: &impl Message) -> String {
        let bytes = request.encode_to_vec();
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        format!("signal-audit:{rpc}:{version}:{hash:016x}")
    }

    pub async fn get<T: Message + Default>(&self, key: &str) -> Option<T> {
        if let Some(bytes) = self.local.get(key).await {
            lookup("memory", "hit").increment(1);
            return T::decode(bytes.as_slice()).ok();
        }
        lookup("memory", "miss").increment(1);
        let mut redis = self.redis.clone()?;
        let bytes: Option<Vec<u8>> = redis::AsyncCommands::get(&mut redis, key)
            .await
            .map_err(|error| tracing::debug!(%error, "redis get failed"))
            .ok()
            .flatten();
        lookup("redis", if bytes.is_some() { "hit" } else { "miss" }).increment(1);
        let bytes = bytes?;
        let answer = T::decode(bytes.as_slice()).ok()?;
        self.local.insert(key.to_owned(), bytes).await;
        Some(answer)
    }

    pub async fn put<T: Message>(&self, key: String, answer: &T) {
        let bytes = answer.encode_to_vec();
        if let Some(mut redis) = self.redis.clone() {
            let millis = u64::try_from(self.ttl.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            let stored: Result<(), _> =
                redis::AsyncCommands::pset_ex(&mut redis, &key, bytes.as_slice(), millis).await;
            if let Err(error) = stored {
                tracing::debug!(%error, "redis set failed");
            }
        }
        self.local.insert(key, bytes).await;
    }
}

fn lookup(tier: &'static str, result: &'static str) -> metrics::Counter {
    metrics::counter!("audit_reader_cache_requests_total", "tier" => tier, "result" => result)
}
