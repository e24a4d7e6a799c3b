//! Idle and absolute time-outs.

use std::time::Duration;

use crate::clock::Timestamp;
use crate::record::SessionRecord;

/// When sessions end, enforced by the server on every load.
///
/// - **Idle**: a session unused for `idle_timeout` ends. The deadline slides
///   with use, but refreshing it in the store (a *touch*) happens only once
///   `touch_interval` has passed since the last recorded activity, so a busy
///   session costs one small write every few minutes rather than one per request.
/// - **Absolute**: a session ends `absolute_timeout` after creation, however
///   active it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// Idle time-out. Default 30 minutes.
    pub idle_timeout: Duration,
    /// Absolute time-out from creation. Default 12 hours.
    pub absolute_timeout: Duration,
    /// Minimum age of the recorded activity before a read-only request
    /// refreshes it. Default: a tenth of the idle time-out.
    pub touch_interval: Duration,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self::new(Duration::from_secs(30 * 60), Duration::from_secs(12 * 3600))
    }
}

impl ExpiryPolicy {
    /// A policy with the given time-outs and a touch interval of a tenth of the
    /// idle time-out. A session can therefore end up to that tenth earlier than
    /// a per-request refresh would allow: the price of not writing on every read.
    pub fn new(idle_timeout: Duration, absolute_timeout: Duration) -> Self {
        ExpiryPolicy { idle_timeout, absolute_timeout, touch_interval: idle_timeout / 10 }
    }

    /// The absolute deadline of a session created at `created_at`.
    pub fn absolute_deadline(&self, created_at: Timestamp) -> Timestamp {
        created_at.plus(self.absolute_timeout)
    }

    /// The deadline to store for a session active at `last_active`.
    pub fn expires_at(&self, created_at: Timestamp, last_active: Timestamp) -> Timestamp {
        last_active.plus(self.idle_timeout).min(self.absolute_deadline(created_at))
    }

    /// Whether `record` has ended at `now`, by either deadline, under this
    /// policy (which may be stricter than the one it was written with).
    pub fn is_expired(&self, record: &SessionRecord, now: Timestamp) -> bool {
        now >= record.expires_at || now >= self.expires_at(record.created_at, record.last_active)
    }

    /// Whether a read-only request at `now` should refresh the idle deadline.
    pub fn touch_due(&self, record: &SessionRecord, now: Timestamp) -> bool {
        now.since(record.last_active) >= self.touch_interval
    }
}
