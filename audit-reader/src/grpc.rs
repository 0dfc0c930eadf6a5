//! Thin handlers: decode the request ([`crate::request`]), wait for the
//! replica (one that has the caller's token, [`crate::consistency`]), run
//! one [`crate::queries`] query on it, encode the rows.

use crate::consistency::Consistency;
use crate::error::{ReadError, respond};
use crate::queries::{events, signals};
use crate::replica::{Replica, Replicas};
use crate::{export, request};
use audit_core::{DomainError, stage_durations};
use audit_db::replication;
use audit_proto::v1 as pb;
use audit_proto::v1::signal_reader_service_server::SignalReaderService;
use audit_server::Shutdown;
use audit_wire::convert::{self, status_to_proto, to_duration, to_timestamp};
use audit_wire::encode::{event_to_proto, signal_to_proto};
use audit_wire::token::encode_token;
use chrono::TimeDelta;
use tonic::{Request, Response, Status};

pub struct ReaderService {
    replicas: Replicas,
    consistency: Consistency,
    tail_poll: std::time::Duration,
    /// Ends open tails and exports when the reader starts draining.
    shutdown: Shutdown,
}

impl ReaderService {
    pub fn new(
        replicas: Replicas,
        consistency: Consistency,
        tail_poll: std::time::Duration,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            replicas,
            consistency,
            tail_poll,
            shutdown,
        }
    }
}

impl ReaderService {
    /// The replica to answer from: one that has the caller's write, if
    /// the call carries a consistency token (waiting for it if need be).
    async fn replica<T>(
        &self,
        request: &Request<T>,
        token: Option<&pb::ConsistencyToken>,
    ) -> Result<&Replica, ReadError> {
        self.consistency
            .replica(&self.replicas, token, request.metadata())
            .await
    }
}

#[tonic::async_trait]
impl SignalReaderService for ReaderService {
    type ExportSignalsStream = export::ExportStream;
    type StreamEventsStream = crate::tail::TailStream;

    #[tracing::instrument(skip_all)]
    async fn stream_events(
        &self,
        request: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        respond(crate::tail::start(
            // A tail stays on one replica; if it goes, the client resumes
            // with its last resume_token and lands on another.
            self.replicas.any().pool().clone(),
            request.get_ref(),
            self.tail_poll,
            self.shutdown.clone(),
        ))
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn export_signals(
        &self,
        request: Request<pb::ExportSignalsRequest>,
    ) -> Result<Response<Self::ExportSignalsStream>, Status> {
        respond(async {
            let export_request = request.get_ref();
            let format = match pb::ExportFormat::try_from(export_request.format) {
                Ok(pb::ExportFormat::Unspecified | pb::ExportFormat::Csv) => export::Format::Csv,
                Ok(pb::ExportFormat::JsonLines) => export::Format::JsonLines,
                Err(_) => {
                    return Err(DomainError::invalid(
                        "format",
                        format!("unknown value {}", export_request.format),
                    )
                    .into());
                }
            };
            if export_request.limit < 0 {
                return Err(DomainError::invalid("limit", "must not be negative").into());
            }
            let limit = (export_request.limit > 0).then_some(export_request.limit);
            let mut query = request::signal_query(&pb::ListSignalsRequest {
                filter: export_request.filter.clone(),
                sort_by: export_request.sort_by,
                direction: export_request.direction,
                page_size: 1000,
                ..Default::default()
            })?;
            query.include_total = false;
            let replica = self
                .replica(&request, export_request.consistency_token.as_ref())
                .await?;
            // Every page from this one replica: keyset pages read on
            // replicas at different positions could skip or repeat rows.
            Ok::<_, ReadError>(export::export(
                replica.pool().clone(),
                query,
                format,
                limit,
                self.shutdown.clone(),
            ))
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_signal(
        &self,
        request: Request<pb::GetSignalRequest>,
    ) -> Result<Response<pb::GetSignalResponse>, Status> {
        respond(async {
            let signal_id = convert::uuid("signal_id", &request.get_ref().signal_id)?;
            let replica = self
                .replica(&request, request.get_ref().consistency_token.as_ref())
                .await?;
            let (signal, events) =
                replica.observe(signals::get_signal(replica.pool(), signal_id).await)?;
            let timeline: Vec<_> = events.iter().map(|e| (e.event_type, e.ts)).collect();
            let stages = stage_durations(&timeline)
                .into_iter()
                .map(|stage| pb::StageDuration {
                    from_status: status_to_proto(stage.from).into(),
                    to_status: status_to_proto(stage.to).into(),
                    duration: Some(to_duration(stage.spent)),
                })
                .collect();
            Ok(pb::GetSignalResponse {
                signal: Some(signal_to_proto(signal)),
                events: events.into_iter().map(event_to_proto).collect(),
                stages,
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_signals(
        &self,
        request: Request<pb::ListSignalsRequest>,
    ) -> Result<Response<pb::ListSignalsResponse>, Status> {
        respond(async {
            let query = request::signal_query(request.get_ref())?;
            let replica = self
                .replica(&request, request.get_ref().consistency_token.as_ref())
                .await?;
            let page = replica.observe(signals::list_signals(replica.pool(), &query).await)?;
            Ok(pb::ListSignalsResponse {
                signals: page.signals.into_iter().map(signal_to_proto).collect(),
                next_page_token: page.next.as_ref().map(encode_token).unwrap_or_default(),
                total_count: page.total.unwrap_or(0),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        respond(async {
            let query = request::event_query(request.get_ref())?;
            let replica = self
                .replica(&request, request.get_ref().consistency_token.as_ref())
                .await?;
            let (events, next) =
                replica.observe(events::list_events(replica.pool(), &query).await)?;
            Ok(pb::ListEventsResponse {
                events: events.into_iter().map(event_to_proto).collect(),
                next_page_token: next.as_ref().map(encode_token).unwrap_or_default(),
            })
        })
        .await
    }

    #[tracing::instrument(skip_all)]
    async fn get_replication_status(
        &self,
        _request: Request<pb::GetReplicationStatusRequest>,
    ) -> Result<Response<pb::GetReplicationStatusResponse>, Status> {
        respond(async {
            // The status of the replica this call lands on, like any read.
            let replica = self.replicas.any();
            let status = replica.observe(replication::replication_status(replica.pool()).await)?;
            Ok(pb::GetReplicationStatusResponse {
                replay_lsn: status.replay_lsn.unwrap_or_default(),
                receive_lsn: status.receive_lsn.unwrap_or_default(),
                replay_lag: Some(to_duration(TimeDelta::microseconds(status.replay_lag_us))),
                last_replayed_commit_at: status.last_replayed_commit_at.map(to_timestamp),
                in_recovery: status.in_recovery,
            })
        })
        .await
    }
}
