//! The audit trail: every authentication event is a structured `tracing`
//! event and a row the user can see on `/account/activity`.
//!
//! Events carry who, what, when and from where — never a password, session
//! ID, token or CSRF value. User-supplied text (the user agent) is stored as
//! data and escaped when shown.

use std::time::Duration;

use sqlx::Row;
use tessera::{DeviceInfo, Timestamp};

use crate::database::{Database, DatabaseError};

/// Default of `audit.retention`: 400 days, a year and a bit, so that a
/// yearly review still finds last year's events.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(400 * 24 * 3600);

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// An account was created.
    SignUp,
    /// A password login succeeded.
    LoginSucceeded,
    /// A password login failed (wrong password; unknown users are logged
    /// without a user).
    LoginFailed,
    /// A login attempt was refused by throttling.
    LoginThrottled,
    /// A sign-up was refused: its address used up its allowance of new
    /// accounts (no user; at most one row a minute per address).
    SignUpThrottled,
    /// The user logged out.
    Logout,
    /// The password was changed.
    PasswordChanged,
    /// One of the user's sessions was revoked.
    SessionRevoked,
    /// All the user's other sessions were revoked.
    OtherSessionsRevoked,
    /// A used refresh token was presented again: its family was revoked.
    TokenReuseDetected,
    /// The account was deleted.
    AccountDeleted,
    /// An administrator disabled the account.
    AccountDisabled,
    /// An OpenID Connect identity was linked to the account.
    IdentityLinked,
    /// An OpenID Connect identity was unlinked from the account.
    IdentityUnlinked,
    /// Two-step verification was turned on.
    SecondFactorEnabled,
    /// Two-step verification was turned off.
    SecondFactorDisabled,
    /// A wrong or reused second-factor code was entered after a right
    /// first factor.
    SecondFactorFailed,
    /// A recovery code was used to log in.
    RecoveryCodeUsed,
    /// The recovery codes were replaced with a new set.
    RecoveryCodesReplaced,
    /// A step-up through an OpenID Connect provider (link or "Confirm
    /// with") was refused: the provider did not confirm a sign-in within
    /// the requested `max_age`.
    ReauthenticationRefused,
    /// A passkey was added.
    PasskeyAdded,
    /// A passkey was removed.
    PasskeyRemoved,
    /// A passkey signed in (or confirmed an action).
    PasskeyUsed,
    /// A passkey's signature counter went backwards (a cloned
    /// authenticator?): refused.
    PasskeyCloned,
    /// A verified email address was added or replaced another.
    EmailChanged,
    /// A browser sign-in from a browser that had not signed in to the
    /// account before (no device cookie of it).
    NewDeviceSignIn,
}

impl AuditKind {
    /// The stable name stored and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::SignUp => "sign_up",
            AuditKind::LoginSucceeded => "login_succeeded",
            AuditKind::LoginFailed => "login_failed",
            AuditKind::LoginThrottled => "login_throttled",
            AuditKind::SignUpThrottled => "sign_up_throttled",
            AuditKind::Logout => "logout",
            AuditKind::PasswordChanged => "password_changed",
            AuditKind::SessionRevoked => "session_revoked",
            AuditKind::OtherSessionsRevoked => "other_sessions_revoked",
            AuditKind::TokenReuseDetected => "token_reuse_detected",
            AuditKind::AccountDeleted => "account_deleted",
            AuditKind::AccountDisabled => "account_disabled",
            AuditKind::IdentityLinked => "identity_linked",
            AuditKind::IdentityUnlinked => "identity_unlinked",
            AuditKind::SecondFactorEnabled => "second_factor_enabled",
            AuditKind::SecondFactorDisabled => "second_factor_disabled",
            AuditKind::SecondFactorFailed => "second_factor_failed",
            AuditKind::RecoveryCodeUsed => "recovery_code_used",
            AuditKind::RecoveryCodesReplaced => "recovery_codes_replaced",
            AuditKind::ReauthenticationRefused => "reauthentication_refused",
            AuditKind::PasskeyAdded => "passkey_added",
            AuditKind::PasskeyRemoved => "passkey_removed",
            AuditKind::PasskeyUsed => "passkey_used",
            AuditKind::PasskeyCloned => "passkey_cloned",
            AuditKind::EmailChanged => "email_changed",
            AuditKind::NewDeviceSignIn => "new_device_sign_in",
        }
    }

    /// Words for the activity page.
    pub fn describe(name: &str) -> &'static str {
        match name {
            "sign_up" => "Account created",
            "login_succeeded" => "Logged in",
            "login_failed" => "Failed login attempt",
            "login_throttled" => "Login attempts slowed down",
            "sign_up_throttled" => "Sign-ups from one address refused (too many)",
            "logout" => "Logged out",
            "password_changed" => "Password changed",
            "session_revoked" => "A session was signed out",
            "other_sessions_revoked" => "All other sessions were signed out",
            "token_reuse_detected" => "A reused API token was refused; its sign-in was revoked",
            "account_deleted" => "Account deleted",
            "account_disabled" => "Account disabled by an administrator",
            "identity_linked" => "A sign-in provider was linked",
            "identity_unlinked" => "A sign-in provider was unlinked",
            "second_factor_enabled" => "Two-step verification turned on",
            "second_factor_disabled" => "Two-step verification turned off",
            "second_factor_failed" => "Wrong two-step verification code after a correct password",
            "recovery_code_used" => "A recovery code was used to log in",
            "recovery_codes_replaced" => "New recovery codes were made",
            "reauthentication_refused" => {
                "A confirmation through a sign-in provider was refused (no recent sign-in there)"
            }
            "passkey_added" => "A passkey was added",
            "passkey_removed" => "A passkey was removed",
            "passkey_used" => "A passkey was used to sign in",
            "passkey_cloned" => "A passkey was refused: its signature counter went backwards (a copied authenticator?)",
            "email_changed" => "Email address verified or changed",
            "new_device_sign_in" => "Signed in from a browser not seen on this account before",
            _ => "Other event",
        }
    }
}

/// One recorded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// The stable kind name.
    pub kind: String,
    /// Client address, if known.
    pub ip: Option<String>,
    /// Client user agent, if known.
    pub user_agent: Option<String>,
    /// When.
    pub created_at: Timestamp,
}

impl Database {
    /// Records an event for `user_id` (or for no known user), and logs it.
    pub async fn audit(
        &self,
        kind: AuditKind,
        user_id: Option<i64>,
        device: &DeviceInfo,
        at: Timestamp,
    ) -> Result<(), DatabaseError> {
        tracing::info!(
            target: "tessera::audit",
            event = kind.as_str(),
            user_id,
            ip = device.ip.as_deref().unwrap_or("-"),
            "authentication event"
        );
        sqlx::query("INSERT INTO audit_events (user_id, kind, ip, user_agent, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(user_id)
            .bind(kind.as_str())
            .bind(device.ip.clone())
            .bind(device.user_agent.clone())
            .bind(at.as_millis())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records an event like [`Database::audit`] for handlers that must not
    /// fail the user's request over it: a failed write is logged as a
    /// warning instead of being dropped in silence.
    pub async fn record(&self, kind: AuditKind, user_id: Option<i64>, device: &DeviceInfo, at: Timestamp) {
        if let Err(error) = self.audit(kind, user_id, device, at).await {
            tracing::warn!(target: "tessera::audit", event = kind.as_str(), error = %error, "audit row not written");
        }
    }

    /// The user's most recent events, newest first.
    pub async fn audit_events(&self, user_id: i64, limit: i64) -> Result<Vec<AuditEvent>, DatabaseError> {
        let rows = sqlx::query(
            "SELECT kind, ip, user_agent, created_at FROM audit_events WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2",
        )
        .bind(user_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(AuditEvent {
                    kind: row.try_get(0)?,
                    ip: row.try_get(1)?,
                    user_agent: row.try_get(2)?,
                    created_at: Timestamp(row.try_get(3)?),
                })
            })
            .collect()
    }

    /// Deletes every audit event recorded before `before`; returns how many.
    /// Runs in batches so that a first purge of a large table never holds
    /// the write lock (SQLite) or a huge transaction (PostgreSQL) for long.
    pub async fn purge_audit_events(&self, before: Timestamp) -> Result<u64, DatabaseError> {
        const BATCH: i64 = 10_000;
        let mut total = 0;
        loop {
            let deleted = sqlx::query(
                "DELETE FROM audit_events WHERE id IN \
                 (SELECT id FROM audit_events WHERE created_at < $1 ORDER BY created_at LIMIT $2)",
            )
            .bind(before.as_millis())
            .bind(BATCH)
            .execute(&self.pool)
            .await?
            .rows_affected();
            total += deleted;
            if deleted < BATCH as u64 {
                return Ok(total);
            }
        }
    }

    /// Deletes a user and their events: the user asked to be forgotten. A
    /// revocation mark, if any, stays, so sealed cookies of the deleted
    /// account remain dead.
    pub async fn delete_user(&self, user_id: i64) -> Result<(), DatabaseError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM audit_events WHERE user_id = $1").bind(user_id).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM users WHERE id = $1").bind(user_id).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(())
    }
}
