//! What a store keeps for one session.

use crate::clock::Timestamp;
use crate::data::SessionData;
use crate::id::SessionKey;

/// One stored session.
///
/// Records are versioned: every write that changes data or ownership goes
/// through [`SessionStore::save`](crate::SessionStore::save) or
/// [`SessionStore::regenerate`](crate::SessionStore::regenerate) with the
/// version the writer read, so a store can refuse a stale write.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// The digest of the session ID.
    pub key: SessionKey,
    /// Incremented by every compare-and-swap write; starts at 1.
    pub version: u64,
    /// The user this session belongs to, once logged in.
    pub user_id: Option<String>,
    /// The session's key–value data.
    pub data: SessionData,
    /// When the session was created (start of the absolute time-out).
    pub created_at: Timestamp,
    /// Last activity recorded (start of the idle time-out).
    pub last_active: Timestamp,
    /// When the store may forget the record: the earlier of the idle and the
    /// absolute deadline. Stores expire or purge records by it; the engine
    /// re-checks both deadlines against its own clock on every load.
    pub expires_at: Timestamp,
    /// Where the session was created or last logged in from, for device lists.
    pub device: DeviceInfo,
}

/// Information about the client of a session, shown in device lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceInfo {
    /// The client IP address as the web layer determined it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The `User-Agent` header, truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
}

impl DeviceInfo {
    /// Longest user agent kept, in bytes; longer values are cut at a char boundary.
    pub const MAX_USER_AGENT: usize = 256;

    /// Builds device info, bounding the user agent's length.
    pub fn new(ip: Option<String>, user_agent: Option<&str>) -> Self {
        let user_agent = user_agent.map(|ua| {
            let mut end = ua.len().min(Self::MAX_USER_AGENT);
            while !ua.is_char_boundary(end) {
                end -= 1;
            }
            ua[..end].to_owned()
        });
        DeviceInfo { ip, user_agent }
    }

    /// Compact JSON for stores that keep it in one column.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Decodes [`DeviceInfo::to_json`]; garbage gives empty info, since device
    /// details are informational only.
    pub fn from_json(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_default()
    }
}
