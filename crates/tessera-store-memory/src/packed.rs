//! The compact in-memory form of a record.
//!
//! A session held in memory costs what its representation costs, multiplied
//! by every session the process holds. `SessionRecord` carries a `serde_json`
//! map, three `String`s and their allocations; here everything but the key
//! and the deadline (which the slot holds) is one exactly-sized allocation:
//! varint header (version, created_at, last_active as a delta from it, field
//! lengths), then the user ID, the compact JSON of the data and the device
//! strings. A typical logged-in session fits in 64 bytes of heap.

use tessera::{DeviceInfo, SessionData, SessionKey, SessionRecord, StoreError, Timestamp};

/// One stored record without its key and `expires_at`.
///
/// Every value is built by [`Packed::encode`], so the header always parses
/// and the lengths in it always describe the bytes that follow; the reads
/// below still fail softly (as corrupt) rather than panic if they did not.
pub(crate) struct Packed(Box<[u8]>);

/// The header fields, in order.
struct Header {
    version: u64,
    created_at: i64,
    last_active: i64,
    /// Where the last-active delta starts and ends, for [`Packed::touched`].
    last_active_at: usize,
    lengths_at: usize,
    user: Option<usize>,
    data: usize,
    ip: Option<usize>,
    ua: Option<usize>,
    /// Where the payload starts.
    payload: usize,
}

impl Packed {
    /// Packs `record` (all of it but the key and `expires_at`).
    pub(crate) fn encode(record: &SessionRecord) -> Result<Self, StoreError> {
        let data = record.data.to_json();
        let user = record.user_id.as_deref().map(str::as_bytes);
        let ip = record.device.ip.as_deref().map(str::as_bytes);
        let ua = record.device.user_agent.as_deref().map(str::as_bytes);
        let payload = data.len() + [user, ip, ua].iter().flatten().map(|part| part.len()).sum::<usize>();
        let mut buf = Vec::with_capacity(40 + payload);
        put_varint(&mut buf, record.version);
        put_varint(&mut buf, zigzag(record.created_at.as_millis()));
        put_varint(&mut buf, zigzag(record.last_active.as_millis().wrapping_sub(record.created_at.as_millis())));
        put_varint(&mut buf, optional_len(user));
        put_varint(&mut buf, data.len() as u64);
        put_varint(&mut buf, optional_len(ip));
        put_varint(&mut buf, optional_len(ua));
        buf.extend_from_slice(user.unwrap_or_default());
        buf.extend_from_slice(&data);
        buf.extend_from_slice(ip.unwrap_or_default());
        buf.extend_from_slice(ua.unwrap_or_default());
        Ok(Packed(buf.into_boxed_slice()))
    }

    fn header(&self) -> Option<Header> {
        let mut at = 0;
        let version = get_varint(&self.0, &mut at)?;
        let created_at = unzigzag(get_varint(&self.0, &mut at)?);
        let last_active_at = at;
        let delta = unzigzag(get_varint(&self.0, &mut at)?);
        let lengths_at = at;
        let optional = |v: u64| v.checked_sub(1).map(|len| len as usize);
        let user = optional(get_varint(&self.0, &mut at)?);
        let data = get_varint(&self.0, &mut at)? as usize;
        let ip = optional(get_varint(&self.0, &mut at)?);
        let ua = optional(get_varint(&self.0, &mut at)?);
        let total = at + user.unwrap_or(0) + data + ip.unwrap_or(0) + ua.unwrap_or(0);
        if total != self.0.len() {
            return None;
        }
        Some(Header {
            version,
            created_at,
            last_active: created_at.wrapping_add(delta),
            last_active_at,
            lengths_at,
            user,
            data,
            ip,
            ua,
            payload: at,
        })
    }

    pub(crate) fn version(&self) -> Option<u64> {
        self.header().map(|h| h.version)
    }

    pub(crate) fn last_active(&self) -> Option<Timestamp> {
        self.header().map(|h| Timestamp(h.last_active))
    }

    /// A copy with `last_active` moved (for `touch`): the data bytes are
    /// copied as they are, never re-encoded.
    pub(crate) fn touched(&self, last_active: Timestamp) -> Option<Self> {
        let header = self.header()?;
        let mut buf = Vec::with_capacity(self.0.len() + 10);
        buf.extend_from_slice(&self.0[..header.last_active_at]);
        put_varint(&mut buf, zigzag(last_active.as_millis().wrapping_sub(header.created_at)));
        buf.extend_from_slice(&self.0[header.lengths_at..]);
        Some(Packed(buf.into_boxed_slice()))
    }

    /// The owner, as raw bytes (valid UTF-8, since it was a `String`).
    pub(crate) fn user_bytes(&self) -> Option<&[u8]> {
        let header = self.header()?;
        let len = header.user?;
        self.0.get(header.payload..header.payload + len)
    }

    /// Rebuilds the full record.
    pub(crate) fn decode(&self, key: SessionKey, expires_at: Timestamp) -> Result<SessionRecord, StoreError> {
        let header = self.header().ok_or_else(|| StoreError::Corrupt("malformed packed session".into()))?;
        let mut rest = &self.0[header.payload..];
        let mut take = |len: usize| {
            let (part, tail) = rest.split_at(len);
            rest = tail;
            part
        };
        let user = header.user.map(&mut take);
        let data = take(header.data);
        let ip = header.ip.map(&mut take);
        let ua = header.ua.map(&mut take);
        let text = |bytes: Option<&[u8]>| {
            bytes.map(|bytes| String::from_utf8(bytes.to_vec()).map_err(StoreError::corrupt)).transpose()
        };
        Ok(SessionRecord {
            key,
            version: header.version,
            user_id: text(user)?,
            data: SessionData::from_own_json(data),
            created_at: Timestamp(header.created_at),
            last_active: Timestamp(header.last_active),
            expires_at,
            device: DeviceInfo { ip: text(ip)?, user_agent: text(ua)? },
        })
    }

    /// Bytes of the value itself.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

fn optional_len(bytes: Option<&[u8]>) -> u64 {
    bytes.map_or(0, |bytes| bytes.len() as u64 + 1)
}

fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn get_varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
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
                let packed = Packed::encode(&record).unwrap();
                assert_eq!(packed.decode(record.key, record.expires_at).unwrap(), record);
                assert_eq!(packed.user_bytes(), user.map(str::as_bytes));
                assert_eq!(packed.version(), Some(7));
            }
        }
    }

    #[test]
    fn extreme_times_round_trip() {
        let mut record = sample(Some("x"), DeviceInfo::default());
        for (created, active) in [(i64::MIN, i64::MAX), (0, -5), (-1, 1), (i64::MAX, 0)] {
            record.created_at = Timestamp(created);
            record.last_active = Timestamp(active);
            let packed = Packed::encode(&record).unwrap();
            assert_eq!(packed.decode(record.key, record.expires_at).unwrap(), record);
        }
    }

    #[test]
    fn touch_changes_only_last_active() {
        let record = sample(Some("bob"), DeviceInfo::new(Some("::1".into()), Some("ua")));
        let packed = Packed::encode(&record).unwrap().touched(Timestamp(5)).unwrap();
        let decoded = packed.decode(record.key, record.expires_at).unwrap();
        assert_eq!(decoded.last_active, Timestamp(5));
        assert_eq!(SessionRecord { last_active: record.last_active, ..decoded }, record);
    }

    #[test]
    fn small_session_is_small() {
        let record = sample(Some("42"), DeviceInfo::new(Some("127.0.0.1".into()), None));
        let packed = Packed::encode(&record).unwrap();
        // 1 (version) + 6 (created_at) + 2 (last_active, 1 s later) + 4 (lengths) + payload.
        let payload = 2 + r#"{"name":"bench","user_id":42}"#.len() + "127.0.0.1".len();
        assert_eq!(packed.len(), 13 + payload);
        assert!(packed.len() + 8 <= 64, "fits a 64-byte allocator chunk");
    }
}
