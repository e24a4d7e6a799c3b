//! The narrow trait every session store implements.

use async_trait::async_trait;

use crate::clock::Timestamp;
use crate::error::StoreError;
use crate::id::SessionKey;
use crate::record::SessionRecord;

/// The result of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write was applied.
    Written,
    /// The record exists but its version is not the expected one (another
    /// writer won), or, for [`SessionStore::create`], the key is taken.
    Conflict,
    /// No live record exists under the key: it was destroyed, regenerated away
    /// or expired. A store must never recreate it.
    Missing,
}

/// Where sessions are kept.
///
/// The contract, checked for every store by `tessera-store-conformance`:
///
/// - Records are keyed by [`SessionKey`] (a digest); stores never see session IDs.
/// - A record whose `expires_at` has passed (wall clock) is never returned and
///   is eventually freed (native expiry or [`purge_expired`](Self::purge_expired)).
/// - Writes that change data are compare-and-swap on `version`: `save` and
///   `regenerate` apply only if the stored version equals `expected_version`,
///   and never bring a missing record back.
/// - `touch` extends the idle deadline of an existing record without bumping
///   its version and without rewriting its data.
/// - Every record with a `user_id` can be found through that user
///   ([`list_for_user`](Self::list_for_user)) until it expires or is destroyed.
///
/// Methods take `&self` and are called concurrently; the engine bounds each
/// call with a time-out, so stores need not.
///
/// There is deliberately no `impl SessionStore for Arc<S>`: with one,
/// `store.load(..)` on an `Arc<dyn SessionStore>` resolves to the `Arc`'s
/// impl and boxes every call's future twice (measured: about 300
/// instructions and two allocations per call). Without it the call derefs to
/// the store itself.
#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Loads the live record under `key`.
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError>;

    /// Stores a new record (its `version` is 1). [`WriteOutcome::Conflict`] if
    /// the key is already taken.
    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError>;

    /// Replaces the record under `record.key` if its stored version is
    /// `expected_version`. `record.version` is the new version.
    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError>;

    /// Atomically removes the record under `old_key` (if its version is
    /// `expected_version`) and stores `record` under its new key: there is no
    /// moment when both or neither are live.
    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError>;

    /// Moves the idle deadline of a live record forward: sets `last_active`
    /// and `expires_at` if `last_active` is later than the stored one. Returns
    /// whether a live record was found. Never recreates a record.
    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError>;

    /// Removes the record. Returns whether one was removed.
    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError>;

    /// The live records of a user.
    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError>;

    /// Removes every record of a user except `keep`. Returns how many were removed.
    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError>;

    /// Frees records whose `expires_at` has passed. Returns how many were
    /// removed (stores with native expiry may return 0).
    async fn purge_expired(&self) -> Result<u64, StoreError>;

    /// A cheap round trip proving the store answers, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
}
