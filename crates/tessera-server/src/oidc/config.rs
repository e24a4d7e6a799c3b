//! How an OpenID Connect provider is configured.
//!
//! One [`OidcProviderConfig`] per provider. It deserializes from JSON (the
//! `TESSERA_OIDC_PROVIDERS` variable holds an array of them, each
//! `--oidc-provider` flag one object) and from any serde format, so the
//! configuration file can embed it as it is.

use serde::{Deserialize, Serialize};

/// One OpenID Connect provider users can log in with.
///
/// ```
/// use tessera_server::oidc::OidcProviderConfig;
/// let provider: OidcProviderConfig = serde_json::from_str(r#"{
///     "id": "example", "issuer": "https://id.example.com",
///     "client_id": "tessera", "client_secret_env": "EXAMPLE_SECRET",
///     "display_name": "Example ID"
/// }"#).unwrap();
/// assert_eq!(provider.scopes, ["openid", "email", "profile"]);
/// assert!(!provider.link_by_verified_email);
/// ```
/// The same struct is the `[[oidc.providers]]` entry of the settings (one
/// declaration: the documentation in `docs/configuration.md` comes from
/// these comments).
#[derive(Clone, Deserialize, Serialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OidcProviderConfig {
    /// Short name used in URLs (`/auth/oidc/{id}/start`): 1 to 32 lowercase
    /// ASCII letters, digits and `-`. Required.
    pub id: String,
    /// The issuer URL; discovery reads
    /// `{issuer}/.well-known/openid-configuration`. Required.
    pub issuer: String,
    /// The client ID registered at the provider. Required.
    pub client_id: String,
    /// The client secret; masked by `config check`. Prefer
    /// `client_secret_env`: files and flags are easier to leak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The name of an environment variable holding the client secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_env: Option<String>,
    /// Scopes requested; `openid` is always added. Default `openid`,
    /// `email`, `profile`.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The button label on the login page. Default: the `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Whether a first login with an email address this provider asserts as
    /// verified may join the account that already has an identity with that
    /// same verified address. Enable only for providers whose verified
    /// addresses you trust. Default `false`.
    #[serde(default)]
    pub link_by_verified_email: bool,
    /// Whether a first login may create an account. Unset: only when
    /// `accounts.registration` is `open`; `true`: also under `invite` (an
    /// invitation cannot travel through a provider login); `false`: never.
    /// Never under `closed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_signup: Option<bool>,
    /// When not empty, a first login creates an account only for an identity
    /// with a verified email address in one of these domains (exact match,
    /// like Google's `hd`). Logins of existing accounts are not affected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_email_domains: Vec<String>,
    /// The claim (ID token or UserInfo) holding the user's groups, e.g.
    /// `groups` (request its scope in `scopes` if the provider needs one).
    /// When set, each login through this provider replaces the groups the
    /// account got from it with the claim's; groups given with `tessera
    /// admin group add` stay. Unset (the default): no groups from providers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups_claim: Option<String>,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".to_owned(), "email".to_owned(), "profile".to_owned()]
}

impl std::fmt::Debug for OidcProviderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcProviderConfig")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "<redacted>"))
            .field("client_secret_env", &self.client_secret_env)
            .field("scopes", &self.scopes)
            .field("display_name", &self.display_name)
            .field("link_by_verified_email", &self.link_by_verified_email)
            .field("allow_signup", &self.allow_signup)
            .field("allowed_email_domains", &self.allowed_email_domains)
            .field("groups_claim", &self.groups_claim)
            .finish()
    }
}

impl OidcProviderConfig {
    /// The button label.
    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.id)
    }

    /// The client secret, from `client_secret` or the variable named by
    /// `client_secret_env`.
    pub fn secret(&self) -> Result<Option<String>, String> {
        match (&self.client_secret, &self.client_secret_env) {
            (Some(secret), _) => Ok(Some(secret.clone())),
            (None, Some(name)) => std::env::var(name)
                .map(Some)
                .map_err(|_| format!("OIDC provider {:?}: environment variable {name} is not set", self.id)),
            (None, None) => Ok(None),
        }
    }

    /// Checks the fields that can be checked without the network.
    pub fn validate(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 32
            && self.id.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !id_ok {
            return Err(format!("OIDC provider id {:?}: use 1-32 lowercase letters, digits or '-'", self.id));
        }
        let issuer = url::Url::parse(&self.issuer)
            .map_err(|e| format!("OIDC provider {:?}: issuer {:?}: {e}", self.id, self.issuer))?;
        if !matches!(issuer.scheme(), "https" | "http") {
            return Err(format!("OIDC provider {:?}: the issuer must be an https:// URL", self.id));
        }
        if self.client_id.is_empty() {
            return Err(format!("OIDC provider {:?}: client_id is empty", self.id));
        }
        for domain in &self.allowed_email_domains {
            if domain.is_empty() || domain.contains('@') || domain.chars().any(char::is_whitespace) {
                return Err(format!("OIDC provider {:?}: allowed_email_domains: {domain:?} is not a domain", self.id));
            }
        }
        self.secret()?;
        Ok(())
    }
}
