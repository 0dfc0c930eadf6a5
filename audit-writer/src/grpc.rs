//! Thin handlers: proto in, one `audit_db::writes` call, proto out.

use crate::group_commit::GroupCommit;
use crate::ingest::{self, AckStream, IngestConfig};
use audit_core::{DomainError, convert, validate};
use audit_db::writes::{self, Committed};
use audit_db::{PgPool, invalid, signal_to_proto};
use audit_proto::v1 as pb;
use audit_proto::v1::signal_writer_service_server::SignalWriterService;
use chrono::Utc;
use std::sync::Arc;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};

pub struct WriterService {
    pool: PgPool,
    limits: validate::Limits,
    max_batch_items: usize,
    group_commit: GroupCommit,
    ingest_slots: Arc<Semaphore>,
    ingest: IngestConfig,
}

impl WriterService {
    pub fn new(
        pool: PgPool,
        limits: validate::Limits,
        max_batch_items: usize,
        group_commit: GroupCommit,
        ingest_slots: usize,
        ingest: IngestConfig,
    ) -> Self {
        Self {
            pool,
            limits,
            max_batch_items,
            group_commit,
            ingest_slots: Arc::new(Semaphore::new(ingest_slots.max(1))),
            ingest,
        }
    }
}

fn required<T>(field: &str, value: Option<T>) -> Result<T, Status> {
    value.ok_or_else(|| invalid(DomainError::invalid(field, "is required")))
}

fn token<T>(committed: &Committed<T>) -> Option<pb::ConsistencyToken> {
    Some(pb::ConsistencyToken {
        lsn: committed.lsn.clone(),
    })
}

/// Checks a batch or ingest chunk: size bound first, then every item, each
/// error naming the item (`signals[3].price`).
fn validate_batch(
    limits: &validate::Limits,
    max_items: usize,
    signals: &[pb::NewSignal],
    events: &[pb::NewEvent],
) -> Result<(Vec<validate::NewSignal>, Vec<validate::NewEvent>), Status> {
    let items = signals.len() + events.len();
    if items == 0 {
        return Err(invalid(DomainError::invalid("signals", "batch is empty")));
    }
    if items > max_items {
        return Err(invalid(DomainError::invalid(
            "signals",
            format!("batch of {items} signals and events exceeds the limit of {max_items}"),
        )));
    }
    let now = Utc::now();
    let signals = signals
        .iter()
        .enumerate()
        .map(|(i, s)| {
            validate::new_signal(s, limits, now)
                .map_err(|e| invalid(e.within(&format!("signals[{i}]."))))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let events = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            validate::new_event(e, limits, now)
                .map_err(|err| invalid(err.within(&format!("events[{i}]."))))
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
        let validate: ingest::Validate = Arc::new(move |chunk: &pb::IngestRequest| {
            validate_batch(&limits, max_items, &chunk.signals, &chunk.events)
        });
        Ok(Response::new(ingest::acknowledge(
            request.into_inner(),
            self.pool.clone(),
            self.ingest_slots.clone(),
            self.ingest.clone(),
            validate,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn record_signal(
        &self,
        request: Request<pb::RecordSignalRequest>,
    ) -> Result<Response<pb::RecordSignalResponse>, Status> {
        let signal = required("signal", request.into_inner().signal)?;
        let signal = validate::new_signal(&signal, &self.limits, Utc::now())
            .map_err(|e| invalid(e.within("signal.")))?;
        tracing::info!(signal_id = %signal.signal_id, ticker = %signal.ticker, "record signal");
        let committed = self.group_commit.record_signal(signal).await?;
        Ok(Response::new(pb::RecordSignalResponse {
            consistency_token: token(&committed),
            created: committed.value.created,
            signal: Some(signal_to_proto(committed.value.signal)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn record_event(
        &self,
        request: Request<pb::RecordEventRequest>,
    ) -> Result<Response<pb::RecordEventResponse>, Status> {
        let event = required("event", request.into_inner().event)?;
        let event = validate::new_event(&event, &self.limits, Utc::now())
            .map_err(|e| invalid(e.within("event.")))?;
        tracing::info!(
            signal_id = %event.signal_id,
            event_id = %event.event_id,
            event_type = event.event_type.as_str(),
            "record event"
        );
        let committed = self.group_commit.record_event(event).await?;
        let token = token(&committed);
        let recorded = committed.value;
        Ok(Response::new(pb::RecordEventResponse {
            event: Some(audit_db::event_to_proto(recorded.event)),
            signal: Some(signal_to_proto(recorded.signal)),
            created: recorded.created,
            consistency_token: token,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn record_batch(
        &self,
        request: Request<pb::RecordBatchRequest>,
    ) -> Result<Response<pb::RecordBatchResponse>, Status> {
        let batch = request.into_inner();
        let (signals, events) = validate_batch(
            &self.limits,
            self.max_batch_items,
            &batch.signals,
            &batch.events,
        )?;
        tracing::info!(
            signals = signals.len(),
            events = events.len(),
            "record batch"
        );
        let committed = writes::record_batch(&self.pool, signals, events).await?;
        let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(Response::new(pb::RecordBatchResponse {
            signals_created: count(committed.value.signals_created),
            events_created: count(committed.value.events_created),
            duplicates: count(committed.value.duplicates),
            consistency_token: token(&committed),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn add_tags(
        &self,
        request: Request<pb::AddTagsRequest>,
    ) -> Result<Response<pb::AddTagsResponse>, Status> {
        let request = request.into_inner();
        let (signal_id, tags) = self.tag_request(&request.signal_id, &request.tags)?;
        let committed = writes::add_tags(&self.pool, signal_id, tags).await?;
        Ok(Response::new(pb::AddTagsResponse {
            consistency_token: token(&committed),
            signal: Some(signal_to_proto(committed.value)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn remove_tags(
        &self,
        request: Request<pb::RemoveTagsRequest>,
    ) -> Result<Response<pb::RemoveTagsResponse>, Status> {
        let request = request.into_inner();
        let (signal_id, tags) = self.tag_request(&request.signal_id, &request.tags)?;
        let committed = writes::remove_tags(&self.pool, signal_id, tags).await?;
        Ok(Response::new(pb::RemoveTagsResponse {
            consistency_token: token(&committed),
            signal: Some(signal_to_proto(committed.value)),
        }))
    }
}

impl WriterService {
    fn tag_request(
        &self,
        signal_id: &str,
        tags: &[String],
    ) -> Result<(uuid::Uuid, Vec<String>), Status> {
        let signal_id = convert::uuid("signal_id", signal_id).map_err(invalid)?;
        let tags = validate::tags("tags", tags, &self.limits).map_err(invalid)?;
        if tags.is_empty() {
            return Err(invalid(DomainError::invalid(
                "tags",
                "must name at least one tag",
            )));
        }
        Ok((signal_id, tags))
    }
}
