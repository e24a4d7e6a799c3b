//! The server's own data beside the authentication core's: API tokens,
//! audit trail, identities, products, cookie keys, statistics — in the same
//! SQLite or PostgreSQL database.
//!
//! The pool and its per-query time-out are the core's
//! ([`tessera_auth::TimedPool`]): a hung database turns into
//! [`DatabaseError::Unavailable`] (503) instead of a hung request. The
//! modules that query keep writing `.fetch_one(&db.pool)`.

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::Row;
pub use tessera_auth::database::{DatabaseError, TimedPool, TimedTransaction, DEFAULT_QUERY_TIMEOUT};
use tessera_auth::SqlDirectory;

/// The server's database.
#[derive(Clone, Debug)]
pub struct Database {
    pub(crate) pool: TimedPool,
}

impl Database {
    /// Opens (creating a SQLite file if needed) and migrates the database at
    /// `url`, with the default query time-out.
    pub async fn connect(url: &str) -> Result<Self, DatabaseError> {
        Self::connect_with_timeout(url, DEFAULT_QUERY_TIMEOUT).await
    }

    /// Opens and migrates the database at `url` (the core's tables, then the
    /// server's); every later query that takes longer than `query_timeout`
    /// fails as [`DatabaseError::Unavailable`].
    pub async fn connect_with_timeout(url: &str, query_timeout: Duration) -> Result<Self, DatabaseError> {
        let pool = TimedPool::connect(url, query_timeout).await?;
        let migrator: Migrator = if pool.is_sqlite() {
            sqlx::migrate!("./migrations/sqlite")
        } else {
            sqlx::migrate!("./migrations/postgres")
        };
        pool.migrate(migrator).await?;
        Ok(Database { pool })
    }

    /// The pool, shared with the authentication core.
    pub fn pool(&self) -> &TimedPool {
        &self.pool
    }

    /// The users, through the core's directory.
    pub fn users(&self) -> SqlDirectory {
        SqlDirectory::new(self.pool.clone())
    }

    /// The 32-byte secret called `name`, generated on first use and shared
    /// by every instance on this database.
    pub async fn secret(&self, name: &str) -> Result<[u8; 32], DatabaseError> {
        self.pool.secret(name).await
    }

    /// The sealing keys of cookie sessions, newest first: `(id, key)`.
    /// Generated on first use; `rotate_cookie_key` adds a newer one.
    pub async fn cookie_sealing_keys(&self) -> Result<Vec<(u32, [u8; 32])>, DatabaseError> {
        let mut keys = self.cookie_key_rows().await?;
        if keys.is_empty() {
            self.secret("cookie-seal:1").await?;
            keys = self.cookie_key_rows().await?;
        }
        Ok(keys)
    }

    /// Adds a new newest cookie sealing key; older keys keep opening cookies.
    pub async fn rotate_cookie_key(&self) -> Result<u32, DatabaseError> {
        let next = self.cookie_key_rows().await?.first().map(|(id, _)| id + 1).unwrap_or(1);
        self.secret(&format!("cookie-seal:{next}")).await?;
        Ok(next)
    }

    async fn cookie_key_rows(&self) -> Result<Vec<(u32, [u8; 32])>, DatabaseError> {
        let rows = sqlx::query("SELECT name, value FROM server_secrets WHERE name LIKE 'cookie-seal:%'")
            .fetch_all(&self.pool)
            .await?;
        let mut keys = Vec::new();
        for row in rows {
            let name: String = row.try_get(0)?;
            let value: Vec<u8> = row.try_get(1)?;
            let id = name.trim_start_matches("cookie-seal:").parse::<u32>().ok();
            if let (Some(id), Ok(key)) = (id, <[u8; 32]>::try_from(value)) {
                keys.push((id, key));
            }
        }
        keys.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        Ok(keys)
    }

    /// A round trip, for readiness checks.
    pub async fn ping(&self) -> Result<(), DatabaseError> {
        self.pool.ping().await
    }

    /// Closes the pool, waiting for connections to return.
    pub async fn close(&self) {
        self.pool.close().await
    }
}
