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
use crate::sealed::{CookieSealer, RevocationMarks, SealedSession};
use crate::session::{replay, Change, Session, SessionState};
use crate::store::{SessionStore, WriteOutcome};

/// What the web layer must do with the session cookie after a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieUpdate {
    /// Leave the browser's cookie as it is.
    Keep,
    /// Send this cookie value (a session ID, or a sealed session), to be kept for `max_age`.
    Set {
        /// The cookie's new value.
        value: String,
        /// How long the browser should keep it: the rest of the absolute time-out.
        max_age: Duration,
    },
    /// Tell the browser to delete the cookie.
    Remove,
}

/// Where the engine keeps sessions.
#[derive(Clone)]
enum Backend {
    /// Records in a server-side store, the cookie holding only the ID.
    Store(Arc<dyn SessionStore>),
    /// The whole session sealed in the cookie, with server-side revocation marks.
    Sealed { sealer: Arc<dyn CookieSealer>, marks: Arc<dyn RevocationMarks> },
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
    backend: Backend,
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
        Self::with_backend(Backend::Store(store))
    }

    /// An engine that keeps each session wholly in its cookie, sealed by
    /// `sealer`, with logout and revocation made real by `marks`.
    ///
    /// Differences from server-side stores, by nature: concurrent requests
    /// cannot be merged (the browser keeps whichever cookie it received
    /// last), sessions cannot be listed, and revocation is per user — logout
    /// ends every cookie of that user issued before it.
    pub fn sealed(sealer: Arc<dyn CookieSealer>, marks: Arc<dyn RevocationMarks>) -> Self {
        Self::with_backend(Backend::Sealed { sealer, marks })
    }

    fn with_backend(backend: Backend) -> Self {
        SessionEngine {
            backend,
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

    /// The server-side store, unless sessions are sealed in cookies.
    pub fn store(&self) -> Option<&Arc<dyn SessionStore>> {
        match &self.backend {
            Backend::Store(store) => Some(store),
            Backend::Sealed { .. } => None,
        }
    }

    /// Whether sessions live wholly in sealed cookies.
    pub fn is_sealed(&self) -> bool {
        matches!(self.backend, Backend::Sealed { .. })
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
            data: Some(SessionData::new()),
            user_id: None,
            changes: Vec::new(),
            next_id: None,
            destroyed: None,
            stale_cookie,
            device,
            issued_at: None,
            reseal: false,
            current_id: None,
            destroyed_user: None,
        })
    }

    /// Loads the session named by a cookie value.
    ///
    /// A missing, malformed, unknown, tampered or expired cookie gives a
    /// fresh, empty session (never an error); an expired or undecodable record
    /// is deleted. Only a store failure is an error, so that a store outage is
    /// never mistaken for a logged-out user.
    ///
    /// Without a cookie (or with one that is no session ID) no store is
    /// asked and the returned future is ready at once.
    pub fn load<'a>(
        &'a self,
        cookie_value: Option<&'a str>,
        device: DeviceInfo,
    ) -> EngineFuture<'a, Result<Session, StoreError>> {
        match &self.backend {
            Backend::Store(store) => match cookie_value.and_then(SessionId::parse) {
                Some(id) => EngineFuture::boxed(self.load_stored(&**store, id, device)),
                None => EngineFuture::ready(Ok(self.fresh(cookie_value.is_some(), device))),
            },
            Backend::Sealed { sealer, marks } => match cookie_value {
                Some(value) => EngineFuture::boxed(self.load_sealed(&**sealer, &**marks, Some(value), device)),
                None => EngineFuture::ready(Ok(self.fresh(false, device))),
            },
        }
    }

    async fn load_stored(
        &self,
        store: &dyn SessionStore,
        id: SessionId,
        device: DeviceInfo,
    ) -> Result<Session, StoreError> {
        let now = self.clock.now();
        let key = id.key();
        match self.call(store.load(&key)).await {
            Ok(Some(record)) if !self.expiry.is_expired(&record, now) => {
                Ok(self.existing(record, Some(id), device, None, false))
            }
            Ok(Some(_)) | Err(StoreError::Corrupt(_)) => {
                // Best effort: the store forgets it by itself eventually.
                let _ = self.call(store.destroy(&key)).await;
                Ok(self.fresh(true, device))
            }
            Ok(None) => Ok(self.fresh(true, device)),
            Err(error) => Err(error),
        }
    }

    async fn load_sealed(
        &self,
        sealer: &dyn CookieSealer,
        marks: &dyn RevocationMarks,
        cookie_value: Option<&str>,
        device: DeviceInfo,
    ) -> Result<Session, StoreError> {
        let now = self.clock.now();
        let Some(value) = cookie_value else { return Ok(self.fresh(false, device)) };
        let Some(opened) = sealer.open(value) else { return Ok(self.fresh(true, device)) };
        let Ok(sealed) = serde_json::from_slice::<SealedSession>(&opened.payload) else {
            return Ok(self.fresh(true, device));
        };
        let Some(sid) = SessionId::parse(&sealed.sid) else { return Ok(self.fresh(true, device)) };
        let record = SessionRecord {
            key: sid.key(),
            version: 0,
            user_id: sealed.user_id,
            data: sealed.data,
            created_at: sealed.created_at,
            last_active: sealed.last_active,
            expires_at: self.expiry.expires_at(sealed.created_at, sealed.last_active),
            device: DeviceInfo::default(),
        };
        if self.expiry.is_expired(&record, now) {
            return Ok(self.fresh(true, device));
        }
        if let Some(user) = &record.user_id {
            if let Some(mark) = self.call(marks.valid_after(user)).await? {
                if sealed.issued_at <= mark {
                    return Ok(self.fresh(true, device));
                }
            }
        }
        Ok(self.existing(record, Some(sid), device, Some(sealed.issued_at), opened.stale_key))
    }

    fn existing(
        &self,
        record: SessionRecord,
        current_id: Option<SessionId>,
        device: DeviceInfo,
        issued_at: Option<Timestamp>,
        reseal: bool,
    ) -> Session {
        Session::new(SessionState {
            // The working copy of the data is made on the first change.
            data: None,
            user_id: record.user_id.clone(),
            base: Some(record),
            changes: Vec::new(),
            next_id: None,
            destroyed: None,
            stale_cookie: false,
            device,
            issued_at,
            reseal,
            current_id,
            destroyed_user: None,
        })
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
    ///
    /// A commit with nothing to write (most requests: the session was only
    /// read and no touch is due) is decided here, without awaiting anything:
    /// its future is ready and small. Only a commit that writes is a boxed
    /// future, so the request futures that embed this one stay small (a large
    /// future is a large allocation on every request, which glibc serves far
    /// more slowly than a small one).
    pub fn commit<'a>(&'a self, session: &'a Session) -> EngineFuture<'a, Result<CookieUpdate, StoreError>> {
        match &self.backend {
            Backend::Store(store) => {
                let now = self.clock.now();
                let (destroyed, cookie, step) = {
                    let state = session.state();
                    let cookie = if state.stale_cookie { CookieUpdate::Remove } else { CookieUpdate::Keep };
                    (state.destroyed, cookie, self.first_step(&state, now))
                };
                if destroyed.is_none() && matches!(step, FirstStep::Nothing) {
                    return EngineFuture::ready(Ok(cookie));
                }
                let first = StoredCommit { now, destroyed, cookie, step };
                EngineFuture::boxed(self.commit_stored(&**store, session, first))
            }
            Backend::Sealed { sealer, marks } => {
                let plan = {
                    let state = session.state();
                    CommitPlan {
                        base: state.base.clone(),
                        changes: state.changes.clone(),
                        next_id: state.next_id.clone(),
                        destroyed: state.destroyed,
                        destroyed_user: state.destroyed_user.clone(),
                        current_id: state.current_id.clone(),
                        stale_cookie: state.stale_cookie,
                        issued_at: state.issued_at,
                        reseal: state.reseal,
                    }
                };
                EngineFuture::boxed(self.commit_sealed(&**sealer, &**marks, plan))
            }
        }
    }

    /// Commits to a server-side store what [`Self::first_step`] decided.
    /// The first attempt writes the working copy as it is (it already holds
    /// this request's changes applied to what was read); only after a lost
    /// compare-and-swap is the change log copied out and replayed on the
    /// newer record.
    async fn commit_stored(
        &self,
        store: &dyn SessionStore,
        session: &Session,
        first: StoredCommit,
    ) -> Result<CookieUpdate, StoreError> {
        let StoredCommit { now, destroyed, mut cookie, step } = first;
        if let Some(old) = destroyed {
            self.call(store.destroy(&old)).await?;
            cookie = CookieUpdate::Remove;
        }
        match step {
            FirstStep::Nothing => Ok(cookie),
            FirstStep::Touch { key, created_at } => {
                let expires_at = self.expiry.expires_at(created_at, now);
                self.call(store.touch(&key, now, expires_at)).await?;
                Ok(cookie)
            }
            FirstStep::Create { mut record, mut id } => {
                // A taken key means a 256-bit collision; retrying is only
                // here so that a broken RNG fails loudly instead of looping.
                for _ in 0..3 {
                    if self.call(store.create(&record)).await? == WriteOutcome::Written {
                        return Ok(self.set_cookie(id.encode(), record.created_at, now));
                    }
                    id = SessionId::generate();
                    record.key = id.key();
                }
                Err(StoreError::Unavailable("could not allocate a unique session key".into()))
            }
            FirstStep::Write { record, expected_version, old_key, regenerate } => {
                let write = Write { record, expected_version, old_key, regenerate };
                self.write_until_settled(store, session, write, cookie, now).await
            }
        }
    }

    /// What the first attempt of a stored commit does, decided under the
    /// session's lock without copying anything a read-only request has.
    fn first_step(&self, state: &SessionState, now: Timestamp) -> FirstStep {
        match &state.base {
            None => {
                let data = state.data();
                if data.is_empty() && state.user_id.is_none() {
                    return FirstStep::Nothing;
                }
                let id = state.next_id.clone().unwrap_or_else(SessionId::generate);
                let record = SessionRecord {
                    key: id.key(),
                    version: 1,
                    user_id: state.user_id.clone(),
                    data: data.clone(),
                    created_at: now,
                    last_active: now,
                    expires_at: self.expiry.expires_at(now, now),
                    device: state.device.clone(),
                };
                FirstStep::Create { record, id }
            }
            Some(base) => {
                let changed = state.data_changed() || state.user_id != base.user_id;
                if state.next_id.is_none() && !changed {
                    return match self.expiry.touch_due(base, now) {
                        true => FirstStep::Touch { key: base.key, created_at: base.created_at },
                        false => FirstStep::Nothing,
                    };
                }
                let device = match state.next_id {
                    Some(_) => state.device.clone(),
                    None => base.device.clone(),
                };
                let record = self.successor(
                    base,
                    state.data().clone(),
                    state.user_id.clone(),
                    state.next_id.as_ref(),
                    device,
                    now,
                );
                FirstStep::Write {
                    record,
                    expected_version: base.version,
                    old_key: base.key,
                    regenerate: state.next_id.clone(),
                }
            }
        }
    }

    /// The record that replaces `base`: its data and owner, one version up,
    /// active now, under a new key when regenerating.
    fn successor(
        &self,
        base: &SessionRecord,
        data: SessionData,
        user_id: Option<String>,
        regenerate: Option<&SessionId>,
        device: DeviceInfo,
        now: Timestamp,
    ) -> SessionRecord {
        let last_active = now.max(base.last_active);
        SessionRecord {
            key: regenerate.map(SessionId::key).unwrap_or(base.key),
            version: base.version + 1,
            user_id,
            data,
            created_at: base.created_at,
            last_active,
            expires_at: self.expiry.expires_at(base.created_at, last_active),
            device,
        }
    }

    /// Compare-and-swap writes until one lands: on a conflict the newer
    /// record is loaded and the change log replayed on it.
    async fn write_until_settled(
        &self,
        store: &dyn SessionStore,
        session: &Session,
        mut write: Write,
        cookie: CookieUpdate,
        now: Timestamp,
    ) -> Result<CookieUpdate, StoreError> {
        let mut changes: Option<Vec<Change>> = None;
        for attempt in 1..=self.max_attempts {
            let outcome = match &write.regenerate {
                Some(_) => self.call(store.regenerate(&write.old_key, write.expected_version, &write.record)).await?,
                None => self.call(store.save(&write.record, write.expected_version)).await?,
            };
            match outcome {
                WriteOutcome::Written => {
                    return Ok(match &write.regenerate {
                        Some(id) => self.set_cookie(id.encode(), write.record.created_at, now),
                        None => cookie,
                    });
                }
                WriteOutcome::Missing => return Ok(CookieUpdate::Remove),
                WriteOutcome::Conflict => {
                    let fresh = match self.call(store.load(&write.old_key)).await? {
                        Some(fresh) if !self.expiry.is_expired(&fresh, now) => fresh,
                        _ => return Ok(CookieUpdate::Remove),
                    };
                    backoff(attempt).await;
                    let changes = changes.get_or_insert_with(|| session.state().changes.clone());
                    let (data, user_id) = replay(changes, fresh.data.clone(), fresh.user_id.clone());
                    if write.regenerate.is_none() && data == fresh.data && user_id == fresh.user_id {
                        self.touch_if_due(store, &fresh, now).await?;
                        return Ok(cookie);
                    }
                    let device = match &write.regenerate {
                        Some(_) => std::mem::take(&mut write.record.device),
                        None => fresh.device.clone(),
                    };
                    write.record = self.successor(&fresh, data, user_id, write.regenerate.as_ref(), device, now);
                    write.expected_version = fresh.version;
                }
            }
        }
        Err(StoreError::Contention(self.max_attempts))
    }

    async fn commit_sealed(
        &self,
        sealer: &dyn CookieSealer,
        marks: &dyn RevocationMarks,
        plan: CommitPlan,
    ) -> Result<CookieUpdate, StoreError> {
        let now = self.clock.now();
        let mut cookie = if plan.stale_cookie { CookieUpdate::Remove } else { CookieUpdate::Keep };
        if let Some(user) = &plan.destroyed_user {
            // The old cookie cannot be deleted from the browser of a thief:
            // make every cookie of this user issued until now worthless.
            self.call(marks.revoke_before(user, now)).await?;
        }
        if plan.destroyed.is_some() {
            cookie = CookieUpdate::Remove;
        }
        let (base_data, base_user, created_at, last_active) = match &plan.base {
            Some(base) => (base.data.clone(), base.user_id.clone(), base.created_at, base.last_active),
            None => (SessionData::new(), None, now, now),
        };
        let (data, user_id) = replay(&plan.changes, base_data, base_user);
        let changed = match &plan.base {
            Some(base) => data != base.data || user_id != base.user_id,
            None => !data.is_empty() || user_id.is_some(),
        };
        let regenerate = plan.next_id.is_some() && (plan.base.is_some() || changed);
        let touch = plan.base.as_ref().is_some_and(|base| self.expiry.touch_due(base, now));
        if !(changed || regenerate || touch || plan.reseal) {
            return Ok(cookie);
        }
        let sid = match (&plan.next_id, &plan.current_id) {
            (Some(id), _) | (None, Some(id)) => id.encode(),
            (None, None) => SessionId::generate().encode(),
        };
        let issued_at = match (&plan.base, plan.issued_at) {
            (Some(_), Some(issued_at)) if !regenerate => issued_at,
            // A new identity must postdate the user's revocation mark, even
            // within the millisecond of a logout.
            _ => match &user_id {
                Some(user) => match self.call(marks.valid_after(user)).await? {
                    Some(mark) => now.max(Timestamp(mark.as_millis().saturating_add(1))),
                    None => now,
                },
                None => now,
            },
        };
        let sealed = SealedSession { sid, user_id, data, created_at, last_active: now.max(last_active), issued_at };
        self.seal(sealer, &sealed)
    }

    fn seal(&self, sealer: &dyn CookieSealer, sealed: &SealedSession) -> Result<CookieUpdate, StoreError> {
        let payload = serde_json::to_vec(sealed).map_err(StoreError::corrupt)?;
        let value = sealer.seal(&payload);
        let size = self.cookie.cookie_name().len() + value.len() + COOKIE_ATTRIBUTES_ALLOWANCE;
        if size > MAX_COOKIE_BYTES {
            return Err(StoreError::TooLarge { size, limit: MAX_COOKIE_BYTES });
        }
        Ok(self.set_cookie(value, sealed.created_at, self.clock.now()))
    }

    async fn touch_if_due(
        &self,
        store: &dyn SessionStore,
        base: &SessionRecord,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        if self.expiry.touch_due(base, now) {
            let expires_at = self.expiry.expires_at(base.created_at, now);
            self.call(store.touch(&base.key, now, expires_at)).await?;
        }
        Ok(())
    }

    fn set_cookie(&self, value: String, created_at: Timestamp, now: Timestamp) -> CookieUpdate {
        let max_age = self.expiry.absolute_deadline(created_at).since(now);
        CookieUpdate::Set { value, max_age }
    }

    /// The live sessions of a user, newest activity first. Sealed-cookie
    /// sessions are not known to the server: the list is empty.
    pub async fn sessions_of(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let Backend::Store(store) = &self.backend else { return Ok(Vec::new()) };
        let now = self.clock.now();
        let mut records = self.call(store.list_for_user(user_id)).await?;
        records.retain(|record| !self.expiry.is_expired(record, now));
        records.sort_by_key(|record| std::cmp::Reverse(record.last_active));
        Ok(records)
    }

    /// Ends the session of `user_id` whose public handle is `handle`.
    /// Returns whether one was found; a handle of another user's session
    /// matches nothing. Sealed-cookie sessions cannot be ended one by one.
    pub async fn revoke(&self, user_id: &str, handle: &str) -> Result<bool, StoreError> {
        let Backend::Store(store) = &self.backend else { return Ok(false) };
        let records = self.call(store.list_for_user(user_id)).await?;
        let target = records.iter().find(|record| record.key.handle().matches(handle));
        match target {
            Some(record) => self.call(store.destroy(&record.key)).await,
            None => Ok(false),
        }
    }

    /// Ends every session of `user_id` except `keep`. Returns how many ended
    /// (for sealed cookies, which cannot be counted, 0 — and `keep` cannot be
    /// spared: the caller re-issues its own session, e.g. by regenerating).
    pub async fn revoke_all(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Store(store) => self.call(store.destroy_for_user(user_id, keep)).await,
            Backend::Sealed { marks, .. } => {
                self.call(marks.revoke_before(user_id, self.clock.now())).await?;
                Ok(0)
            }
        }
    }

    /// Frees expired records (for stores without native expiry).
    pub async fn purge_expired(&self) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::Store(store) => self.call(store.purge_expired()).await,
            Backend::Sealed { .. } => Ok(0),
        }
    }

    /// Whether the store (or the revocation marks) answers, within the time-out.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Store(store) => self.call(store.ping()).await,
            Backend::Sealed { marks, .. } => self.call(marks.ping()).await,
        }
    }

    /// The handle of a record, for device lists.
    pub fn handle_of(record: &SessionRecord) -> SessionHandle {
        record.key.handle()
    }
}

/// Browsers keep cookies of at most 4096 bytes (name, value and attributes).
const MAX_COOKIE_BYTES: usize = 4096;
/// Room kept for `; HttpOnly; Secure; SameSite=…; Path=/; Max-Age=…; Domain=…`.
const COOKIE_ATTRIBUTES_ALLOWANCE: usize = 96;

/// What a commit works from, copied out of the session so no lock is held
/// across store calls.
struct CommitPlan {
    base: Option<SessionRecord>,
    changes: Vec<Change>,
    next_id: Option<SessionId>,
    current_id: Option<SessionId>,
    destroyed: Option<SessionKey>,
    destroyed_user: Option<String>,
    stale_cookie: bool,
    issued_at: Option<Timestamp>,
    reseal: bool,
}

/// The first move of a commit to a server-side store.
enum FirstStep {
    /// Nothing to write.
    Nothing,
    /// Only the idle deadline moves.
    Touch { key: SessionKey, created_at: Timestamp },
    /// A new session.
    Create { record: SessionRecord, id: SessionId },
    /// A changed (or regenerated) stored session.
    Write { record: SessionRecord, expected_version: u64, old_key: SessionKey, regenerate: Option<SessionId> },
}

/// What [`SessionEngine::commit`] decided before its first store call.
struct StoredCommit {
    now: Timestamp,
    destroyed: Option<SessionKey>,
    cookie: CookieUpdate,
    step: FirstStep,
}

/// The future of [`SessionEngine::load`] and [`SessionEngine::commit`]:
/// ready at once when the call needs no store (no cookie to look up,
/// nothing to write), a boxed store call otherwise. Either way it is small,
/// so the request futures that embed it stay small too.
pub struct EngineFuture<'a, T>(EngineFutureState<'a, T>);

/// The two shapes of an [`EngineFuture`].
enum EngineFutureState<'a, T> {
    Ready(std::future::Ready<T>),
    Boxed(std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>),
}

impl<'a, T> EngineFuture<'a, T> {
    fn ready(value: T) -> Self {
        EngineFuture(EngineFutureState::Ready(std::future::ready(value)))
    }

    fn boxed(future: impl Future<Output = T> + Send + 'a) -> Self {
        EngineFuture(EngineFutureState::Boxed(Box::pin(future)))
    }
}

impl<T> Future for EngineFuture<'_, T> {
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        // Both shapes are `Unpin` (`Ready` always, a pinned box by
        // construction), so the wrapper is too.
        match &mut self.get_mut().0 {
            EngineFutureState::Ready(ready) => std::pin::Pin::new(ready).poll(cx),
            EngineFutureState::Boxed(boxed) => boxed.as_mut().poll(cx),
        }
    }
}

impl<T> std::fmt::Debug for EngineFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.0 {
            EngineFutureState::Ready(_) => "ready",
            EngineFutureState::Boxed(_) => "calling the store",
        };
        f.debug_tuple("EngineFuture").field(&state).finish()
    }
}

/// A compare-and-swap write in progress.
struct Write {
    record: SessionRecord,
    expected_version: u64,
    old_key: SessionKey,
    regenerate: Option<SessionId>,
}

/// Jittered back-off after a lost compare-and-swap, so that a crowd of
/// writers on one session spreads out instead of colliding again in lockstep.
async fn backoff(attempt: u32) {
    let ceiling_micros = 200u64 << attempt.min(6);
    let micros = rand::thread_rng().gen_range(0..=ceiling_micros);
    tokio::time::sleep(Duration::from_micros(micros)).await;
}
