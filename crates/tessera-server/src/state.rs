//! What handlers share. Only the router ([`crate::routes`]) and the
//! builder ([`crate::app`]) see the whole of it: each handler extracts the
//! parts it uses (`State<Authenticator>`, `State<Reauthentication>`, …)
//! through the [`FromRef`] implementations declared here.
//!
//! axum clones the router's state into every request's handler service, so
//! [`AppState`] is one reference-counted pointer: cloning it per request
//! is one atomic increment, where cloning every service (each a handful of
//! `Arc`s, the [`Authenticator`] alone a dozen) cost about a quarter of the
//! instructions of a whole `GET /healthz`.

use std::ops::Deref;
use std::sync::Arc;

use axum::extract::FromRef;
use tessera::{Clock, SessionEngine};
use tessera_auth::{Authenticator, SignedInUsers};

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

/// What handlers share, behind one `Arc` (see the module docs). Derefs to
/// [`Services`], so `state.auth` reads as before.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// Shares `services`.
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// Declares [`Services`] and, for each field, `FromRef<AppState>` for its
/// type (each field type is extracted by exactly one field).
macro_rules! services_of_state {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty ),* $(,)?) => {
        /// Every service or setting a handler can extract on its own.
        pub struct Services {
            $( $(#[$doc])* pub $field: $ty, )*
        }

        $(
            impl FromRef<AppState> for $ty {
                fn from_ref(state: &AppState) -> Self {
                    state.0.$field.clone()
                }
            }
        )*
    };
}

services_of_state! {
    /// The authentication core: every way in, accounts, second factors.
    auth: Authenticator,
    /// The server's tables (tokens, audit, identities, products).
    db: Database,
    /// The audit trail for account events that are no login step.
    events: ServerEvents,
    /// Sessions.
    engine: SessionEngine,
    /// Bound on dependency calls in probes.
    probe_timeout: ProbeTimeout,
    /// Hourly activity counters.
    activity: ActivityStats,
    /// What `/metrics` renders.
    metrics: MetricsSource,
    /// Access and refresh tokens for the API.
    tokens: Arc<TokenService>,
    /// OpenID Connect providers.
    oidc: Arc<Oidc>,
    /// Forward-auth settings (also used for the login page's `next`).
    forward_auth: Arc<ForwardAuthConfig>,
    /// Proxies whose forwarding headers are believed.
    trusted_proxies: TrustedProxies,
    /// The public base URL, if configured.
    public_url: PublicUrl,
    /// The clock.
    clock: Arc<dyn Clock>,
    /// Largest request body accepted.
    body_limit: BodyLimit,
    /// Recent authentication for sensitive actions.
    reauth: Reauthentication,
    /// Who may create an account, and creating it.
    registration: Registration,
    /// Whether accounts have email addresses.
    email: EmailPages,
}

/// The users of valid sessions and tokens, kept for a moment: the
/// authenticator's own cache (clones share its entries), extracted alone by
/// [`crate::api::identity::ApiUser`], which runs on every API request,
/// instead of cloning the whole authenticator there.
impl FromRef<AppState> for SignedInUsers {
    fn from_ref(state: &AppState) -> Self {
        state.0.auth.accounts().signed_in().clone()
    }
}
