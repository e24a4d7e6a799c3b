//! Errors of the engine and of stores.

/// Why a store call failed.
///
/// Every variant means "the session could not be loaded or saved": the web
/// layer answers 503 rather than pretending the user is anonymous.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or answered with an error.
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within the configured time-out.
    #[error("session store timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A record was found but could not be decoded. The engine treats the
    /// session as gone and deletes it.
    #[error("session record is corrupt: {0}")]
    Corrupt(String),
    /// A session sealed in a cookie would exceed what browsers keep.
    #[error("session too large for a cookie: {size} bytes, the limit is {limit}")]
    TooLarge {
        /// The cookie's size with its attributes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Too many concurrent writers kept winning the compare-and-swap race.
    #[error("session write contention: gave up after {0} attempts")]
    Contention(u32),
}

impl StoreError {
    /// Wraps any displayable backend error as [`StoreError::Unavailable`].
    pub fn unavailable(error: impl std::fmt::Display) -> Self {
        StoreError::Unavailable(error.to_string())
    }

    /// Wraps a decoding problem as [`StoreError::Corrupt`].
    pub fn corrupt(error: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(error.to_string())
    }
}

/// A value in the session could not be converted to or from the requested type.
#[derive(Debug, thiserror::Error)]
pub enum SessionDataError {
    /// The stored value does not have the requested type.
    #[error("session value {key:?} has an unexpected type: {source}")]
    Decode {
        /// The session key.
        key: String,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// The value could not be serialized.
    #[error("session value {key:?} cannot be serialized: {source}")]
    Encode {
        /// The session key.
        key: String,
        /// The encoding error.
        source: serde_json::Error,
    },
}
