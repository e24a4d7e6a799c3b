//! The key–value contents of a session.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::SessionDataError;

/// A session's data: string keys to JSON values.
///
/// Stores persist it with [`SessionData::to_json`] and read it back with
/// [`SessionData::from_json`]; the JSON form is compact and stable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SessionData(Map<String, Value>);

impl SessionData {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the map holds nothing.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The raw value under `key`.
    pub fn get_value(&self, key: &str) -> Option<&Value> {
        self.0.get(key)
    }

    /// The value under `key`, deserialized as `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionDataError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(value) => T::deserialize(value)
                .map(Some)
                .map_err(|source| SessionDataError::Decode { key: key.to_owned(), source }),
        }
    }

    /// Sets a raw value, returning the previous one.
    pub fn insert_value(&mut self, key: String, value: Value) -> Option<Value> {
        self.0.insert(key, value)
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        self.0.remove(key)
    }

    /// Removes everything.
    pub fn clear(&mut self) {
        self.0.clear()
    }

    /// Iterates over entries in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.0.iter()
    }

    /// The compact JSON encoding stores persist.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing a map of `Value`s with string keys cannot fail.
        serde_json::to_vec(&self.0).unwrap_or_else(|_| b"{}".to_vec())
    }

    /// Decodes what [`SessionData::to_json`] produced.
    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes).map(SessionData)
    }
}

impl FromIterator<(String, Value)> for SessionData {
    fn from_iter<I: IntoIterator<Item = (String, Value)>>(iter: I) -> Self {
        SessionData(iter.into_iter().collect())
    }
}

pub(crate) fn to_value<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<Value, SessionDataError> {
    serde_json::to_value(value).map_err(|source| SessionDataError::Encode { key: key.to_owned(), source })
}
