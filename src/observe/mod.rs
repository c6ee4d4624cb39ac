//! Observability: logging now; metrics and escalation follow.

mod logging;

pub use self::logging::init_logging;
