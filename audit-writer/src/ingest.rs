//! Ingest: a bidirectional stream for high-volume producers, chunks in and
//! one acknowledgement per chunk out.
//!
//! A stream's chunks are each one all-or-nothing transaction. Up to
//! `in_flight` chunks of one stream are committed concurrently and
//! acknowledged in the order they arrived; once that many are pending the
//! stream is not read further, so HTTP/2 flow control slows the producer
//! instead of a queue growing. Across all streams at most `ingest_slots`
//! (`AUDIT_INGEST_SLOTS`) chunk transactions run; a chunk that cannot get a slot within `wait` is
//! acknowledged with RESOURCE_EXHAUSTED (the producer resends it later),
//! counted in `audit_writer_refusals_total{reason="ingest_slots"}`; the slots
//! held show in `audit_writer_ingest_streams_in_use`.
//!
//! When the writer starts draining, the stream stops taking chunks, the
//! ones already taken are committed and acknowledged, and the stream ends
//! with UNAVAILABLE: the producer resends whatever was not acknowledged to
//! another instance. A chunk over the message size limit ends the stream
//! with RESOURCE_EXHAUSTED.

use crate::error::WriteError;
use crate::store;
use audit_core::{DomainError, Lsn, NewEvent, NewSignal};
use audit_db::PgPool;
use audit_proto::v1 as pb;
use audit_server::Shutdown;
use audit_server::oversized::{is_oversized_request, oversized_status};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub in_flight: usize,
    pub wait: Duration,
}

pub type AckStream = Pin<Box<dyn Stream<Item = Result<pb::IngestResponse, Status>> + Send>>;

/// Turns a chunk into checked items, or the error that refuses it.
pub type Decode = Arc<
    dyn Fn(&pb::IngestRequest) -> Result<(Vec<NewSignal>, Vec<NewEvent>), DomainError>
        + Send
        + Sync,
>;

/// What the reading side hands to the acknowledging side, in stream order.
enum Pending {
    Chunk(tokio::task::JoinHandle<pb::IngestResponse>),
    /// Ends the stream with this error once every earlier chunk is acknowledged.
    End(WriteError),
}

pub fn acknowledge(
    mut inbound: Streaming<pb::IngestRequest>,
    pool: PgPool,
    slots: Arc<Semaphore>,
    config: IngestConfig,
    decode: Decode,
    shutdown: Shutdown,
) -> AckStream {
    let in_flight = config.in_flight.max(1);
    let (acks, ack_stream) = mpsc::channel(in_flight);
    let (pending, mut pending_rx) = mpsc::channel::<Pending>(in_flight);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                // A chunk that arrives together with the shutdown is not taken.
                biased;
                () = shutdown.draining() => Err(WriteError::ShuttingDown),
                next = inbound.message() => Ok(next),
            };
            let chunk = match next {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(status)) if is_oversized_request(&status) => {
                    let too_large = oversized_status(&status).message().to_owned();
                    let _ = pending
                        .send(Pending::End(WriteError::TooLarge(too_large)))
                        .await;
                    break;
                }
                Ok(Err(status)) => {
                    tracing::debug!(%status, "ingest stream ended by the client");
                    break;
                }
                Err(stop) => {
                    let _ = pending.send(Pending::End(stop)).await;
                    break;
                }
            };
            let task = tokio::spawn(commit_chunk(
                chunk,
                pool.clone(),
                slots.clone(),
                config.wait,
                decode.clone(),
            ));
            if pending.send(Pending::Chunk(task)).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let mut latest: Option<Lsn> = None;
        while let Some(next) = pending_rx.recv().await {
            let ack = match next {
                Pending::Chunk(task) => task
                    .await
                    .map(|mut ack| {
                        cover_earlier_acks(&mut latest, &mut ack);
                        ack
                    })
                    .map_err(|e| Status::from(WriteError::Bug(format!("chunk task failed: {e}")))),
                Pending::End(error) => Err(Status::from(error)),
            };
            let end = ack.is_err();
            if acks.send(ack).await.is_err() || end {
                break;
            }
        }
    });
    Box::pin(ReceiverStream::new(ack_stream))
}

/// Chunks commit concurrently and are acknowledged in order, so a chunk may
/// commit at an earlier WAL position than one acknowledged before it. Each
/// ack's token is raised to the latest position acknowledged so far on the
/// stream: a client that waits for the last token it received sees every
/// chunk acknowledged before it too (a test saw 220 of 240 signals with the
/// last chunk's own position).
fn cover_earlier_acks(latest: &mut Option<Lsn>, ack: &mut pb::IngestResponse) {
    let Some(token) = ack.consistency_token.as_mut() else {
        return;
    };
    let own = Lsn::from_server(token.lsn.clone());
    match latest {
        Some(seen) if seen.position() > own.position() => token.lsn = seen.to_string(),
        _ => *latest = Some(own),
    }
}

/// The ingest slots and their gauges.
pub fn slots(count: usize) -> Arc<Semaphore> {
    let count = count.max(1);
    metrics::gauge!("audit_writer_ingest_streams_max").set(count as f64);
    metrics::gauge!("audit_writer_ingest_streams_in_use").set(0.0);
    metrics::counter!("audit_writer_refusals_total", "reason" => "ingest_slots").increment(0);
    Arc::new(Semaphore::new(count))
}

/// A slot held by one chunk's transaction, counted while held.
struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("audit_writer_ingest_streams_in_use").increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        metrics::gauge!("audit_writer_ingest_streams_in_use").decrement(1.0);
    }
}

fn refused(chunk_id: u64, error: WriteError) -> pb::IngestResponse {
    let status = Status::from(error);
    pb::IngestResponse {
        chunk_id,
        code: status.code() as i32,
        message: status.message().to_owned(),
        ..Default::default()
    }
}

async fn commit_chunk(
    chunk: pb::IngestRequest,
    pool: PgPool,
    slots: Arc<Semaphore>,
    wait: Duration,
    decode: Decode,
) -> pb::IngestResponse {
    let chunk_id = chunk.chunk_id;
    let (signals, events) = match decode(&chunk) {
        Ok(items) => items,
        Err(error) => return refused(chunk_id, error.into()),
    };
    let Ok(Ok(permit)) = tokio::time::timeout(wait, slots.acquire_owned()).await else {
        metrics::counter!("audit_writer_refusals_total", "reason" => "ingest_slots").increment(1);
        return refused(
            chunk_id,
            WriteError::Saturated("no ingest slot free, resend this chunk later"),
        );
    };
    let _slot = Slot::new(permit);
    match store::record_batch(&pool, signals, events).await {
        Ok(committed) => {
            let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
            pb::IngestResponse {
                chunk_id,
                code: tonic::Code::Ok as i32,
                message: String::new(),
                signals_created: count(committed.value.signals_created),
                events_created: count(committed.value.events_created),
                duplicates: count(committed.value.duplicates),
                consistency_token: Some(pb::ConsistencyToken {
                    lsn: committed.lsn.to_string(),
                }),
            }
        }
        Err(error) => refused(chunk_id, error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(lsn: Option<&str>) -> pb::IngestResponse {
        pb::IngestResponse {
            consistency_token: lsn.map(|lsn| pb::ConsistencyToken { lsn: lsn.into() }),
            ..Default::default()
        }
    }

    #[test]
    fn each_token_covers_the_acks_before_it() {
        let mut latest = None;
        let tokens: Vec<Option<String>> =
            [Some("0/20"), Some("0/18"), None, Some("0/9"), Some("1/0")]
                .into_iter()
                .map(|lsn| {
                    let mut a = ack(lsn);
                    cover_earlier_acks(&mut latest, &mut a);
                    a.consistency_token.map(|t| t.lsn)
                })
                .collect();
        // "0/9" < "0/20" as positions, though not as text.
        assert_eq!(
            tokens,
            [Some("0/20"), Some("0/20"), None, Some("0/20"), Some("1/0")]
                .map(|t| t.map(String::from))
        );
    }
}
