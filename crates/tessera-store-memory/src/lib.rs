//! # tessera-store-memory — sessions in the process's memory
//!
//! [`MemoryStore`] keeps sessions in a [`moka`] cache. It is the store for a
//! single server process (tests, development, or a deployment that accepts
//! that a restart logs everyone out); sessions are not shared between
//! processes.
//!
//! - **Expiry.** Every entry expires at its record's `expires_at` through a
//!   per-entry [`Expiry`] policy, so the cache frees it by itself. Because the
//!   cache evicts lazily, reads also check `expires_at` against the wall clock
//!   and never return a record whose deadline has passed.
//! - **Compare-and-swap.** Every operation on a key runs under that key's
//!   stripe of a lock array, so a version check and the write that follows
//!   are one step, and `regenerate` swaps two keys with no moment in which a
//!   reader sees both or neither.
//! - **Per-user index.** User ID to keys, kept current by the writes and by the
//!   cache's eviction listener, so that listing or revoking a user's sessions
//!   costs what that user has rather than a scan of the store.
//! - **Memory.** A record is kept as one compact buffer (header, user ID,
//!   compact JSON data, device strings) and decoded on load.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::sync::Arc;
//! use tessera::{DeviceInfo, SessionEngine};
//! use tessera_store_memory::MemoryStore;
//!
//! let engine = SessionEngine::new(Arc::new(MemoryStore::with_max_capacity(100_000)));
//! let session = engine.load(None, DeviceInfo::default()).await.unwrap();
//! session.insert("greeting", &"hello").unwrap();
//! engine.commit(&session).await.unwrap();
//! # });
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod index;
mod packed;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;
use moka::Expiry;
use tessera::{SessionKey, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome};

use crate::index::UserIndex;
use crate::packed::Packed;

/// Number of lock stripes. Keys are SHA-256 digests, so their leading bytes
/// spread evenly over the stripes; 1024 makes two unrelated sessions sharing
/// a stripe rare while costing a few kilobytes.
const STRIPES: usize = 1024;

/// An in-process [`SessionStore`] on a [`moka`] cache.
///
/// Cloning is cheap and gives a handle to the same sessions.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<SessionKey, Packed>,
    locks: Arc<[Mutex<()>]>,
    index: Arc<UserIndex>,
    /// Source of the stamps that tell one write of a key from the next.
    stamps: Arc<AtomicU64>,
}

impl MemoryStore {
    /// A store without a size bound: sessions leave only when they expire or
    /// are destroyed.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A store holding at most `max_sessions` sessions. When full, the least
    /// recently used session is evicted, i.e. its user is logged out.
    ///
    /// The bound caps memory against a flood of new sessions; the eviction
    /// policy is plain LRU rather than moka's default TinyLFU because TinyLFU
    /// may refuse to admit a new entry, which would silently drop a session
    /// that was just created.
    pub fn with_max_capacity(max_sessions: u64) -> Self {
        Self::build(Some(max_sessions))
    }

    fn build(max_capacity: Option<u64>) -> Self {
        let index = Arc::new(UserIndex::new());
        let listener_index = Arc::clone(&index);
        let mut builder = Cache::builder().expire_after(ExpiresAt).eviction_listener(
            move |key: Arc<SessionKey>, value: Packed, cause: RemovalCause| {
                // A replacement is indexed by the write that made it, which
                // knows both the old and the new owner.
                if cause == RemovalCause::Replaced {
                    return;
                }
                if let Some(user) = value.user_id() {
                    listener_index.remove_if(user, &key, value.stamp());
                }
            },
        );
        if let Some(max_capacity) = max_capacity {
            builder = builder.max_capacity(max_capacity).eviction_policy(EvictionPolicy::lru());
        }
        MemoryStore {
            cache: builder.build(),
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            index,
            stamps: Arc::new(AtomicU64::new(1)),
        }
    }

    /// The number of sessions held, after running the cache's pending
    /// maintenance (evicting what has expired), for tests and benchmarks.
    /// Records that expired but have not been evicted yet are still counted
    /// if maintenance has not seen them.
    pub fn entry_count(&self) -> u64 {
        self.cache.run_pending_tasks();
        self.cache.entry_count()
    }

    fn stamp(&self) -> u64 {
        self.stamps.fetch_add(1, Ordering::Relaxed)
    }

    fn stripe(key: &SessionKey) -> usize {
        let bytes = key.as_bytes();
        (usize::from(bytes[0]) << 8 | usize::from(bytes[1])) % STRIPES
    }

    fn lock(&self, key: &SessionKey) -> MutexGuard<'_, ()> {
        lock(&self.locks[Self::stripe(key)])
    }

    /// Locks the stripes of two keys in a fixed order, so that two
    /// regenerations can never wait on each other.
    fn lock_pair(&self, a: &SessionKey, b: &SessionKey) -> (MutexGuard<'_, ()>, Option<MutexGuard<'_, ()>>) {
        let (a, b) = (Self::stripe(a), Self::stripe(b));
        if a == b {
            return (lock(&self.locks[a]), None);
        }
        let (first, second) = (a.min(b), a.max(b));
        let first = lock(&self.locks[first]);
        (first, Some(lock(&self.locks[second])))
    }

    /// The value under `key` if it is live by the wall clock. The caller holds
    /// the key's stripe.
    fn live(&self, key: &SessionKey, now: Timestamp) -> Option<Packed> {
        self.cache.get(key).filter(|value| value.is_live(now))
    }

    /// Stores `value` under `key`, replacing `old` (what the caller found
    /// there, if anything), and moves the key in the user index. The caller
    /// holds the key's stripe.
    fn put(&self, key: SessionKey, old: Option<&Packed>, value: Packed) {
        self.cache.insert(key, value.clone());
        if let Some(old) = old {
            if let Some(user) = old.user_id() {
                if value.user_id() != Some(user) {
                    self.index.remove_if(user, &key, old.stamp());
                }
            }
        }
        if let Some(user) = value.user_id() {
            self.index.set(user, key, value.stamp());
        }
    }

    /// Removes the key from the user index after its value `old` was removed.
    fn unindex(&self, key: &SessionKey, old: &Packed) {
        if let Some(user) = old.user_id() {
            self.index.remove_if(user, key, old.stamp());
        }
    }

    #[cfg(test)]
    fn indexed(&self) -> (usize, usize) {
        (self.index.len(), self.index.users())
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("entries", &self.cache.entry_count()).finish_non_exhaustive()
    }
}

/// The stripe locks guard no data, only exclusion, so a panic while one was
/// held leaves nothing inconsistent behind it: poison is ignored.
fn lock(mutex: &Mutex<()>) -> MutexGuard<'_, ()> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Expires each entry at its record's `expires_at`, re-read on every write
/// so that `touch` and `save` move the deadline.
struct ExpiresAt;

impl ExpiresAt {
    fn remaining(value: &Packed) -> Option<Duration> {
        Some(value.expires_at().since(Timestamp::now()))
    }
}

impl Expiry<SessionKey, Packed> for ExpiresAt {
    fn expire_after_create(&self, _key: &SessionKey, value: &Packed, _created_at: Instant) -> Option<Duration> {
        Self::remaining(value)
    }

    fn expire_after_update(
        &self,
        _key: &SessionKey,
        value: &Packed,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Self::remaining(value)
    }
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let value = {
            let _stripe = self.lock(key);
            self.live(key, Timestamp::now())
        };
        value.map(|value| value.decode(*key)).transpose()
    }

    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now();
        let value = Packed::encode(record, self.stamp())?;
        let _stripe = self.lock(&record.key);
        let old = self.cache.get(&record.key);
        if old.as_ref().is_some_and(|old| old.is_live(now)) {
            return Ok(WriteOutcome::Conflict);
        }
        // A record born expired is written and dead at once: keeping it would
        // only cost an eviction (and, when bounded, push out a live session).
        if value.is_live(now) {
            self.put(record.key, old.as_ref(), value);
        }
        Ok(WriteOutcome::Written)
    }

    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now();
        let value = Packed::encode(record, self.stamp())?;
        let _stripe = self.lock(&record.key);
        let Some(old) = self.live(&record.key, now) else {
            return Ok(WriteOutcome::Missing);
        };
        if old.version() != expected_version {
            return Ok(WriteOutcome::Conflict);
        }
        self.put(record.key, Some(&old), value);
        Ok(WriteOutcome::Written)
    }

    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now();
        let value = Packed::encode(record, self.stamp())?;
        let _stripes = self.lock_pair(old_key, &record.key);
        let Some(old) = self.live(old_key, now) else {
            return Ok(WriteOutcome::Missing);
        };
        if old.version() != expected_version {
            return Ok(WriteOutcome::Conflict);
        }
        if record.key == *old_key {
            self.put(record.key, Some(&old), value);
            return Ok(WriteOutcome::Written);
        }
        let displaced = self.cache.get(&record.key);
        if displaced.as_ref().is_some_and(|displaced| displaced.is_live(now)) {
            return Ok(WriteOutcome::Conflict);
        }
        // Both stripes are held, and readers take them too: nobody sees the
        // moment between these two steps.
        self.put(record.key, displaced.as_ref(), value);
        self.cache.invalidate(old_key);
        self.unindex(old_key, &old);
        Ok(WriteOutcome::Written)
    }

    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError> {
        let _stripe = self.lock(key);
        let Some(old) = self.live(key, Timestamp::now()) else {
            return Ok(false);
        };
        if last_active > old.last_active() {
            let value = old.touched(last_active, expires_at, self.stamp());
            self.put(*key, Some(&old), value);
        }
        Ok(true)
    }

    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let _stripe = self.lock(key);
        match self.cache.remove(key) {
            Some(old) => {
                self.unindex(key, &old);
                Ok(old.is_live(now))
            }
            None => Ok(false),
        }
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let now = Timestamp::now();
        let mut records = Vec::new();
        for (key, stamp) in self.index.entries(user_id) {
            let value = {
                let _stripe = self.lock(&key);
                self.cache.get(&key)
            };
            match value {
                Some(value) if value.user_bytes() == Some(user_id.as_bytes()) => {
                    if value.is_live(now) {
                        records.push(value.decode(key)?);
                    }
                }
                // The key was rewritten for someone else, or freed, without
                // the index hearing of it: drop the stale entry.
                _ => self.index.remove_if(user_id, &key, stamp),
            }
        }
        Ok(records)
    }

    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let mut removed = 0;
        for (key, stamp) in self.index.entries(user_id) {
            if keep == Some(&key) {
                continue;
            }
            let _stripe = self.lock(&key);
            match self.cache.get(&key) {
                Some(value) if value.user_bytes() == Some(user_id.as_bytes()) => {
                    self.cache.invalidate(&key);
                    self.unindex(&key, &value);
                    if value.is_live(now) {
                        removed += 1;
                    }
                }
                _ => self.index.remove_if(user_id, &key, stamp),
            }
        }
        Ok(removed)
    }

    /// Runs the cache's maintenance, which evicts what has expired. The cache
    /// does not count its evictions, so this returns 0.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let cache = self.cache.clone();
        // Maintenance over many expired entries can take a while: keep it off
        // the async worker threads when there is a runtime to hand it to.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn_blocking(move || cache.run_pending_tasks()).await.map_err(StoreError::unavailable)?
            }
            Err(_) => cache.run_pending_tasks(),
        }
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use tessera::{DeviceInfo, SessionData, SessionId};

    fn record(user: Option<&str>, ttl: Duration) -> SessionRecord {
        let now = Timestamp::now();
        let mut data = SessionData::new();
        data.insert_value("user_id".into(), json!(42));
        data.insert_value("name".into(), json!("bench"));
        SessionRecord {
            key: SessionId::generate().key(),
            version: 1,
            user_id: user.map(str::to_owned),
            data,
            created_at: now,
            last_active: now,
            expires_at: now.plus(ttl),
            device: DeviceInfo::default(),
        }
    }

    #[tokio::test]
    async fn expired_sessions_are_freed_and_unindexed() {
        let store = MemoryStore::new();
        // Long enough that creating 10,000 sessions on a loaded machine in a
        // debug build finishes well before the first one expires.
        let ttl = Duration::from_secs(4);
        let mut keys = Vec::new();
        for i in 0..10_000 {
            let user = format!("user-{}", i % 500);
            let rec = record(Some(&user), ttl);
            assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Written);
            keys.push(rec.key);
        }
        assert_eq!(store.entry_count(), 10_000);
        assert_eq!(store.indexed(), (10_000, 500));
        assert_eq!(store.list_for_user("user-7").await.unwrap().len(), 20);

        // moka's timer wheel frees entries in buckets of about a second, so
        // eviction lags `expires_at` by up to that much; loads do not.
        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert!(store.load(&keys[0]).await.unwrap().is_none());
        assert!(store.list_for_user("user-7").await.unwrap().is_empty());
        // Eviction runs in the background; wait for it, with a generous bound.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while store.entry_count() > 0 && std::time::Instant::now() < deadline {
            store.purge_expired().await.unwrap();
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert_eq!(store.entry_count(), 0, "every expired session is evicted");
        assert_eq!(store.indexed(), (0, 0), "the user index is emptied by the evictions");
    }

    #[tokio::test]
    async fn bounded_store_evicts_least_recently_used_and_unindexes() {
        let store = MemoryStore::with_max_capacity(100);
        let mut keys = Vec::new();
        for _ in 0..300 {
            let rec = record(Some("crowd"), Duration::from_secs(3600));
            assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Written);
            keys.push(rec.key);
        }
        assert_eq!(store.entry_count(), 100);
        assert_eq!(store.indexed(), (100, 1));
        assert!(store.load(&keys[299]).await.unwrap().is_some(), "the newest session is admitted");
        assert_eq!(store.list_for_user("crowd").await.unwrap().len(), 100);
    }

    #[tokio::test]
    async fn the_index_follows_owner_changes_and_removals() {
        let store = MemoryStore::new();
        let rec = record(Some("a"), Duration::from_secs(3600));
        store.create(&rec).await.unwrap();
        let mut moved = rec.clone();
        moved.version = 2;
        moved.user_id = Some("b".into());
        assert_eq!(store.save(&moved, 1).await.unwrap(), WriteOutcome::Written);
        assert_eq!(store.indexed(), (1, 1));
        let mut anonymous = moved.clone();
        anonymous.version = 3;
        anonymous.user_id = None;
        assert_eq!(store.save(&anonymous, 2).await.unwrap(), WriteOutcome::Written);
        assert_eq!(store.indexed(), (0, 0));

        let rec = record(Some("c"), Duration::from_secs(3600));
        store.create(&rec).await.unwrap();
        let later = rec.last_active.plus(Duration::from_secs(5));
        assert!(store.touch(&rec.key, later, later.plus(Duration::from_secs(3600))).await.unwrap());
        assert_eq!(store.indexed(), (1, 1));
        assert!(store.destroy(&rec.key).await.unwrap());
        assert_eq!(store.indexed(), (0, 0));
    }

    #[tokio::test]
    async fn a_session_born_expired_is_not_kept() {
        let store = MemoryStore::new();
        let mut rec = record(Some("late"), Duration::ZERO);
        rec.expires_at = Timestamp(rec.expires_at.as_millis() - 10);
        assert_eq!(store.create(&rec).await.unwrap(), WriteOutcome::Written);
        assert!(store.load(&rec.key).await.unwrap().is_none());
        assert_eq!(store.entry_count(), 0);
        assert_eq!(store.indexed(), (0, 0));
    }
}
