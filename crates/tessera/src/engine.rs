//! Loading and committing sessions: expiry, touch, compare-and-swap, retry.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::cookie_config::CookieConfig;
use crate::data::SessionData;
use crate::error::StoreError;
use crate::expiry::ExpiryPolicy;
use crate::id::{SessionHandle, SessionId, SessionKey};
use crate::record::{DeviceInfo, SessionRecord};
use crate::session::{replay, Session, SessionState};
use crate::store::{SessionStore, WriteOutcome};

/// What the web layer must do with the session cookie after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieUpdate {
    /// Leave the browser's cookie as it is.
    Keep,
    /// Send this session ID, to be kept for `max_age`.
    Set {
        /// The new session ID.
        id: SessionId,
        /// How long the browser should keep it: the rest of the absolute time-out.
        max_age: Duration,
    },
    /// Tell the browser to delete the cookie.
    Remove,
}

/// The session engine: one per application, cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use tessera::{SessionEngine, SessionStore};
/// # fn demo(store: Arc<dyn SessionStore>) {
/// let engine = SessionEngine::new(store);
/// # }
/// ```
#[derive(Clone)]
pub struct SessionEngine {
    store: Arc<dyn SessionStore>,
    expiry: ExpiryPolicy,
    cookie: CookieConfig,
    clock: Arc<dyn Clock>,
    store_timeout: Duration,
    max_attempts: u32,
}

impl std::fmt::Debug for SessionEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionEngine")
            .field("expiry", &self.expiry)
            .field("cookie", &self.cookie)
            .field("store_timeout", &self.store_timeout)
            .finish_non_exhaustive()
    }
}

impl SessionEngine {
    /// An engine over `store` with the default policy: 30 minutes idle,
    /// 12 hours absolute, secure cookie settings, 3 s store time-out.
    pub fn new(store: Arc<dyn SessionStore>) -> Self {
        SessionEngine {
            store,
            expiry: ExpiryPolicy::default(),
            cookie: CookieConfig::default(),
            clock: Arc::new(SystemClock),
            store_timeout: Duration::from_secs(3),
            max_attempts: 256,
        }
    }

    /// Sets the expiry policy.
    pub fn with_expiry(mut self, expiry: ExpiryPolicy) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sets the cookie configuration.
    pub fn with_cookie(mut self, cookie: CookieConfig) -> Self {
        self.cookie = cookie;
        self
    }

    /// Replaces the clock (tests use [`ManualClock`](crate::ManualClock)).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Bounds every store call; a call that takes longer fails with
    /// [`StoreError::Timeout`]. Default 3 seconds.
    pub fn with_store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// The expiry policy.
    pub fn expiry(&self) -> &ExpiryPolicy {
        &self.expiry
    }

    /// The cookie configuration.
    pub fn cookie_config(&self) -> &CookieConfig {
        &self.cookie
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// The engine's clock.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    async fn call<T>(&self, future: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match tokio::time::timeout(self.store_timeout, future).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(self.store_timeout)),
        }
    }

    fn fresh(&self, stale_cookie: bool, device: DeviceInfo) -> Session {
        Session::new(SessionState {
            base: None,
            data: SessionData::new(),
            user_id: None,
            changes: Vec::new(),
            next_id: None,
            destroyed: None,
            stale_cookie,
            device,
        })
    }

    /// Loads the session named by a cookie value.
    ///
    /// A missing, malformed, unknown or expired cookie gives a fresh, empty
    /// session (never an error); an expired or undecodable record is deleted.
    /// Only a store failure is an error, so that a store outage is never
    /// mistaken for a logged-out user.
    pub async fn load(&self, cookie_value: Option<&str>, device: DeviceInfo) -> Result<Session, StoreError> {
        let now = self.clock.now();
        let Some(id) = cookie_value.and_then(SessionId::parse) else {
            return Ok(self.fresh(cookie_value.is_some(), device));
        };
        let key = id.key();
        match self.call(self.store.load(&key)).await {
            Ok(Some(record)) if !self.expiry.is_expired(&record, now) => Ok(Session::new(SessionState {
                data: record.data.clone(),
                user_id: record.user_id.clone(),
                base: Some(record),
                changes: Vec::new(),
                next_id: None,
                destroyed: None,
                stale_cookie: false,
                device,
            })),
            Ok(Some(_)) | Err(StoreError::Corrupt(_)) => {
                // Best effort: the store forgets it by itself eventually.
                let _ = self.call(self.store.destroy(&key)).await;
                Ok(self.fresh(true, device))
            }
            Ok(None) => Ok(self.fresh(true, device)),
            Err(error) => Err(error),
        }
    }

    /// Writes what the request changed and says what to do with the cookie.
    ///
    /// - Nothing changed: no write, except a *touch* when the idle deadline is
    ///   due for a refresh.
    /// - New session: stored only if it holds data or a user.
    /// - Changed session: compare-and-swap on the version read; on conflict the
    ///   newer record is loaded and this request's changes replayed on it.
    /// - A session destroyed or regenerated by someone else meanwhile stays
    ///   dead: this request's changes are dropped and the cookie cleared.
    pub async fn commit(&self, session: &Session) -> Result<CookieUpdate, StoreError> {
        let now = self.clock.now();
        // Fast path for the commonest request: a stored session that was only
        // read. Nothing is cloned; at most a touch is due.
        let read_only = {
            let state = session.state();
            match &state.base {
                Some(base) if state.changes.is_empty() && state.next_id.is_none() => {
                    let cookie = if state.stale_cookie { CookieUpdate::Remove } else { CookieUpdate::Keep };
                    Some((cookie, self.expiry.touch_due(base, now).then_some((base.key, base.created_at))))
                }
                _ => None,
            }
        };
        if let Some((cookie, touch)) = read_only {
            if let Some((key, created_at)) = touch {
                let expires_at = self.expiry.expires_at(created_at, now);
                self.call(self.store.touch(&key, now, expires_at)).await?;
            }
            return Ok(cookie);
        }
        let (base, changes, next_id, destroyed, stale_cookie, device) = {
            let state = session.state();
            (
                state.base.clone(),
                state.changes.clone(),
                state.next_id.clone(),
                state.destroyed,
                state.stale_cookie,
                state.device.clone(),
            )
        };
        let mut cookie = if stale_cookie { CookieUpdate::Remove } else { CookieUpdate::Keep };
        if let Some(old) = destroyed {
            self.call(self.store.destroy(&old)).await?;
            cookie = CookieUpdate::Remove;
        }
        match base {
            None => {
                let (data, user_id) = replay(&changes, SessionData::new(), None);
                if data.is_empty() && user_id.is_none() {
                    return Ok(cookie);
                }
                let mut id = next_id.unwrap_or_else(SessionId::generate);
                let mut record = SessionRecord {
                    key: id.key(),
                    version: 1,
                    user_id,
                    data,
                    created_at: now,
                    last_active: now,
                    expires_at: self.expiry.expires_at(now, now),
                    device,
                };
                // A taken key means a 256-bit collision; retrying is only
                // here so that a broken RNG fails loudly instead of looping.
                for _ in 0..3 {
                    if self.call(self.store.create(&record)).await? == WriteOutcome::Written {
                        return Ok(self.set_cookie(id, record.created_at, now));
                    }
                    id = SessionId::generate();
                    record.key = id.key();
                }
                Err(StoreError::Unavailable("could not allocate a unique session key".into()))
            }
            Some(mut base) => {
                if changes.is_empty() && next_id.is_none() {
                    self.touch_if_due(&base, now).await?;
                    return Ok(cookie);
                }
                for attempt in 1..=self.max_attempts {
                    let (data, user_id) = replay(&changes, base.data.clone(), base.user_id.clone());
                    let regenerate = next_id.as_ref();
                    if regenerate.is_none() && data == base.data && user_id == base.user_id {
                        self.touch_if_due(&base, now).await?;
                        return Ok(cookie);
                    }
                    let record = SessionRecord {
                        key: regenerate.map(SessionId::key).unwrap_or(base.key),
                        version: base.version + 1,
                        user_id,
                        data,
                        created_at: base.created_at,
                        last_active: now.max(base.last_active),
                        expires_at: self.expiry.expires_at(base.created_at, now.max(base.last_active)),
                        device: if regenerate.is_some() { device.clone() } else { base.device.clone() },
                    };
                    let outcome = match regenerate {
                        Some(_) => self.call(self.store.regenerate(&base.key, base.version, &record)).await?,
                        None => self.call(self.store.save(&record, base.version)).await?,
                    };
                    match outcome {
                        WriteOutcome::Written => {
                            return Ok(match regenerate {
                                Some(id) => self.set_cookie(id.clone(), record.created_at, now),
                                None => cookie,
                            });
                        }
                        WriteOutcome::Missing => return Ok(CookieUpdate::Remove),
                        WriteOutcome::Conflict => {
                            match self.call(self.store.load(&base.key)).await? {
                                Some(fresh) if !self.expiry.is_expired(&fresh, now) => base = fresh,
                                _ => return Ok(CookieUpdate::Remove),
                            }
                            backoff(attempt).await;
                        }
                    }
                }
                Err(StoreError::Contention(self.max_attempts))
            }
        }
    }

    async fn touch_if_due(&self, base: &SessionRecord, now: Timestamp) -> Result<(), StoreError> {
        if self.expiry.touch_due(base, now) {
            let expires_at = self.expiry.expires_at(base.created_at, now);
            self.call(self.store.touch(&base.key, now, expires_at)).await?;
        }
        Ok(())
    }

    fn set_cookie(&self, id: SessionId, created_at: Timestamp, now: Timestamp) -> CookieUpdate {
        let max_age = self.expiry.absolute_deadline(created_at).since(now);
        CookieUpdate::Set { id, max_age }
    }

    /// The live sessions of a user, newest activity first.
    pub async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let now = self.clock.now();
        let mut records = self.call(self.store.list_for_user(user_id)).await?;
        records.retain(|record| !self.expiry.is_expired(record, now));
        records.sort_by_key(|record| std::cmp::Reverse(record.last_active));
        Ok(records)
    }

    /// Ends the session of `user_id` whose public handle is `handle`.
    /// Returns whether one was found; a handle of another user's session
    /// matches nothing.
    pub async fn revoke(&self, user_id: &str, handle: &str) -> Result<bool, StoreError> {
        let records = self.call(self.store.list_for_user(user_id)).await?;
        let target = records.iter().find(|record| record.key.handle().matches(handle));
        match target {
            Some(record) => self.call(self.store.destroy(&record.key)).await,
            None => Ok(false),
        }
    }

    /// Ends every session of `user_id` except `keep`. Returns how many ended.
    pub async fn revoke_all(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        self.call(self.store.destroy_for_user(user_id, keep)).await
    }

    /// Frees expired records (for stores without native expiry).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.call(self.store.purge_expired()).await
    }

    /// Whether the store answers, within the time-out.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(self.store.ping()).await
    }

    /// The handle of a record, for device lists.
    pub fn handle_of(record: &SessionRecord) -> SessionHandle {
        record.key.handle()
    }
}

/// Jittered back-off after a lost compare-and-swap, so that a crowd of
/// writers on one session spreads out instead of colliding again in lockstep.
async fn backoff(attempt: u32) {
    let ceiling_micros = 200u64 << attempt.min(6);
    let micros = rand::thread_rng().gen_range(0..=ceiling_micros);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}
