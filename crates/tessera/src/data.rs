//! The key–value contents of a session.

use std::fmt;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::error::SessionDataError;

/// A session's data: string keys to JSON values.
///
/// Stores persist it with [`SessionData::to_json`] and read it back with
/// [`SessionData::from_json`]; the JSON form is compact and stable.
///
/// A store that reads back bytes it encoded itself in this process (the
/// memory store) may use [`SessionData::from_own_json`] instead: the map is
/// then decoded on first read, so the commonest request — one that only
/// asks who the user is — never decodes it, and writing it back unchanged
/// reuses the bytes.
#[derive(Default)]
pub struct SessionData {
    /// The entries, once decoded (or built).
    entries: OnceLock<Map<String, Value>>,
    /// The JSON the entries were read from, while nothing changed them.
    encoded: Option<Box<[u8]>>,
}

impl SessionData {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    fn from_map(map: Map<String, Value>) -> Self {
        SessionData { entries: OnceLock::from(map), encoded: None }
    }

    /// The entries, decoding them on first use.
    fn entries(&self) -> &Map<String, Value> {
        self.entries.get_or_init(|| match &self.encoded {
            // `from_own_json`'s bytes came from `to_json` in this process,
            // so they decode; were they ever not to, the data reads as empty
            // rather than failing every read of the session.
            Some(bytes) => serde_json::from_slice(bytes).unwrap_or_default(),
            None => Map::new(),
        })
    }

    /// The entries for a change: decoded, and the stored bytes forgotten.
    fn entries_mut(&mut self) -> &mut Map<String, Value> {
        self.entries();
        self.encoded = None;
        self.entries.get_mut().expect("entries() initialised the cell")
    }

    /// Whether the map holds nothing.
    pub fn is_empty(&self) -> bool {
        match (&self.encoded, self.entries.get()) {
            // Cheap for undecoded data: `to_json` writes an empty map as `{}`.
            (Some(bytes), None) => bytes.as_ref() == b"{}",
            _ => self.entries().is_empty(),
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    /// The raw value under `key`.
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        self.entries().get(key)
    }

    /// The value under `key`, deserialized as `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionDataError> {
        match self.entries().get(key) {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|source| SessionDataError::Decode { key: key.to_owned(), source }),
        }
    }

    /// Sets a raw value, returning the previous one.
    pub fn insert_value(&mut self, key: String, value: Value) -> Option<Value> {
        self.entries_mut().insert(key, value)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.entries_mut().remove(key)
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        *self = SessionData::new();
    }

    /// Iterates over entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.entries().iter()
    }

    /// The compact JSON encoding stores persist.
    pub fn to_json(&self) -> Vec<u8> {
        if let Some(bytes) = &self.encoded {
            return bytes.to_vec();
        }
        // Serializing a map of `Value`s with string keys cannot fail.
        serde_json::to_vec(self.entries()).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Decodes what [`SessionData::to_json`] produced, checking it now:
    /// for bytes read from outside the process (a database, a cache).
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes).map(Self::from_map)
    }

    /// Keeps bytes that [`SessionData::to_json`] produced in this same
    /// process, decoding them only when an entry is first read.
    pub fn from_own_json(bytes: &[u8]) -> Self {
        SessionData { entries: OnceLock::new(), encoded: Some(bytes.into()) }
    }
}

impl Clone for SessionData {
    fn clone(&self) -> Self {
        SessionData { entries: self.entries.clone(), encoded: self.encoded.clone() }
    }
}

impl PartialEq for SessionData {
    fn eq(&self, other: &Self) -> bool {
        match (&self.encoded, &other.encoded) {
            // The same bytes decode to the same map.
            (Some(a), Some(b)) if a == b => true,
            _ => self.entries() == other.entries(),
        }
    }
}

impl SessionData {
    /// Whether this (a request's working copy) may differ from `stored`, the
    /// data it was copied from — without decoding `stored` when it is still
    /// encoded: this copy is encoded and the bytes compared. A `true` may be
    /// wrong when both hold the same entries in another order (with
    /// `serde_json`'s `preserve_order`, maps keep insertion order): the only
    /// cost is a write that was not needed. A `false` is always right.
    pub fn may_differ_from(&self, stored: &SessionData) -> bool {
        match (&self.encoded, &stored.encoded) {
            (Some(a), Some(b)) if a == b => false,
            (None, Some(bytes)) if stored.entries.get().is_none() => self.to_json() != bytes.as_ref(),
            _ => self.entries() != stored.entries(),
        }
    }
}

impl fmt::Debug for SessionData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.entries()).finish()
    }
}

impl Serialize for SessionData {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.entries().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for SessionData {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Map::deserialize(deserializer).map(Self::from_map)
    }
}

impl FromIterator<(String, Value)> for SessionData {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        SessionData::from_map(iter.into_iter().collect())
    }
}

pub(crate) fn to_value<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Value, SessionDataError> {
    serde_json::to_value(value).map_err(|source| SessionDataError::Encode { key: key.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn own_json_reads_like_decoded_json_and_is_reused_until_changed() {
        let mut original = SessionData::new();
        original.insert_value("visits".into(), json!(3));
        original.insert_value("name".into(), json!("ada"));
        let bytes = original.to_json();

        let lazy = SessionData::from_own_json(&bytes);
        assert!(lazy.entries.get().is_none(), "nothing decoded before a read");
        assert!(!lazy.is_empty());
        assert!(lazy.entries.get().is_none(), "is_empty of a non-empty map does not decode either");
        assert_eq!(lazy.to_json(), bytes, "unchanged data is written back as read");
        assert_eq!(lazy, SessionData::from_json(&bytes).unwrap());
        assert_eq!(SessionData::from_json(&bytes).unwrap(), lazy);
        assert_ne!(SessionData::from_own_json(br#"{"visits":3}"#), lazy);
        assert_eq!(lazy.get::<u32>("visits").unwrap(), Some(3));
        assert_eq!(lazy.len(), 2);

        let mut changed = lazy.clone();
        changed.insert_value("visits".into(), json!(4));
        assert_ne!(changed, lazy);
        assert!(changed.may_differ_from(&lazy));
        assert!(!lazy.clone().may_differ_from(&lazy));
        let encoded: Value = serde_json::from_slice(&changed.to_json()).unwrap();
        assert_eq!(encoded, serde_json::json!({"name": "ada", "visits": 4}), "a change re-encodes");
        changed.clear();
        assert!(changed.is_empty());
        assert_eq!(changed.to_json(), b"{}".to_vec());

        assert!(SessionData::from_own_json(b"{}").is_empty());
        // Bytes that do not decode (never produced by `to_json`) read as empty.
        assert_eq!(SessionData::from_own_json(b"not json").len(), 0);
    }
}
