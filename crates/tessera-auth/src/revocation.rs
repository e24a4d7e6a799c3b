//! Ending everything a user holds — sessions, API tokens — after an account
//! change (password changed or reset, account disabled, second factor
//! reset). The core decides *when*; the host, which knows its session engine
//! and token store, implements *how*, once, in [`Revocation`].

use async_trait::async_trait;
use tessera::SessionKey;

use crate::database::DatabaseError;

/// What ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Revoked {
    /// Sessions ended.
    pub sessions: u64,
    /// API refresh tokens (and with them their access tokens) ended.
    pub tokens: u64,
}

/// How the host ends everything of a user.
#[async_trait]
pub trait Revocation: Send + Sync + 'static {
    /// Ends every session of `user_id` but `keep` (the session making the
    /// change, which the host gives a new ID), and every API credential.
    async fn revoke_everything(&self, user_id: i64, keep: Option<&SessionKey>) -> Result<Revoked, DatabaseError>;
}

/// For hosts with nothing to end beyond what the core changes.
#[derive(Debug, Clone, Copy, Default)]
pub struct NothingToRevoke;

#[async_trait]
impl Revocation for NothingToRevoke {
    async fn revoke_everything(&self, _: i64, _: Option<&SessionKey>) -> Result<Revoked, DatabaseError> {
        Ok(Revoked::default())
    }
}
