//! # tessera-store-sqlite — sessions in SQLite
//!
//! [`SqliteStore`] keeps sessions in one table of a SQLite database file,
//! through a [`sqlx`] pool. It suits a single server (or several processes on
//! one machine) that wants sessions to survive restarts without running a
//! database server.
//!
//! ## Durability
//!
//! [`SqliteStore::connect`] opens the database in WAL mode with
//! `synchronous = FULL`: a write that returned has been synced to the
//! write-ahead log, so it survives the process being killed *and* the
//! operating system crashing or losing power. `synchronous = NORMAL` would
//! already survive a killed process (the log reaches the OS before a commit
//! returns) and only risks the last commits on an OS crash; FULL is chosen
//! anyway because a lost write here can be a lost *revocation* — a logout or
//! "sign out everywhere" that comes back to life after a power cut — and
//! because an application sharing the pool keeps its user tables in the same
//! file. An application that prefers NORMAL's throughput can build its own
//! options from [`SqliteStore::connect_options`] and use
//! [`SqliteStore::connect_with`].
//!
//! ## Schema and migrations
//!
//! The table is created by migrations embedded in this crate and run by
//! [`SqliteStore::connect`] or [`SqliteStore::migrate`]. They are plain sqlx
//! migrations, recorded in the database's `_sqlx_migrations` table, so an
//! application that shares the database and keeps its own sqlx migrations
//! shares that table with this crate. To keep the two from clashing:
//!
//! - this crate's migration versions all lie in `1_000_000..=1_999_999`; an
//!   application must not use versions in that range;
//! - this crate's migrator ignores applied migrations it does not know
//!   ([`Migrator::set_ignore_missing`]), and the application's migrator must
//!   do the same (`set_ignore_missing(true)`), or it will refuse to run after
//!   seeing this crate's versions.
//!
//! Data is kept as the exact bytes of [`SessionData::to_json`] so that it
//! round-trips exactly.
//!
//! ## Time and expiry
//!
//! Liveness is decided against this process's wall clock
//! ([`Timestamp::now`]), passed into every statement: a record whose
//! `expires_at` is not after now is never returned, written or revived.
//! SQLite has no native expiry, so dead rows stay in the file until
//! [`SessionStore::purge_expired`] deletes them; run it periodically with
//! [`SqliteStore::spawn_purge_task`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera::StoreError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use tessera::SessionEngine;
//! use tessera_store_sqlite::SqliteStore;
//!
//! let store = SqliteStore::connect("sqlite://sessions.db").await?;
//! let _purge = store.spawn_purge_task(Duration::from_secs(60));
//! let engine = SessionEngine::new(Arc::new(store));
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::Row;
use tessera::{DeviceInfo, SessionData, SessionKey, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome};

/// How long a connection waits for another writer (another process, or an
/// application statement on the shared pool) before giving up on the lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool [`SqliteStore::connect`] builds. WAL lets readers
/// run in parallel; writers are serialised anyway (see `write_gate`).
const MAX_CONNECTIONS: u32 = 8;

/// Rows deleted per purge statement: small enough that one statement holds
/// the write lock only briefly, so purging a backlog never stalls logins.
const PURGE_BATCH: i64 = 1000;

const COLUMNS: &str = "key, version, user_id, data, created_at, last_active, expires_at, device";

/// A [`SessionStore`] on a SQLite database file.
///
/// Cloning is cheap and shares the pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// SQLite admits one writer at a time and makes the others poll with
    /// sleeps (up to 100 ms each) until `busy_timeout`. Queueing this
    /// process's session writes here instead hands the lock over without
    /// sleeping; writers from other processes or from the application still
    /// fall back on `busy_timeout`.
    write_gate: Arc<tokio::sync::Mutex<()>>,
}

/// Creates the database file `path` empty with mode `0600` if it is missing
/// (SQLite would create it `0644`), unless `url` names an in-memory database.
fn create_private(path: &std::path::Path, url: &str) -> Result<(), StoreError> {
    let name = path.to_string_lossy();
    if name.is_empty() || name == ":memory:" || name.starts_with("file:sqlx-in-memory") || url.contains("mode=memory") {
        return Ok(());
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(StoreError::unavailable(error)),
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url` —
    /// `sqlite://path/to/file.db`, `sqlite:file.db`, or a plain file path —
    /// with the options of [`SqliteStore::connect_options`], and runs the
    /// migrations.
    ///
    /// Use a file: an in-memory database (`sqlite::memory:`) is private to
    /// each pooled connection, so a pool would see several empty databases.
    ///
    /// A file it creates gets mode `0600` on Unix (SQLite gives its `-wal`
    /// and `-shm` files the same mode): sessions are nobody else's business.
    /// An existing file keeps its mode.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = Self::connect_options(url)?;
        create_private(options.get_filename(), url)?;
        Self::connect_with(options).await
    }

    /// The options [`SqliteStore::connect`] uses for `url`: create the file if
    /// missing, WAL journal, `synchronous = FULL` (see the crate docs on
    /// durability), a busy time-out. Start from these to adjust them, or to
    /// build a pool shared with the application.
    pub fn connect_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
        let options = if url.starts_with("sqlite:") {
            SqliteConnectOptions::from_str(url).map_err(StoreError::unavailable)?
        } else {
            SqliteConnectOptions::new().filename(url)
        };
        Ok(options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT))
    }

    /// Opens a pool with `options` and runs the migrations.
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await
            .map_err(StoreError::unavailable)?;
        let store = Self::from_pool(pool);
        store.migrate().await?;
        Ok(store)
    }

    /// Uses an existing pool, so that an application can keep its own tables
    /// in the same database. Runs no migrations: call
    /// [`SqliteStore::migrate`]. The pool's options decide journal mode,
    /// `synchronous` and busy time-out; [`SqliteStore::connect_options`] gives
    /// the recommended ones.
    pub fn from_pool(pool: SqlitePool) -> Self {
        SqliteStore { pool, write_gate: Arc::new(tokio::sync::Mutex::new(())) }
    }

    /// Creates or upgrades the session table. Idempotent; safe to run from
    /// several processes at once (sqlx serialises migrations).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator().run(&self.pool).await.map_err(StoreError::unavailable)
    }

    /// The pool, for an application that shares it.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Closes the pool, waiting for connections to be returned, so that the
    /// file can be reopened or removed.
    pub async fn close(&self) {
        self.pool.close().await
    }

    /// Spawns a task on the current Tokio runtime that runs
    /// [`SessionStore::purge_expired`] every `interval` (the first run is
    /// immediate) until the returned handle is aborted. A failed purge is
    /// logged and retried at the next tick: dead rows are never returned
    /// anyway, they only take space.
    pub fn spawn_purge_task(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match store.purge_expired().await {
                    Ok(purged) => tracing::debug!(purged, "purged expired sessions"),
                    Err(error) => tracing::warn!(%error, "purging expired sessions failed"),
                }
            }
        })
    }

    /// Whether a live record exists under `key`, for telling a lost
    /// compare-and-swap (`Conflict`) from a dead record (`Missing`).
    async fn is_live(&self, key: &SessionKey, now: Timestamp) -> Result<bool, StoreError> {
        let found = sqlx::query("SELECT 1 FROM tessera_sessions WHERE key = ?1 AND expires_at > ?2")
            .bind(key.as_bytes().as_slice())
            .bind(now.as_millis())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(found.is_some())
    }
}

fn migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
}

/// A record's columns, encoded for binding.
struct Columns {
    version: i64,
    data: Vec<u8>,
    device: Vec<u8>,
}

impl Columns {
    fn of(record: &SessionRecord) -> Result<Self, StoreError> {
        Ok(Columns { version: version(record.version)?, data: record.data.to_json(), device: record.device.to_json() })
    }
}

fn version(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::Unavailable(format!("version {version} does not fit SQLite")))
}

/// Inserts `record`, or replaces a dead record under its key; a live one is
/// left alone (0 rows affected).
const INSERT_UNLESS_LIVE: &str = "INSERT INTO tessera_sessions \
     (key, version, user_id, data, created_at, last_active, expires_at, device) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) \
     ON CONFLICT (key) DO UPDATE SET version = excluded.version, user_id = excluded.user_id, \
     data = excluded.data, created_at = excluded.created_at, last_active = excluded.last_active, \
     expires_at = excluded.expires_at, device = excluded.device \
     WHERE tessera_sessions.expires_at <= ?9";

async fn insert_unless_live<'e, E>(
    executor: E,
    record: &SessionRecord,
    columns: &Columns,
    now: Timestamp,
) -> Result<bool, StoreError>
where
    E: sqlx::Executor<'e, Database = sqlx::Sqlite>,
{
    let result = sqlx::query(INSERT_UNLESS_LIVE)
        .bind(record.key.as_bytes().as_slice())
        .bind(columns.version)
        .bind(record.user_id.as_deref())
        .bind(columns.data.as_slice())
        .bind(record.created_at.as_millis())
        .bind(record.last_active.as_millis())
        .bind(record.expires_at.as_millis())
        .bind(columns.device.as_slice())
        .bind(now.as_millis())
        .execute(executor)
        .await
        .map_err(StoreError::unavailable)?;
    Ok(result.rows_affected() == 1)
}

/// Decodes a row selected with [`COLUMNS`]. Anything that is not what this
/// crate writes is [`StoreError::Corrupt`], so that the engine drops the
/// session instead of failing every request that carries its cookie.
fn decode(row: &SqliteRow) -> Result<SessionRecord, StoreError> {
    let key: Vec<u8> = row.try_get("key").map_err(StoreError::corrupt)?;
    let key: [u8; 32] = key
        .try_into()
        .map_err(|bytes: Vec<u8>| StoreError::Corrupt(format!("session key of {} bytes", bytes.len())))?;
    let version: i64 = row.try_get("version").map_err(StoreError::corrupt)?;
    let data: Vec<u8> = row.try_get("data").map_err(StoreError::corrupt)?;
    let device: Vec<u8> = row.try_get("device").map_err(StoreError::corrupt)?;
    Ok(SessionRecord {
        key: SessionKey::from_bytes(key),
        version: u64::try_from(version).map_err(|_| StoreError::Corrupt(format!("session version {version}")))?,
        user_id: row.try_get("user_id").map_err(StoreError::corrupt)?,
        data: SessionData::from_json(&data).map_err(StoreError::corrupt)?,
        created_at: Timestamp(row.try_get("created_at").map_err(StoreError::corrupt)?),
        last_active: Timestamp(row.try_get("last_active").map_err(StoreError::corrupt)?),
        expires_at: Timestamp(row.try_get("expires_at").map_err(StoreError::corrupt)?),
        device: DeviceInfo::from_json(&device),
    })
}

#[async_trait]
impl SessionStore for SqliteStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tessera_sessions WHERE key = ?1 AND expires_at > ?2");
        let row = sqlx::query(&sql)
            .bind(key.as_bytes().as_slice())
            .bind(Timestamp::now().as_millis())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::unavailable)?;
        row.as_ref().map(decode).transpose()
    }

    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError> {
        let columns = Columns::of(record)?;
        let _gate = self.write_gate.lock().await;
        Ok(match insert_unless_live(&self.pool, record, &columns, Timestamp::now()).await? {
            true => WriteOutcome::Written,
            false => WriteOutcome::Conflict,
        })
    }

    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError> {
        let columns = Columns::of(record)?;
        let expected_version = version(expected_version)?;
        let now = Timestamp::now();
        let _gate = self.write_gate.lock().await;
        let result = sqlx::query(
            "UPDATE tessera_sessions SET version = ?1, user_id = ?2, data = ?3, created_at = ?4, \
             last_active = ?5, expires_at = ?6, device = ?7 \
             WHERE key = ?8 AND version = ?9 AND expires_at > ?10",
        )
        .bind(columns.version)
        .bind(record.user_id.as_deref())
        .bind(columns.data.as_slice())
        .bind(record.created_at.as_millis())
        .bind(record.last_active.as_millis())
        .bind(record.expires_at.as_millis())
        .bind(columns.device.as_slice())
        .bind(record.key.as_bytes().as_slice())
        .bind(expected_version)
        .bind(now.as_millis())
        .execute(&self.pool)
        .await
        .map_err(StoreError::unavailable)?;
        if result.rows_affected() == 1 {
            return Ok(WriteOutcome::Written);
        }
        // Still under the gate, so no writer of this process changes the
        // record between the failed update and this look.
        Ok(match self.is_live(&record.key, now).await? {
            true => WriteOutcome::Conflict,
            false => WriteOutcome::Missing,
        })
    }

    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        let columns = Columns::of(record)?;
        let expected_version = version(expected_version)?;
        let now = Timestamp::now();
        let _gate = self.write_gate.lock().await;
        // IMMEDIATE takes the write lock up front: the version read below
        // cannot go stale before the writes that depend on it, and there is
        // no read-to-write lock upgrade that SQLite would refuse with BUSY.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(StoreError::unavailable)?;
        let current: Option<(i64,)> =
            sqlx::query_as("SELECT version FROM tessera_sessions WHERE key = ?1 AND expires_at > ?2")
                .bind(old_key.as_bytes().as_slice())
                .bind(now.as_millis())
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::unavailable)?;
        // Returning early drops `tx`, which rolls it back.
        match current {
            None => return Ok(WriteOutcome::Missing),
            Some((stored,)) if stored != expected_version => return Ok(WriteOutcome::Conflict),
            Some(_) => {}
        }
        // Deleting first also covers regenerating onto the same key, which
        // then is a plain overwrite.
        sqlx::query("DELETE FROM tessera_sessions WHERE key = ?1")
            .bind(old_key.as_bytes().as_slice())
            .execute(&mut *tx)
            .await
            .map_err(StoreError::unavailable)?;
        if !insert_unless_live(&mut *tx, record, &columns, now).await? {
            // The new key is taken by a live session (a 256-bit collision).
            return Ok(WriteOutcome::Conflict);
        }
        tx.commit().await.map_err(StoreError::unavailable)?;
        Ok(WriteOutcome::Written)
    }

    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let _gate = self.write_gate.lock().await;
        let result = sqlx::query(
            "UPDATE tessera_sessions SET last_active = ?1, expires_at = ?2 \
             WHERE key = ?3 AND expires_at > ?4 AND last_active < ?1",
        )
        .bind(last_active.as_millis())
        .bind(expires_at.as_millis())
        .bind(key.as_bytes().as_slice())
        .bind(now.as_millis())
        .execute(&self.pool)
        .await
        .map_err(StoreError::unavailable)?;
        if result.rows_affected() == 1 {
            return Ok(true);
        }
        // Not moved: either dead, or already touched later than this.
        self.is_live(key, now).await
    }

    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError> {
        let now = Timestamp::now();
        let _gate = self.write_gate.lock().await;
        let removed: Option<(i64,)> =
            sqlx::query_as("DELETE FROM tessera_sessions WHERE key = ?1 RETURNING expires_at")
                .bind(key.as_bytes().as_slice())
                .fetch_optional(&self.pool)
                .await
                .map_err(StoreError::unavailable)?;
        Ok(removed.is_some_and(|(expires_at,)| expires_at > now.as_millis()))
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM tessera_sessions WHERE user_id = ?1 AND expires_at > ?2");
        let rows = sqlx::query(&sql)
            .bind(user_id)
            .bind(Timestamp::now().as_millis())
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::unavailable)?;
        rows.iter().map(decode).collect()
    }

    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let _gate = self.write_gate.lock().await;
        // Dead rows of the user go too (they are garbage anyway) but only
        // live ones are counted as revoked.
        let removed: Vec<(i64,)> = sqlx::query_as(
            "DELETE FROM tessera_sessions WHERE user_id = ?1 AND (?2 IS NULL OR key <> ?2) RETURNING expires_at",
        )
        .bind(user_id)
        .bind(keep.map(|key| key.as_bytes().as_slice()))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::unavailable)?;
        Ok(removed.iter().filter(|(expires_at,)| *expires_at > now.as_millis()).count() as u64)
    }

    /// Deletes dead rows in batches of [`PURGE_BATCH`], letting other writers
    /// in between batches, until a batch comes back short.
    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = Timestamp::now();
        let mut purged = 0;
        loop {
            let batch = {
                let _gate = self.write_gate.lock().await;
                sqlx::query(
                    "DELETE FROM tessera_sessions WHERE rowid IN \
                     (SELECT rowid FROM tessera_sessions WHERE expires_at <= ?1 LIMIT ?2)",
                )
                .bind(now.as_millis())
                .bind(PURGE_BATCH)
                .execute(&self.pool)
                .await
                .map_err(StoreError::unavailable)?
                .rows_affected()
            };
            purged += batch;
            if batch < PURGE_BATCH as u64 {
                return Ok(purged);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(StoreError::unavailable)?;
        Ok(())
    }
}
