//! The plumbing both services run in, so each service's `server.rs` is only
//! its own wiring:
//!
//! - [`telemetry`]: logging and tracing set-up (stderr, JSON lines, OTLP
//!   export) and the caller's W3C trace context on every call's span;
//! - [`serve`]: one tonic server with health (from a database ping),
//!   reflection (v1 and v1alpha), TCP_NODELAY and graceful shutdown;
//! - [`metrics`]: the process's recorder (Prometheus, and OTLP when
//!   telemetry has an endpoint for it) and each service's `/metrics`
//!   endpoint; [`rpc_metrics`]: the per-call duration and status
//!   (metric and span);
//! - [`shutdown_signal`]: SIGTERM or Ctrl-C; [`Shutdown`]: the drain that
//!   ends long-lived streams and is bounded by a grace period;
//! - [`oversized`]: RESOURCE_EXHAUSTED (not OUT_OF_RANGE) for a request
//!   over the size limit;
//! - [`PoolArgs`], [`ConnectionArgs`]: the pool and connection options both
//!   services take;
//! - [`tls`] and [`auth`]: TLS (mutual, reloadable) and caller
//!   authentication and authorisation ([`SecurityArgs`] → [`Security`]).

pub mod auth;
mod config;
pub mod drain;
pub mod metrics;
pub mod oversized;
pub mod rpc_metrics;
mod serve;
mod shutdown;
pub mod telemetry;
pub mod tls;

pub use config::{ConnectionArgs, MaybeDuration, PoolArgs, Security, SecurityArgs, SecurityError};
pub use drain::{Shutdown, ShutdownArgs};
pub use serve::{ServeError, reflection_services, serve, watch_health};
pub use shutdown::shutdown_signal;
pub use telemetry::{
    MetricsExporter, Telemetry, TelemetryArgs, TelemetryError, current_trace_id, grpc_span,
};
