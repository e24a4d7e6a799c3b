//! The packed value of one session: one Redis string per session.
//!
//! ```text
//! t1:<version>:<created>:<last_active>:<expires_at>:<user length or ->:<data length>:<device length>:<user><data><device>
//! ```
//!
//! Numbers are decimal (times in milliseconds since the epoch, possibly
//! negative); lengths are byte counts, `-` for an anonymous session (an empty
//! user ID is `0`). The payload is length-prefixed, so any bytes are safe in
//! it and nothing is escaped; its three parts are the user ID, the exact
//! bytes of [`SessionData::to_json`] and of [`DeviceInfo::to_json`]. The
//! Lua scripts read the header with one `string.match` (see
//! `scripts::CURRENT`), and `touch` replaces only the header.
//!
//! [`SessionData::to_json`]: tessera::SessionData::to_json
//! [`DeviceInfo::to_json`]: tessera::DeviceInfo::to_json

use tessera::{DeviceInfo, SessionData, SessionKey, SessionRecord, StoreError, Timestamp};

/// The format tag every packed value starts with.
const TAG: &[u8] = b"t1:";

/// Longest possible header: the tag, three `i64`s and a `u64` (20 bytes
/// each at most), three lengths and eight separators.
const MAX_HEADER: usize = TAG.len() + 4 * 20 + 3 * 20 + 7;

/// Appends `value` in decimal (`itoa`: no formatter machinery per field).
fn push_number(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Encodes `record` as the one value stored under its key.
pub(crate) fn pack(record: &SessionRecord) -> Vec<u8> {
    let data = record.data.to_json();
    let device = record.device.to_json();
    let user = record.user_id.as_deref().map(str::as_bytes);
    let mut out = Vec::with_capacity(MAX_HEADER + user.map_or(0, <[u8]>::len) + data.len() + device.len());
    out.extend_from_slice(TAG);
    push_number(&mut out, record.version);
    for time in [record.created_at, record.last_active, record.expires_at] {
        out.push(b':');
        push_number(&mut out, time.as_millis());
    }
    out.push(b':');
    match user {
        Some(user) => push_number(&mut out, user.len()),
        None => out.push(b'-'),
    }
    for part in [&data, &device] {
        out.push(b':');
        push_number(&mut out, part.len());
    }
    out.push(b':');
    if let Some(user) = user {
        out.extend_from_slice(user);
    }
    out.extend_from_slice(&data);
    out.extend_from_slice(&device);
    out
}

/// A corruption error about a packed value.
fn corrupt(what: &str) -> StoreError {
    StoreError::corrupt(format!("packed session record: {what}"))
}

/// Parses one decimal header field (digits only, with an optional leading
/// `-` when `signed`); `None` if it is anything else or overflows.
fn number(field: &[u8], signed: bool) -> Option<i128> {
    let (negative, digits) = match field.split_first() {
        Some((b'-', rest)) if signed => (true, rest),
        _ => (false, field),
    };
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut value: i128 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + i128::from(byte - b'0');
    }
    Some(if negative { -value } else { value })
}

/// Decodes a value written by [`pack`] (or by the `touch` script, which
/// writes the same header). The data is decoded and checked
/// ([`SessionData::from_json`]): the bytes come from outside the process.
pub(crate) fn unpack(key: SessionKey, bytes: &[u8]) -> Result<SessionRecord, StoreError> {
    let mut rest = bytes.strip_prefix(TAG).ok_or_else(|| corrupt("unknown format"))?;
    let mut header: [&[u8]; 7] = [&[]; 7];
    for field in &mut header {
        let end = rest.iter().position(|&b| b == b':').ok_or_else(|| corrupt("truncated header"))?;
        *field = &rest[..end];
        rest = &rest[end + 1..];
    }
    let [version, created, last_active, expires_at, user_len, data_len, device_len] = header;
    let version =
        number(version, false).and_then(|v| u64::try_from(v).ok()).ok_or_else(|| corrupt("version is not a number"))?;
    let time = |field: &[u8], name: &str| {
        number(field, true)
            .and_then(|v| i64::try_from(v).ok())
            .map(Timestamp)
            .ok_or_else(|| corrupt(&format!("{name} is not a timestamp")))
    };
    let length =
        |field: &[u8]| number(field, false).and_then(|v| usize::try_from(v).ok()).ok_or_else(|| corrupt("bad length"));
    let user_len = if user_len == b"-" { None } else { Some(length(user_len)?) };
    let (data_len, device_len) = (length(data_len)?, length(device_len)?);
    let payload = user_len.unwrap_or(0).checked_add(data_len).and_then(|n| n.checked_add(device_len));
    if payload != Some(rest.len()) {
        return Err(corrupt("payload length does not match the header"));
    }
    let (user, rest) = rest.split_at(user_len.unwrap_or(0));
    let (data, device) = rest.split_at(data_len);
    let user_id = match user_len {
        None => None,
        Some(_) => Some(std::str::from_utf8(user).map_err(|_| corrupt("user is not UTF-8"))?.to_owned()),
    };
    Ok(SessionRecord {
        key,
        version,
        user_id,
        data: SessionData::from_json(data).map_err(|e| StoreError::corrupt(format!("session data: {e}")))?,
        created_at: time(created, "created")?,
        last_active: time(last_active, "last_active")?,
        expires_at: time(expires_at, "expires_at")?,
        // Device details are informational; the engine's own decoder is
        // lenient, and an empty part is as good as empty details.
        device: DeviceInfo::from_json(device),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera::SessionId;

    fn record(user: Option<&str>) -> SessionRecord {
        let now = Timestamp::now();
        let data = SessionData::from_json("{\"k\":\"a:b:\\u0000:é\"}".as_bytes()).expect("valid JSON");
        SessionRecord {
            key: SessionId::generate().key(),
            version: u64::MAX,
            user_id: user.map(str::to_owned),
            data,
            created_at: Timestamp(-5),
            last_active: now,
            expires_at: Timestamp(i64::MAX),
            device: DeviceInfo::new(Some("10.0.0.1".into()), Some("ua:with:colons")),
        }
    }

    #[test]
    fn round_trips() {
        for user in [None, Some(""), Some("a:b"), Some("ünï-:-code")] {
            let rec = record(user);
            let packed = pack(&rec);
            let back = unpack(rec.key, &packed).expect("a packed record decodes");
            assert_eq!(back, rec);
        }
    }

    #[test]
    fn rejects_damage() {
        let rec = record(Some("alice"));
        let packed = pack(&rec);
        assert!(unpack(rec.key, &packed[..packed.len() - 1]).is_err(), "truncated payload");
        assert!(unpack(rec.key, b"t2:1:2:3:4:-:2:0:{}").is_err(), "unknown format");
        assert!(unpack(rec.key, b"t1:x:2:3:4:-:2:0:{}").is_err(), "bad version");
        assert!(unpack(rec.key, b"t1:1:2:3:4:-:2:0:{").is_err(), "short payload");
        assert!(unpack(rec.key, b"t1:1:2:3:4:-:2:0:{]").is_err(), "bad data");
        assert!(unpack(rec.key, b"t1:1:2:3:4:-:2:0:{}").is_ok());
    }
}
