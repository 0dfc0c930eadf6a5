//! ExportSignals: a ListSignals query walked page by page (keyset, so the
//! cost per page stays flat) and streamed as CSV or JSON lines through a
//! bounded channel, so a slow client slows the export instead of filling
//! memory. When the reader starts draining, the export ends with
//! UNAVAILABLE (the client runs it again elsewhere).

use crate::error::ReadError;
use crate::queries::signals::{self, SignalQuery};
use audit_db::PgPool;
use audit_db::models::{SignalRow, interval_to_delta};
use audit_proto::v1 as pb;
use audit_server::Shutdown;
use bigdecimal::ToPrimitive;
use serde::Serialize;
use std::pin::Pin;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

pub type ExportStream =
    Pin<Box<dyn Stream<Item = Result<pb::ExportSignalsResponse, Status>> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    JsonLines,
}

/// One exported row; field order is the CSV column order (the contract in
/// reader.proto's ExportSignalsResponse). New columns go last, so readers
/// that address columns by position keep working.
#[derive(Serialize)]
struct Line {
    signal_id: String,
    ticker: String,
    normalised_ticker: String,
    side: String,
    action: String,
    price: f64,
    current_status: &'static str,
    current_location: &'static str,
    created_at: String,
    updated_at: String,
    total_processing_time_ms: Option<f64>,
    error_count: i32,
    retry_count: i32,
    tags: String,
    original_signal: String,
    /// The authenticated caller that recorded the signal; empty (CSV) or
    /// null (JSON) when authentication was off.
    recorded_by: Option<String>,
}

impl From<SignalRow> for Line {
    fn from(row: SignalRow) -> Self {
        Self {
            signal_id: row.signal_id.to_string(),
            ticker: row.ticker,
            normalised_ticker: row.normalised_ticker,
            side: row.side,
            action: row.action,
            price: row.price.to_f64().unwrap_or(f64::NAN),
            current_status: row.current_status.as_str(),
            current_location: row.current_location.as_str(),
            created_at: row.created_at.to_rfc3339(),
            updated_at: row.updated_at.to_rfc3339(),
            total_processing_time_ms: row
                .total_processing_time
                .as_ref()
                .map(|i| interval_to_delta(i).num_microseconds().unwrap_or(0) as f64 / 1000.0),
            error_count: row.error_count,
            retry_count: row.retry_count,
            tags: row.tags.join(";"),
            original_signal: row.original_signal.to_string(),
            recorded_by: row.recorded_by,
        }
    }
}

fn encode(rows: Vec<SignalRow>, format: Format, header: bool) -> Result<Vec<u8>, String> {
    match format {
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .has_headers(header)
                .from_writer(Vec::new());
            for row in rows {
                writer
                    .serialize(Line::from(row))
                    .map_err(|e| e.to_string())?;
            }
            writer.into_inner().map_err(|e| e.to_string())
        }
        Format::JsonLines => {
            let mut out = Vec::new();
            for row in rows {
                serde_json::to_writer(&mut out, &Line::from(row)).map_err(|e| e.to_string())?;
                out.push(b'\n');
            }
            Ok(out)
        }
    }
}

/// Streams every page of `query` (its page size is the chunk size) up to `limit` rows.
pub fn export(
    pool: PgPool,
    mut query: SignalQuery,
    format: Format,
    limit: Option<i64>,
    shutdown: Shutdown,
) -> ExportStream {
    let (chunks, stream) = mpsc::channel(4);
    tokio::spawn(async move {
        tokio::select! {
            () = pages(&pool, &mut query, format, limit, &chunks) => {}
            () = shutdown.draining() => {
                let _ = chunks.send(Err(ReadError::ShuttingDown.into())).await;
            }
        }
    });
    Box::pin(ReceiverStream::new(stream))
}

/// Sends every page of `query` to `chunks` until the last page, the limit,
/// an error, or a client that went away.
async fn pages(
    pool: &PgPool,
    query: &mut SignalQuery,
    format: Format,
    limit: Option<i64>,
    chunks: &mpsc::Sender<Result<pb::ExportSignalsResponse, Status>>,
) {
    let mut sent: i64 = 0;
    let mut first = true;
    loop {
        if let Some(limit) = limit {
            query.page_size = query.page_size.min(limit - sent);
            if query.page_size <= 0 {
                break;
            }
        }
        let page = match signals::list_signals(pool, query).await {
            Ok(page) => page,
            Err(error) => {
                let _ = chunks.send(Err(ReadError::from(error).into())).await;
                return;
            }
        };
        let rows = page.signals.len() as i64;
        let chunk = match encode(page.signals, format, first) {
            Ok(chunk) => chunk,
            Err(error) => {
                // Rows the database returned always serialise: a bug.
                let bug = ReadError::Bug(format!("export encoding failed: {error}"));
                let _ = chunks.send(Err(bug.into())).await;
                return;
            }
        };
        first = false;
        sent += rows;
        if chunks
            .send(Ok(pb::ExportSignalsResponse { chunk, rows }))
            .await
            .is_err()
        {
            // The client went away.
            return;
        }
        match page.next {
            Some(next) => query.after = Some(next),
            None => break,
        }
    }
}
