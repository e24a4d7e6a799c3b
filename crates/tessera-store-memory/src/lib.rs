//! # tessera-store-memory — sessions in the process's memory
//!
//! [`MemoryStore`] keeps sessions in sharded hash tables in the process. It
//! is the store for a single server process (tests, development, or a
//! deployment that accepts that a restart logs everyone out); sessions are
//! not shared between processes.
//!
//! - **Layout.** 64 shards, each under its own lock: a slab of 64-byte slots
//!   (key, deadline, packed record, owner links), a hash table of 4-byte slot
//!   numbers by key, and a table of owners. A record is packed into one
//!   exactly-sized allocation (varint header, user ID, compact JSON data,
//!   device strings) and decoded on load. A logged-in session with a small
//!   payload costs about 150–200 bytes in all.
//! - **Expiry.** Reads check `expires_at` against the wall clock and free
//!   what they find expired. A background thread sweeps a quarter of every
//!   shard's slots twice a second, so every expired session is freed within
//!   about two seconds of its deadline even if nobody asks for it again;
//!   [`purge_expired`](SessionStore::purge_expired) sweeps everything at once.
//!   The thread holds only a weak reference and ends with the store.
//! - **Compare-and-swap.** Every operation on a key runs under its shard's
//!   lock, so a version check and the write that follows are one step, and
//!   `regenerate` holds both keys' shards (locked in a fixed order) so that no
//!   reader sees both or neither.
//! - **Per-user index.** Each shard chains an owner's sessions through their
//!   slots, updated in the same step as every write, so listing or revoking a
//!   user's sessions costs one lookup per shard plus what that user has,
//!   never a scan of the store.
//! - **Bound.** [`MemoryStore::with_max_capacity`] caps the number of
//!   sessions; when full, creating one evicts the session closest to its
//!   deadline among a sample (approximately the least recently active).
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

mod packed;
mod shard;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use tessera::{SessionKey, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome};

use crate::packed::Packed;
use crate::shard::Shard;

/// Number of shards. Keys are SHA-256 digests, so they spread evenly; 64
/// makes two requests rarely wait on each other's lock.
const SHARDS: usize = 64;

/// How often the background sweep runs, and which share of every shard's
/// slots it looks at each time: everything is looked at within
/// `SWEEP_EVERY * SWEEP_ROUNDS`.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
const SWEEP_ROUNDS: usize = 4;

/// An in-process [`SessionStore`].
///
/// Cloning is cheap and gives a handle to the same sessions.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    shards: Box<[Mutex<Shard>]>,
    /// Sessions held in all shards (expired ones until they are freed).
    count: AtomicUsize,
    max_capacity: Option<usize>,
    /// Spreads eviction samples.
    evictions: AtomicU64,
}

impl MemoryStore {
    /// A store without a size bound: sessions leave only when they expire or
    /// are destroyed.
    pub fn new() -> Self {
        Self::build(None)
    }

    /// A store holding at most `max_sessions` sessions. When full, creating
    /// a session evicts the one closest to its deadline among a sample,
    /// i.e. logs out a user who has been idle for long. A new session is
    /// always admitted.
    pub fn with_max_capacity(max_sessions: u64) -> Self {
        Self::build(Some(usize::try_from(max_sessions).unwrap_or(usize::MAX).max(1)))
    }

    fn build(max_capacity: Option<usize>) -> Self {
        let inner = Arc::new(Inner {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            count: AtomicUsize::new(0),
            max_capacity,
            evictions: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        });
        let weak = Arc::downgrade(&inner);
        // Without the thread (it could not be spawned), expired sessions are
        // still never returned and are freed on access and by purge_expired.
        let _ = std::thread::Builder::new().name("tessera-memory-sweep".into()).spawn(move || sweep_forever(weak));
        MemoryStore { inner }
    }

    /// The number of sessions held, including expired ones that the sweep
    /// has not freed yet, for tests and benchmarks.
    pub fn entry_count(&self) -> u64 {
        self.inner.count.load(Ordering::Relaxed) as u64
    }

    #[cfg(test)]
    fn indexed(&self) -> (usize, usize) {
        let mut owners = std::collections::HashSet::new();
        let mut pairs = 0;
        for shard in self.inner.shards.iter() {
            for (owner, n) in lock(shard).owners() {
                pairs += n;
                owners.insert(owner);
            }
        }
        (pairs, owners.len())
    }
}

impl Inner {
    fn shard_of(key: &SessionKey) -> usize {
        // Bytes 8 and 9: the shard's hash table uses bytes 0 to 7.
        let bytes = key.as_bytes();
        (usize::from(bytes[8]) << 8 | usize::from(bytes[9])) % SHARDS
    }

    /// Runs `f` on `key`'s shard and keeps the session count current.
    fn with_shard<T>(&self, key: &SessionKey, f: impl FnOnce(&mut Shard) -> T) -> T {
        let mut shard = lock(&self.shards[Self::shard_of(key)]);
        self.counted(&mut shard, f)
    }

    fn counted<T>(&self, shard: &mut Shard, f: impl FnOnce(&mut Shard) -> T) -> T {
        let before = shard.len();
        let result = f(shard);
        let after = shard.len();
        if after > before {
            self.count.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.count.fetch_sub(before - after, Ordering::Relaxed);
        }
        result
    }

    /// Makes room for one more session if the store is bounded and full.
    fn make_room(&self) {
        let Some(max) = self.max_capacity else { return };
        while self.count.load(Ordering::Relaxed) >= max {
            let seed = self.evictions.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
            let start = (seed >> 32) as usize % SHARDS;
            let evicted = (0..SHARDS).any(|k| {
                let mut shard = lock(&self.shards[(start + k) % SHARDS]);
                self.counted(&mut shard, |shard| shard.evict_one(seed))
            });
            if !evicted {
                return;
            }
        }
    }

    fn sweep(&self, budget_share: usize) -> u64 {
        let mut removed = 0;
        for shard in self.shards.iter() {
            let now = Timestamp::now();
            let mut shard = lock(shard);
            removed += self.counted(&mut shard, |shard| {
                if budget_share == 0 {
                    shard.purge(now)
                } else {
                    let budget = shard.capacity_hint().div_ceil(budget_share).max(256);
                    shard.sweep(now, budget)
                }
            });
        }
        removed
    }
}

fn sweep_forever(store: Weak<Inner>) {
    loop {
        std::thread::sleep(SWEEP_EVERY);
        let Some(inner) = store.upgrade() else { return };
        inner.sweep(SWEEP_ROUNDS);
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("entries", &self.entry_count()).finish_non_exhaustive()
    }
}

/// A panic while a shard was locked could only come from an allocation
/// failure between two steps of an update; keep serving rather than turn
/// every later request into a panic.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let now = Timestamp::now();
        self.inner.with_shard(key, |shard| shard.live(key, now).map(|i| shard.decode_at(i)).transpose())
    }

    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now();
        let value = Packed::encode(record)?;
        self.inner.make_room();
        self.inner.with_shard(&record.key, |shard| {
            if shard.live(&record.key, now).is_some() {
                return Ok(WriteOutcome::Conflict);
            }
            // A record born expired is written and dead at once: keeping it
            // would only cost a sweep (and, when bounded, push out a live one).
            if record.expires_at > now {
                shard.insert(record.key, value, record.expires_at)?;
            }
            Ok(WriteOutcome::Written)
        })
    }

    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now();
        let value = Packed::encode(record)?;
        Ok(self.inner.with_shard(&record.key, |shard| {
            let Some(i) = shard.live(&record.key, now) else {
                return WriteOutcome::Missing;
            };
            if shard.version_at(i) != Some(expected_version) {
                return WriteOutcome::Conflict;
            }
            shard.replace(i, value, record.expires_at);
            WriteOutcome::Written
        }))
    }

    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        let now = Timestamp::now();
        let value = Packed::encode(record)?;
        let inner = &self.inner;
        let (a, b) = (Inner::shard_of(old_key), Inner::shard_of(&record.key));
        if a == b {
            let mut shard = lock(&inner.shards[a]);
            return inner.counted(&mut shard, |shard| {
                regenerate_in(shard, None, old_key, expected_version, record, value, now)
            });
        }
        // Two shards, locked in a fixed order so that two regenerations
        // never wait on each other.
        let (first, second) = (lock(&inner.shards[a.min(b)]), lock(&inner.shards[a.max(b)]));
        let (mut old_shard, mut new_shard) = if a < b { (first, second) } else { (second, first) };
        let new_before = new_shard.len();
        let result = inner.counted(&mut old_shard, |old_shard| {
            regenerate_in(old_shard, Some(&mut new_shard), old_key, expected_version, record, value, now)
        });
        let new_after = new_shard.len();
        inner.count.fetch_add(new_after, Ordering::Relaxed);
        inner.count.fetch_sub(new_before, Ordering::Relaxed);
        result
    }

    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        self.inner.with_shard(key, |shard| {
            let Some(i) = shard.live(key, now) else {
                return Ok(false);
            };
            if shard.last_active_at(i).is_some_and(|stored| last_active > stored) {
                let value = shard.touched_at(i, last_active)?;
                shard.replace(i, value, expires_at);
            }
            Ok(true)
        })
    }

    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        Ok(self.inner.with_shard(key, |shard| match shard.any(key, now) {
            Some((i, live)) => {
                shard.remove_at(i);
                live
            }
            None => false,
        }))
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let now = Timestamp::now();
        let mut records = Vec::new();
        for shard in self.inner.shards.iter() {
            let shard = lock(shard);
            for i in shard.owned_by(user_id) {
                if shard.is_live_at(i, now) {
                    records.push(shard.decode_at(i)?);
                }
            }
        }
        Ok(records)
    }

    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let mut removed = 0;
        for shard in self.inner.shards.iter() {
            let mut shard = lock(shard);
            self.inner.counted(&mut shard, |shard| {
                for i in shard.owned_by(user_id) {
                    if keep == Some(&shard.key_at(i)) {
                        continue;
                    }
                    if shard.is_live_at(i, now) {
                        removed += 1;
                    }
                    shard.remove_at(i);
                }
            });
        }
        Ok(removed)
    }

    /// Sweeps every shard now, freeing what has expired. Returns how many
    /// sessions were freed.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(self.inner.sweep(0))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// `regenerate` with the old key's shard and, when it differs, the new key's.
fn regenerate_in(
    old_shard: &mut Shard,
    new_shard: Option<&mut Shard>,
    old_key: &SessionKey,
    expected_version: u64,
    record: &SessionRecord,
    value: Packed,
    now: Timestamp,
) -> Result<WriteOutcome, StoreError> {
    let Some(i) = old_shard.live(old_key, now) else {
        return Ok(WriteOutcome::Missing);
    };
    if old_shard.version_at(i) != Some(expected_version) {
        return Ok(WriteOutcome::Conflict);
    }
    if record.key == *old_key {
        old_shard.replace(i, value, record.expires_at);
        return Ok(WriteOutcome::Written);
    }
    let target = match new_shard {
        Some(shard) => shard,
        None => &mut *old_shard,
    };
    if target.live(&record.key, now).is_some() {
        return Ok(WriteOutcome::Conflict);
    }
    if record.expires_at > now {
        target.insert(record.key, value, record.expires_at)?;
    }
    // Slot numbers stay valid across inserts: `i` still names the old session.
    old_shard.remove_at(i);
    Ok(WriteOutcome::Written)
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

        tokio::time::sleep(ttl + Duration::from_millis(50)).await;
        assert!(store.load(&keys[0]).await.unwrap().is_none());
        assert!(store.list_for_user("user-7").await.unwrap().is_empty());
        // The load freed one; the background sweep may have freed others already.
        assert!(store.purge_expired().await.unwrap() < 10_000);
        assert_eq!(store.entry_count(), 0, "every expired session is freed");
        assert_eq!(store.indexed(), (0, 0), "the user index is emptied by the evictions");
    }

    #[tokio::test]
    async fn the_background_sweep_frees_expired_sessions_nobody_asks_for() {
        let store = MemoryStore::new();
        let ttl = Duration::from_millis(200);
        for i in 0..5_000 {
            let rec = record(Some(&format!("user-{}", i % 50)), ttl);
            store.create(&rec).await.unwrap();
        }
        let long = record(Some("user-1"), Duration::from_secs(3600));
        store.create(&long).await.unwrap();
        assert_eq!(store.entry_count(), 5_001);
        let deadline = std::time::Instant::now() + ttl + SWEEP_EVERY * (SWEEP_ROUNDS as u32 + 2);
        while store.entry_count() > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(store.entry_count(), 1, "expired sessions are freed without purge_expired");
        assert_eq!(store.indexed(), (1, 1));
        assert_eq!(store.list_for_user("user-1").await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn regenerate_across_shards_moves_the_owner() {
        let store = MemoryStore::new();
        for _ in 0..200 {
            let rec = record(Some("mover"), Duration::from_secs(3600));
            store.create(&rec).await.unwrap();
            let mut next = rec.clone();
            next.key = SessionId::generate().key();
            next.version = 2;
            assert_eq!(store.regenerate(&rec.key, 1, &next).await.unwrap(), WriteOutcome::Written);
            assert!(store.load(&rec.key).await.unwrap().is_none());
            assert_eq!(store.load(&next.key).await.unwrap().unwrap().version, 2);
        }
        assert_eq!(store.entry_count(), 200);
        assert_eq!(store.indexed(), (200, 1));
        assert_eq!(store.destroy_for_user("mover", None).await.unwrap(), 200);
        assert_eq!(store.entry_count(), 0);
        assert_eq!(store.indexed(), (0, 0));
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
