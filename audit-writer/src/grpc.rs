//! Thin handlers: decode the request (`audit_wire::decode`), one call into
//! [`crate::store`] or group commit, encode the answer.

use crate::error::WriteError;
use crate::group_commit::GroupCommit;
use crate::ingest::{self, AckStream, IngestConfig};
use crate::store::{self, Committed};
use audit_core::DomainError;
use audit_core::rules::{self, Limits};
use audit_core::{NewEvent, NewSignal};
use audit_db::PgPool;
use audit_proto::v1 as pb;
use audit_proto::v1::signal_writer_service_server::SignalWriterService;
use audit_server::Shutdown;
use audit_wire::convert;
use audit_wire::decode::{self, required};
use audit_wire::encode::{event_to_proto, signal_to_proto};
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

pub struct WriterService {
    pool: PgPool,
    limits: Limits,
    max_batch_items: usize,
    group_commit: GroupCommit,
    ingest_slots: Arc<Semaphore>,
    ingest: IngestConfig,
    /// Ends open Ingest streams when the writer starts draining.
    shutdown: Shutdown,
}

impl WriterService {
    pub fn new(
        pool: PgPool,
        limits: Limits,
        max_batch_items: usize,
        group_commit: GroupCommit,
        ingest_slots: usize,
        ingest: IngestConfig,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            pool,
            limits,
            max_batch_items,
            group_commit,
            ingest_slots: ingest::slots(ingest_slots),
            ingest,
            shutdown,
        }
    }
}

fn token<T>(committed: &Committed<T>) -> Option<pb::ConsistencyToken> {
    Some(pb::ConsistencyToken {
        lsn: committed.lsn.to_string(),
    })
}

/// Runs a handler's work, where `?` turns any failure into a [`WriteError`],
/// and answers with it or with the error's one mapping to a status.
async fn respond<T>(
    work: impl std::future::Future<Output = Result<T, WriteError>>,
) -> Result<Response<T>, Status> {
    work.await.map(Response::new).map_err(Status::from)
}

/// Who the audit trail says recorded this request's items: the
/// authenticated caller (none with auth off).
fn recorded_by<T>(request: &Request<T>) -> Option<String> {
    audit_server::auth::caller(request).map(|caller| caller.name.clone())
}

fn count(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Checks a batch or ingest chunk: size bound first, then every item, each
/// error naming the item (`signals[3].price`).
pub(crate) fn decode_batch(
    limits: &Limits,
    max_items: usize,
    signals: &[pb::NewSignal],
    events: &[pb::NewEvent],
    recorded_by: Option<&str>,
) -> Result<(Vec<NewSignal>, Vec<NewEvent>), DomainError> {
    let items = signals.len() + events.len();
    if items == 0 {
        return Err(DomainError::invalid("signals", "batch is empty"));
    }
    if items > max_items {
        return Err(DomainError::invalid(
            "signals",
            format!("batch of {items} signals and events exceeds the limit of {max_items}"),
        ));
    }
    let now = Utc::now();
    let signals = signals
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut signal = decode::new_signal(s, limits, now)
                .map_err(|e| e.within(&format!("signals[{i}].")))?;
            signal.recorded_by = recorded_by.map(str::to_owned);
            Ok(signal)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let events = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut event = decode::new_event(e, limits, now)
                .map_err(|err| err.within(&format!("events[{i}].")))?;
            event.recorded_by = recorded_by.map(str::to_owned);
            Ok(event)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((signals, events))
}

#[tonic::async_trait]
impl SignalWriterService for WriterService {
    type IngestStream = AckStream;

    #[tracing::instrument(skip_all)]
    async fn ingest(
        &self,
        request: Request<Streaming<pb::IngestRequest>>,
    ) -> Result<Response<Self::IngestStream>, Status> {
        let limits = self.limits.clone();
        let max_items = self.max_batch_items;
        let by = recorded_by(&request);
        let decode: ingest::Decode = Arc::new(move |chunk: &pb::IngestRequest| {
            decode_batch(
                &limits,
                max_items,
                &chunk.signals,
                &chunk.events,
                by.as_deref(),
            )
        });
        Ok(Response::new(ingest::acknowledge(
            request.into_inner(),
            self.pool.clone(),
            self.ingest_slots.clone(),
            self.ingest.clone(),
            decode,
            self.shutdown.clone(),
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn record_signal(
        &self,
        request: Request<pb::RecordSignalRequest>,
    ) -> Result<Response<pb::RecordSignalResponse>, Status> {
        respond(async {
            let by = recorded_by(&request);
            let signal = required("signal", request.into_inner().signal)?;
            let mut signal = decode::new_signal(&signal, &self.limits, Utc::now())
                .map_err(|e| e.within("signal."))?;
            signal.recorded_by = by;
            tracing::debug!(signal_id = %signal.signal_id, ticker = %signal.ticker, "record signal");
            let committed = self.group_commit.record_signal(signal).await?;
            Ok(pb::RecordSignalResponse {
                consistency_token: token(&committed),
                created: committed.value.created,
                signal: Some(signal_to_proto(committed.value.signal)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn record_event(
        &self,
        request: Request<pb::RecordEventRequest>,
    ) -> Result<Response<pb::RecordEventResponse>, Status> {
        respond(async {
            let by = recorded_by(&request);
            let event = required("event", request.into_inner().event)?;
            let mut event = decode::new_event(&event, &self.limits, Utc::now())
                .map_err(|e| e.within("event."))?;
            event.recorded_by = by;
            tracing::debug!(
                signal_id = %event.signal_id,
                event_id = %event.event_id,
                event_type = event.event_type.as_str(),
                "record event"
            );
            let committed = self.group_commit.record_event(event).await?;
            let token = token(&committed);
            let recorded = committed.value;
            Ok(pb::RecordEventResponse {
                event: Some(event_to_proto(recorded.event)),
                signal: Some(signal_to_proto(recorded.signal)),
                created: recorded.created,
                consistency_token: token,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn record_batch(
        &self,
        request: Request<pb::RecordBatchRequest>,
    ) -> Result<Response<pb::RecordBatchResponse>, Status> {
        respond(async {
            let by = recorded_by(&request);
            let batch = request.into_inner();
            let (signals, events) = decode_batch(
                &self.limits,
                self.max_batch_items,
                &batch.signals,
                &batch.events,
                by.as_deref(),
            )?;
            tracing::debug!(
                signals = signals.len(),
                events = events.len(),
                "record batch"
            );
            let committed = store::record_batch(&self.pool, signals, events).await?;
            Ok(pb::RecordBatchResponse {
                signals_created: count(committed.value.signals_created),
                events_created: count(committed.value.events_created),
                duplicates: count(committed.value.duplicates),
                consistency_token: token(&committed),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn add_tags(
        &self,
        request: Request<pb::AddTagsRequest>,
    ) -> Result<Response<pb::AddTagsResponse>, Status> {
        respond(async {
            let request = request.into_inner();
            let (signal_id, tags) = self.tag_request(&request.signal_id, &request.tags)?;
            let committed = store::add_tags(&self.pool, signal_id, tags).await?;
            Ok(pb::AddTagsResponse {
                consistency_token: token(&committed),
                signal: Some(signal_to_proto(committed.value)),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn remove_tags(
        &self,
        request: Request<pb::RemoveTagsRequest>,
    ) -> Result<Response<pb::RemoveTagsResponse>, Status> {
        respond(async {
            let request = request.into_inner();
            let (signal_id, tags) = self.tag_request(&request.signal_id, &request.tags)?;
            let committed = store::remove_tags(&self.pool, signal_id, tags).await?;
            Ok(pb::RemoveTagsResponse {
                consistency_token: token(&committed),
                signal: Some(signal_to_proto(committed.value)),
            })
        })
        .await
    }
}

impl WriterService {
    fn tag_request(
        &self,
        signal_id: &str,
        tags: &[String],
    ) -> Result<(uuid::Uuid, Vec<String>), WriteError> {
        let signal_id = convert::uuid("signal_id", signal_id)?;
        let tags = rules::tags("tags", tags, &self.limits)?;
        if tags.is_empty() {
            return Err(DomainError::invalid("tags", "must name at least one tag").into());
        }
        Ok((signal_id, tags))
    }
}
