//! The domain of Signal Audit Trail, shared by the writer and the reader.
//!
//! Nothing here knows about gRPC or SQL statements: the services decode
//! their requests (crate `audit-wire`) into the checked types here, using
//! the field [`rules`], and the storage layer (`audit-db`) keeps them.
//!
//! - [`SignalStatus`] and [`SignalLocation`]: the pipeline vocabulary, one
//!   Rust enum each, mapped to PostgreSQL enums by `diesel-derive-enum`;
//!   which statuses are terminal is decided here (and mirrored by the SQL
//!   function `signal_status_is_terminal`, tested to agree).
//! - [`NewSignal`], [`NewEvent`]: write requests that passed the [`rules`].
//! - [`SignalState`]: the state machine that folds events into a signal.
//! - [`stage_durations`]: time spent between consecutive steps.
//! - [`Period`], [`TickerScope`], [`Lsn`]: the small types analytics and
//!   consistency tokens are expressed in.

mod error;
mod lsn;
mod period;
mod pipeline;
pub mod rules;
mod signal;
mod stages;
mod state;
mod ticker;

pub use error::DomainError;
pub use lsn::Lsn;
pub use period::Period;
pub use pipeline::{SignalLocation, SignalLocationMapping, SignalStatus, SignalStatusMapping};
pub use signal::{NewEvent, NewSignal};
pub use stages::{StageDuration, stage_durations};
pub use state::SignalState;
pub use ticker::{TickerScope, normalise_ticker};
