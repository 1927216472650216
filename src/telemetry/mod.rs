//! What the daemon tells its operator: log lines (`logging`), the Prometheus
//! metrics file (`metrics`), and the lateness of its latest deliveries for its
//! heartbeat (`recent`). Nothing here talks to Redis or decides about a job;
//! the main loop feeds it.

pub mod logging;
pub mod metrics;
pub mod recent;
