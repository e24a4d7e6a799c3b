//! One shard of the store: a slab of slots, a hash table of slot numbers by
//! key, and each owner's sessions chained through the slots.
//!
//! Memory per session is what this layout is for. A slot is 64 bytes (key,
//! deadline, the packed record's pointer, two chain links); the key table
//! holds 4-byte slot numbers; the owner table holds one 4-byte slot number
//! per owner and shard. The packed record is the only other allocation.
//! There is no per-entry bookkeeping beyond that: expiry is a sweep over
//! the slots (see `lib.rs`), not a timer entry per session.
//!
//! Every method runs under the shard's lock, so the key table, the slots and
//! the owner chains always agree: the per-user index is exact, not eventually
//! consistent.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use tessera::{SessionKey, SessionRecord, StoreError, Timestamp};

use crate::packed::Packed;

/// No slot.
const NIL: u32 = u32::MAX;

struct Slot {
    key: SessionKey,
    /// Milliseconds since the epoch; meaningless in a vacant slot.
    expires_at: i64,
    /// `None`: the slot is vacant and `next` is the next vacant slot.
    value: Option<Packed>,
    /// The previous and next slot of the same owner (in this shard).
    prev: u32,
    next: u32,
}

impl Slot {
    fn user(&self) -> Option<&[u8]> {
        self.value.as_ref().and_then(Packed::user_bytes)
    }
}

pub(crate) struct Shard {
    slots: Vec<Slot>,
    /// Head of the vacant-slot list.
    free: u32,
    /// Occupied slot numbers, by key.
    keys: HashTable<u32>,
    /// The first slot of each owner's chain, by owner.
    owners: HashTable<u32>,
    hasher: RandomState,
    live: usize,
    /// Where the background sweep goes on.
    cursor: usize,
}

/// Keys are SHA-256 digests of random IDs that the server generated, so
/// their leading bytes are already a uniform hash. (A client can present
/// any key, but only for lookups, which cannot crowd the table.)
fn key_hash(key: &SessionKey) -> u64 {
    let bytes = key.as_bytes();
    u64::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]])
}

impl Shard {
    pub(crate) fn new() -> Self {
        Shard {
            slots: Vec::new(),
            free: NIL,
            keys: HashTable::new(),
            owners: HashTable::new(),
            hasher: RandomState::new(),
            live: 0,
            cursor: 0,
        }
    }

    /// Sessions held, expired or not.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Slots in the slab, occupied or not: what a full sweep looks at.
    pub(crate) fn capacity_hint(&self) -> usize {
        self.slots.len()
    }

    fn find(&self, key: &SessionKey) -> Option<u32> {
        let slots = &self.slots;
        self.keys.find(key_hash(key), |&i| slots[i as usize].key == *key).copied()
    }

    /// The slot of `key` if it holds a session live at `now`. An expired
    /// session found on the way is freed.
    pub(crate) fn live(&mut self, key: &SessionKey, now: Timestamp) -> Option<u32> {
        let i = self.find(key)?;
        if self.slots[i as usize].expires_at > now.as_millis() {
            return Some(i);
        }
        self.remove_at(i);
        None
    }

    /// The slot of `key`, live or not, and whether it is live at `now`.
    pub(crate) fn any(&self, key: &SessionKey, now: Timestamp) -> Option<(u32, bool)> {
        self.find(key).map(|i| (i, self.slots[i as usize].expires_at > now.as_millis()))
    }

    pub(crate) fn key_at(&self, i: u32) -> SessionKey {
        self.slots[i as usize].key
    }

    pub(crate) fn version_at(&self, i: u32) -> Option<u64> {
        self.slots[i as usize].value.as_ref().and_then(Packed::version)
    }

    pub(crate) fn last_active_at(&self, i: u32) -> Option<Timestamp> {
        self.slots[i as usize].value.as_ref().and_then(Packed::last_active)
    }

    /// A copy of slot `i`'s record with `last_active` moved.
    pub(crate) fn touched_at(&self, i: u32, last_active: Timestamp) -> Result<Packed, StoreError> {
        self.slots[i as usize]
            .value
            .as_ref()
            .and_then(|value| value.touched(last_active))
            .ok_or_else(|| StoreError::Corrupt("malformed packed session".into()))
    }

    pub(crate) fn is_live_at(&self, i: u32, now: Timestamp) -> bool {
        self.slots[i as usize].expires_at > now.as_millis()
    }

    pub(crate) fn decode_at(&self, i: u32) -> Result<SessionRecord, StoreError> {
        let slot = &self.slots[i as usize];
        match &slot.value {
            Some(value) => value.decode(slot.key, Timestamp(slot.expires_at)),
            None => Err(StoreError::Corrupt("vacant slot".into())),
        }
    }

    /// Stores a session under `key`, which must not be in the shard.
    pub(crate) fn insert(&mut self, key: SessionKey, value: Packed, expires_at: Timestamp) -> Result<(), StoreError> {
        let slot = Slot { key, expires_at: expires_at.as_millis(), value: Some(value), prev: NIL, next: NIL };
        let i = if self.free != NIL {
            let i = self.free;
            self.free = self.slots[i as usize].next;
            self.slots[i as usize] = slot;
            i
        } else {
            let i = u32::try_from(self.slots.len())
                .ok()
                .filter(|&i| i != NIL)
                .ok_or_else(|| StoreError::Unavailable("memory store shard is full (4 billion sessions)".into()))?;
            self.slots.push(slot);
            i
        };
        let slots = &self.slots;
        self.keys.insert_unique(key_hash(&key), i, |&j| key_hash(&slots[j as usize].key));
        self.link(i);
        self.live += 1;
        Ok(())
    }

    /// Replaces the session in slot `i`, moving it to its new owner's chain
    /// if the owner changed.
    pub(crate) fn replace(&mut self, i: u32, value: Packed, expires_at: Timestamp) {
        let same_owner = self.slots[i as usize].user() == value.user_bytes();
        if !same_owner {
            self.unlink(i);
        }
        let slot = &mut self.slots[i as usize];
        slot.value = Some(value);
        slot.expires_at = expires_at.as_millis();
        if !same_owner {
            self.link(i);
        }
    }

    /// Frees slot `i`.
    pub(crate) fn remove_at(&mut self, i: u32) {
        if self.slots[i as usize].value.is_none() {
            return;
        }
        self.unlink(i);
        let key = self.slots[i as usize].key;
        if let Ok(entry) = self.keys.find_entry(key_hash(&key), |&j| j == i) {
            entry.remove();
        }
        let slot = &mut self.slots[i as usize];
        slot.value = None;
        slot.prev = NIL;
        slot.next = self.free;
        self.free = i;
        self.live -= 1;
    }

    /// Adds occupied slot `i` at the head of its owner's chain.
    fn link(&mut self, i: u32) {
        let Shard { slots, owners, hasher, .. } = self;
        let Some(user) = slots[i as usize].user() else {
            slots[i as usize].prev = NIL;
            slots[i as usize].next = NIL;
            return;
        };
        let hash = hasher.hash_one(user);
        let found = owners.find_mut(hash, |&h| slots[h as usize].user() == slots[i as usize].user());
        match found {
            Some(head) => {
                let old = *head;
                *head = i;
                slots[i as usize].prev = NIL;
                slots[i as usize].next = old;
                slots[old as usize].prev = i;
            }
            None => {
                slots[i as usize].prev = NIL;
                slots[i as usize].next = NIL;
                owners.insert_unique(hash, i, |&h| hasher.hash_one(slots[h as usize].user().unwrap_or_default()));
            }
        }
    }

    /// Takes occupied slot `i` out of its owner's chain.
    fn unlink(&mut self, i: u32) {
        let Shard { slots, owners, hasher, .. } = self;
        let Some(user) = slots[i as usize].user() else { return };
        let (prev, next) = (slots[i as usize].prev, slots[i as usize].next);
        if prev == NIL {
            let hash = hasher.hash_one(user);
            if next == NIL {
                if let Ok(entry) = owners.find_entry(hash, |&h| h == i) {
                    entry.remove();
                }
            } else if let Some(head) = owners.find_mut(hash, |&h| h == i) {
                *head = next;
            }
        } else {
            slots[prev as usize].next = next;
        }
        if next != NIL {
            slots[next as usize].prev = prev;
        }
        slots[i as usize].prev = NIL;
        slots[i as usize].next = NIL;
    }

    /// The slots of `user`'s sessions in this shard.
    pub(crate) fn owned_by(&self, user: &str) -> Vec<u32> {
        let user = user.as_bytes();
        let slots = &self.slots;
        let mut found = Vec::new();
        let Some(&head) = self.owners.find(self.hasher.hash_one(user), |&h| slots[h as usize].user() == Some(user))
        else {
            return found;
        };
        let mut at = head;
        while at != NIL {
            found.push(at);
            at = slots[at as usize].next;
        }
        found
    }

    /// Frees expired sessions among the next `budget` slots from the sweep
    /// cursor, wrapping around at the end. Returns how many were freed.
    pub(crate) fn sweep(&mut self, now: Timestamp, budget: usize) -> u64 {
        let mut removed = 0;
        for _ in 0..budget.min(self.slots.len()) {
            if self.cursor >= self.slots.len() {
                self.cursor = 0;
            }
            let i = self.cursor as u32;
            self.cursor += 1;
            let slot = &self.slots[i as usize];
            if slot.value.is_some() && slot.expires_at <= now.as_millis() {
                self.remove_at(i);
                removed += 1;
            }
        }
        self.shrink_if_empty();
        removed
    }

    /// Frees every expired session.
    pub(crate) fn purge(&mut self, now: Timestamp) -> u64 {
        self.cursor = 0;
        let removed = self.sweep(now, self.slots.len());
        self.cursor = 0;
        removed
    }

    /// Gives the slab's memory back once the shard is empty (the slot
    /// numbers can only be reset when nothing refers to them).
    fn shrink_if_empty(&mut self) {
        if self.live == 0 && !self.slots.is_empty() {
            self.slots = Vec::new();
            self.free = NIL;
            self.cursor = 0;
            self.keys = HashTable::new();
            self.owners = HashTable::new();
        }
    }

    /// Evicts the session closest to its deadline among a sample of slots
    /// (an approximation of least recently active). Returns whether one was
    /// evicted.
    pub(crate) fn evict_one(&mut self, seed: u64) -> bool {
        if self.live == 0 {
            return false;
        }
        let len = self.slots.len() as u64;
        let mut victim: Option<(i64, u32)> = None;
        let mut state = seed | 1;
        for _ in 0..16 {
            // xorshift: cheap, and good enough to spread the samples.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let i = (state % len) as u32;
            let slot = &self.slots[i as usize];
            if slot.value.is_some() && victim.is_none_or(|(deadline, _)| slot.expires_at < deadline) {
                victim = Some((slot.expires_at, i));
            }
        }
        let victim = victim.map(|(_, i)| i).or_else(|| {
            let start = (state % len) as usize;
            (0..self.slots.len())
                .map(|k| ((start + k) % self.slots.len()) as u32)
                .find(|&i| self.slots[i as usize].value.is_some())
        });
        match victim {
            Some(i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    /// (owner, key) pairs and the owners, for tests.
    #[cfg(test)]
    pub(crate) fn owners(&self) -> Vec<(Vec<u8>, usize)> {
        let slots = &self.slots;
        self.owners
            .iter()
            .map(|&head| {
                let mut n = 0;
                let mut at = head;
                while at != NIL {
                    n += 1;
                    at = slots[at as usize].next;
                }
                (slots[head as usize].user().unwrap_or_default().to_vec(), n)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_64_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
    }
}
