//! Revocation marks kept in process memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tessera::{RevocationMarks, StoreError, Timestamp};

/// Per-user "valid after" marks in memory: for single-process apps and tests.
/// Marks vanish with the process, so use a shared, durable implementation
/// (the tessera server keeps them in its database) when several instances
/// serve one site.
#[derive(Debug, Default)]
pub struct MemoryRevocationMarks {
    marks: Mutex<HashMap<String, Timestamp>>,
}

#[async_trait]
impl RevocationMarks for MemoryRevocationMarks {
    async fn valid_after(&self, user_id: &str) -> Result<Option<Timestamp>, StoreError> {
        let marks = self.marks.lock().map_err(|_| StoreError::Unavailable("marks lock poisoned".into()))?;
        Ok(marks.get(user_id).copied())
    }

    async fn revoke_before(&self, user_id: &str, at: Timestamp) -> Result<(), StoreError> {
        let mut marks = self.marks.lock().map_err(|_| StoreError::Unavailable("marks lock poisoned".into()))?;
        let mark = marks.entry(user_id.to_owned()).or_insert(at);
        *mark = (*mark).max(at);
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
