//! Read-your-writes: pick the replica a call runs on, holding the call until
//! some replica has replayed the caller's consistency token (see
//! [`crate::replica`]), bounded by the call's own deadline; a reader that
//! starts draining answers the waiting calls UNAVAILABLE at once instead of
//! holding its shutdown for them.

use crate::error::ReadError;
use crate::replica::{Replica, Replicas};
use audit_core::Lsn;
use audit_proto::v1 as pb;
use audit_server::Shutdown;
use std::time::Duration;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;

#[derive(Debug, Clone)]
pub struct Consistency {
    pub max_wait: Duration,
    pub poll: Duration,
    pub shutdown: Shutdown,
}

impl Consistency {
    /// The replica to answer from: any healthy one without a token, else one
    /// that has the token's write; UNAVAILABLE when none gets there before
    /// the deadline.
    pub async fn replica<'r>(
        &self,
        replicas: &'r Replicas,
        token: Option<&pb::ConsistencyToken>,
        metadata: &MetadataMap,
    ) -> Result<&'r Replica, ReadError> {
        let Some(lsn) = token.map(|t| t.lsn.trim()).filter(|lsn| !lsn.is_empty()) else {
            return Ok(replicas.any());
        };
        let lsn = Lsn::parse("consistency_token.lsn", lsn)?;
        let wait = grpc_timeout(metadata)
            .map(answer_within)
            .map_or(self.max_wait, |d| d.min(self.max_wait));
        tokio::select! {
            reached = replicas.for_token(&lsn, Instant::now() + wait, self.poll) => {
                Ok(reached?)
            }
            () = self.shutdown.draining() => Err(ReadError::ShuttingDown),
        }
    }
}

/// How long a call with this deadline may wait for the replica: the rest is
/// kept to send the answer, a tenth of the deadline but at least 100 ms (a
/// loaded machine can take tens of milliseconds to get a status out) and at
/// most half of it.
fn answer_within(deadline: Duration) -> Duration {
    let margin = (deadline / 10)
        .max(Duration::from_millis(100))
        .min(deadline / 2);
    deadline - margin
}

/// The `grpc-timeout` header: an integer and a unit (H, M, S, m, u, n).
pub fn grpc_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let value = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.saturating_mul(3600)),
        "M" => Duration::from_secs(amount.saturating_mul(60)),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_time_to_answer_before_the_deadline() {
        assert_eq!(
            answer_within(Duration::from_secs(10)),
            Duration::from_secs(9)
        );
        assert_eq!(
            answer_within(Duration::from_millis(300)),
            Duration::from_millis(200)
        );
        assert_eq!(
            answer_within(Duration::from_millis(100)),
            Duration::from_millis(50)
        );
    }

    #[test]
    fn parses_grpc_timeouts() {
        let mut metadata = MetadataMap::new();
        assert_eq!(grpc_timeout(&metadata), None);
        metadata.insert("grpc-timeout", "250m".parse().unwrap());
        assert_eq!(grpc_timeout(&metadata), Some(Duration::from_millis(250)));
        metadata.insert("grpc-timeout", "2S".parse().unwrap());
        assert_eq!(grpc_timeout(&metadata), Some(Duration::from_secs(2)));
        metadata.insert("grpc-timeout", "x".parse().unwrap());
        assert_eq!(grpc_timeout(&metadata), None);
    }
}
