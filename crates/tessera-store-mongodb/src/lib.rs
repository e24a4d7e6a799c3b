//! # tessera-store-mongodb — sessions in MongoDB
//!
//! [`MongoStore`] implements [`tessera::SessionStore`] on one collection,
//! `tessera_sessions`, through the official [`mongodb`] driver (Tokio,
//! rustls).
//!
//! ```no_run
//! # async fn demo() -> Result<(), tessera::StoreError> {
//! let store = tessera_store_mongodb::MongoStore::connect("mongodb://127.0.0.1:27017/app").await?;
//! let engine = tessera::SessionEngine::new(std::sync::Arc::new(store));
//! # Ok(()) }
//! ```
//!
//! ## Documents
//!
//! One document per session:
//!
//! | field | BSON | what |
//! | --- | --- | --- |
//! | `_id` | binary (32 bytes) | the [`SessionKey`], never the session ID |
//! | `version` | int64 | the compare-and-swap version |
//! | `user_id` | string or null | the owner |
//! | `data` | binary | the exact bytes of [`SessionData::to_json`] |
//! | `created_at`, `last_active` | int64 | milliseconds since the epoch |
//! | `expires_at` | date | the deadline, for the TTL index and the store's own checks |
//! | `device` | binary | [`DeviceInfo::to_json`] |
//!
//! Data is binary rather than a BSON document because converting JSON to BSON
//! does not keep every number (`u64::MAX`, `-0.0`) exactly, and sessions must
//! round-trip exactly.
//!
//! ## Indexes and expiry
//!
//! [`MongoStore::connect`] (or [`MongoStore::create_indexes`]) creates a TTL
//! index on `expires_at` (`expireAfterSeconds: 0`) and a partial index on
//! `user_id` (string values only) for [`SessionStore::list_for_user`]. TTL
//! deletion is lazy (MongoDB's monitor runs once a minute), so every read and
//! write also checks `expires_at` against the application's clock: an
//! expired document is never returned, saved, touched or counted, even while
//! it is still stored. [`SessionStore::purge_expired`] deletes expired
//! documents at once, in batches of [`PURGE_BATCH`].
//!
//! ## Compare-and-swap
//!
//! `save` is one `findOneAndUpdate` whose filter names the key, the expected
//! version and a deadline still in the future: single-document writes are
//! atomic, so of several writers with the same expected version exactly one
//! matches. `touch` is one update with an aggregation pipeline that moves the
//! deadlines only forward. `create` is an insert whose duplicate-key error
//! means "taken" (an expired document still holding the key is replaced,
//! under a filter that only matches while it is expired).
//!
//! `regenerate` deletes the old document and inserts the new one in a
//! multi-document transaction, retried on transient transaction errors. MongoDB
//! allows transactions only on replica sets and sharded clusters, so a
//! standalone `mongod` is refused at [`MongoStore::connect`]; a single-node
//! replica set is enough.
//!
//! ## What it was tested against
//!
//! SecantusDB 0.7.0b3, a single-node server speaking the MongoDB wire
//! protocol (see `scripts/secantus.sh`), not MongoDB itself: every operation
//! above is documented MongoDB behaviour, and SecantusDB supports each of
//! them (pipeline updates, partial and TTL indexes, transactions).
//!
//! ## Outages
//!
//! Unless the URL says otherwise, the driver gives up selecting a server after
//! [`DEFAULT_SERVER_SELECTION_TIMEOUT`], so calls fail with
//! [`StoreError::Unavailable`] instead of hanging while the server is down,
//! and it reconnects by itself once the server is back.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, Binary, Bson, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, ClientSession, Collection, Database, IndexModel};
use tessera::{DeviceInfo, SessionData, SessionKey, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome};

/// Re-exported so that callers build clients with the driver version this
/// crate was built against.
pub use mongodb;

/// The collection sessions are kept in.
pub const COLLECTION: &str = "tessera_sessions";

/// How long a call waits to find a usable server before failing with
/// [`StoreError::Unavailable`], unless the URL sets `serverSelectionTimeoutMS`.
/// Shorter than the engine's default store time-out (3 s), so an outage
/// reports the driver's error rather than a bare time-out.
pub const DEFAULT_SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// How long establishing one connection may take, unless the URL sets
/// `connectTimeoutMS`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Most documents one purge round deletes.
pub const PURGE_BATCH: i64 = 1000;

/// How often `regenerate` retries a transaction that failed with a transient
/// error (a write conflict with a concurrent writer) before giving up.
const TRANSACTION_ATTEMPTS: u32 = 5;

/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;

/// A [`SessionStore`] on MongoDB.
///
/// Cloning is cheap and shares the client's connection pool.
#[derive(Debug, Clone)]
pub struct MongoStore {
    client: Client,
    sessions: Collection<Document>,
}

impl MongoStore {
    /// Connects to `url` (a `mongodb://HOST[:PORT][,…]/DATABASE` URL; the
    /// database is required), checks that the deployment supports
    /// transactions and creates the indexes, so that a misconfigured or
    /// unreachable server is reported at start-up.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect_lazy(url).await?;
        store.check_deployment().await?;
        store.create_indexes().await?;
        Ok(store)
    }

    /// A store whose client connects on first use, for processes that must
    /// start while the server is down. No index is created: call
    /// [`create_indexes`](Self::create_indexes) once the server answers. Only
    /// a malformed URL (or one without a database) is an error here.
    pub async fn connect_lazy(url: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(url).await.map_err(StoreError::unavailable)?;
        options.server_selection_timeout.get_or_insert(DEFAULT_SERVER_SELECTION_TIMEOUT);
        options.connect_timeout.get_or_insert(DEFAULT_CONNECT_TIMEOUT);
        options.app_name.get_or_insert_with(|| "tessera".to_owned());
        let database = options
            .default_database
            .clone()
            .ok_or_else(|| StoreError::unavailable("the MongoDB URL must name a database: mongodb://HOST:PORT/DB"))?;
        let client = Client::with_options(options).map_err(StoreError::unavailable)?;
        Ok(Self::from_database(client.database(&database)))
    }

    /// A store on `database` of an existing client, for applications that
    /// share one client between the store and their own collections. Nothing
    /// is checked or created: call [`create_indexes`](Self::create_indexes).
    pub fn from_database(database: Database) -> Self {
        MongoStore { client: database.client().clone(), sessions: database.collection(COLLECTION) }
    }

    /// The driver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The sessions collection.
    pub fn collection(&self) -> &Collection<Document> {
        &self.sessions
    }

    /// Refuses a standalone server, on which `regenerate`'s transaction
    /// cannot run.
    async fn check_deployment(&self) -> Result<(), StoreError> {
        let hello =
            self.client.database("admin").run_command(doc! { "hello": 1 }).await.map_err(StoreError::unavailable)?;
        let replica_set = hello.get_str("setName").is_ok();
        let sharded = hello.get_str("msg") == Ok("isdbgrid");
        if replica_set || sharded {
            Ok(())
        } else {
            Err(StoreError::unavailable(
                "the MongoDB server is a standalone mongod; sessions need transactions, \
                 which need a replica set (a single-node one will do) or a sharded cluster",
            ))
        }
    }

    /// Creates the TTL index on `expires_at` and the partial index on
    /// `user_id`. Idempotent; safe to run from several processes at once.
    pub async fn create_indexes(&self) -> Result<(), StoreError> {
        let ttl = IndexModel::builder()
            .keys(doc! { "expires_at": 1 })
            .options(
                IndexOptions::builder()
                    .name("tessera_sessions_expires_at".to_owned())
                    .expire_after(Duration::ZERO)
                    .build(),
            )
            .build();
        let by_user = IndexModel::builder()
            .keys(doc! { "user_id": 1 })
            .options(
                IndexOptions::builder()
                    .name("tessera_sessions_user_id".to_owned())
                    .partial_filter_expression(doc! { "user_id": { "$type": "string" } })
                    .build(),
            )
            .build();
        self.sessions.create_indexes([ttl, by_user]).await.map_err(StoreError::unavailable)?;
        Ok(())
    }

    /// How many live documents the collection holds (a count over the
    /// `expires_at` index).
    pub async fn count_live(&self) -> Result<u64, StoreError> {
        self.sessions.count_documents(doc! { "expires_at": { "$gt": now() } }).await.map_err(StoreError::unavailable)
    }

    /// Whether a live document is stored under `key`.
    async fn live(&self, key: &SessionKey, now: DateTime) -> Result<bool, StoreError> {
        let found = self
            .sessions
            .find_one(doc! { "_id": key_bson(key), "expires_at": { "$gt": now } })
            .projection(doc! { "_id": 1 })
            .await
            .map_err(StoreError::unavailable)?;
        Ok(found.is_some())
    }

    /// One attempt at `regenerate`'s transaction. Errors are the driver's,
    /// so that the caller can see their transient-error labels.
    async fn regenerate_once(
        &self,
        session: &mut ClientSession,
        old_key: &SessionKey,
        expected_version: i64,
        record: &Document,
        new_key: &SessionKey,
        now: DateTime,
    ) -> Result<WriteOutcome, mongodb::error::Error> {
        session.start_transaction().await?;
        let removed = self
            .sessions
            .delete_one(doc! {
                "_id": key_bson(old_key),
                "version": expected_version,
                "expires_at": { "$gt": now },
            })
            .session(&mut *session)
            .await?
            .deleted_count;
        if removed != 1 {
            session.abort_transaction().await?;
            return Ok(WriteOutcome::Missing); // Refined by the caller.
        }
        // A dead document may still hold the new key; it resurrects nothing.
        self.sessions
            .delete_one(doc! { "_id": key_bson(new_key), "expires_at": { "$lte": now } })
            .session(&mut *session)
            .await?;
        match self.sessions.insert_one(record).session(&mut *session).await {
            Ok(_) => {}
            Err(error) if is_duplicate(&error) => {
                // A live record holds the new key (a 256-bit collision):
                // keep the old session rather than lose either.
                session.abort_transaction().await?;
                return Ok(WriteOutcome::Conflict);
            }
            Err(error) => return Err(error),
        }
        // A commit whose outcome is unknown may be retried as it is.
        loop {
            match session.commit_transaction().await {
                Ok(()) => return Ok(WriteOutcome::Written),
                Err(error) if error.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT) => continue,
                Err(error) => return Err(error),
            }
        }
    }
}

fn now() -> DateTime {
    DateTime::from_millis(Timestamp::now().as_millis())
}

fn key_bson(key: &SessionKey) -> Binary {
    Binary { subtype: BinarySubtype::Generic, bytes: key.as_bytes().to_vec() }
}

fn bytes(bytes: Vec<u8>) -> Binary {
    Binary { subtype: BinarySubtype::Generic, bytes }
}

fn version_bson(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| StoreError::corrupt(format!("version {version} does not fit an int64")))
}

/// The fields of `record` other than `_id`, for inserts and `$set`.
fn fields(record: &SessionRecord) -> Result<Document, StoreError> {
    Ok(doc! {
        "version": version_bson(record.version)?,
        "user_id": record.user_id.as_deref().map(Bson::from).unwrap_or(Bson::Null),
        "data": bytes(record.data.to_json()),
        "created_at": record.created_at.as_millis(),
        "last_active": record.last_active.as_millis(),
        "expires_at": DateTime::from_millis(record.expires_at.as_millis()),
        "device": bytes(record.device.to_json()),
    })
}

fn encode(record: &SessionRecord) -> Result<Document, StoreError> {
    let mut document = doc! { "_id": key_bson(&record.key) };
    document.extend(fields(record)?);
    Ok(document)
}

fn decode(document: &Document) -> Result<SessionRecord, StoreError> {
    let corrupt = |field: &str, e: &dyn std::fmt::Display| StoreError::corrupt(format!("{field}: {e}"));
    let binary = |field: &str| match document.get(field) {
        Some(Bson::Binary(binary)) => Ok(binary.bytes.as_slice()),
        Some(other) => Err(StoreError::corrupt(format!("{field}: not binary but {:?}", other.element_type()))),
        None => Err(StoreError::corrupt(format!("{field}: missing"))),
    };
    let key = <[u8; 32]>::try_from(binary("_id")?)
        .map_err(|_| StoreError::corrupt(format!("_id has {} bytes, not 32", binary("_id").map_or(0, <[u8]>::len))))?;
    let version = document.get_i64("version").map_err(|e| corrupt("version", &e))?;
    let version = u64::try_from(version).map_err(|_| StoreError::corrupt(format!("negative version {version}")))?;
    let user_id = match document.get("user_id") {
        None | Some(Bson::Null) => None,
        Some(Bson::String(user)) => Some(user.clone()),
        Some(other) => {
            return Err(StoreError::corrupt(format!("user_id: not a string but {:?}", other.element_type())))
        }
    };
    let data = SessionData::from_json(binary("data")?).map_err(|e| corrupt("session data", &e))?;
    let created_at = document.get_i64("created_at").map_err(|e| corrupt("created_at", &e))?;
    let last_active = document.get_i64("last_active").map_err(|e| corrupt("last_active", &e))?;
    let expires_at = document.get_datetime("expires_at").map_err(|e| corrupt("expires_at", &e))?;
    // Device details are informational: garbage gives empty info.
    let device = binary("device").map(DeviceInfo::from_json).unwrap_or_default();
    Ok(SessionRecord {
        key: SessionKey::from_bytes(key),
        version,
        user_id,
        data,
        created_at: Timestamp(created_at),
        last_active: Timestamp(last_active),
        expires_at: Timestamp(expires_at.timestamp_millis()),
        device,
    })
}

/// The server's error code, for write and command errors.
fn error_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(write)) => Some(write.code),
        ErrorKind::Command(command) => Some(command.code),
        _ => None,
    }
}

fn is_duplicate(error: &mongodb::error::Error) -> bool {
    error_code(error) == Some(DUPLICATE_KEY)
}

#[async_trait]
impl SessionStore for MongoStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let found = self
            .sessions
            .find_one(doc! { "_id": key_bson(key), "expires_at": { "$gt": now() } })
            .await
            .map_err(StoreError::unavailable)?;
        found.as_ref().map(decode).transpose()
    }

    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError> {
        let document = encode(record)?;
        match self.sessions.insert_one(&document).await {
            Ok(_) => Ok(WriteOutcome::Written),
            Err(error) if is_duplicate(&error) => {
                // Taken, perhaps by a dead document the TTL monitor has not
                // removed yet: replace it only while it is still expired.
                let replaced = self
                    .sessions
                    .replace_one(doc! { "_id": key_bson(&record.key), "expires_at": { "$lte": now() } }, &document)
                    .await
                    .map_err(StoreError::unavailable)?
                    .matched_count;
                Ok(if replaced == 1 { WriteOutcome::Written } else { WriteOutcome::Conflict })
            }
            Err(error) => Err(StoreError::unavailable(error)),
        }
    }

    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError> {
        let now = now();
        // The versioned findOneAndUpdate: atomic on the one document, so only
        // one of several savers with the same expected version matches.
        let matched = self
            .sessions
            .find_one_and_update(
                doc! {
                    "_id": key_bson(&record.key),
                    "version": version_bson(expected_version)?,
                    "expires_at": { "$gt": now },
                },
                doc! { "$set": fields(record)? },
            )
            .projection(doc! { "_id": 1 })
            .await
            .map_err(StoreError::unavailable)?;
        if matched.is_some() {
            return Ok(WriteOutcome::Written);
        }
        Ok(if self.live(&record.key, now).await? { WriteOutcome::Conflict } else { WriteOutcome::Missing })
    }

    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        let now = now();
        let expected_version = version_bson(expected_version)?;
        let document = encode(record)?;
        let mut session = self.client.start_session().await.map_err(StoreError::unavailable)?;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            let result =
                self.regenerate_once(&mut session, old_key, expected_version, &document, &record.key, now).await;
            if result.is_err() {
                // Leave no transaction open on the session; the server may
                // have aborted it already, so a failure here says nothing.
                let _ = session.abort_transaction().await;
            }
            match result {
                Ok(outcome) => break outcome,
                // A write conflict with a concurrent writer of the old key:
                // run the whole transaction again against what it left.
                Err(error) if error.contains_label(TRANSIENT_TRANSACTION_ERROR) && attempt < TRANSACTION_ATTEMPTS => {
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                }
                Err(error) if error.contains_label(TRANSIENT_TRANSACTION_ERROR) => {
                    return Err(StoreError::Contention(attempt));
                }
                Err(error) => return Err(StoreError::unavailable(error)),
            }
        };
        if outcome == WriteOutcome::Missing {
            // The old document did not match: gone, or another version.
            return Ok(if self.live(old_key, now).await? { WriteOutcome::Conflict } else { WriteOutcome::Missing });
        }
        Ok(outcome)
    }

    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError> {
        // One pipeline update, matching every live document: within a $set
        // stage every expression sees the document as it was, so the deadline
        // moves only if last_active moves forward.
        let last_active = last_active.as_millis();
        let found = self
            .sessions
            .update_one(
                doc! { "_id": key_bson(key), "expires_at": { "$gt": now() } },
                vec![doc! { "$set": {
                    "expires_at": {
                        "$cond": [
                            { "$lt": ["$last_active", last_active] },
                            DateTime::from_millis(expires_at.as_millis()),
                            "$expires_at",
                        ]
                    },
                    "last_active": { "$max": ["$last_active", last_active] },
                } }],
            )
            .await
            .map_err(StoreError::unavailable)?
            .matched_count;
        Ok(found == 1)
    }

    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError> {
        // Expired documents are deleted too (they are garbage), but only a
        // live one counts as "removed", matching what `load` would have shown.
        let removed = self
            .sessions
            .find_one_and_delete(doc! { "_id": key_bson(key) })
            .projection(doc! { "expires_at": 1 })
            .await
            .map_err(StoreError::unavailable)?;
        Ok(removed.and_then(|d| d.get_datetime("expires_at").ok().copied()).is_some_and(|at| at > now()))
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        let documents: Vec<Document> = self
            .sessions
            .find(doc! { "user_id": user_id, "expires_at": { "$gt": now() } })
            .sort(doc! { "created_at": 1, "_id": 1 })
            .await
            .map_err(StoreError::unavailable)?
            .try_collect()
            .await
            .map_err(StoreError::unavailable)?;
        documents.iter().map(decode).collect()
    }

    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        let now = now();
        let mut filter = doc! { "user_id": user_id };
        if let Some(keep) = keep {
            filter.insert("_id", doc! { "$ne": key_bson(keep) });
        }
        // Live documents first, so that the count is of sessions that were
        // live; then the user's expired ones, which are garbage.
        let mut live = filter.clone();
        live.insert("expires_at", doc! { "$gt": now });
        let removed = self.sessions.delete_many(live).await.map_err(StoreError::unavailable)?.deleted_count;
        filter.insert("expires_at", doc! { "$lte": now });
        self.sessions.delete_many(filter).await.map_err(StoreError::unavailable)?;
        Ok(removed)
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        let now = now();
        let mut total = 0u64;
        loop {
            // deleteMany has no limit: pick a batch of keys over the
            // expires_at index, then delete those still expired.
            let batch: Vec<Document> = self
                .sessions
                .find(doc! { "expires_at": { "$lte": now } })
                .projection(doc! { "_id": 1 })
                .limit(PURGE_BATCH)
                .await
                .map_err(StoreError::unavailable)?
                .try_collect()
                .await
                .map_err(StoreError::unavailable)?;
            if batch.is_empty() {
                return Ok(total);
            }
            let keys: Vec<Bson> = batch.into_iter().filter_map(|mut d| d.remove("_id")).collect();
            let full = keys.len() as i64 == PURGE_BATCH;
            total += self
                .sessions
                .delete_many(doc! { "_id": { "$in": keys }, "expires_at": { "$lte": now } })
                .await
                .map_err(StoreError::unavailable)?
                .deleted_count;
            if !full {
                return Ok(total);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client.database("admin").run_command(doc! { "ping": 1 }).await.map_err(StoreError::unavailable)?;
        Ok(())
    }
}
