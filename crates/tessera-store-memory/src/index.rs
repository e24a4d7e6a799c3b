//! The per-user index: which keys belong to which user.
//!
//! Listing or revoking a user's sessions must cost what that user has, not what
//! the whole store holds. The index maps each user to its keys, each with the
//! stamp of the value that put it there. A removal names the stamp of the
//! value that went away and is ignored if the key has been written since: the
//! cache reports evictions after the fact, possibly after a newer write.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tessera::SessionKey;

/// Shards spread users over independent locks.
const SHARDS: usize = 16;

/// A user with more keys than this gets a hash map instead of a vector.
const SMALL: usize = 16;

type Shard = HashMap<Box<str>, Keys>;

/// The keys of one user. Almost every user has a handful of sessions, for
/// which a vector is both smaller and faster than a hash map; a user with
/// very many keeps removals O(1) with a map.
enum Keys {
    Small(Vec<(SessionKey, u64)>),
    // Boxed so that the common small case does not pay for a map's 48 bytes
    // in every slot of the user table.
    #[allow(clippy::box_collection)]
    Large(Box<HashMap<SessionKey, u64>>),
}

impl Keys {
    fn set(&mut self, key: SessionKey, stamp: u64) {
        match self {
            Keys::Small(entries) => {
                if let Some(entry) = entries.iter_mut().find(|(k, _)| *k == key) {
                    entry.1 = stamp;
                } else if entries.len() < SMALL {
                    entries.reserve_exact(1);
                    entries.push((key, stamp));
                } else {
                    let mut map: HashMap<SessionKey, u64> = entries.drain(..).collect();
                    map.insert(key, stamp);
                    *self = Keys::Large(Box::new(map));
                }
            }
            Keys::Large(map) => {
                map.insert(key, stamp);
            }
        }
    }

    fn remove_if(&mut self, key: &SessionKey, stamp: u64) {
        match self {
            Keys::Small(entries) => {
                if let Some(at) = entries.iter().position(|(k, s)| k == key && *s == stamp) {
                    entries.swap_remove(at);
                }
            }
            Keys::Large(map) => {
                if map.get(key) == Some(&stamp) {
                    map.remove(key);
                }
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            Keys::Small(entries) => entries.len(),
            Keys::Large(map) => map.len(),
        }
    }

    fn entries(&self) -> Vec<(SessionKey, u64)> {
        match self {
            Keys::Small(entries) => entries.clone(),
            Keys::Large(map) => map.iter().map(|(k, s)| (*k, *s)).collect(),
        }
    }
}

/// User ID to keys, sharded.
pub(crate) struct UserIndex {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

impl UserIndex {
    pub(crate) fn new() -> Self {
        UserIndex { shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(), hasher: RandomState::new() }
    }

    fn shard(&self, user: &str) -> MutexGuard<'_, Shard> {
        let at = (self.hasher.hash_one(user) as usize) % SHARDS;
        // A panic while holding the lock cannot leave a half-updated map
        // (every update is a single std collection call), so poison is ignored.
        self.shards[at].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `key`, written with `stamp`, belongs to `user`.
    pub(crate) fn set(&self, user: &str, key: SessionKey, stamp: u64) {
        let mut shard = self.shard(user);
        match shard.get_mut(user) {
            Some(keys) => keys.set(key, stamp),
            None => {
                shard.insert(user.into(), Keys::Small(vec![(key, stamp)]));
            }
        }
    }

    /// Forgets `key` for `user` if it is still the value written with `stamp`.
    pub(crate) fn remove_if(&self, user: &str, key: &SessionKey, stamp: u64) {
        let mut shard = self.shard(user);
        if let Some(keys) = shard.get_mut(user) {
            keys.remove_if(key, stamp);
            if keys.len() == 0 {
                shard.remove(user);
            }
        }
    }

    /// The keys of `user` with their stamps, copied so that no lock is held
    /// while the caller reads the cache.
    pub(crate) fn entries(&self, user: &str) -> Vec<(SessionKey, u64)> {
        self.shard(user).get(user).map(Keys::entries).unwrap_or_default()
    }

    /// How many (user, key) pairs the index holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).values().map(Keys::len).sum::<usize>())
            .sum()
    }

    /// How many users the index holds.
    #[cfg(test)]
    pub(crate) fn users(&self) -> usize {
        self.shards.iter().map(|shard| shard.lock().unwrap_or_else(PoisonError::into_inner).len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera::SessionId;

    #[test]
    fn stale_removals_are_ignored_and_empty_users_dropped() {
        let index = UserIndex::new();
        let keys: Vec<SessionKey> = (0..40).map(|_| SessionId::generate().key()).collect();
        for (i, key) in keys.iter().enumerate() {
            index.set("u", *key, i as u64);
        }
        assert_eq!(index.len(), 40);
        index.set("u", keys[0], 1000);
        index.remove_if("u", &keys[0], 0);
        assert_eq!(index.len(), 40, "a stale stamp removes nothing");
        index.remove_if("u", &keys[0], 1000);
        for (i, key) in keys.iter().enumerate().skip(1) {
            index.remove_if("u", key, i as u64);
        }
        assert_eq!(index.len(), 0);
        assert_eq!(index.users(), 0);
    }
}
