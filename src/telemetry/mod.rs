//! What the daemon tells its operator: log lines (`logging`) and the Prometheus
//! metrics file (`metrics`). Nothing here talks to Redis or decides about a job;
//! the main loop feeds it.

pub mod logging;
pub mod metrics;
