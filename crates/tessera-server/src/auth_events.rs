//! The server's subscriber to the authentication core's events: each
//! [`AuthEvent`] becomes an audit row (and a `tessera::audit` log line), the
//! login metrics and the hourly activity statistics — the same for the web
//! form, the API, an identity provider and the second-factor step, because
//! they all reach this one place through the core.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tessera::{Clock, DeviceInfo, SessionEngine, SessionKey, Timestamp};
use tessera_auth::{AuthEvent, Channel, Client, EventSink, Revocation, Revoked};

use tessera_auth::{Mail, Notice, Outbox};

use crate::activity_stats::ActivityStats;
use crate::audit::AuditKind;
use crate::database::{Database, DatabaseError};
use crate::mail::MailOutbox;

/// Audit trail, metrics and activity statistics.
#[derive(Clone)]
pub struct ServerEvents {
    db: Database,
    activity: ActivityStats,
    /// When a refused (throttled) attempt was last written to each
    /// account's trail (`account:<id>`, `account:-` for unknown names) or,
    /// for refused sign-ups, each address's (`signup:<address>`).
    throttled_written: Arc<Mutex<HashMap<String, Timestamp>>>,
    /// Where security notices are queued, when email is on.
    mail: Option<MailOutbox>,
}

/// At most one `login_throttled` row per account per this long. Refused
/// attempts cost an attacker nothing (no password is hashed), so without
/// a limit a flood of them would push the attacker's own successful login
/// off the victim's activity page (found by a black-box attack). They are
/// all still counted in `tessera_login_throttled_total`.
pub const THROTTLED_AUDIT_INTERVAL: Duration = Duration::from_secs(60);

/// Accounts remembered for the limit above before the memory starts over.
const THROTTLED_AUDIT_MEMORY: usize = 10_000;

impl ServerEvents {
    /// Events written to `db` and counted in `activity` and the metrics.
    pub fn new(db: Database, activity: ActivityStats) -> Self {
        ServerEvents { db, activity, throttled_written: Arc::new(Mutex::new(HashMap::new())), mail: None }
    }

    /// Also queues a security notice to the account's verified address for
    /// the events that warrant one (see [`notice_for`]).
    pub fn with_mail(mut self, outbox: MailOutbox) -> Self {
        self.mail = Some(outbox);
        self
    }

    /// Records an account event that is no login step (logout, revocations,
    /// changes), with the same trail as the core's.
    pub async fn record(&self, kind: AuditKind, user_id: Option<i64>, device: &DeviceInfo, at: Timestamp) {
        self.db.record(kind, user_id, device, at).await;
        if let (Some(user_id), Some(notice)) = (user_id, notice_for(kind)) {
            self.notify(user_id, notice, device, at, None).await;
        }
    }

    /// Queues `notice` for `user_id` (to `to` instead of the verified
    /// address when given). A failure is logged: the change it is about has
    /// happened and must not fail because of the notice.
    async fn notify(&self, user_id: i64, notice: Notice, device: &DeviceInfo, at: Timestamp, to: Option<String>) {
        let Some(outbox) = &self.mail else { return };
        let mail = Mail::Notice {
            user_id,
            notice,
            at: at.as_millis(),
            device: Some(crate::pages::account_sessions::readable_user_agent(device.user_agent.as_deref())),
            ip: device.ip.clone(),
            to,
        };
        if let Err(error) = outbox.enqueue(mail).await {
            tracing::warn!(%error, user_id, "queueing a security notice failed");
        }
    }
}

/// The security notice an account change calls for: password, second
/// factor, passkeys. (A sign-in from a new device and an address change are told
/// from the core's events, which say more.)
pub fn notice_for(kind: AuditKind) -> Option<Notice> {
    match kind {
        AuditKind::PasswordChanged => Some(Notice::PasswordChanged),
        AuditKind::SecondFactorEnabled => Some(Notice::SecondFactorAdded),
        AuditKind::SecondFactorDisabled => Some(Notice::SecondFactorRemoved),
        AuditKind::PasskeyAdded => Some(Notice::PasskeyAdded),
        AuditKind::PasskeyRemoved => Some(Notice::PasskeyRemoved),
        _ => None,
    }
}

impl ServerEvents {
    /// Whether a throttled attempt on `user_id` at `at` is the first in
    /// [`THROTTLED_AUDIT_INTERVAL`] (and so is written to the trail).
    fn first_throttled_in_a_while(&self, key: String, at: Timestamp) -> bool {
        let mut written = self.throttled_written.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(last) = written.get(&key) {
            if at.since(*last) < THROTTLED_AUDIT_INTERVAL {
                return false;
            }
        }
        if written.len() >= THROTTLED_AUDIT_MEMORY {
            written.clear();
        }
        written.insert(key, at);
        true
    }
}

/// The audit kind an event is stored as.
pub fn audit_kind(event: &AuthEvent) -> AuditKind {
    match event {
        AuthEvent::SignedUp { .. } => AuditKind::SignUp,
        AuthEvent::LoginSucceeded { .. } => AuditKind::LoginSucceeded,
        AuthEvent::LoginFailed { .. } | AuthEvent::ConfirmationFailed { .. } => AuditKind::LoginFailed,
        AuthEvent::SecondFactorFailed { .. } => AuditKind::SecondFactorFailed,
        AuthEvent::RecoveryCodeUsed { .. } => AuditKind::RecoveryCodeUsed,
        AuthEvent::Throttled { .. } => AuditKind::LoginThrottled,
        AuthEvent::SignUpThrottled => AuditKind::SignUpThrottled,
        AuthEvent::SecondFactorEnabled { .. } => AuditKind::SecondFactorEnabled,
        AuthEvent::SecondFactorDisabled { .. } => AuditKind::SecondFactorDisabled,
        AuthEvent::PasswordChanged { .. } => AuditKind::PasswordChanged,
        AuthEvent::AccountDisabled { .. } => AuditKind::AccountDisabled,
        AuthEvent::PasskeyAdded { .. } => AuditKind::PasskeyAdded,
        AuthEvent::PasskeyRemoved { .. } => AuditKind::PasskeyRemoved,
        AuthEvent::PasskeyUsed { .. } => AuditKind::PasskeyUsed,
        AuthEvent::PasskeyCloned { .. } => AuditKind::PasskeyCloned,
        AuthEvent::EmailChanged { .. } => AuditKind::EmailChanged,
        AuthEvent::NewDeviceSignIn { .. } => AuditKind::NewDeviceSignIn,
    }
}

#[async_trait]
impl EventSink for ServerEvents {
    async fn record(&self, event: AuthEvent, channel: Channel, client: &Client, at: Timestamp) {
        match &event {
            AuthEvent::LoginSucceeded { .. } => {
                crate::metrics::login(true);
                self.activity.login(true);
            }
            AuthEvent::LoginFailed { .. } | AuthEvent::SecondFactorFailed { .. } | AuthEvent::PasskeyCloned { .. } => {
                crate::metrics::login(false);
                self.activity.login(false);
            }
            AuthEvent::Throttled { .. } => crate::metrics::login_throttled(),
            AuthEvent::SignUpThrottled => crate::metrics::signup_throttled(),
            _ => {}
        }
        tracing::debug!(channel = channel.as_str(), ?event, "authentication event");
        // Refused attempts are free for whoever sends them: each is counted
        // in the metrics, but written to the trail at most once a minute per
        // account (or, for sign-ups, per address), so that a flood of them
        // neither buries the trail nor costs a database write apiece.
        let limited = match &event {
            AuthEvent::Throttled { user_id } => {
                Some(format!("account:{}", user_id.map_or_else(|| "-".to_owned(), |id| id.to_string())))
            }
            AuthEvent::SignUpThrottled => {
                Some(format!("signup:{}", client.ip.map_or_else(|| "-".to_owned(), |ip| ip.to_string())))
            }
            _ => None,
        };
        if let Some(key) = limited {
            if !self.first_throttled_in_a_while(key, at) {
                return;
            }
        }
        let kind = audit_kind(&event);
        self.db.record(kind, event.user_id(), &client.device, at).await;
        match event {
            // The core judged the browser new to this account (no device
            // cookie of it, which every sign-in leaves): worth a notice.
            AuthEvent::NewDeviceSignIn { user_id } => {
                self.notify(user_id, Notice::NewDeviceSignIn, &client.device, at, None).await;
            }
            // The old address hears of the change; the new one proved itself.
            AuthEvent::EmailChanged { user_id, previous: Some(previous) } => {
                self.notify(user_id, Notice::EmailChanged, &client.device, at, Some(previous)).await;
            }
            _ => {
                if let (Some(user_id), Some(notice)) = (event.user_id(), notice_for(kind)) {
                    self.notify(user_id, notice, &client.device, at, None).await;
                }
            }
        }
    }
}

/// The server's way of ending everything a user holds: every session in the
/// session store (or, for sealed cookies, a revocation mark) and every API
/// refresh token, with the per-user "not before" mark that kills their
/// access tokens at once.
#[derive(Clone)]
pub struct EndEverything {
    engine: SessionEngine,
    db: Database,
    clock: Arc<dyn Clock>,
}

impl EndEverything {
    /// Sessions in `engine`, tokens in `db`.
    pub fn new(engine: SessionEngine, db: Database, clock: Arc<dyn Clock>) -> Self {
        EndEverything { engine, db, clock }
    }
}

#[async_trait]
impl Revocation for EndEverything {
    async fn revoke_everything(&self, user_id: i64, keep: Option<&SessionKey>) -> Result<Revoked, DatabaseError> {
        let sessions = self
            .engine
            .revoke_all(&user_id.to_string(), keep)
            .await
            .map_err(|error| DatabaseError::Unavailable(format!("session store: {error}")))?;
        let tokens = self.db.revoke_all_refresh_tokens(user_id, self.clock.now()).await?;
        Ok(Revoked { sessions, tokens })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passkey_and_account_changes_are_noticed() {
        assert_eq!(notice_for(AuditKind::PasskeyAdded), Some(Notice::PasskeyAdded));
        assert_eq!(notice_for(AuditKind::PasskeyRemoved), Some(Notice::PasskeyRemoved));
        assert_eq!(notice_for(AuditKind::PasswordChanged), Some(Notice::PasswordChanged));
        assert_eq!(notice_for(AuditKind::PasskeyUsed), None);
        assert_eq!(audit_kind(&AuthEvent::NewDeviceSignIn { user_id: 1 }), AuditKind::NewDeviceSignIn);
        assert_eq!(audit_kind(&AuthEvent::PasskeyAdded { user_id: 1 }), AuditKind::PasskeyAdded);
    }
}
