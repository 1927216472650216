//! The job: the member string's format and the form body a callback receives
//! (`format`), its per-job options (`options`), how long it waits between attempts
//! (`backoff`), its callback URL (`callback`), and why it can be malformed
//! (`malformed`). Parsing is the one place a job can be refused; a `Job` that exists
//! is deliverable.
//!
//! Nothing here does I/O.

pub mod backoff;
pub mod callback;
mod format;
mod malformed;
pub mod options;

pub use format::*;
pub use malformed::Malformed;
