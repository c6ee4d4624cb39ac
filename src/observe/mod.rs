//! Observability: logging and the gateway's own counters; Prometheus metrics
//! and escalation follow.

mod logging;
mod stats;

pub use self::logging::init_logging;
pub use self::stats::{Stats, disconnect_cause};
