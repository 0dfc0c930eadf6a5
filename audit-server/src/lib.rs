//! The plumbing both services run in, so each service's `server.rs` is only
//! its own wiring:
//!
//! - [`telemetry`]: logging and tracing set-up (stderr, JSON lines, OTLP
//!   export) and the caller's W3C trace context on every call's span;
//! - [`serve`]: one tonic server with health (from a database ping),
//!   reflection (v1 and v1alpha), TCP_NODELAY and graceful shutdown;
//! - [`shutdown_signal`]: SIGTERM or Ctrl-C;
//! - [`PoolArgs`]: the connection-pool options both services take.

mod config;
mod serve;
mod shutdown;
pub mod telemetry;

pub use config::PoolArgs;
pub use serve::{ServeError, reflection_services, serve, watch_health};
pub use shutdown::shutdown_signal;
pub use telemetry::{Telemetry, TelemetryArgs, TelemetryError, current_trace_id, grpc_span};
