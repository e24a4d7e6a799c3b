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

/// What a masked secret reads as.
const MASK: &str = "***";

/// Whether a query parameter called `name` holds a secret: any name that
/// mentions a password, secret, key or token (`password`, `sslpassword`,
/// `auth_token`, `api-key`, …), compared case-insensitively.
fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "pwd", "secret", "key", "token", "auth"].iter().any(|word| name.contains(word))
}

/// Masks the query parameters of `query` (without its `?`) that hold
/// secrets; everything else is kept byte for byte.
fn mask_query(query: &str) -> (String, bool) {
    let mut masked = false;
    let parts: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, value)) if !value.is_empty() => {
                let decoded: String = url::form_urlencoded::parse(name.as_bytes())
                    .map(|(k, _)| k.into_owned())
                    .next()
                    .unwrap_or_default();
                if is_secret_parameter(&decoded) {
                    masked = true;
                    format!("{name}={MASK}")
                } else {
                    pair.to_owned()
                }
            }
            _ => pair.to_owned(),
        })
        .collect();
    (parts.join("&"), masked)
}

/// The URL `text` fit to print or log: the password of
/// `scheme://user:password@host` and the value of every query parameter
/// named like a secret (`?password=`, `?sslpassword=`, `?token=`, …) are
/// replaced by `***`. The one masking function for database and store URLs:
/// every message, log line and `config check` output that shows one uses it.
/// Text that is no URL is masked the same way as far as it looks like one.
pub fn mask_url(text: &str) -> String {
    if let Ok(mut url) = url::Url::parse(text) {
        let mut changed = false;
        if url.password().is_some_and(|p| !p.is_empty()) && url.set_password(Some(MASK)).is_ok() {
            changed = true;
        }
        if let Some(query) = url.query().map(str::to_owned) {
            let (masked, any) = mask_query(&query);
            if any {
                url.set_query(Some(&masked));
                changed = true;
            }
        }
        return if changed { url.to_string() } else { text.to_owned() };
    }
    // Not parseable (a typo, say): mask what looks like credentials anyway.
    let (base, query) = match text.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (text, None),
    };
    let mut out = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((credentials, host)) => match credentials.split_once(':') {
                Some((user, _password)) => format!("{scheme}://{user}:{MASK}@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    if let Some(query) = query {
        out.push('?');
        out.push_str(&mask_query(query).0);
    }
    out
}

/// `message` (an error from a driver that was given `url`) with every
/// secret of `url` (see [`mask_url`]) replaced by `***`, in case the driver
/// quoted it.
pub fn scrub_message(message: &str, url: &str) -> String {
    let mut secrets: Vec<String> = Vec::new();
    if let Ok(parsed) = url::Url::parse(url) {
        if let Some(password) = parsed.password().filter(|p| !p.is_empty()) {
            secrets.push(password.to_owned());
            secrets.push(percent_decode(password));
        }
        for (name, value) in parsed.query_pairs() {
            if is_secret_parameter(&name) && !value.is_empty() {
                secrets.push(value.into_owned());
            }
        }
    }
    let mut out = message.replace(url, &mask_url(url));
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for secret in secrets.iter().filter(|s| s.len() >= 3) {
        out = out.replace(secret.as_str(), MASK);
    }
    out
}

/// `text` percent-decoded (as a form value: `+` is a space).
fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
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
    let unreachable =
        |reason: String| SessionStoreUrlError::Unreachable { url: mask_url(url), reason: scrub_message(&reason, url) };
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
            crate::file_permissions::prepare_sqlite(url, "session store").map_err(&unreachable)?;
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
        // Issue #14 item 12: a password given as a query parameter.
        assert_eq!(mask_url("postgres://u@h/db?password=hunter2"), "postgres://u@h/db?password=***");
        assert_eq!(
            mask_url("postgres://h/db?sslmode=require&user=u&PassWord=hunter2&sslpassword=x%20y"),
            "postgres://h/db?sslmode=require&user=u&PassWord=***&sslpassword=***"
        );
        assert_eq!(mask_url("redis://:s3cret@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(mask_url("rediss://h?auth_token=abc&db=1"), "rediss://h?auth_token=***&db=1");
        assert_eq!(mask_url("sqlite://tessera.db?mode=rwc"), "sqlite://tessera.db?mode=rwc");
        assert_eq!(mask_url("sqlite::memory:"), "sqlite::memory:");
        // Not a URL, still masked.
        assert_eq!(mask_url("pg://u:p@ss@h/db"), "pg://u:***@h/db");
        assert_eq!(mask_url("nonsense?password=x"), "nonsense?password=***");
        for url in ["postgres://u:hunter2@h/db", "postgres://h/db?password=hunter2", "x://?token=hunter2"] {
            assert!(!mask_url(url).contains("hunter2"), "{url}");
            let message = format!("error connecting to {url}: bad password hunter2");
            assert!(!scrub_message(&message, url).contains("hunter2"), "{url}");
        }
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
