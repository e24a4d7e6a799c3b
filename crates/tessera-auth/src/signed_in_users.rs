//! The users behind signed-in requests, kept in memory between requests.
//!
//! Every request that carries a session or an access token needs its user
//! (to show the name, to refuse a disabled account). Reading the directory
//! for that on every request costs a database round trip when nothing
//! changed; [`SignedInUsers`] keeps each enabled user it read for a short
//! time ([`MAX_AGE`]) instead.
//!
//! Why this cannot let a change slip through, on one instance or many:
//!
//! - The changes that must take effect at once — an account disabled or
//!   deleted, a password changed or reset — end the user's sessions and
//!   tokens through [`crate::Revocation`], in the shared session store and
//!   the shared database. A request is looked up here only *after* its
//!   session or token was found valid in that shared state, so a revoked
//!   session never reaches a cached user, on any instance.
//! - Only enabled users are kept: a lookup that finds an account disabled
//!   (or gone) is never cached, so enabling it again needs no invalidation.
//! - On the instance that makes a change, [`SignedInUsers::forget`] drops
//!   the entry at once ([`crate::Accounts`] and [`crate::Authenticator`] call
//!   it); elsewhere an entry is at most [`MAX_AGE`] old, which bounds how
//!   long another instance may show, say, a stale user name.
//! - Decisions that read a secret (a password, a second factor) never use
//!   this cache: they read the directory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::database::DatabaseError;
use crate::directory::{User, UserDirectory};

/// How long an instance keeps a user it read.
pub const MAX_AGE: Duration = Duration::from_secs(2);

/// At most this many users are kept; when full, expired entries go first,
/// and if none had expired the whole map is dropped (a burst of sign-ins
/// then costs one read each, as without the cache).
pub const CAPACITY: usize = 65_536;

struct Entry {
    user: User,
    read_at: Instant,
}

/// Enabled users by ID, read from the directory at most every [`MAX_AGE`].
/// Clones share the entries.
#[derive(Clone)]
pub struct SignedInUsers {
    directory: Arc<dyn UserDirectory>,
    entries: Arc<RwLock<HashMap<i64, Entry>>>,
    /// Bumped by every [`SignedInUsers::forget`]: a read that started before
    /// a forget may have seen the account before the change, so it is not
    /// kept.
    forgets: Arc<AtomicU64>,
}

impl std::fmt::Debug for SignedInUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedInUsers").finish_non_exhaustive()
    }
}

impl SignedInUsers {
    /// Users of `directory`.
    pub fn new(directory: Arc<dyn UserDirectory>) -> Self {
        SignedInUsers {
            directory,
            entries: Arc::new(RwLock::new(HashMap::new())),
            forgets: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The user with `id` if the account exists and is enabled. Call only
    /// for a session or token already found valid (see the module docs).
    pub async fn enabled(&self, id: i64) -> Result<Option<User>, DatabaseError> {
        {
            let entries = self.entries.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(entry) = entries.get(&id) {
                if entry.read_at.elapsed() < MAX_AGE {
                    return Ok(Some(entry.user.clone()));
                }
            }
        }
        // Boxed: the database read's future is large, and without the box
        // every caller's future (one per request) would carry its room even
        // when the user comes from memory, as it nearly always does.
        Box::pin(self.read_through(id)).await
    }

    /// Reads user `id` from the directory and remembers it if enabled.
    async fn read_through(&self, id: i64) -> Result<Option<User>, DatabaseError> {
        let read_at = Instant::now();
        let forgets = self.forgets.load(Ordering::Acquire);
        let user = self.directory.user_by_id(id).await?.filter(User::is_enabled);
        let mut entries = self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        match &user {
            Some(_) if self.forgets.load(Ordering::Acquire) != forgets => {}
            Some(user) => {
                if entries.len() >= CAPACITY && !entries.contains_key(&id) {
                    entries.retain(|_, entry| entry.read_at.elapsed() < MAX_AGE);
                    if entries.len() >= CAPACITY {
                        entries.clear();
                    }
                }
                entries.insert(id, Entry { user: user.clone(), read_at });
            }
            None => {
                entries.remove(&id);
            }
        }
        Ok(user)
    }

    /// Drops what is kept of user `id` (after a change to the account).
    pub fn forget(&self, id: i64) {
        self.forgets.fetch_add(1, Ordering::AcqRel);
        self.entries.write().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use async_trait::async_trait;
    use tessera::Timestamp;

    use super::*;
    use crate::directory::{CreateUserError, SqlDirectory};
    use crate::TimedPool;

    /// A real SQLite directory that counts its reads by ID.
    struct Counted {
        inner: SqlDirectory,
        reads: AtomicUsize,
    }

    #[async_trait]
    impl UserDirectory for Counted {
        async fn create_user(
            &self,
            username: &str,
            username_key: &str,
            password_hash: Option<&str>,
            created_at: Timestamp,
        ) -> Result<User, CreateUserError> {
            self.inner.create_user(username, username_key, password_hash, created_at).await
        }
        async fn user_by_name(&self, username_key: &str) -> Result<Option<User>, DatabaseError> {
            self.inner.user_by_name(username_key).await
        }
        async fn user_by_id(&self, id: i64) -> Result<Option<User>, DatabaseError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.user_by_id(id).await
        }
        async fn set_password_hash(&self, id: i64, password_hash: &str) -> Result<(), DatabaseError> {
            self.inner.set_password_hash(id, password_hash).await
        }
        async fn set_disabled(&self, id: i64, disabled_at: Option<Timestamp>) -> Result<bool, DatabaseError> {
            self.inner.set_disabled(id, disabled_at).await
        }
    }

    #[tokio::test]
    async fn reads_once_forgets_on_change_and_never_keeps_a_disabled_user() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("users.db").display());
        let pool = TimedPool::connect(&url, crate::database::DEFAULT_QUERY_TIMEOUT).await.unwrap();
        let directory = Arc::new(Counted { inner: SqlDirectory::new(pool), reads: AtomicUsize::new(0) });
        let users = SignedInUsers::new(directory.clone());
        let alice = directory.create_user("Alice", "alice", None, Timestamp(1)).await.unwrap();
        let reads = || directory.reads.load(Ordering::SeqCst);

        for _ in 0..5 {
            assert_eq!(users.enabled(alice.id).await.unwrap().map(|u| u.username), Some("Alice".to_owned()));
        }
        assert_eq!(reads(), 1, "one read, then memory");

        directory.set_disabled(alice.id, Some(Timestamp(2))).await.unwrap();
        users.forget(alice.id);
        assert!(users.enabled(alice.id).await.unwrap().is_none(), "a forgotten user is read again");
        assert!(users.enabled(alice.id).await.unwrap().is_none());
        assert_eq!(reads(), 3, "a disabled user is never kept");

        directory.set_disabled(alice.id, None).await.unwrap();
        assert!(users.enabled(alice.id).await.unwrap().is_some(), "enabling needs no invalidation");
        assert!(users.enabled(i64::MAX).await.unwrap().is_none(), "no such user");
    }
}
