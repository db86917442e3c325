//! Data shapes the page and the server agree on.

use serde::{Deserialize, Serialize};

/// How many stored events are in each state of the pipeline.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    /// Stored and waiting to be processed.
    pub pending: i64,
    /// Claimed by a worker under a lease.
    pub processing: i64,
    /// Processed successfully.
    pub done: i64,
    /// Every event stored so far.
    pub total: i64,
}
