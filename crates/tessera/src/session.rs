//! The per-request session handle and its change log.

use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::clock::Timestamp;
use crate::data::{to_value, SessionData};
use crate::error::SessionDataError;
use crate::id::{SessionHandle, SessionId, SessionKey};
use crate::record::{DeviceInfo, SessionRecord};

/// A re-runnable read-modify-write of one value.
pub(crate) type UpdateFn = Arc<dyn Fn(Option<&Value>) -> Result<Value, SessionDataError> + Send + Sync>;

/// One change a request made. Changes are kept in order so that, when another
/// request saved the session first, they can be replayed on the fresh record
/// instead of overwriting it.
#[derive(Clone)]
pub(crate) enum Change {
    Set(String, Value),
    Remove(String),
    Update(String, UpdateFn),
    Clear,
    SetUser(Option<String>),
}

impl Change {
    fn apply(&self, data: &mut SessionData, user_id: &mut Option<String>) {
        match self {
            Change::Set(key, value) => {
                data.insert_value(key.clone(), value.clone());
            }
            Change::Remove(key) => {
                data.remove(key);
            }
            Change::Update(key, update) => {
                // An update whose closure fails on the fresh value (a type
                // changed under it) leaves that value alone.
                if let Ok(value) = update(data.get_value(key)) {
                    data.insert_value(key.clone(), value);
                }
            }
            Change::Clear => data.clear(),
            Change::SetUser(user) => *user_id = user.clone(),
        }
    }
}

/// Replays `changes` on `data`/`user_id`.
pub(crate) fn replay(
    changes: &[Change],
    mut data: SessionData,
    mut user_id: Option<String>,
) -> (SessionData, Option<String>) {
    for change in changes {
        change.apply(&mut data, &mut user_id);
    }
    (data, user_id)
}

/// Everything the engine needs to know about a request's session.
pub(crate) struct SessionState {
    /// The stored record this request started from; `None` for a session not
    /// (or no longer) stored.
    pub base: Option<SessionRecord>,
    /// The working copy of the data, with `changes` applied to `base`;
    /// `None` while it is identical to the stored data, so that a request
    /// that only reads (the commonest) never copies it. See [`Self::data`].
    pub data: Option<SessionData>,
    /// The working copy of the owner.
    pub user_id: Option<String>,
    /// What this request changed, in order.
    pub changes: Vec<Change>,
    /// The ID the session will be saved under when it is new or regenerated.
    pub next_id: Option<SessionId>,
    /// A stored session this request ended, to delete on commit.
    pub destroyed: Option<SessionKey>,
    /// The request presented a cookie that names no live session.
    pub stale_cookie: bool,
    /// The client of this request.
    pub device: DeviceInfo,
    /// Sealed-cookie sessions only: when the cookie's identity was issued.
    pub issued_at: Option<Timestamp>,
    /// Sealed-cookie sessions only: the cookie must be re-sealed (older key).
    pub reseal: bool,
    /// The ID the request presented, when it named a live session.
    pub current_id: Option<SessionId>,
    /// The owner of a session this request destroyed (sealed cookies revoke by user).
    pub destroyed_user: Option<String>,
}

/// The data of a session that holds nothing.
static EMPTY_DATA: std::sync::LazyLock<SessionData> = std::sync::LazyLock::new(SessionData::new);

impl SessionState {
    /// The working copy of the data.
    pub(crate) fn data(&self) -> &SessionData {
        match (&self.data, &self.base) {
            (Some(data), _) => data,
            (None, Some(base)) => &base.data,
            (None, None) => &EMPTY_DATA,
        }
    }

    /// The working copies of the data and the owner, for a change; the data
    /// is copied from the stored record on the first change.
    pub(crate) fn working_mut(&mut self) -> (&mut SessionData, &mut Option<String>) {
        let base = &self.base;
        let data = self.data.get_or_insert_with(|| base.as_ref().map(|base| base.data.clone()).unwrap_or_default());
        (data, &mut self.user_id)
    }

    /// Whether the working copy differs from what is stored.
    pub(crate) fn data_changed(&self) -> bool {
        match (&self.data, &self.base) {
            (None, _) => false,
            (Some(data), Some(base)) => data.may_differ_from(&base.data),
            (Some(data), None) => !data.is_empty(),
        }
    }
}

/// A request's session.
///
/// Reads and writes are local and synchronous; the web layer commits the
/// changes once the handler has answered, with one conditional write. If
/// another request saved the session meanwhile, the changes made here are
/// replayed on the newer record, so concurrent requests never lose each
/// other's updates. Cloning gives another handle to the same session.
///
/// ```
/// # use tessera::{ExpiryPolicy, Session, SessionEngine, CookieConfig};
/// # fn demo(session: &Session) -> Result<(), tessera::SessionDataError> {
/// session.insert("theme", &"dark")?;
/// let visits: i64 = session.update("visits", |old: Option<i64>| old.unwrap_or(0) + 1)?;
/// let theme: Option<String> = session.get("theme")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session(pub(crate) Arc<Mutex<SessionState>>);

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state();
        f.debug_struct("Session")
            .field("stored", &state.base.is_some())
            .field("user_id", &state.user_id)
            .field("entries", &state.data().len())
            .finish()
    }
}

impl Session {
    pub(crate) fn new(state: SessionState) -> Self {
        Session(Arc::new(Mutex::new(state)))
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, SessionState> {
        // A panic while holding this lock cannot leave the state half-written
        // in a way that matters more than the panic itself; keep serving.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn record(&self, change: Change) {
        let mut state = self.state();
        let (data, user_id) = state.working_mut();
        change.apply(data, user_id);
        state.changes.push(change);
    }

    /// The value under `key`, deserialized as `T`.
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionDataError> {
        self.state().data().get(key)
    }

    /// Sets `key` to `value`.
    pub fn insert<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), SessionDataError> {
        let value = to_value(key, value)?;
        self.record(Change::Set(key.to_owned(), value));
        Ok(())
    }

    /// Removes `key`, returning its previous value as `T` when it had one.
    pub fn remove<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, SessionDataError> {
        let previous = self.get(key);
        self.record(Change::Remove(key.to_owned()));
        previous
    }

    /// Reads, changes and writes `key` in one step that survives concurrency:
    /// `update` is applied now and, if another request saved the session
    /// first, applied again on the newer value before saving. It must
    /// therefore be a pure function of the old value.
    ///
    /// Returns the new value as computed on this request's copy. A stored
    /// value that is not a `T` counts as absent.
    pub fn update<T, F>(&self, key: &str, update: F) -> Result<T, SessionDataError>
    where
        T: Serialize + DeserializeOwned,
        F: Fn(Option<T>) -> T + Send + Sync + 'static,
    {
        let owned_key = key.to_owned();
        let update_value: UpdateFn = Arc::new(move |old: Option<&Value>| {
            let old = old.and_then(|value| T::deserialize(value).ok());
            to_value(&owned_key, &update(old))
        });
        let mut state = self.state();
        // Computed on the working copy (made now if need be), so that the
        // stored data is decoded once, in the copy, and not also in the base.
        let data = state.working_mut().0;
        let new_value = update_value(data.get_value(key))?;
        let typed =
            T::deserialize(&new_value).map_err(|source| SessionDataError::Decode { key: key.to_owned(), source })?;
        data.insert_value(key.to_owned(), new_value);
        state.changes.push(Change::Update(key.to_owned(), update_value));
        Ok(typed)
    }

    /// Number of values in the session.
    pub fn len(&self) -> usize {
        self.state().data().len()
    }

    /// Whether the session holds no values.
    pub fn is_empty(&self) -> bool {
        self.state().data().is_empty()
    }

    /// Removes every value (the owner stays).
    pub fn clear(&self) {
        self.record(Change::Clear);
    }

    /// The user this session belongs to.
    pub fn user_id(&self) -> Option<String> {
        self.state().user_id.clone()
    }

    /// Logs `user_id` in: records the owner and gives the session a new ID, so
    /// an ID planted before login (session fixation) is worthless after it.
    pub fn login(&self, user_id: impl Into<String>) {
        self.record(Change::SetUser(Some(user_id.into())));
        self.regenerate();
    }

    /// Logs out: the session is destroyed in the store and its cookie cleared.
    /// Anything stored afterwards in this request (a flash message, say)
    /// starts a new session with a new ID.
    pub fn logout(&self) {
        self.destroy();
    }

    /// Gives the session a new ID on commit, keeping its data. The old ID
    /// stops working at the same moment the new one starts.
    pub fn regenerate(&self) {
        self.state().next_id = Some(SessionId::generate());
    }

    /// Ends the session: on commit the record is deleted and the cookie cleared.
    pub fn destroy(&self) {
        let mut state = self.state();
        if let Some(base) = state.base.take() {
            state.destroyed = Some(base.key);
            state.destroyed_user = base.user_id;
        }
        state.current_id = None;
        state.data = Some(SessionData::new());
        state.user_id = None;
        state.changes.clear();
        state.next_id = None;
    }

    /// The key the session has, or will have once committed; `None` for a
    /// session that holds nothing and will not be stored. Web layers bind
    /// CSRF tokens to it.
    pub fn key(&self) -> Option<SessionKey> {
        let mut state = self.state();
        if let Some(next) = &state.next_id {
            return Some(next.key());
        }
        if let Some(base) = &state.base {
            return Some(base.key);
        }
        if state.data().is_empty() && state.user_id.is_none() {
            return None;
        }
        let id = SessionId::generate();
        let key = id.key();
        state.next_id = Some(id);
        Some(key)
    }

    /// The public handle of the session (see [`SessionKey::handle`]).
    pub fn handle(&self) -> Option<SessionHandle> {
        self.key().map(|key| key.handle())
    }

    /// Whether a stored session was found for this request.
    pub fn is_stored(&self) -> bool {
        self.state().base.is_some()
    }

    /// When the stored session was created.
    pub fn created_at(&self) -> Option<Timestamp> {
        self.state().base.as_ref().map(|base| base.created_at)
    }

    /// Whether this request changed who the session belongs to: a
    /// [`login`](Session::login) (of anyone, the same user again included),
    /// or the end of a session that had an owner (a logout). Web layers
    /// rotate secrets bound to the browser rather than the session then,
    /// such as the pre-session CSRF secret.
    pub fn owner_changed(&self) -> bool {
        let state = self.state();
        state.destroyed_user.is_some() || state.changes.iter().any(|change| matches!(change, Change::SetUser(_)))
    }

    /// Whether this request changed anything that a commit would write.
    pub fn is_modified(&self) -> bool {
        let state = self.state();
        !state.changes.is_empty() || state.destroyed.is_some() || (state.next_id.is_some() && state.base.is_some())
    }
}
