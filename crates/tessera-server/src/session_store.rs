//! Choosing the session store from a URL (`--session-store`).

use std::sync::Arc;

use futures::future::BoxFuture;

use tessera::SessionStore;

/// Why `--session-store` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreUrlError {
    /// The URL's scheme is not one tessera knows.
    #[error(
        "--session-store {0:?}: unsupported URL; expected memory://, sqlite://FILE, postgres://…, mysql://…, mongodb://…, redis://…, redis+cluster://… or cookie://"
    )]
    Unsupported(String),
    /// The store named by the URL could not be opened.
    #[error("--session-store {url:?}: {reason}")]
    Unreachable {
        /// The URL, with any password masked.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// Masks the password in `scheme://user:password@host` URLs for messages.
pub fn mask_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((credentials, host)) = rest.split_once('@') {
            if let Some((user, _password)) = credentials.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_owned()
}

/// Opens the store named by `url`.
pub async fn open(url: &str) -> Result<Arc<dyn SessionStore>, SessionStoreUrlError> {
    Ok(open_store(url).await?.store)
}

/// Counts live sessions, where that is cheap.
pub type ActiveCounter = Arc<dyn Fn() -> BoxFuture<'static, Result<u64, String>> + Send + Sync>;

/// Closes a store's connections.
pub type Closer = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// An opened store with what operations need besides the trait.
#[derive(Clone)]
pub struct OpenedStore {
    /// The store.
    pub store: Arc<dyn SessionStore>,
    /// `memory`, `sqlite`, `postgres`, `mysql`, `mongodb` or `redis`, for
    /// metric labels.
    pub kind: &'static str,
    /// Counts live sessions (SQLite, PostgreSQL, MySQL, MongoDB, memory).
    pub active: Option<ActiveCounter>,
    /// Closes the pool at shutdown.
    pub close: Option<Closer>,
}

fn now_millis() -> i64 {
    tessera::Timestamp::now().as_millis()
}

/// The live-session counter and the closer of a store kept in an sqlx pool:
/// the SQLite and PostgreSQL stores share the table layout and the SQL, so
/// one generic function serves both.
fn pool_upkeep<DB>(pool: sqlx::Pool<DB>) -> (ActiveCounter, Closer)
where
    DB: sqlx::Database,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: sqlx::IntoArguments<'q, DB>,
    i64: sqlx::Type<DB> + for<'q> sqlx::Encode<'q, DB> + for<'r> sqlx::Decode<'r, DB>,
    usize: sqlx::ColumnIndex<DB::Row>,
{
    let counted = pool.clone();
    let active: ActiveCounter = Arc::new(move || {
        let pool = counted.clone();
        Box::pin(async move {
            let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tessera_sessions WHERE expires_at > $1")
                .bind(now_millis())
                .fetch_one(&pool)
                .await
                .map_err(|e| e.to_string())?;
            Ok(u64::try_from(count).unwrap_or(0))
        })
    });
    let close: Closer = Arc::new(move || {
        let pool = pool.clone();
        Box::pin(async move { pool.close().await })
    });
    (active, close)
}

/// Opens the store named by `url`, with its kind, counter and closer.
pub async fn open_store(url: &str) -> Result<OpenedStore, SessionStoreUrlError> {
    let unreachable = |reason: String| SessionStoreUrlError::Unreachable { url: mask_url(url), reason };
    let scheme = url.split_once("://").map(|(scheme, _)| scheme).unwrap_or("");
    match scheme {
        "memory" => {
            let store = Arc::new(tessera_store_memory::MemoryStore::new());
            let counted = store.clone();
            let active: ActiveCounter = Arc::new(move || {
                let store = counted.clone();
                Box::pin(async move { Ok(store.entry_count()) })
            });
            Ok(OpenedStore { store, kind: "memory", active: Some(active), close: None })
        }
        "sqlite" => {
            let store =
                tessera_store_sqlite::SqliteStore::connect(url).await.map_err(|e| unreachable(e.to_string()))?;
            let (active, close) = pool_upkeep(store.pool().clone());
            Ok(OpenedStore { store: Arc::new(store), kind: "sqlite", active: Some(active), close: Some(close) })
        }
        "postgres" | "postgresql" => {
            let store =
                tessera_store_postgres::PostgresStore::connect(url).await.map_err(|e| unreachable(e.to_string()))?;
            let (active, close) = pool_upkeep(store.pool().clone());
            Ok(OpenedStore { store: Arc::new(store), kind: "postgres", active: Some(active), close: Some(close) })
        }
        "mysql" | "mariadb" => {
            let store = tessera_store_mysql::MySqlStore::connect(url).await.map_err(|e| unreachable(e.to_string()))?;
            let counted = store.clone();
            let active: ActiveCounter = Arc::new(move || {
                let store = counted.clone();
                Box::pin(async move { store.count_live().await.map_err(|e| e.to_string()) })
            });
            let pool = store.pool().clone();
            let close: Closer = Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move { pool.close().await })
            });
            Ok(OpenedStore { store: Arc::new(store), kind: "mysql", active: Some(active), close: Some(close) })
        }
        "mongodb" => {
            let store =
                tessera_store_mongodb::MongoStore::connect(url).await.map_err(|e| unreachable(e.to_string()))?;
            let counted = store.clone();
            let active: ActiveCounter = Arc::new(move || {
                let store = counted.clone();
                Box::pin(async move { store.count_live().await.map_err(|e| e.to_string()) })
            });
            let client = store.client().clone();
            let close: Closer = Arc::new(move || {
                let client = client.clone();
                Box::pin(async move { client.shutdown().await })
            });
            Ok(OpenedStore { store: Arc::new(store), kind: "mongodb", active: Some(active), close: Some(close) })
        }
        "redis" | "rediss" | "redis+cluster" => {
            let store = tessera_store_redis::RedisStore::connect(url).await.map_err(|e| unreachable(e.to_string()))?;
            Ok(OpenedStore { store: Arc::new(store), kind: "redis", active: None, close: None })
        }
        _ => Err(SessionStoreUrlError::Unsupported(mask_url(url))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords() {
        assert_eq!(mask_url("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(mask_url("redis://h:6379"), "redis://h:6379");
    }

    #[tokio::test]
    async fn unknown_schemes_name_the_flag() {
        let error = open("ftp://x").await.err().unwrap().to_string();
        assert!(error.starts_with("--session-store"), "{error}");
        assert!(error.contains("mysql://…, mongodb://…"), "the message lists every scheme: {error}");
        let error = open("not a url").await.err().unwrap().to_string();
        assert!(error.contains("unsupported"), "{error}");
    }

    #[tokio::test]
    async fn unreachable_mysql_and_mongodb_stores_name_the_flag_and_hide_passwords() {
        for url in ["mysql://app:s3cret@127.0.0.1:1/db", "mongodb://app:s3cret@127.0.0.1:1/db"] {
            let error = open(url).await.err().unwrap().to_string();
            assert!(error.starts_with("--session-store"), "{error}");
            assert!(!error.contains("s3cret"), "{error}");
        }
        let error = open("mongodb://127.0.0.1:1").await.err().unwrap().to_string();
        assert!(error.contains("must name a database"), "{error}");
    }
}
