//! Thin handlers: wait for the caller's token, run one `audit_db::reads`
//! query on the replica, convert rows to protobuf.

use crate::consistency::Consistency;
use crate::export;
use crate::request;
use audit_core::DomainError;
use audit_core::convert::{to_duration, to_timestamp};
use audit_db::reads::{self, encode_token};
use audit_db::{PgPool, event_to_proto, invalid, replication, signal_to_proto};
use audit_proto::v1 as pb;
use audit_proto::v1::signal_reader_service_server::SignalReaderService;
use chrono::TimeDelta;
use tonic::{Request, Response, Status};

pub struct ReaderService {
    pool: PgPool,
    consistency: Consistency,
    tail_poll: std::time::Duration,
}

impl ReaderService {
    pub fn new(pool: PgPool, consistency: Consistency, tail_poll: std::time::Duration) -> Self {
        Self {
            pool,
            consistency,
            tail_poll,
        }
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
        Ok(Response::new(
            crate::tail::start(self.pool.clone(), request.get_ref(), self.tail_poll).await?,
        ))
    }

    #[tracing::instrument(skip_all)]
    async fn export_signals(
        &self,
        request: Request<pb::ExportSignalsRequest>,
    ) -> Result<Response<Self::ExportSignalsStream>, Status> {
        let export_request = request.get_ref();
        let format = match pb::ExportFormat::try_from(export_request.format) {
            Ok(pb::ExportFormat::Unspecified | pb::ExportFormat::Csv) => export::Format::Csv,
            Ok(pb::ExportFormat::JsonLines) => export::Format::JsonLines,
            Err(_) => {
                return Err(invalid(DomainError::invalid(
                    "format",
                    format!("unknown value {}", export_request.format),
                )));
            }
        };
        if export_request.limit < 0 {
            return Err(invalid(DomainError::invalid(
                "limit",
                "must not be negative",
            )));
        }
        let limit = (export_request.limit > 0).then_some(export_request.limit);
        let mut query = request::signal_query(&pb::ListSignalsRequest {
            filter: export_request.filter.clone(),
            sort_by: export_request.sort_by,
            direction: export_request.direction,
            page_size: 1000,
            ..Default::default()
        })
        .map_err(invalid)?;
        query.include_total = false;
        self.consistency
            .wait(
                &self.pool,
                export_request.consistency_token.as_ref(),
                request.metadata(),
            )
            .await?;
        Ok(Response::new(export::export(
            self.pool.clone(),
            query,
            format,
            limit,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn get_signal(
        &self,
        request: Request<pb::GetSignalRequest>,
    ) -> Result<Response<pb::GetSignalResponse>, Status> {
        let signal_id = audit_core::convert::uuid("signal_id", &request.get_ref().signal_id)
            .map_err(invalid)?;
        self.consistency
            .wait(
                &self.pool,
                request.get_ref().consistency_token.as_ref(),
                request.metadata(),
            )
            .await?;
        let (signal, events) = reads::get_signal(&self.pool, signal_id).await?;
        let stages = reads::stage_durations(&events)
            .into_iter()
            .map(|(from, to, spent)| pb::StageDuration {
                from_status: pb::SignalStatus::from(from).into(),
                to_status: pb::SignalStatus::from(to).into(),
                duration: Some(to_duration(spent)),
            })
            .collect();
        Ok(Response::new(pb::GetSignalResponse {
            signal: Some(signal_to_proto(signal)),
            events: events.into_iter().map(event_to_proto).collect(),
            stages,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_signals(
        &self,
        request: Request<pb::ListSignalsRequest>,
    ) -> Result<Response<pb::ListSignalsResponse>, Status> {
        let query = request::signal_query(request.get_ref()).map_err(invalid)?;
        self.consistency
            .wait(
                &self.pool,
                request.get_ref().consistency_token.as_ref(),
                request.metadata(),
            )
            .await?;
        let page = reads::list_signals(&self.pool, &query).await?;
        Ok(Response::new(pb::ListSignalsResponse {
            signals: page.signals.into_iter().map(signal_to_proto).collect(),
            next_page_token: page.next.as_ref().map(encode_token).unwrap_or_default(),
            total_count: page.total.unwrap_or(0),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list_events(
        &self,
        request: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        let query = request::event_query(request.get_ref()).map_err(invalid)?;
        self.consistency
            .wait(
                &self.pool,
                request.get_ref().consistency_token.as_ref(),
                request.metadata(),
            )
            .await?;
        let (events, next) = reads::list_events(
            &self.pool,
            &query.filter,
            query.page_size,
            query.after.as_ref(),
            query.fingerprint,
        )
        .await?;
        Ok(Response::new(pb::ListEventsResponse {
            events: events.into_iter().map(event_to_proto).collect(),
            next_page_token: next.as_ref().map(encode_token).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn get_replication_status(
        &self,
        _request: Request<pb::GetReplicationStatusRequest>,
    ) -> Result<Response<pb::GetReplicationStatusResponse>, Status> {
        let status = replication::replication_status(&self.pool).await?;
        Ok(Response::new(pb::GetReplicationStatusResponse {
            replay_lsn: status.replay_lsn.unwrap_or_default(),
            receive_lsn: status.receive_lsn.unwrap_or_default(),
            replay_lag: Some(to_duration(TimeDelta::microseconds(status.replay_lag_us))),
            last_replayed_commit_at: status.last_replayed_commit_at.map(to_timestamp),
            in_recovery: status.in_recovery,
        }))
    }
}
