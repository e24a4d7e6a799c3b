//! Choosing the session store from a URL (`--session-store`).

use std::sync::Arc;

use tessera::SessionStore;

/// Why `--session-store` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SessionStoreUrlError {
    /// The URL's scheme is not one tessera knows.
    #[error(
        "--session-store {0:?}: unsupported URL; expected memory://, sqlite://FILE, postgres://…, redis://…, redis+cluster://… or cookie://"
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
    let unreachable = |reason: String| SessionStoreUrlError::Unreachable { url: mask_url(url), reason };
    let scheme = url.split_once("://").map(|(scheme, _)| scheme).unwrap_or("");
    match scheme {
        "memory" => Ok(Arc::new(tessera_store_memory::MemoryStore::new())),
        "sqlite" => {
            let store =
                tessera_store_sqlite::SqliteStore::connect(url).await.map_err(|e| unreachable(e.to_string()))?;
            Ok(Arc::new(store))
        }
        "postgres" | "postgresql" => {
            let store =
                tessera_store_postgres::PostgresStore::connect(url).await.map_err(|e| unreachable(e.to_string()))?;
            Ok(Arc::new(store))
        }
        "redis" | "rediss" | "redis+cluster" => {
            let store = tessera_store_redis::RedisStore::connect(url).await.map_err(|e| unreachable(e.to_string()))?;
            Ok(Arc::new(store))
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
        let error = open("mysql://x").await.err().unwrap().to_string();
        assert!(error.starts_with("--session-store"), "{error}");
        let error = open("not a url").await.err().unwrap().to_string();
        assert!(error.contains("unsupported"), "{error}");
    }
}
