//! Thin handlers: proto in, one `audit_db::writes` call, proto out.

use audit_core::{DomainError, convert, validate};
use audit_db::writes::{self, Committed};
use audit_db::{PgPool, invalid, signal_to_proto};
use audit_proto::v1 as pb;
use audit_proto::v1::signal_writer_service_server::SignalWriterService;
use chrono::Utc;
use tonic::{Request, Response, Status};

pub struct WriterService {
    pool: PgPool,
    limits: validate::Limits,
    max_batch_items: usize,
}

impl WriterService {
    pub fn new(pool: PgPool, limits: validate::Limits, max_batch_items: usize) -> Self {
        Self {
            pool,
            limits,
            max_batch_items,
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

#[tonic::async_trait]
impl SignalWriterService for WriterService {
    #[tracing::instrument(skip_all)]
    async fn record_signal(
        &self,
        request: Request<pb::RecordSignalRequest>,
    ) -> Result<Response<pb::RecordSignalResponse>, Status> {
        let signal = required("signal", request.into_inner().signal)?;
        let signal = validate::new_signal(&signal, &self.limits, Utc::now())
            .map_err(|e| invalid(e.within("signal.")))?;
        tracing::info!(signal_id = %signal.signal_id, ticker = %signal.ticker, "record signal");
        let committed = writes::record_signal(&self.pool, signal).await?;
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
        let committed = writes::record_event(&self.pool, event).await?;
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
        let items = batch.signals.len() + batch.events.len();
        if items == 0 {
            return Err(invalid(DomainError::invalid("signals", "batch is empty")));
        }
        if items > self.max_batch_items {
            return Err(invalid(DomainError::invalid(
                "signals",
                format!(
                    "batch of {items} signals and events exceeds the limit of {}",
                    self.max_batch_items
                ),
            )));
        }
        let now = Utc::now();
        let signals = batch
            .signals
            .iter()
            .enumerate()
            .map(|(i, s)| {
                validate::new_signal(s, &self.limits, now)
                    .map_err(|e| invalid(e.within(&format!("signals[{i}]."))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let events = batch
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| {
                validate::new_event(e, &self.limits, now)
                    .map_err(|err| invalid(err.within(&format!("events[{i}]."))))
            })
            .collect::<Result<Vec<_>, _>>()?;
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
