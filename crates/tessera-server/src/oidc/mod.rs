//! Login through OpenID Connect providers (authorization-code flow with
//! PKCE, `state` and `nonce`), built on the `openidconnect` crate.
//!
//! - [`config`]: [`OidcProviderConfig`], one per provider.
//! - [`provider`]: discovery with caching and key rotation, the
//!   authorization URL, code exchange and ID-token verification.
//! - [`flow_cookie`]: the sealed, short-lived login-flow cookie.
//! - [`identities`]: identities keyed by (issuer, subject) and what a login
//!   does to accounts.
//! - [`handlers`]: `/auth/oidc/{provider}/start` and `/callback`.
//!
//! See `docs/oidc.md`.

pub mod config;
pub mod flow_cookie;
pub mod handlers;
pub mod identities;
pub mod provider;

use std::sync::Arc;
use std::time::Duration;

use tessera::{Clock, CookieConfig};

pub use config::OidcProviderConfig;
use flow_cookie::FlowSealer;
use provider::Provider;

/// A provider as the login and account pages show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderButton {
    /// The provider's `id` (URL segment).
    pub id: String,
    /// Its display name.
    pub label: String,
    /// Its issuer.
    pub issuer: String,
}

/// The configured providers and the flow-cookie sealer.
pub struct Oidc {
    providers: Vec<Arc<Provider>>,
    sealer: FlowSealer,
    clock: Arc<dyn Clock>,
}

impl Oidc {
    /// Providers whose callbacks live under `public_url`; flow cookies
    /// sealed with `flow_key`.
    pub fn new(
        configs: &[OidcProviderConfig],
        public_url: Option<&str>,
        flow_key: [u8; 32],
        cookie: &CookieConfig,
        clock: Arc<dyn Clock>,
        jwks_min_refresh: Duration,
    ) -> Result<Self, String> {
        let mut providers = Vec::new();
        if !configs.is_empty() {
            let base = public_url
                .ok_or("OpenID Connect providers need --public-url (the address browsers use for tessera)")?
                .trim_end_matches('/');
            let http = openidconnect::reqwest::ClientBuilder::new()
                // Following redirects would open the client to SSRF.
                .redirect(openidconnect::reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("HTTP client for OpenID Connect: {e}"))?;
            for config in configs {
                config.validate()?;
                if providers.iter().any(|p: &Arc<Provider>| p.config.id == config.id) {
                    return Err(format!("OIDC provider id {:?} is configured twice", config.id));
                }
                let redirect = format!("{base}/auth/oidc/{}/callback", config.id);
                providers.push(Arc::new(Provider::new(config.clone(), redirect, http.clone(), jwks_min_refresh)?));
            }
        }
        let sealer = FlowSealer::new(flow_key, cookie).map_err(|e| format!("the flow cookie sealer: {e}"))?;
        Ok(Oidc { providers, sealer, clock })
    }

    /// The provider with `id`.
    pub fn provider(&self, id: &str) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.config.id == id)
    }

    /// Buttons for the login and account pages, in configuration order.
    pub fn buttons(&self) -> Vec<ProviderButton> {
        self.providers
            .iter()
            .map(|p| ProviderButton {
                id: p.config.id.clone(),
                label: p.config.label().to_owned(),
                issuer: p.issuer().to_owned(),
            })
            .collect()
    }

    /// The display name of the provider with `issuer`, if configured.
    pub fn label_for_issuer(&self, issuer: &str) -> Option<String> {
        self.providers.iter().find(|p| p.issuer() == issuer).map(|p| p.config.label().to_owned())
    }

    /// The flow-cookie sealer.
    pub fn sealer(&self) -> &FlowSealer {
        &self.sealer
    }

    /// Now, in Unix milliseconds, by the server's clock.
    pub fn now_millis(&self) -> i64 {
        self.clock.now().as_millis()
    }

    /// Fetches every provider's discovery document in the background, so the
    /// first login does not wait and a misconfiguration shows in the log.
    pub fn warm_up(&self) {
        for provider in &self.providers {
            let provider = provider.clone();
            tokio::spawn(async move {
                if let Err(error) = provider.metadata().await {
                    tracing::warn!(provider = %provider.config.id, %error, "OIDC discovery failed; retrying at first login");
                }
            });
        }
    }
}
