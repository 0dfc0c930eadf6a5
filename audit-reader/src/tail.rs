//! StreamEvents: polls the replica's tail (see [`crate::queries::tail`]) and
//! forwards events through a bounded channel; a slow client slows the
//! polling, and a client that leaves stops it. When the reader starts
//! draining, the tail ends with UNAVAILABLE: every event already sent
//! carries a resume token, so the client resumes elsewhere from the last
//! one it received without gap or duplicate.

use crate::error::ReadError;
use crate::queries::tail;
use audit_core::{DomainError, normalise_ticker, rules};
use audit_db::PgPool;
use audit_proto::v1 as pb;
use audit_server::Shutdown;
use audit_wire::convert;
use audit_wire::encode::event_to_proto;
use audit_wire::token::{TailPosition, decode_token, encode_token};
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

pub type TailStream = Pin<Box<dyn Stream<Item = Result<pb::StreamEventsResponse, Status>> + Send>>;

/// Most events delivered by one poll.
const BATCH: i64 = 1_000;
/// Most events one poll reads from the tail's floor up (see
/// [`crate::queries::tail`]), doubled while that is too few to deliver any.
/// Twice the batch: the last transaction of a cut scan is held back, and
/// group transactions hold up to 500 events.
const SCAN: i64 = 2 * BATCH;

pub async fn start(
    pool: PgPool,
    request: &pb::StreamEventsRequest,
    poll_every: Duration,
    shutdown: Shutdown,
) -> Result<TailStream, ReadError> {
    if shutdown.is_draining() {
        return Err(ReadError::ShuttingDown);
    }
    let ticker = rules::query_text("ticker", &request.ticker)?
        .map(|t| normalise_ticker(&t))
        .unwrap_or_default();
    let event_types = request
        .event_types
        .iter()
        .enumerate()
        .map(|(i, t)| {
            convert::status(&format!("event_types[{i}]"), *t).map(|s| s.as_str().to_owned())
        })
        .collect::<Result<Vec<_>, DomainError>>()?;
    let mut position: TailPosition = if request.resume_token.is_empty() {
        tail::start_position(&pool).await?
    } else {
        decode_token("resume_token", &request.resume_token)?
    };
    let (events, stream) = mpsc::channel(256);
    tokio::spawn(async move {
        let forward = async {
            let mut scan = SCAN;
            loop {
                let poll = tail::Poll {
                    after: position,
                    ticker: &ticker,
                    event_types: &event_types,
                    batch: BATCH,
                    scan,
                };
                let batch = match tail::next_events(&pool, poll).await {
                    Ok(batch) => batch,
                    Err(error) => {
                        let _ = events.send(Err(ReadError::from(error).into())).await;
                        return;
                    }
                };
                let Some(last) = batch.last() else {
                    let idle = match tail::idle(&pool, poll).await {
                        Ok(idle) => idle,
                        Err(error) => {
                            let _ = events.send(Err(ReadError::from(error).into())).await;
                            return;
                        }
                    };
                    let stuck = position.floor == Some(idle.next_floor);
                    position.floor = Some(idle.next_floor);
                    if idle.scan_full {
                        if stuck {
                            // Nothing could be delivered from the scanned
                            // events alone (a transaction larger than the
                            // scan, or one still in flight below them).
                            scan = scan.saturating_mul(2);
                        }
                        continue;
                    }
                    if events.is_closed() {
                        return;
                    }
                    tokio::time::sleep(poll_every).await;
                    continue;
                };
                let more = batch.len() as i64 == BATCH || last.scan_full;
                // A scan grown for a large or long transaction shrinks back
                // as events flow again (kept while idle, so a floor held by a
                // long transaction does not make it grow again every poll).
                scan = (scan / 2).max(SCAN);
                let next_floor = last.next_floor;
                let floor_before = position.floor;
                let count = batch.len();
                for (i, row) in batch.into_iter().enumerate() {
                    // The floor before the poll holds for every event of the
                    // batch; the one after it, for the last.
                    let floor = if i + 1 == count {
                        Some(next_floor)
                    } else {
                        floor_before
                    };
                    position = TailPosition {
                        committed_at: row.committed_at,
                        sequence: row.event.sequence,
                        floor,
                    };
                    let message = pb::StreamEventsResponse {
                        event: Some(event_to_proto(row.event)),
                        normalised_ticker: row.normalised_ticker,
                        committed_at: Some(convert::to_timestamp(row.committed_at)),
                        resume_token: encode_token(&position),
                    };
                    if events.send(Ok(message)).await.is_err() {
                        return;
                    }
                }
                if !more {
                    if events.is_closed() {
                        return;
                    }
                    tokio::time::sleep(poll_every).await;
                }
            }
        };
        // Stopping mid-batch is safe: the client resumes from the token of
        // the last event it received.
        tokio::select! {
            () = forward => {}
            () = shutdown.draining() => {
                let _ = events.send(Err(ReadError::ShuttingDown.into())).await;
            }
        }
    });
    Ok(Box::pin(ReceiverStream::new(stream)))
}
