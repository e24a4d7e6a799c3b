//! One configured provider: discovery (cached), the authorization URL, the
//! code exchange and ID-token verification, all through the `openidconnect`
//! crate.
//!
//! Discovery (`/.well-known/openid-configuration` and the JWKS it names) is
//! fetched on first use and kept for [`METADATA_TTL`]. An ID token signed
//! with a key the cached JWKS does not have (the provider rotated its keys)
//! triggers one fresh discovery and a second verification, at most once per
//! `min_refresh` so that forged `kid`s cannot make tessera hammer the provider.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    TokenResponse,
};

use tessera::Timestamp;

use super::config::OidcProviderConfig;

/// How long discovered metadata and keys are used before being fetched again.
pub const METADATA_TTL: Duration = Duration::from_secs(3600);

/// A failure talking to a provider or verifying what it sent. The text is
/// for logs and never contains tokens, codes or secrets.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Discovery or the JWKS could not be fetched or parsed.
    #[error("discovery failed: {0}")]
    Discovery(String),
    /// The token endpoint refused the code or could not be reached.
    #[error("code exchange failed: {0}")]
    Exchange(String),
    /// The token response had no ID token.
    #[error("the token response carries no ID token")]
    NoIdToken,
    /// The ID token failed verification (signature, iss, aud, azp, exp, nonce).
    #[error("ID token refused: {0}")]
    IdToken(String),
}

/// What a verified ID token says about the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedIdentity {
    /// The `iss` claim.
    pub issuer: String,
    /// The `sub` claim.
    pub subject: String,
    /// The email address, only when the provider asserted `email_verified`.
    pub verified_email: Option<String>,
    /// `preferred_username`, if sent.
    pub preferred_username: Option<String>,
    /// Any email address sent, verified or not (only for deriving a user name).
    pub any_email: Option<String>,
}

/// A verified ID token: who, and when the provider last authenticated them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedLogin {
    /// The identity.
    pub identity: VerifiedIdentity,
    /// The `auth_time` claim, if sent: when the user last authenticated at
    /// the provider, which may be long before this login (single sign-on).
    pub auth_time: Option<Timestamp>,
    /// The groups in the provider's `groups_claim`, when it is configured
    /// and the ID token or UserInfo carries it (valid group names only,
    /// lowercase); `None` when the claim is absent.
    pub groups: Option<Vec<String>>,
}

/// Claims outside the standard set, for `groups_claim` from UserInfo.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct OtherClaims {
    #[serde(flatten)]
    claims: serde_json::Map<String, serde_json::Value>,
}

impl openidconnect::AdditionalClaims for OtherClaims {}

/// The group names in a claim: an array of strings, or one string. Names
/// that are not valid group names are left out.
pub fn groups_from_claim(value: &serde_json::Value) -> Option<Vec<String>> {
    let names: Vec<&str> = match value {
        serde_json::Value::Array(items) => items.iter().filter_map(serde_json::Value::as_str).collect(),
        serde_json::Value::String(one) => vec![one.as_str()],
        _ => return None,
    };
    let mut groups: Vec<String> =
        names.into_iter().filter_map(|name| crate::groups::check_group_name(name).ok()).collect();
    groups.sort();
    groups.dedup();
    Some(groups)
}

/// A claim of a JWT whose signature was already verified, read from its
/// payload.
fn claim_of_verified_jwt(jwt: &str, claim: &str) -> Option<serde_json::Value> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let mut claims: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&bytes).ok()?;
    claims.remove(claim)
}

/// The start of a login: where to send the browser, and what to remember.
pub struct Authorization {
    /// The provider's authorization URL with every parameter.
    pub url: String,
    /// `state`.
    pub state: String,
    /// `nonce`.
    pub nonce: String,
    /// The PKCE verifier.
    pub pkce_verifier: String,
}

struct Cached {
    metadata: CoreProviderMetadata,
    fetched: Instant,
}

/// A configured provider with its discovery cache.
pub struct Provider {
    /// Its configuration.
    pub config: OidcProviderConfig,
    secret: Option<String>,
    issuer: IssuerUrl,
    redirect: RedirectUrl,
    http: openidconnect::reqwest::Client,
    min_refresh: Duration,
    cache: Mutex<Option<Cached>>,
    refreshing: tokio::sync::Mutex<()>,
}

impl Provider {
    /// A provider whose callback is `redirect_uri`.
    pub fn new(
        config: OidcProviderConfig,
        redirect_uri: String,
        http: openidconnect::reqwest::Client,
        min_refresh: Duration,
    ) -> Result<Self, String> {
        let secret = config.secret()?;
        let issuer = IssuerUrl::new(config.issuer.clone()).map_err(|e| format!("issuer {:?}: {e}", config.issuer))?;
        let redirect = RedirectUrl::new(redirect_uri).map_err(|e| format!("redirect URI: {e}"))?;
        Ok(Provider {
            config,
            secret,
            issuer,
            redirect,
            http,
            min_refresh,
            cache: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        })
    }

    /// The issuer URL as configured.
    pub fn issuer(&self) -> &str {
        self.issuer.as_str()
    }

    fn cached(&self, usable: impl Fn(&Cached) -> bool) -> Option<CoreProviderMetadata> {
        let guard = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        guard.as_ref().filter(|c| usable(c)).map(|c| c.metadata.clone())
    }

    /// The provider's metadata and keys, from the cache while fresh.
    pub async fn metadata(&self) -> Result<CoreProviderMetadata, ProviderError> {
        if let Some(metadata) = self.cached(|c| c.fetched.elapsed() < METADATA_TTL) {
            return Ok(metadata);
        }
        self.refresh(|c| c.fetched.elapsed() < METADATA_TTL).await
    }

    /// Fetches discovery again unless the cache satisfies `fresh_enough`
    /// (checked again under the lock, so concurrent callers fetch once).
    async fn refresh(&self, fresh_enough: impl Fn(&Cached) -> bool) -> Result<CoreProviderMetadata, ProviderError> {
        let _one_at_a_time = self.refreshing.lock().await;
        if let Some(metadata) = self.cached(&fresh_enough) {
            return Ok(metadata);
        }
        let metadata = CoreProviderMetadata::discover_async(self.issuer.clone(), &self.http)
            .await
            .map_err(|e| ProviderError::Discovery(error_chain(&e)))?;
        tracing::info!(provider = %self.config.id, keys = metadata.jwks().keys().len(), "OIDC discovery fetched");
        let mut guard = self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        *guard = Some(Cached { metadata: metadata.clone(), fetched: Instant::now() });
        Ok(metadata)
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
    ) -> openidconnect::core::CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    > {
        CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.config.client_id.clone()),
            self.secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(self.redirect.clone())
    }

    /// A new authorization request: PKCE (S256), random `state` and `nonce`,
    /// and `max_age` when given (a step-up: the provider must authenticate
    /// the user again if its own sign-in is older, and return `auth_time`).
    pub async fn authorize(&self, max_age: Option<Duration>) -> Result<Authorization, ProviderError> {
        let client = self.client(self.metadata().await?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request =
            client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
        for scope in self.config.scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        if let Some(max_age) = max_age {
            request = request.set_max_age(max_age);
        }
        let (url, state, nonce) = request.set_pkce_challenge(challenge).url();
        Ok(Authorization {
            url: url.to_string(),
            state: state.secret().clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
        })
    }

    /// Exchanges `code` (with the PKCE verifier) and verifies the ID token's
    /// signature, `iss`, `aud`, `azp`, `exp` and `nonce`. `auth_time` is
    /// returned, not judged: whether it is recent enough is the caller's
    /// decision (see `reauthentication::check_provider_auth_time`).
    pub async fn finish(
        &self,
        code: String,
        pkce_verifier: String,
        nonce: &str,
    ) -> Result<VerifiedLogin, ProviderError> {
        let client = self.client(self.metadata().await?);
        let response = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| ProviderError::Exchange(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pkce_verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| ProviderError::Exchange(error_chain(&e)))?;
        let id_token = response.id_token().ok_or(ProviderError::NoIdToken)?;
        let nonce = Nonce::new(nonce.to_owned());
        let verified = {
            let verifier = client.id_token_verifier();
            id_token.claims(&verifier, &nonce).map(verified_login)
        };
        let VerifiedLogin { mut identity, auth_time, .. } = match verified {
            Ok(login) => login,
            Err(ClaimsVerificationError::SignatureVerification(SignatureVerificationError::NoMatchingKey)) => {
                // Keys rotated since discovery: fetch them again, once.
                let min_refresh = self.min_refresh;
                let fresh = self.refresh(|c| c.fetched.elapsed() < min_refresh).await?;
                let client = self.client(fresh);
                let verifier = client.id_token_verifier();
                id_token
                    .claims(&verifier, &nonce)
                    .map(verified_login)
                    .map_err(|e| ProviderError::IdToken(e.to_string()))?
            }
            Err(error) => return Err(ProviderError::IdToken(error.to_string())),
        };
        // The signature was checked above, on this very string.
        let groups_claim = self.config.groups_claim.as_deref();
        let mut groups = groups_claim
            .and_then(|claim| claim_of_verified_jwt(&id_token.to_string(), claim))
            .and_then(|value| groups_from_claim(&value));
        let want_groups = groups_claim.is_some() && groups.is_none();
        if (identity.any_email.is_none() && identity.preferred_username.is_none()) || want_groups {
            // Many providers put profile claims (and groups) in UserInfo
            // only. Its `sub` must match the ID token's; a failure here is
            // not fatal.
            let subject = openidconnect::SubjectIdentifier::new(identity.subject.clone());
            if let Ok(request) = client.user_info(response.access_token().clone(), Some(subject)) {
                match request.request_async::<OtherClaims, _, openidconnect::core::CoreGenderClaim>(&self.http).await {
                    Ok(info) => {
                        if identity.any_email.is_none() && identity.preferred_username.is_none() {
                            let email = info.email().map(|e| e.as_str().to_owned());
                            identity.verified_email = email.clone().filter(|_| info.email_verified() == Some(true));
                            identity.preferred_username = info.preferred_username().map(|u| u.as_str().to_owned());
                            identity.any_email = email;
                        }
                        if let (true, Some(claim)) = (want_groups, groups_claim) {
                            groups = info.additional_claims().claims.get(claim).and_then(groups_from_claim);
                        }
                    }
                    Err(error) => {
                        tracing::info!(provider = %self.config.id, error = %error_chain(&error), "OIDC userinfo failed; using the ID token's claims")
                    }
                }
            }
        }
        Ok(VerifiedLogin { identity, auth_time, groups })
    }
}

fn verified_login(claims: &openidconnect::core::CoreIdTokenClaims) -> VerifiedLogin {
    let email = claims.email().map(|e| e.as_str().to_owned());
    let identity = VerifiedIdentity {
        issuer: claims.issuer().as_str().to_owned(),
        subject: claims.subject().as_str().to_owned(),
        verified_email: email.clone().filter(|_| claims.email_verified() == Some(true)),
        preferred_username: claims.preferred_username().map(|u| u.as_str().to_owned()),
        any_email: email,
    };
    VerifiedLogin { identity, auth_time: claims.auth_time().map(|at| Timestamp(at.timestamp_millis())), groups: None }
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod group_claim_tests {
    use super::*;

    #[test]
    fn group_claims_are_read_leniently_and_checked() {
        let value = serde_json::json!(["Staff", "ops", "bad name", 3, "staff"]);
        assert_eq!(groups_from_claim(&value), Some(vec!["ops".to_owned(), "staff".to_owned()]));
        assert_eq!(groups_from_claim(&serde_json::json!("admins")), Some(vec!["admins".to_owned()]));
        assert_eq!(groups_from_claim(&serde_json::json!({"a": 1})), None);
        let payload =
            base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, br#"{"sub":"x","groups":["a"]}"#);
        let jwt = format!("h.{payload}.s");
        assert_eq!(claim_of_verified_jwt(&jwt, "groups"), Some(serde_json::json!(["a"])));
        assert_eq!(claim_of_verified_jwt(&jwt, "roles"), None);
    }
}
