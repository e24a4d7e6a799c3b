//! # tessera-store-redis — sessions in Redis
//!
//! [`RedisStore`] keeps tessera sessions in Redis, standalone or Redis
//! Cluster, and passes `tessera-store-conformance` on both.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera::StoreError> {
//! use tessera_store_redis::RedisStore;
//! let standalone = RedisStore::connect("redis://127.0.0.1:6379/0").await?;
//! let cluster = RedisStore::connect("redis+cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000")
//!     .await?
//!     .with_prefix("myapp:");
//! # Ok(()) }
//! ```
//!
//! ## Layout
//!
//! - One session is one Redis **string** at `{prefix}s:{<key hex>}`: a
//!   short text header followed by a length-prefixed payload,
//!
//!   ```text
//!   t1:<version>:<created>:<last_active>:<expires_at>:<user length or ->:<data length>:<device length>:<user><data><device>
//!   ```
//!
//!   (times in decimal milliseconds; user length `-` when anonymous; data =
//!   the exact bytes of [`SessionData::to_json`], device =
//!   [`DeviceInfo::to_json`]). Loading is one `GET` and one bulk reply,
//!   which the client slices in place (no per-field replies to convert); the
//!   Lua scripts read the header with one `string.match`, and `touch`
//!   rewrites only the header. Redis frees the record by itself: every write
//!   sets `PEXPIREAT expires_at`, so
//!   [`purge_expired`](SessionStore::purge_expired) has nothing to do.
//! - A user's sessions are indexed in a sorted set at `{prefix}u:{<user>}`,
//!   member = session key hex, score = the latest `expires_at` announced for
//!   it. The user part is escaped (see [`RedisStore::user_key`]) so that no
//!   user ID can break the hash tag; every per-user key shares that tag and
//!   therefore one cluster slot.
//!
//! ## Upgrading from the hash layout
//!
//! Releases before the packed layout kept a session as a hash (fields `v`,
//! `u`, `d`, `c`, `a`, `e`, `dev`) under the **same key name**. Those records
//! stay valid, so an upgrade logs nobody out:
//!
//! - `load` sends `GET`; Redis answers `WRONGTYPE` for a hash without sending
//!   any data, and only then does the store read the hash with `HMGET`. The
//!   extra round trip is paid only for old records, never for the common
//!   hit or for a miss (unknown cookies cost one round trip, as before).
//! - Every script reads the current record by type (`GET`, and `HMGET` when
//!   that fails), so compare-and-swap, owners and `destroy_if_owner` see an
//!   old hash exactly as they see a packed record.
//! - Writes convert: `save` and `regenerate` store the packed value with
//!   `SET`, which replaces the hash in the same atomic script; `touch`
//!   rebuilds the packed value from the hash's fields. Old hashes therefore
//!   disappear with their session's first write or its expiry.
//!
//! Keeping the key name (rather than a new name under the same hash tag with
//! a fallback to the old one) means no old and new copy can ever exist side
//! by side, the owner indexes (which store key hex, not names) need nothing,
//! and a miss stays one round trip. The cost is the other direction: a
//! release before this one reads a packed record as corrupt (`WRONGTYPE`),
//! so do not run old and new releases against one Redis at the same time,
//! and do not roll back without accepting that sessions written since the
//! upgrade are lost.
//!
//! ## Atomicity
//!
//! Every write to a session is one Lua script, so compare-and-swap on
//! `version` is atomic and `save`, `touch` and `regenerate` never recreate a
//! missing record. A session record and its user's index live in different
//! slots, so they cannot be updated in one script on a cluster; the index is
//! maintained around the session write in an order that keeps the one
//! invariant that matters — *every live session of a user is in the user's
//! index with a score no earlier than its expiry* — so that revoking a user's
//! sessions never misses one:
//!
//! - members are added (`ZADD GT`) **before** the session write (on a
//!   standalone server, in the same script as the write, so that a save is
//!   one round trip); a failed write leaves a dangling member, which listing
//!   skips and score trimming eventually removes;
//! - members are removed only **after** their session is gone or has moved to
//!   another owner, and listing never removes a member whose session is merely
//!   absent (it may be a create in flight); it only trims members whose score
//!   has passed.
//!
//! How `regenerate` stays atomic on a cluster, where the old and the new
//! session live in different slots, is explained under "Regenerate" on
//! [`RedisStore`].
//!
//! Known limit of the two-slot design: if one session's owner is changed
//! twice concurrently (X → Y by one save and Y → X by the next, racing), the
//! first save's late removal from X's index can land after the second save
//! re-added it, leaving a session owned by X outside X's index until its next
//! save or touch. Owners change at login and logout, one request at a time,
//! so this needs two logins on one session racing each other.
//!
//! ## Failure behaviour
//!
//! The connection reconnects by itself after a server restart (the
//! `redis` crate's `ConnectionManager`, or the cluster connection's slot
//! refresh). Every store call is bounded by
//! [`RedisStoreConfig::op_timeout`] and fails with
//! [`StoreError::Unavailable`] rather than hanging while the server is down;
//! each call makes at most one connection attempt, bounded by
//! [`RedisStoreConfig::connect_timeout`], so a refused connection fails in
//! milliseconds and the first call after the server is back succeeds.
//!
//! [`SessionData::to_json`]: tessera::SessionData::to_json
//! [`DeviceInfo::to_json`]: tessera::DeviceInfo::to_json
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod keys;
mod packed;
mod scripts;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisError, RedisFuture, ScriptInvocation, Value};
use tessera::{DeviceInfo, SessionData, SessionKey, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome};

use crate::scripts::Scripts;

/// The URL scheme that selects Redis Cluster mode.
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// How a [`RedisStore`] connects and names its keys.
///
/// The defaults suit a server on the same network: a refused connection fails
/// at once, an unresponsive one within a few seconds.
#[derive(Debug, Clone)]
pub struct RedisStoreConfig {
    /// `redis://[user:pass@]host:port[/db]` for a standalone server, or
    /// `redis+cluster://[user:pass@]host1:port1,host2:port2,…` for a cluster
    /// (the nodes are seeds; the rest of the topology is discovered).
    pub url: String,
    /// Prepended to every key, so that several applications (or test runs)
    /// can share one Redis. Braces are escaped, since a `{` here would steal
    /// the hash tag from the part after it.
    pub prefix: String,
    /// Upper bound on one TCP connection attempt.
    pub connect_timeout: Duration,
    /// Upper bound on one reply from the server.
    pub response_timeout: Duration,
    /// Upper bound on a whole store call, reconnection and every round trip
    /// included. Deliberately independent of the engine's own time-out: the
    /// store must not leave futures parked on a dead server even when it is
    /// used without the engine.
    pub op_timeout: Duration,
}

impl RedisStoreConfig {
    /// The prefix used unless configured otherwise.
    pub const DEFAULT_PREFIX: &'static str = "tessera:";

    /// Defaults for `url`: prefix `tessera:`, 1 s to connect, 2 s per reply,
    /// 3 s per call.
    pub fn new(url: impl Into<String>) -> Self {
        RedisStoreConfig {
            url: url.into(),
            prefix: Self::DEFAULT_PREFIX.to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(2),
            op_timeout: Duration::from_secs(3),
        }
    }

    /// Sets the key prefix.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Connects with this configuration; see [`RedisStore::connect`].
    pub async fn connect(self) -> Result<RedisStore, StoreError> {
        RedisStore::connect_with(self).await
    }
}

/// The connection of either mode. Both variants multiplex concurrent
/// commands over shared sockets and are cheap to clone, so each store call
/// clones one instead of locking.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// Whether a standalone command failed before it was written to any socket,
/// so that sending it again cannot apply it twice.
///
/// After a failed reconnection the `ConnectionManager` keeps the failure and
/// hands it, as an I/O error "Reconnecting failed: …", to the next command,
/// which only then triggers a fresh attempt. Without a retry the first call
/// after the server comes back would fail for no reason; with it, that call
/// waits for the fresh attempt instead. A refused connection is likewise
/// never a half-sent command. Anything else (a reset mid-reply, a time-out)
/// may have been applied, and the compare-and-swap scripts are not
/// idempotent, so those are reported, not retried.
fn never_sent(error: &RedisError) -> bool {
    error.is_connection_refusal() || (error.is_io_error() && error.to_string().starts_with("Reconnecting failed"))
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => Box::pin(async move {
                match c.req_packed_command(cmd).await {
                    Err(e) if never_sent(&e) => c.req_packed_command(cmd).await,
                    other => other,
                }
            }),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => Box::pin(async move {
                match c.req_packed_commands(cmd, offset, count).await {
                    Err(e) if never_sent(&e) => c.req_packed_commands(cmd, offset, count).await,
                    other => other,
                }
            }),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A [`SessionStore`] on Redis or Redis Cluster.
///
/// Cloning is cheap and clones share the connection.
///
/// # Regenerate
///
/// On a **standalone** server, `regenerate` is one script that checks the old
/// record's version, deletes it and writes the new one: there is no instant
/// when both or neither are live.
///
/// On a **cluster** the two records live in different slots (their hash tags
/// are their own keys, which are random digests that cannot be chosen to
/// collide), and no script may touch two slots. `regenerate` therefore runs:
///
/// 1. add the new key to its user's index;
/// 2. *create-if-absent* the new record (a taken key is a conflict);
/// 3. *delete-if-version* the old record; if that finds another version or no
///    record, delete the new record again and return that outcome;
/// 4. remove the old key from its user's index.
///
/// Between steps 2 and 3 both keys are live. That is the safe side of the
/// contract: there is never a moment when *neither* is live (a request
/// carrying the old cookie keeps working until the swap), and once
/// `regenerate` returns [`WriteOutcome::Written`] the old key is dead. The
/// new key is known only to the caller until then, so nobody can observe the
/// overlap through it. If the call is cut short between steps 2 and 3 (a
/// time-out, a lost node), the old session is intact and the new record is an
/// orphan nobody holds a cookie for, freed by its expiry.
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    cluster: bool,
    prefix: Arc<str>,
    op_timeout: Duration,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.cluster)
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.op_timeout)
            .finish_non_exhaustive()
    }
}

/// What a record looks like on the wire to the scripts: `ARGV[1]` the
/// packed value exactly as stored, `ARGV[2]` its expiry.
struct Encoded {
    packed: Vec<u8>,
    expires_at: i64,
}

impl Encoded {
    fn new(record: &SessionRecord) -> Self {
        Encoded { packed: packed::pack(record), expires_at: record.expires_at.as_millis() }
    }

    fn push_args(&self, invocation: &mut ScriptInvocation<'_>) {
        invocation.arg(&self.packed).arg(self.expires_at);
    }
}

/// Status codes the scripts return for conditional writes.
fn outcome(status: i64) -> WriteOutcome {
    match status {
        1 => WriteOutcome::Written,
        2 => WriteOutcome::Missing,
        _ => WriteOutcome::Conflict,
    }
}

/// Maps a backend error. `WRONGTYPE` means something other than a session
/// sits under a session key, and the scripts answer `CORRUPT` for a value
/// they cannot parse: the record is unreadable, not the store.
fn backend(error: RedisError) -> StoreError {
    let text = error.to_string();
    if matches!(error.code(), Some("WRONGTYPE" | "CORRUPT")) || text.contains("WRONGTYPE") {
        StoreError::corrupt(text)
    } else {
        StoreError::unavailable(text)
    }
}

/// Splits `redis+cluster://[auth@]h1:p1,h2:p2` into `redis://` node URLs,
/// giving every node the credentials written on the first one.
fn cluster_nodes(url: &str) -> Result<Vec<String>, StoreError> {
    let rest = url
        .strip_prefix(CLUSTER_SCHEME)
        .ok_or_else(|| StoreError::unavailable(format!("not a {CLUSTER_SCHEME} URL")))?;
    let rest = rest.trim_end_matches('/');
    let mut auth = "";
    let mut nodes = Vec::new();
    for (i, part) in rest.split(',').map(str::trim).enumerate() {
        if part.is_empty() {
            return Err(StoreError::unavailable("redis cluster URL has an empty node"));
        }
        let (node_auth, host) = match part.rsplit_once('@') {
            Some((a, h)) => (a, h),
            None => ("", part),
        };
        if i == 0 {
            auth = node_auth;
        }
        let auth = if node_auth.is_empty() { auth } else { node_auth };
        nodes.push(if auth.is_empty() { format!("redis://{host}") } else { format!("redis://{auth}@{host}") });
    }
    Ok(nodes)
}

impl RedisStore {
    /// Connects to `url` with the defaults of [`RedisStoreConfig::new`].
    ///
    /// `redis://host:port[/db]` selects a standalone server and
    /// `redis+cluster://host1:port1,host2:port2,…` a cluster. The first
    /// connection is made here, so a wrong address fails at start-up instead
    /// of on the first request; later outages are survived (see the crate
    /// docs).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(RedisStoreConfig::new(url)).await
    }

    /// Connects with a full configuration.
    pub async fn connect_with(config: RedisStoreConfig) -> Result<Self, StoreError> {
        let cluster = config.url.starts_with(CLUSTER_SCHEME);
        let connecting = async {
            if cluster {
                let client = ClusterClientBuilder::new(cluster_nodes(&config.url)?)
                    .connection_timeout(config.connect_timeout)
                    .response_timeout(config.response_timeout)
                    // Few, short retries: a call must give up well within
                    // `op_timeout` instead of waiting out a long back-off.
                    .retries(2)
                    .min_retry_wait(50)
                    .max_retry_wait(500)
                    .build()
                    .map_err(backend)?;
                client.get_async_connection().await.map(Conn::Cluster).map_err(backend)
            } else {
                let client = redis::Client::open(config.url.as_str()).map_err(backend)?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(config.connect_timeout)
                    .set_response_timeout(config.response_timeout)
                    // Requests wait for a reconnection in progress, and the
                    // crate's back-off starts at about a second (plus
                    // jitter): with retries every call on a dead server
                    // would take 1-2 s. One attempt per call instead: a
                    // refused connection fails in microseconds, and the
                    // next call simply tries again, which is how the store
                    // finds the server once it is back.
                    .set_number_of_retries(0);
                ConnectionManager::new_with_config(client, manager).await.map(Conn::Single).map_err(backend)
            }
        };
        let conn = match tokio::time::timeout(config.op_timeout, connecting).await {
            Ok(conn) => conn?,
            Err(_) => {
                return Err(StoreError::unavailable(format!("redis did not answer within {:?}", config.op_timeout)))
            }
        };
        Ok(RedisStore {
            conn,
            cluster,
            prefix: keys::escape_prefix(&config.prefix).into(),
            op_timeout: config.op_timeout,
            scripts: Arc::new(Scripts::new()),
        })
    }

    /// Replaces the key prefix (default `tessera:`). Braces in it are escaped
    /// so they cannot capture the hash tag.
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = keys::escape_prefix(prefix).into();
        self
    }

    /// The key prefix in effect, as it appears in key names.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this store talks to a Redis Cluster, which decides how
    /// `regenerate` is carried out.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The name of the string holding the session under `key` (see "Layout"
    /// in the crate docs):
    /// `{prefix}s:{<key hex>}`. Public for operators and tests that inspect
    /// Redis directly.
    pub fn session_key(&self, key: &SessionKey) -> String {
        format!("{}s:{{{}}}", self.prefix, key.to_hex())
    }

    /// The name of the sorted set indexing `user_id`'s sessions:
    /// `{prefix}u:{<escaped user>}`.
    ///
    /// The user ID is escaped (bytes outside printable ASCII and `{`, `}`,
    /// `%` become `%XX`; the empty ID becomes a lone `%`) so that arbitrary
    /// IDs neither break nor empty the hash tag.
    pub fn user_index_key(&self, user_id: &str) -> String {
        format!("{}u:{{{}}}", self.prefix, keys::user_tag(user_id))
    }

    /// A key for other per-user data (throttle counters, revocation marks):
    /// `{prefix}u:{<escaped user>}:<name>`. It carries the same hash tag as
    /// [`user_index_key`](Self::user_index_key), so on a cluster it lands in
    /// the same slot and one Lua script may touch both.
    pub fn user_key(&self, user_id: &str, name: &str) -> String {
        format!("{}:{}", self.user_index_key(user_id), name)
    }

    /// Runs one store call under `op_timeout`, with its own handle on the
    /// shared connection.
    async fn bounded<T, F, Fut>(&self, call: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        match tokio::time::timeout(self.op_timeout, call(self.conn.clone())).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::unavailable(format!("redis did not answer within {:?}", self.op_timeout))),
        }
    }

    /// Announces `key` (expiring at `expires_at`) in `user`'s index.
    async fn index_add(
        &self,
        conn: &mut Conn,
        user: &str,
        key: &SessionKey,
        expires_at: Timestamp,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .scripts
            .index_add
            .key(self.user_index_key(user))
            .arg(key.to_hex())
            .arg(expires_at.as_millis())
            .invoke_async(conn)
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Drops `keys` from `user`'s index, once their sessions are gone or owned
    /// by someone else.
    async fn index_remove(&self, conn: &mut Conn, user: &str, keys: &[String]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let _: i64 =
            redis::cmd("ZREM").arg(self.user_index_key(user)).arg(keys).query_async(conn).await.map_err(backend)?;
        Ok(())
    }

    /// Reads and decodes one session; `None` if absent or expired.
    ///
    /// One `GET` of the packed value. A record written by a release before
    /// the packed layout is a hash, which `GET` refuses with `WRONGTYPE`
    /// (no data is sent); only then is it read with `HMGET`, a second round
    /// trip that lasts until the record's next write converts it.
    async fn read(&self, conn: &mut Conn, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let name = self.session_key(key);
        let record = match redis::cmd("GET").arg(&name).query_async::<Value>(conn).await {
            Ok(Value::Nil) => return Ok(None),
            Ok(Value::BulkString(bytes)) => packed::unpack(*key, &bytes)?,
            // Only the reply's kind: the value itself may be session data.
            Ok(other) => {
                let kind = match other {
                    Value::Array(_) => "an array",
                    Value::Map(_) => "a map",
                    Value::Int(_) => "an integer",
                    _ => "not a bulk string",
                };
                return Err(StoreError::corrupt(format!("unexpected reply to GET: {kind}")));
            }
            Err(e) if e.code() == Some("WRONGTYPE") => {
                // HMGET of the known fields in a fixed order: no field names
                // on the wire and no map to build.
                let fields: Vec<Option<Vec<u8>>> =
                    redis::cmd("HMGET").arg(&name).arg(&FIELDS[..]).query_async(conn).await.map_err(backend)?;
                if fields.iter().all(Option::is_none) {
                    return Ok(None);
                }
                decode_hash(*key, &fields)?
            }
            Err(e) => return Err(backend(e)),
        };
        // Redis expires by its own clock; the contract is about the wall
        // clock of the application, so re-check against ours too.
        if record.expires_at < Timestamp::now() {
            return Ok(None);
        }
        Ok(Some(record))
    }
}

/// The fields of a session hash of the releases before the packed layout,
/// in the order [`decode_hash`] reads them.
const FIELDS: [&str; 7] = ["v", "u", "d", "c", "a", "e", "dev"];

/// Decodes the values of [`FIELDS`] of a hash written by an older release
/// (see "Upgrading" in the crate docs). Any missing or malformed field other
/// than the owner and the device is corruption.
fn decode_hash(key: SessionKey, fields: &[Option<Vec<u8>>]) -> Result<SessionRecord, StoreError> {
    let field = |index: usize| -> Option<&[u8]> { fields.get(index).and_then(|value| value.as_deref()) };
    let text = |index: usize| -> Result<&str, StoreError> {
        let name = FIELDS[index];
        let bytes = field(index).ok_or_else(|| StoreError::corrupt(format!("session hash has no field {name:?}")))?;
        std::str::from_utf8(bytes).map_err(|_| StoreError::corrupt(format!("session field {name:?} is not UTF-8")))
    };
    let millis = |index: usize| -> Result<Timestamp, StoreError> {
        let value = text(index)?;
        value.parse::<i64>().map(Timestamp).map_err(|_| {
            StoreError::corrupt(format!("session field {:?} is not a timestamp: {value:?}", FIELDS[index]))
        })
    };
    let version = text(0)?;
    let version = version
        .parse::<u64>()
        .map_err(|_| StoreError::corrupt(format!("session version is not a number: {version:?}")))?;
    let user_id = match field(1) {
        None => None,
        Some(_) => Some(text(1)?.to_owned()),
    };
    let data_bytes = field(2).ok_or_else(|| StoreError::corrupt("session hash has no field \"d\""))?;
    let data = SessionData::from_json(data_bytes).map_err(|e| StoreError::corrupt(format!("session data: {e}")))?;
    Ok(SessionRecord {
        key,
        version,
        user_id,
        data,
        created_at: millis(3)?,
        last_active: millis(4)?,
        expires_at: millis(5)?,
        // Device details are informational; the engine's own decoder is
        // lenient, and a missing field is as good as empty.
        device: field(6).map(DeviceInfo::from_json).unwrap_or_default(),
    })
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        self.bounded(|mut conn| async move { self.read(&mut conn, key).await }).await
    }

    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError> {
        self.bounded(|mut conn| async move {
            let encoded = Encoded::new(record);
            let written: i64 = match (&record.user_id, self.cluster) {
                (Some(user), false) => {
                    // Standalone: the index and the session in one script.
                    let mut invocation = self.scripts.create_indexed.key(self.session_key(&record.key));
                    invocation.key(self.user_index_key(user));
                    encoded.push_args(&mut invocation);
                    invocation.arg("").arg(record.key.to_hex());
                    invocation.invoke_async(&mut conn).await.map_err(backend)?
                }
                (user, _) => {
                    if let Some(user) = user {
                        self.index_add(&mut conn, user, &record.key, record.expires_at).await?;
                    }
                    let mut invocation = self.scripts.create.key(self.session_key(&record.key));
                    encoded.push_args(&mut invocation);
                    invocation.invoke_async(&mut conn).await.map_err(backend)?
                }
            };
            Ok(if written == 1 { WriteOutcome::Written } else { WriteOutcome::Conflict })
        })
        .await
    }

    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError> {
        self.bounded(|mut conn| async move {
            let encoded = Encoded::new(record);
            let (status, previous_owner): (i64, Option<String>) = match (&record.user_id, self.cluster) {
                (Some(user), false) => {
                    // Standalone: the index and the compare-and-swap in one
                    // script, so a save is one round trip.
                    let mut invocation = self.scripts.save_indexed.key(self.session_key(&record.key));
                    invocation.key(self.user_index_key(user));
                    encoded.push_args(&mut invocation);
                    invocation.arg(expected_version).arg(record.key.to_hex());
                    invocation.invoke_async(&mut conn).await.map_err(backend)?
                }
                (user, _) => {
                    if let Some(user) = user {
                        self.index_add(&mut conn, user, &record.key, record.expires_at).await?;
                    }
                    let mut invocation = self.scripts.save.key(self.session_key(&record.key));
                    encoded.push_args(&mut invocation);
                    invocation.arg(expected_version);
                    invocation.invoke_async(&mut conn).await.map_err(backend)?
                }
            };
            let outcome = outcome(status);
            if outcome == WriteOutcome::Written {
                if let Some(previous) = previous_owner.filter(|p| Some(p) != record.user_id.as_ref()) {
                    self.index_remove(&mut conn, &previous, &[record.key.to_hex()]).await?;
                }
            }
            Ok(outcome)
        })
        .await
    }

    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        self.bounded(|mut conn| async move {
            // Standalone servers announce the new key in the owner's index
            // inside the swap script; a cluster must do it first.
            let indexed_in_script = !self.cluster && record.user_id.is_some();
            if let (Some(user), false) = (&record.user_id, indexed_in_script) {
                self.index_add(&mut conn, user, &record.key, record.expires_at).await?;
            }
            let encoded = Encoded::new(record);
            let new_name = self.session_key(&record.key);
            let (status, previous_owner): (i64, Option<String>) = if self.cluster {
                // See "Regenerate" on the type: new first, then old.
                let mut create = self.scripts.create.key(&new_name);
                encoded.push_args(&mut create);
                let created: i64 = create.invoke_async(&mut conn).await.map_err(backend)?;
                if created != 1 {
                    (0, None)
                } else {
                    let swapped: (i64, Option<String>) = self
                        .scripts
                        .delete_if_version
                        .key(self.session_key(old_key))
                        .arg(expected_version)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(backend)?;
                    if swapped.0 != 1 {
                        let _: i64 = redis::cmd("DEL").arg(&new_name).query_async(&mut conn).await.map_err(backend)?;
                    }
                    swapped
                }
            } else if let Some(user) = record.user_id.as_deref().filter(|_| indexed_in_script) {
                let mut both = self.scripts.regenerate_both_indexed.key(self.session_key(old_key));
                both.key(&new_name).key(self.user_index_key(user));
                encoded.push_args(&mut both);
                both.arg(expected_version).arg(record.key.to_hex());
                both.invoke_async(&mut conn).await.map_err(backend)?
            } else {
                let mut both = self.scripts.regenerate_both.key(self.session_key(old_key));
                both.key(&new_name);
                encoded.push_args(&mut both);
                both.arg(expected_version);
                both.invoke_async(&mut conn).await.map_err(backend)?
            };
            let outcome = outcome(status);
            if outcome == WriteOutcome::Written {
                if let Some(previous) = previous_owner {
                    self.index_remove(&mut conn, &previous, &[old_key.to_hex()]).await?;
                }
            } else if let (Some(user), false) = (&record.user_id, indexed_in_script) {
                // Tidy the member announced above; it would be harmless anyway.
                self.index_remove(&mut conn, user, &[record.key.to_hex()]).await?;
            }
            Ok(outcome)
        })
        .await
    }

    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError> {
        self.bounded(|mut conn| async move {
            let (status, owner): (i64, Option<String>) = self
                .scripts
                .touch
                .key(self.session_key(key))
                .arg(last_active.as_millis())
                .arg(expires_at.as_millis())
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            if status == 2 {
                // The owner is only known once the script has read it, so the
                // score follows the write here. The old score was already
                // later than "now" (the record was live), so listing cannot
                // trim the member in between.
                if let Some(owner) = owner {
                    self.index_add(&mut conn, &owner, key, expires_at).await?;
                }
            }
            Ok(status != 0)
        })
        .await
    }

    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError> {
        self.bounded(|mut conn| async move {
            let (deleted, owner): (i64, Option<String>) =
                self.scripts.destroy.key(self.session_key(key)).invoke_async(&mut conn).await.map_err(backend)?;
            if let Some(owner) = owner {
                self.index_remove(&mut conn, &owner, &[key.to_hex()]).await?;
            }
            Ok(deleted > 0)
        })
        .await
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.bounded(|mut conn| async move {
            let members: Vec<String> = self
                .scripts
                .index_list
                .key(self.user_index_key(user_id))
                .arg(Timestamp::now().as_millis())
                .invoke_async(&mut conn)
                .await
                .map_err(backend)?;
            let keys: Vec<SessionKey> = members.iter().filter_map(|m| SessionKey::from_hex(m)).collect();
            // One command per session, all in flight at once over the
            // multiplexed connection (and routed per slot on a cluster).
            let reads = keys.iter().map(|key| {
                let mut conn = conn.clone();
                async move { self.read(&mut conn, key).await }
            });
            let mut records = Vec::with_capacity(keys.len());
            for result in futures::future::join_all(reads).await {
                match result {
                    // Skipped, not removed: the member may belong to a create
                    // in flight (members are added before the session).
                    Ok(Some(record)) if record.user_id.as_deref() == Some(user_id) => records.push(record),
                    Ok(_) => {}
                    // A corrupt record cannot be used to sign in (the engine
                    // deletes it on load); hiding it keeps the device list
                    // usable. Revocation does not read records, so it still
                    // removes it.
                    Err(StoreError::Corrupt(_)) => {}
                    Err(other) => return Err(other),
                }
            }
            Ok(records)
        })
        .await
    }

    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        self.bounded(|mut conn| async move {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(self.user_index_key(user_id))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            let keep = keep.map(SessionKey::to_hex);
            let victims: Vec<SessionKey> = members
                .iter()
                .filter(|m| Some(m.as_str()) != keep.as_deref())
                .filter_map(|m| SessionKey::from_hex(m))
                .collect();
            let deletions = victims.iter().map(|key| {
                let mut conn = conn.clone();
                async move {
                    let deleted: i64 = self
                        .scripts
                        .destroy_if_owner
                        .key(self.session_key(key))
                        .arg(user_id)
                        .invoke_async(&mut conn)
                        .await
                        .map_err(backend)?;
                    Ok::<_, StoreError>((key, deleted > 0))
                }
            });
            let mut removed = Vec::new();
            for result in futures::future::join_all(deletions).await {
                let (key, deleted) = result?;
                if deleted {
                    removed.push(key.to_hex());
                }
            }
            // Only members whose session this call deleted leave the index;
            // an absent session may be a create in flight.
            self.index_remove(&mut conn, user_id, &removed).await?;
            Ok(removed.len() as u64)
        })
        .await
    }

    /// Always 0: Redis frees every session record at its `PEXPIREAT`, and
    /// user indexes trim their expired members whenever they are listed and
    /// expire as a whole with their longest-lived member. There is no
    /// catalogue of users to sweep, and none is needed.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(|mut conn| async move {
            let _: Value = redis::cmd("PING").query_async(&mut conn).await.map_err(backend)?;
            Ok(())
        })
        .await
    }
}
