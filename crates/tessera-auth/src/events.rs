//! What the authentication core tells its host: one stream of
//! [`AuthEvent`]s, from every way in, delivered to an [`EventSink`].
//!
//! The host decides what an event becomes — an audit row, a metric, a
//! notice by mail — so every login path moves the same counters in the same
//! way without a handler touching them.

use std::net::IpAddr;

use async_trait::async_trait;
use tessera::{DeviceInfo, Timestamp};

/// How a user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// The account's password.
    Password,
    /// A sign-in at an external identity provider (OpenID Connect).
    Provider,
    /// A passkey (WebAuthn).
    Passkey,
    /// A code or link mailed to the account's verified address.
    Email,
}

impl Method {
    /// A stable lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Password => "password",
            Method::Provider => "provider",
            Method::Passkey => "passkey",
            Method::Email => "email",
        }
    }
}

/// Where an attempt came in: the pages or the JSON API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A browser form.
    Web,
    /// An API client.
    Api,
    /// An administrator's command.
    Admin,
}

impl Channel {
    /// A stable lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Api => "api",
            Channel::Admin => "admin",
        }
    }
}

/// Who is knocking: what the web layer knows of the client.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The client address (behind trusted proxies, the forwarded one).
    pub ip: Option<IpAddr>,
    /// The address and user agent, as recorded with sessions and events.
    pub device: DeviceInfo,
    /// The value of the browser's device cookie, if it sent one (see
    /// [`crate::throttle`]).
    pub device_cookie: Option<String>,
}

/// Something that happened to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthEvent {
    /// An account was created.
    SignedUp {
        /// The new account.
        user_id: i64,
    },
    /// Every factor passed: the user is logged in.
    LoginSucceeded {
        /// Who.
        user_id: i64,
        /// The first factor.
        method: Method,
    },
    /// A wrong first factor (password). `user_id` is the account the
    /// name belongs to, if any: for the audit trail, never for the answer.
    LoginFailed {
        /// The account, if the name exists.
        user_id: Option<i64>,
        /// The first factor tried.
        method: Method,
    },
    /// A wrong or reused second-factor code after a right first factor.
    SecondFactorFailed {
        /// Who.
        user_id: i64,
    },
    /// A recovery code was used up to log in.
    RecoveryCodeUsed {
        /// Who.
        user_id: i64,
        /// Unused codes remaining.
        left: i64,
    },
    /// An attempt was refused by the throttle before anything was checked.
    Throttled {
        /// The account named, if it exists.
        user_id: Option<i64>,
    },
    /// A sign-up was refused because its client address used up its
    /// allowance of new accounts; nothing was hashed or created.
    SignUpThrottled,
    /// A password confirmation (step-up) was wrong.
    ConfirmationFailed {
        /// Who.
        user_id: i64,
    },
    /// Two-step verification was turned on (at login, on a server that
    /// requires it).
    SecondFactorEnabled {
        /// Who.
        user_id: i64,
    },
    /// Two-step verification was turned off (by an administrator's reset).
    SecondFactorDisabled {
        /// Who.
        user_id: i64,
    },
    /// The password was changed (by the user) or reset (by an administrator).
    PasswordChanged {
        /// Who.
        user_id: i64,
    },
    /// An administrator disabled the account.
    AccountDisabled {
        /// Who.
        user_id: i64,
    },
    /// A passkey was added to the account.
    PasskeyAdded {
        /// Who.
        user_id: i64,
    },
    /// A passkey was removed from the account.
    PasskeyRemoved {
        /// Who.
        user_id: i64,
    },
    /// A passkey's assertion was accepted (a sign-in or a confirmation).
    PasskeyUsed {
        /// Who.
        user_id: i64,
    },
    /// A passkey's signature counter went backwards: the authenticator may
    /// have been cloned. The assertion was refused.
    PasskeyCloned {
        /// Whose passkey.
        user_id: i64,
    },
    /// The account's email address was verified: added, or changed from
    /// `previous`.
    EmailChanged {
        /// Who.
        user_id: i64,
        /// The address it replaced, which is told of the change.
        previous: Option<String>,
    },
    /// A browser sign-in (right after its [`AuthEvent::LoginSucceeded`])
    /// from a browser with no device cookie of this account: it has not
    /// signed in to it before (or its cookies were cleared).
    NewDeviceSignIn {
        /// Who.
        user_id: i64,
    },
}

impl AuthEvent {
    /// The account the event is about, if known.
    pub fn user_id(&self) -> Option<i64> {
        match *self {
            AuthEvent::SignedUp { user_id }
            | AuthEvent::LoginSucceeded { user_id, .. }
            | AuthEvent::SecondFactorFailed { user_id }
            | AuthEvent::RecoveryCodeUsed { user_id, .. }
            | AuthEvent::ConfirmationFailed { user_id }
            | AuthEvent::SecondFactorEnabled { user_id }
            | AuthEvent::SecondFactorDisabled { user_id }
            | AuthEvent::PasswordChanged { user_id }
            | AuthEvent::AccountDisabled { user_id }
            | AuthEvent::PasskeyAdded { user_id }
            | AuthEvent::PasskeyRemoved { user_id }
            | AuthEvent::PasskeyUsed { user_id }
            | AuthEvent::PasskeyCloned { user_id }
            | AuthEvent::EmailChanged { user_id, .. }
            | AuthEvent::NewDeviceSignIn { user_id } => Some(user_id),
            AuthEvent::LoginFailed { user_id, .. } | AuthEvent::Throttled { user_id } => user_id,
            AuthEvent::SignUpThrottled => None,
        }
    }
}

/// Receives the core's events. Implementations must not fail the caller:
/// a failed write is theirs to log.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Records `event`, which happened at `at` on `channel` for `client`.
    async fn record(&self, event: AuthEvent, channel: Channel, client: &Client, at: Timestamp);
}

/// A sink that drops everything, for applications that keep no trail.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvents;

#[async_trait]
impl EventSink for NoEvents {
    async fn record(&self, _: AuthEvent, _: Channel, _: &Client, _: Timestamp) {}
}

/// A sink that logs every event as a structured `tracing` event at `info`
/// (target `tessera::auth`), and nothing else.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingEvents;

#[async_trait]
impl EventSink for TracingEvents {
    async fn record(&self, event: AuthEvent, channel: Channel, client: &Client, _: Timestamp) {
        tracing::info!(
            target: "tessera::auth",
            ?event,
            channel = channel.as_str(),
            ip = client.device.ip.as_deref().unwrap_or("-"),
            "authentication event"
        );
    }
}
