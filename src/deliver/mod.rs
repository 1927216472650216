//! Delivery: the worker threads that turn a job into HTTP attempts (`worker`), and
//! what an attempt needs: the settings it runs under (`settings`), our TCP link and
//! resolver for ureq (`transport`, `resolver`), Standard Webhooks signing
//! (`signing`), the allow-list (`allowlist`) and the host breakers (`breaker`).
//!
//! Nothing here touches Redis or decides what a failure means for the job: a worker
//! reports what the endpoint said, and the main loop settles it.

pub mod allowlist;
pub mod breaker;
pub mod resolver;
pub mod settings;
pub mod signing;
mod transport;
pub mod worker;

pub use settings::{HttpSettings, SuccessRule};
