//! Observability: logging, the gateway's own counters (on `/readyz`) and
//! Prometheus metrics (on `/metrics`).

mod exit_status;
mod logging;
pub mod metrics;
mod stats;

pub use self::exit_status::describe_exit;
pub use self::logging::init_logging;
pub use self::stats::{Counter, Disconnect, Stats, disconnect_cause};
