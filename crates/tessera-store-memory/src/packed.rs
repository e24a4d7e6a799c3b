//! The compact in-memory form of a record.
//!
//! A session held in memory costs what its representation costs, multiplied by
//! every session the process holds. `SessionRecord` carries a `serde_json` map,
//! three `String`s and their allocations; here a record is one shared
//! allocation: a fixed header followed by the user ID, the compact JSON of the
//! data and the device strings. The key is not repeated: the cache holds it.

use std::sync::Arc;

use tessera::{DeviceInfo, SessionData, SessionKey, SessionRecord, StoreError, Timestamp};

/// Marks an absent optional string in a length slot.
const NONE: u32 = u32::MAX;

const VERSION: usize = 0;
const CREATED_AT: usize = 8;
const LAST_ACTIVE: usize = 16;
const EXPIRES_AT: usize = 24;
const STAMP: usize = 32;
const USER_LEN: usize = 40;
const DATA_LEN: usize = 44;
const IP_LEN: usize = 48;
const UA_LEN: usize = 52;
const HEADER: usize = 56;

/// One stored record, packed into a single reference-counted buffer.
///
/// Cloning is a reference-count increment, which matters because the cache
/// hands out clones on every read. Every value is built by [`Packed::encode`]
/// or [`Packed::touched`], so the buffer always holds a complete header and the
/// lengths in it always describe the bytes that follow: the fixed-offset reads
/// below rely on that.
#[derive(Clone)]
pub(crate) struct Packed(Arc<[u8]>);

impl Packed {
    /// Packs `record`. `stamp` tells this write apart from every other write,
    /// so that the user index can ignore late notifications about values that
    /// were already replaced.
    pub(crate) fn encode(record: &SessionRecord, stamp: u64) -> Result<Self, StoreError> {
        let data = record.data.to_json();
        let user = record.user_id.as_deref().map(str::as_bytes);
        let ip = record.device.ip.as_deref().map(str::as_bytes);
        let ua = record.device.user_agent.as_deref().map(str::as_bytes);
        let payload = data.len() + [user, ip, ua].iter().flatten().map(|part| part.len()).sum::<usize>();

        let mut buf = Vec::with_capacity(HEADER + payload);
        buf.extend_from_slice(&record.version.to_le_bytes());
        buf.extend_from_slice(&record.created_at.as_millis().to_le_bytes());
        buf.extend_from_slice(&record.last_active.as_millis().to_le_bytes());
        buf.extend_from_slice(&record.expires_at.as_millis().to_le_bytes());
        buf.extend_from_slice(&stamp.to_le_bytes());
        buf.extend_from_slice(&optional_len(user)?.to_le_bytes());
        buf.extend_from_slice(&len(&data)?.to_le_bytes());
        buf.extend_from_slice(&optional_len(ip)?.to_le_bytes());
        buf.extend_from_slice(&optional_len(ua)?.to_le_bytes());
        buf.extend_from_slice(user.unwrap_or_default());
        buf.extend_from_slice(&data);
        buf.extend_from_slice(ip.unwrap_or_default());
        buf.extend_from_slice(ua.unwrap_or_default());
        Ok(Packed(buf.into()))
    }

    /// A copy with new activity times and stamp, for `touch`: the data bytes
    /// are copied as they are, never re-encoded.
    pub(crate) fn touched(&self, last_active: Timestamp, expires_at: Timestamp, stamp: u64) -> Self {
        let mut buf = self.0.to_vec();
        buf[LAST_ACTIVE..LAST_ACTIVE + 8].copy_from_slice(&last_active.as_millis().to_le_bytes());
        buf[EXPIRES_AT..EXPIRES_AT + 8].copy_from_slice(&expires_at.as_millis().to_le_bytes());
        buf[STAMP..STAMP + 8].copy_from_slice(&stamp.to_le_bytes());
        Packed(buf.into())
    }

    pub(crate) fn version(&self) -> u64 {
        self.u64_at(VERSION)
    }

    pub(crate) fn last_active(&self) -> Timestamp {
        Timestamp(self.u64_at(LAST_ACTIVE) as i64)
    }

    pub(crate) fn expires_at(&self) -> Timestamp {
        Timestamp(self.u64_at(EXPIRES_AT) as i64)
    }

    pub(crate) fn stamp(&self) -> u64 {
        self.u64_at(STAMP)
    }

    /// Whether the record is live at `now`: `expires_at` is the first instant
    /// at which it is dead.
    pub(crate) fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at() > now
    }

    /// The owner, as raw bytes (valid UTF-8, since it was a `String`).
    pub(crate) fn user_bytes(&self) -> Option<&[u8]> {
        self.parts().user
    }

    /// The owner, if the bytes are what [`Packed::encode`] wrote.
    pub(crate) fn user_id(&self) -> Option<&str> {
        self.user_bytes().and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    /// Rebuilds the full record.
    pub(crate) fn decode(&self, key: SessionKey) -> Result<SessionRecord, StoreError> {
        let Parts { user, data, ip, ua } = self.parts();
        let text = |bytes: Option<&[u8]>| {
            bytes.map(|bytes| String::from_utf8(bytes.to_vec()).map_err(StoreError::corrupt)).transpose()
        };
        Ok(SessionRecord {
            key,
            version: self.version(),
            user_id: text(user)?,
            data: SessionData::from_json(data).map_err(StoreError::corrupt)?,
            created_at: Timestamp(self.u64_at(CREATED_AT) as i64),
            last_active: self.last_active(),
            expires_at: self.expires_at(),
            device: DeviceInfo { ip: text(ip)?, user_agent: text(ua)? },
        })
    }

    /// Bytes held by the value itself (not counting the cache's bookkeeping).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    fn u64_at(&self, offset: usize) -> u64 {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&self.0[offset..offset + 8]);
        u64::from_le_bytes(bytes)
    }

    fn u32_at(&self, offset: usize) -> u32 {
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(&self.0[offset..offset + 4]);
        u32::from_le_bytes(bytes)
    }

    /// Splits the payload into user ID, data, IP and user agent.
    fn parts(&self) -> Parts<'_> {
        let mut rest = &self.0[HEADER..];
        let mut take = |slot: usize| {
            let len = self.u32_at(slot);
            if len == NONE {
                return None;
            }
            let (part, tail) = rest.split_at(len as usize);
            rest = tail;
            Some(part)
        };
        let user = take(USER_LEN);
        let data = take(DATA_LEN).unwrap_or_default();
        let ip = take(IP_LEN);
        let ua = take(UA_LEN);
        Parts { user, data, ip, ua }
    }
}

/// The variable-length fields of a [`Packed`] record, borrowed.
struct Parts<'a> {
    user: Option<&'a [u8]>,
    data: &'a [u8],
    ip: Option<&'a [u8]>,
    ua: Option<&'a [u8]>,
}

fn len(bytes: &[u8]) -> Result<u32, StoreError> {
    match u32::try_from(bytes.len()) {
        Ok(len) if len != NONE => Ok(len),
        _ => Err(StoreError::Unavailable(format!("session field of {} bytes is too large to store", bytes.len()))),
    }
}

fn optional_len(bytes: Option<&[u8]>) -> Result<u32, StoreError> {
    bytes.map_or(Ok(NONE), len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tessera::SessionId;

    fn sample(user: Option<&str>, device: DeviceInfo) -> SessionRecord {
        let mut data = SessionData::new();
        data.insert_value("user_id".into(), json!(42));
        data.insert_value("name".into(), json!("bench"));
        SessionRecord {
            key: SessionId::generate().key(),
            version: 7,
            user_id: user.map(str::to_owned),
            data,
            created_at: Timestamp(1_700_000_000_000),
            last_active: Timestamp(1_700_000_001_000),
            expires_at: Timestamp(1_700_000_901_000),
            device,
        }
    }

    #[test]
    fn round_trips_every_shape() {
        for user in [None, Some(""), Some("alice ✓")] {
            for device in [
                DeviceInfo::default(),
                DeviceInfo::new(Some("::1".into()), None),
                DeviceInfo::new(None, Some("")),
                DeviceInfo::new(Some("10.0.0.1".into()), Some("Mozilla/5.0")),
            ] {
                let record = sample(user, device);
                let packed = Packed::encode(&record, 99).unwrap();
                assert_eq!(packed.decode(record.key).unwrap(), record);
                assert_eq!(packed.user_id(), user);
                assert_eq!(packed.stamp(), 99);
                assert_eq!(packed.version(), 7);
            }
        }
    }

    #[test]
    fn touch_changes_only_times() {
        let record = sample(Some("bob"), DeviceInfo::new(Some("::1".into()), Some("ua")));
        let packed = Packed::encode(&record, 1).unwrap();
        let touched = packed.touched(Timestamp(5), Timestamp(6), 2);
        let decoded = touched.decode(record.key).unwrap();
        assert_eq!(decoded.last_active, Timestamp(5));
        assert_eq!(decoded.expires_at, Timestamp(6));
        assert_eq!(touched.stamp(), 2);
        assert_eq!(SessionRecord { last_active: record.last_active, expires_at: record.expires_at, ..decoded }, record);
    }

    #[test]
    fn small_session_is_small() {
        let packed = Packed::encode(&sample(None, DeviceInfo::default()), 1).unwrap();
        assert_eq!(packed.len(), HEADER + r#"{"name":"bench","user_id":42}"#.len());
    }
}
