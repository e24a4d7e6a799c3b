//! What handlers share. Only the router ([`crate::routes`]) and the
//! builder ([`crate::app`]) see the whole of it: each handler extracts the
//! parts it uses (`State<Authenticator>`, `State<Reauthentication>`, …)
//! through the [`FromRef`] implementations derived here.

use std::sync::Arc;

use axum::extract::FromRef;
use tessera::{Clock, SessionEngine};
use tessera_auth::Authenticator;

use crate::activity_stats::ActivityStats;
use crate::api::problem::BodyLimit;
use crate::api::tokens::TokenService;
use crate::auth_events::ServerEvents;
use crate::client_ip::TrustedProxies;
use crate::database::Database;
use crate::forward_auth::ForwardAuthConfig;
use crate::health::ProbeTimeout;
use crate::mail::EmailPages;
use crate::metrics::MetricsSource;
use crate::oidc::Oidc;
use crate::public_url::PublicUrl;
use crate::reauthentication::Reauthentication;
use crate::registration_policy::Registration;

/// What handlers share: every field is a service or a setting a handler
/// can extract on its own.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// The authentication core: every way in, accounts, second factors.
    pub auth: Authenticator,
    /// The server's tables (tokens, audit, identities, products).
    pub db: Database,
    /// The audit trail for account events that are no login step.
    pub events: ServerEvents,
    /// Sessions.
    pub engine: SessionEngine,
    /// Bound on dependency calls in probes.
    pub probe_timeout: ProbeTimeout,
    /// Hourly activity counters.
    pub activity: ActivityStats,
    /// What `/metrics` renders.
    pub metrics: MetricsSource,
    /// Access and refresh tokens for the API.
    pub tokens: Arc<TokenService>,
    /// OpenID Connect providers.
    pub oidc: Arc<Oidc>,
    /// Forward-auth settings (also used for the login page's `next`).
    pub forward_auth: Arc<ForwardAuthConfig>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// The public base URL, if configured.
    pub public_url: PublicUrl,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Largest request body accepted.
    pub body_limit: BodyLimit,
    /// Recent authentication for sensitive actions.
    pub reauth: Reauthentication,
    /// Who may create an account, and creating it.
    pub registration: Registration,
    /// Whether accounts have email addresses.
    pub email: EmailPages,
}
