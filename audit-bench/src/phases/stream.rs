//! The Ingest RPC: `--streams` bidirectional streams, each sending chunks
//! of `--chunk-size` items and keeping up to `--window` chunks
//! unacknowledged. An acknowledgement with code 0 means the chunk is
//! committed; RESOURCE_EXHAUSTED (8) means the writer is saturated, so the
//! stream backs off and sends the same items again in a new chunk; any
//! other code ends the phase with that error.
//!
//! [`run`] (`stream`) sends new signals; [`run_events`] (`stream-events`)
//! sends events of stored signals, each stream its own signals interleaved
//! (see [`EventFeed`]) so that no two chunks in flight touch one signal.

use super::{Backoff, Budget, Context, Measured, Meter, Tally, Unit, events, join};
use crate::BenchError;
use crate::args::PhaseName;
use crate::workload::{EventFeed, Workload};
use audit_proto::v1 as pb;
use audit_proto::v1::signal_writer_service_client::SignalWriterServiceClient;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

#[derive(Clone, Copy)]
struct Shape {
    chunk_size: usize,
    window: usize,
    ack_timeout: Duration,
}

/// What one stream sends.
enum Source {
    /// New signals of the workload, as the budget hands them out.
    Signals(Workload, Arc<Budget>),
    /// Events of stored signals.
    Events(EventFeed, Arc<Budget>),
}

/// The items of one chunk, kept until it is acknowledged (to send again).
#[derive(Clone)]
struct Items {
    signals: Vec<pb::NewSignal>,
    events: Vec<pb::NewEvent>,
}

impl Items {
    fn len(&self) -> usize {
        self.signals.len() + self.events.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Source {
    /// The next chunk's items; none once the budget is spent.
    fn next(&mut self, n: usize) -> Option<Items> {
        let items = match self {
            Self::Signals(workload, budget) => Items {
                signals: workload.signals(budget.claim(n)?),
                events: Vec::new(),
            },
            Self::Events(feed, budget) => Items {
                signals: Vec::new(),
                events: feed.next(n, budget),
            },
        };
        (!items.is_empty()).then_some(items)
    }
}

impl Context<'_> {
    fn shape(&self) -> Shape {
        Shape {
            chunk_size: self.args.chunk_size,
            window: self.args.window,
            ack_timeout: self.call_timeout(),
        }
    }

    async fn ingest_channels(&self) -> Result<Vec<Channel>, BenchError> {
        let mut channels = Vec::with_capacity(self.args.streams);
        for _ in 0..self.args.streams {
            channels.push(self.writer.channel().await?);
        }
        Ok(channels)
    }
}

pub async fn run(cx: &Context<'_>) -> Result<Measured, BenchError> {
    let channels = cx.ingest_channels().await?;
    let shape = cx.shape();
    let workload = cx.workload(PhaseName::Stream);
    let budget = cx.budget(cx.args.signals);
    let meter = Meter::start(cx.writer);
    let mut streams = JoinSet::new();
    for channel in channels {
        let source = Source::Signals(workload, budget.clone());
        streams.spawn(ingest(channel, source, shape));
    }
    let tally = join(streams).await?;
    Ok(Measured::new(
        format!(
            "{} streams x {} chunks in flight x {} signals",
            cx.args.streams, cx.args.window, cx.args.chunk_size
        ),
        Unit::Signals,
        "chunk ack",
        tally,
        meter.stop(),
    ))
}

pub async fn run_events(cx: &Context<'_>) -> Result<Measured, BenchError> {
    let workload = cx.workload(PhaseName::StreamEvents);
    let events = cx.args.signals;
    // Each stream interleaves enough signals that the chunks of one window
    // never share one.
    let active = cx.args.chunk_size * cx.args.window;
    let started = active * cx.args.streams;
    let stored = events::store_signals(cx, workload, events, started).await?;
    let channels = cx.ingest_channels().await?;
    let shape = cx.shape();
    let budget = cx.budget(events);
    let next_signal = Arc::new(AtomicUsize::new(0));
    let meter = Meter::start(cx.writer);
    let mut streams = JoinSet::new();
    for channel in channels {
        let feed = EventFeed::new(workload, next_signal.clone(), stored, active);
        let source = Source::Events(feed, budget.clone());
        streams.spawn(ingest(channel, source, shape));
    }
    let tally = join(streams).await?;
    Ok(Measured::new(
        format!(
            "{} streams x {} chunks in flight x {} events, one per signal",
            cx.args.streams, cx.args.window, cx.args.chunk_size
        ),
        Unit::Events,
        "chunk ack",
        tally,
        meter.stop(),
    ))
}

/// One stream, until the source is spent and every chunk is acknowledged.
async fn ingest(channel: Channel, mut source: Source, shape: Shape) -> Result<Tally, BenchError> {
    let (outbound, requests) = mpsc::channel::<pb::IngestRequest>(shape.window);
    let mut acks = SignalWriterServiceClient::new(channel)
        .ingest(ReceiverStream::new(requests))
        .await
        .map_err(|status| BenchError::call("Ingest", status))?
        .into_inner();
    let mut tally = Tally::default();
    let mut backoff = Backoff::default();
    // Chunks sent and not yet acknowledged: their items and send time.
    let mut pending: HashMap<u64, (Items, Instant)> = HashMap::new();
    let mut resend: VecDeque<Items> = VecDeque::new();
    let mut next_chunk_id = 0u64;
    let mut spent = false;
    loop {
        while pending.len() < shape.window {
            let items = match resend.pop_front() {
                Some(items) => items,
                None if spent => break,
                None => match source.next(shape.chunk_size) {
                    Some(items) => items,
                    None => {
                        spent = true;
                        break;
                    }
                },
            };
            let chunk = pb::IngestRequest {
                chunk_id: next_chunk_id,
                signals: items.signals.clone(),
                events: items.events.clone(),
            };
            outbound
                .send(chunk)
                .await
                .map_err(|_| BenchError::Writer("closed an ingest stream early".into()))?;
            pending.insert(next_chunk_id, (items, Instant::now()));
            next_chunk_id += 1;
        }
        if pending.is_empty() {
            break;
        }
        let ack = tokio::time::timeout(shape.ack_timeout, acks.message())
            .await
            .map_err(|_| {
                BenchError::Writer(format!(
                    "no ingest acknowledgement within {} s",
                    shape.ack_timeout.as_secs()
                ))
            })?
            .map_err(|status| BenchError::call("Ingest", status))?
            .ok_or_else(|| BenchError::Writer("ended an ingest stream early".into()))?;
        let Some((items, sent)) = pending.remove(&ack.chunk_id) else {
            return Err(BenchError::Writer(format!(
                "acknowledged chunk {} which was not sent",
                ack.chunk_id
            )));
        };
        match tonic::Code::from(ack.code) {
            tonic::Code::Ok => {
                tally.done(items.len(), sent);
                backoff.reset();
            }
            tonic::Code::ResourceExhausted => {
                tally.refused += 1;
                let status = tonic::Status::resource_exhausted(ack.message);
                if !backoff.wait().await {
                    return Err(BenchError::call("Ingest", status));
                }
                resend.push_back(items);
            }
            code => {
                return Err(BenchError::call(
                    "Ingest",
                    tonic::Status::new(code, format!("chunk {}: {}", ack.chunk_id, ack.message)),
                ));
            }
        }
    }
    Ok(tally)
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_proto::v1::signal_writer_service_server::{
        SignalWriterService, SignalWriterServiceServer,
    };
    use std::pin::Pin;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use tokio_stream::Stream;
    use tonic::{Request, Response, Status, Streaming};

    /// A writer whose Ingest is missing, or refuses the first chunk with
    /// RESOURCE_EXHAUSTED and then commits everything.
    #[derive(Default)]
    struct Stub {
        ingest: bool,
        refused_once: Arc<AtomicBool>,
        committed: Arc<Mutex<Vec<String>>>,
    }

    type Acks = Pin<Box<dyn Stream<Item = Result<pb::IngestResponse, Status>> + Send>>;

    #[tonic::async_trait]
    impl SignalWriterService for Stub {
        type IngestStream = Acks;

        async fn ingest(
            &self,
            request: Request<Streaming<pb::IngestRequest>>,
        ) -> Result<Response<Acks>, Status> {
            if !self.ingest {
                return Err(Status::unimplemented("Ingest is not there yet"));
            }
            let mut inbound = request.into_inner();
            let (refused_once, committed) = (self.refused_once.clone(), self.committed.clone());
            let (acks, stream) = mpsc::channel(4);
            tokio::spawn(async move {
                while let Ok(Some(chunk)) = inbound.message().await {
                    let mut ack = pb::IngestResponse {
                        chunk_id: chunk.chunk_id,
                        ..Default::default()
                    };
                    if refused_once.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        let ids = chunk.signals.into_iter().map(|s| s.signal_id);
                        committed.lock().unwrap().extend(ids);
                    } else {
                        ack.code = tonic::Code::ResourceExhausted as i32;
                    }
                    if acks.send(Ok(ack)).await.is_err() {
                        break;
                    }
                }
            });
            Ok(Response::new(Box::pin(ReceiverStream::new(stream))))
        }

        async fn record_signal(
            &self,
            _: Request<pb::RecordSignalRequest>,
        ) -> Result<Response<pb::RecordSignalResponse>, Status> {
            Err(Status::unimplemented(""))
        }

        async fn record_event(
            &self,
            _: Request<pb::RecordEventRequest>,
        ) -> Result<Response<pb::RecordEventResponse>, Status> {
            Err(Status::unimplemented(""))
        }

        async fn record_batch(
            &self,
            _: Request<pb::RecordBatchRequest>,
        ) -> Result<Response<pb::RecordBatchResponse>, Status> {
            Err(Status::unimplemented(""))
        }

        async fn add_tags(
            &self,
            _: Request<pb::AddTagsRequest>,
        ) -> Result<Response<pb::AddTagsResponse>, Status> {
            Err(Status::unimplemented(""))
        }

        async fn remove_tags(
            &self,
            _: Request<pb::RemoveTagsRequest>,
        ) -> Result<Response<pb::RemoveTagsResponse>, Status> {
            Err(Status::unimplemented(""))
        }
    }

    async fn serve(stub: Stub) -> Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(SignalWriterServiceServer::new(stub))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    fn signals(total: usize) -> Source {
        let workload = Workload::new(1, PhaseName::Stream);
        Source::Signals(workload, Arc::new(Budget::new(total)))
    }

    const SHAPE: Shape = Shape {
        chunk_size: 3,
        window: 2,
        ack_timeout: Duration::from_secs(10),
    };

    #[tokio::test]
    async fn a_missing_ingest_is_an_unimplemented_call_error() {
        let channel = serve(Stub::default()).await;
        let error = ingest(channel, signals(10), SHAPE).await.err();
        assert!(
            matches!(&error, Some(BenchError::Call { call: "Ingest", status }) if status.code() == tonic::Code::Unimplemented),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn refused_chunks_are_sent_again_and_every_signal_lands_once() {
        let stub = Stub {
            ingest: true,
            ..Stub::default()
        };
        let committed = stub.committed.clone();
        let channel = serve(stub).await;
        let workload = Workload::new(1, PhaseName::Stream);
        let tally = ingest(channel, signals(10), SHAPE).await.unwrap();
        assert_eq!((tally.items, tally.refused), (10, 1));
        assert_eq!(tally.latency.len(), 4, "one sample per committed chunk");
        let mut got = committed.lock().unwrap().clone();
        got.sort();
        let mut want: Vec<String> = workload
            .signals(0..10)
            .into_iter()
            .map(|s| s.signal_id)
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
}
