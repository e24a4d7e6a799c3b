//! The server side of tokens: the key ring kept in the database, access and
//! refresh token pairs, refresh rotation with reuse detection, and the JWKS.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tessera_auth::UserDirectory;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL};
use http::{HeaderValue, StatusCode};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::Serialize;
use tessera::{Clock, DeviceInfo, Timestamp};
use tessera_token::refresh::{self, RefreshToken};
use tessera_token::{Jwks, KeyPair, KeyRing, TokenError, TokenSettings};

use super::problem::{json_response, ApiError};
use crate::audit::AuditKind;
use crate::database::{Database, DatabaseError};
use crate::public_url::PublicUrl;
use crate::token_store::RefreshUse;

/// How often the key ring is re-read from the database, so that a key
/// rotated by `tessera keys rotate` (or another instance) starts signing.
const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// Least time between reloads forced by an unknown `kid`, so junk tokens
/// cannot turn into a database query each.
const UNKNOWN_KID_RELOAD_GAP: Duration = Duration::from_secs(2);

/// The `aud` of access tokens: this server's API.
pub const AUDIENCE: &str = "tessera-api";

/// The `client_id` of access tokens (RFC 9068 §2.2). API callers sign in
/// with a user's password at `/api/signin` and register no client, so
/// every token is issued to the API's one first-party client.
pub const CLIENT_ID: &str = "tessera-api";

/// How long a new signing key is published in the JWKS before it signs:
/// the JWKS's `Cache-Control: max-age` (300 s) plus the key ring's reload
/// interval (30 s), so that a verifier behind an HTTP cache that fetched
/// the JWKS just before the rotation has the new key by the time it sees a
/// token signed with it.
pub const PUBLISH_BEFORE_SIGNING: Duration = Duration::from_secs(JWKS_MAX_AGE_SECS + 30);

/// `Cache-Control: max-age` of the JWKS.
pub const JWKS_MAX_AGE_SECS: u64 = 300;

/// The default absolute lifetime of a refresh family: 30 days. NIST SP
/// 800-63B asks single-factor (AAL1) sessions to re-authenticate at least
/// every 30 days, and tessera only offers single-factor sign-in; it also
/// equals the idle refresh lifetime, so an unused client and a busy one are
/// both asked for the password again after at most a month.
pub const DEFAULT_REFRESH_FAMILY_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// An access token and its refresh token, as the API returns them.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// A signed JWT (EdDSA), sent as `Authorization: Bearer …`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Opaque and single use: exchange it at `/api/token/refresh`.
    pub refresh_token: String,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Why a refresh was refused.
#[derive(Debug)]
pub enum RefreshError {
    /// Unknown, expired, revoked, or reused (then the family is revoked).
    Refused,
    /// The database failed.
    Unavailable(DatabaseError),
}

impl From<DatabaseError> for RefreshError {
    fn from(error: DatabaseError) -> Self {
        RefreshError::Unavailable(error)
    }
}

/// Tokens for the API.
pub struct TokenService {
    db: Database,
    clock: Arc<dyn Clock>,
    settings: TokenSettings,
    refresh_ttl: Duration,
    family_lifetime: Duration,
    ring: RwLock<Arc<KeyRing>>,
    loaded_at: Mutex<Instant>,
}

impl std::fmt::Debug for TokenService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenService").field("settings", &self.settings).finish_non_exhaustive()
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Whether a token was issued before a revocation `mark`. By `iat_ms`
/// when the token has it (every token this server issues): exact to the
/// millisecond, so a password change ends the tokens issued before it even
/// in the same second, and a sign-in right after it works. A token without
/// it (issued by an older version) is judged by whole seconds and, issued
/// in the mark's second, counts as before: it may be, and its client can
/// refresh.
fn issued_before(claims: &tessera_token::AccessClaims, mark: Timestamp) -> bool {
    match claims.issued_at_ms {
        Some(issued_ms) => issued_ms < mark.as_millis(),
        None => claims.iat <= mark.as_millis().div_euclid(1000),
    }
}

fn seconds(timestamp: Timestamp) -> i64 {
    timestamp.as_millis().div_euclid(1000)
}

impl TokenService {
    /// Loads the keys, generating the first one if there is none.
    pub async fn open(
        db: Database,
        clock: Arc<dyn Clock>,
        settings: TokenSettings,
        refresh_ttl: Duration,
    ) -> Result<Self, DatabaseError> {
        let now = clock.now();
        if !db.signing_keys().await?.iter().any(|key| key.retired_at.is_none() && key.private_key.is_some()) {
            let pair = KeyPair::generate();
            db.add_first_signing_key(pair.kid(), &pair.private_key_bytes(), &pair.public_key_bytes(), now).await?;
            tracing::info!(kid = pair.kid(), "generated the first token signing key");
        }
        let ring = load_ring(&db, now, settings.access_ttl).await?;
        Ok(TokenService {
            db,
            clock,
            settings,
            refresh_ttl,
            family_lifetime: DEFAULT_REFRESH_FAMILY_LIFETIME,
            ring: RwLock::new(Arc::new(ring)),
            loaded_at: Mutex::new(Instant::now()),
        })
    }

    /// Sets the absolute lifetime of refresh families (one sign-in's chain
    /// of refresh tokens), counted from the sign-in however often it is
    /// refreshed.
    pub fn with_family_lifetime(mut self, lifetime: Duration) -> Self {
        self.family_lifetime = lifetime;
        self
    }

    /// Generates a new signing key, published in the JWKS at once and
    /// signing after [`PUBLISH_BEFORE_SIGNING`] (the current key signs until
    /// then); the previous keys keep verifying the tokens they signed until
    /// those expire. Returns the new `kid`.
    pub async fn rotate_keys(db: &Database, now: Timestamp) -> Result<String, DatabaseError> {
        let pair = KeyPair::generate();
        let sign_from = now.plus(PUBLISH_BEFORE_SIGNING);
        db.rotate_signing_key(pair.kid(), &pair.private_key_bytes(), &pair.public_key_bytes(), now, sign_from).await?;
        Ok(pair.kid().to_owned())
    }

    /// Re-reads the keys from the database now.
    pub async fn reload(&self) -> Result<(), DatabaseError> {
        let ring = load_ring(&self.db, self.clock.now(), self.settings.access_ttl).await?;
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        *self.loaded_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        Ok(())
    }

    fn current(&self) -> Arc<KeyRing> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn loaded_ago(&self) -> Duration {
        self.loaded_at.lock().unwrap_or_else(|p| p.into_inner()).elapsed()
    }

    /// The ring, re-read if it is older than [`RELOAD_EVERY`]. A failed
    /// reload keeps the ring we have: tokens keep working while the
    /// database hiccups.
    async fn ring(&self) -> Arc<KeyRing> {
        if self.loaded_ago() > RELOAD_EVERY {
            if let Err(error) = self.reload().await {
                tracing::warn!(%error, "reloading token keys failed; keeping the current ones");
            }
        }
        self.current()
    }

    /// The token settings.
    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// The user ID in a valid access token.
    ///
    /// Besides the signature and claims, the token must not predate the
    /// user's access-token revocation mark (set by sign-out, password
    /// change, "sign out everywhere", disabling and deletion): one
    /// primary-key lookup per bearer request. `iat` has whole seconds and the
    /// mark milliseconds; a token counts as issued at the start of its
    /// second and is refused only if that second ended before the mark, so
    /// a token issued right after a revocation is never refused. The price
    /// is that a token issued in the same second as the revocation, just
    /// before it, survives until it expires.
    pub async fn verify_access(&self, token: &str) -> Result<i64, ApiError> {
        let now = seconds(self.clock.now());
        let mut result = self.ring().await.verify(&self.settings, token, now);
        if result == Err(TokenError::UnknownKey) && self.loaded_ago() > UNKNOWN_KID_RELOAD_GAP {
            // Perhaps a key another instance just made.
            self.reload().await.map_err(ApiError::unavailable)?;
            result = self.current().verify(&self.settings, token, now);
        }
        match result {
            Ok(claims) => {
                let user_id: i64 = claims.sub.parse().map_err(|_| ApiError::InvalidToken)?;
                let mark = self.db.access_tokens_valid_after(user_id).await.map_err(ApiError::unavailable)?;
                if mark.is_some_and(|mark| issued_before(&claims, mark)) {
                    tracing::debug!(user_id, "access token refused: issued before the user's revocation mark");
                    return Err(ApiError::InvalidToken);
                }
                Ok(user_id)
            }
            Err(reason) => {
                // The reason is for operators; the token itself is never logged.
                tracing::debug!(%reason, "access token refused");
                Err(ApiError::InvalidToken)
            }
        }
    }

    fn access_token(&self, ring: &KeyRing, user_id: i64) -> Result<(String, u64), ApiError> {
        let issued = ring
            .issue_at_millis(&self.settings, &user_id.to_string(), self.clock.now().as_millis())
            .map_err(ApiError::unavailable)?;
        Ok((issued.token, issued.expires_in))
    }

    /// A new pair for a user who just signed in: a new refresh family.
    pub async fn issue_pair(&self, user_id: i64) -> Result<TokenPair, ApiError> {
        let ring = self.ring().await;
        let (access_token, expires_in) = self.access_token(&ring, user_id)?;
        let refresh_token = RefreshToken::generate();
        let mut family = [0u8; 16];
        OsRng.fill_bytes(&mut family);
        let now = self.clock.now();
        self.db
            .insert_refresh_token(
                &refresh_token.digest(),
                &URL_SAFE_NO_PAD.encode(family),
                user_id,
                now,
                now.plus(self.refresh_ttl),
            )
            .await
            .map_err(ApiError::unavailable)?;
        Ok(TokenPair {
            access_token,
            token_type: "Bearer",
            expires_in,
            refresh_token: refresh_token.as_str().to_owned(),
        })
    }

    /// Exchanges a refresh token for a new pair in the same family. A token
    /// presented twice revokes its family: one of the two presenters stole it.
    /// Owners that were deleted or disabled get nothing.
    pub async fn refresh(&self, presented: &str) -> Result<TokenPair, RefreshError> {
        self.refresh_from(presented, &DeviceInfo::default()).await
    }

    /// [`TokenService::refresh`] for a client on `device` (recorded in the
    /// audit trail when the token turns out to be a replay).
    ///
    /// A replayed token means two parties hold the family: besides its
    /// refresh tokens, every access token the user was issued until now is
    /// ended (the per-user "not before" mark: an access token does not say
    /// which family it came from, and a per-family mark would need a new
    /// claim and a second lookup on every bearer request), and a
    /// `token_reuse_detected` event is recorded. The user's other API
    /// clients keep their refresh tokens and simply refresh once.
    pub async fn refresh_from(&self, presented: &str, device: &DeviceInfo) -> Result<TokenPair, RefreshError> {
        let Some(digest) = refresh::digest(presented) else { return Err(RefreshError::Refused) };
        let successor = RefreshToken::generate();
        let now = self.clock.now();
        let born_after = Timestamp(now.as_millis().saturating_sub(millis(self.family_lifetime)));
        let successor_digest = successor.digest();
        let expires_at = now.plus(self.refresh_ttl);
        match self.db.use_refresh_token(&digest, &successor_digest, now, expires_at, born_after).await? {
            RefreshUse::Rotated { user_id, .. } => {
                let allowed = self.db.users().user_by_id(user_id).await?.is_some_and(|user| user.disabled_at.is_none());
                if !allowed {
                    self.db.revoke_refresh_family_of(&successor.digest(), now).await?;
                    return Err(RefreshError::Refused);
                }
                let ring = self.ring().await;
                let (access_token, expires_in) = self
                    .access_token(&ring, user_id)
                    .map_err(|e| RefreshError::Unavailable(DatabaseError::Unavailable(format!("{e:?}"))))?;
                Ok(TokenPair {
                    access_token,
                    token_type: "Bearer",
                    expires_in,
                    refresh_token: successor.as_str().to_owned(),
                })
            }
            RefreshUse::Reused { user_id } => {
                tracing::warn!(
                    user_id,
                    "a used refresh token was presented again; its family and the user's access tokens are revoked"
                );
                self.db.revoke_access_tokens_before(user_id, now).await?;
                self.db.record(AuditKind::TokenReuseDetected, Some(user_id), device, now).await;
                Err(RefreshError::Refused)
            }
            RefreshUse::Invalid => Err(RefreshError::Refused),
        }
    }

    /// Revokes the family of `presented`; unknown tokens are ignored.
    ///
    /// The owner's access tokens issued until now die too (a per-user mark:
    /// an access token does not say which family it came from). The user's
    /// other API clients keep their refresh tokens and just refresh once.
    pub async fn sign_out(&self, presented: &str) -> Result<(), DatabaseError> {
        if let Some(digest) = refresh::digest(presented) {
            let now = self.clock.now();
            if let Some(user_id) = self.db.revoke_refresh_family_of(&digest, now).await? {
                self.db.revoke_access_tokens_before(user_id, now).await?;
            }
        }
        Ok(())
    }

    /// Revokes every refresh family of `user_id` (for a password change or
    /// "log out everywhere"); returns how many tokens were newly revoked.
    /// Access tokens issued until now are refused from now on.
    pub async fn revoke_all_refresh_families(&self, user_id: i64) -> Result<u64, DatabaseError> {
        self.db.revoke_all_refresh_tokens(user_id, self.clock.now()).await
    }

    /// The public keys.
    pub async fn jwks(&self) -> Jwks {
        self.ring().await.jwks()
    }
}

/// The ring from the stored keys: the newest unretired key signs; retired
/// keys verify until every token they could have signed has expired.
async fn load_ring(db: &Database, now: Timestamp, access_ttl: Duration) -> Result<KeyRing, DatabaseError> {
    let keys = db.signing_keys().await?;
    let mut ring = KeyRing::new();
    for key in keys.iter().rev() {
        let still_verifies = key.retired_at.is_none_or(|retired| retired.plus(access_ttl) > now);
        if !still_verifies {
            continue;
        }
        // A corrupt row is an operator's problem to see, not one to skip
        // silently: refuse to start (or keep the previous ring on reload).
        ring = ring.with_verification_key(&key.public_key).map_err(|error| {
            DatabaseError::Unavailable(format!("stored public key {} is unusable: {error}", key.kid))
        })?;
    }
    // `keys` is newest first. A key may sign while it has its private half
    // and is not retired yet: rotation retires the old key in the future,
    // when the new one has been published for PUBLISH_BEFORE_SIGNING. The
    // signer is the newest live key published that long; else the previous
    // signer, waiting for its retirement (one published that long first);
    // else (the very first key: nothing was published before it) the newest.
    let can_sign: Vec<_> =
        keys.iter().filter(|k| k.private_key.is_some() && k.retired_at.is_none_or(|retired| retired > now)).collect();
    let published = |k: &crate::token_store::StoredSigningKey| k.created_at.plus(PUBLISH_BEFORE_SIGNING) <= now;
    let signer = can_sign
        .iter()
        .find(|k| k.retired_at.is_none() && published(k))
        .or_else(|| can_sign.iter().find(|k| k.retired_at.is_some() && published(k)))
        .or_else(|| can_sign.iter().find(|k| k.retired_at.is_some()))
        .or_else(|| can_sign.first())
        .and_then(|k| k.private_key.as_deref());
    if keys.iter().any(|k| k.private_key.is_some() && k.retired_at.is_some_and(|retired| retired <= now)) {
        // A rotation's old key has stopped signing: its private half goes.
        if let Err(error) = db.erase_retired_private_keys(now).await {
            tracing::warn!(%error, "erasing retired signing keys failed; trying again at the next reload");
        }
    }
    match signer.map(KeyPair::from_private_key_bytes) {
        Some(Ok(pair)) => ring = ring.with_signing_key(pair),
        Some(Err(error)) => return Err(DatabaseError::Unavailable(format!("stored signing key is unusable: {error}"))),
        None => return Err(DatabaseError::Unavailable("no token signing key; restart to generate one".into())),
    }
    Ok(ring)
}

/// `GET /.well-known/jwks.json`: the public keys that verify access tokens.
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "tokens",
    responses((status = 200, description = "The JSON Web Key Set (Ed25519 keys, `kty` OKP)", body = Object))
)]
pub async fn jwks(State(tokens): State<Arc<TokenService>>) -> Response {
    let mut response = json_response(StatusCode::OK, &tokens.jwks().await);
    // Verifiers may cache it for JWKS_MAX_AGE_SECS: new keys are published
    // that long before they sign, old ones stay until their tokens expire.
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    // Public keys, no credentials: any origin's script may read them.
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response.into_response()
}

/// What `tessera keys rotate` and `tessera admin rotate-keys` say.
pub fn rotation_note(kid: &str) -> String {
    format!(
        "{kid}: running servers publish it in the JWKS within 30 seconds and sign with it after {} seconds \
         (verifiers may cache the JWKS for {JWKS_MAX_AGE_SECS} seconds)",
        PUBLISH_BEFORE_SIGNING.as_secs()
    )
}

/// RFC 8414 authorization server metadata: where resource servers find the
/// issuer's keys. tessera offers no OAuth flows (clients sign in at
/// `/api/signin`), so only the discovery fields are given.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ServerMetadata {
    /// The `iss` of access tokens.
    pub issuer: String,
    /// The JWKS with the keys that verify them.
    pub jwks_uri: String,
    /// OAuth response types offered: none.
    pub response_types_supported: Vec<String>,
    /// The OpenAPI document of the API.
    pub service_documentation: String,
}

/// The base URL that metadata links start from: the issuer when it is a
/// URL, else the public URL, else this request's host.
fn base_url(tokens: &TokenService, public_url: &PublicUrl, headers: &http::HeaderMap) -> String {
    let issuer = &tokens.settings().issuer;
    if issuer.starts_with("https://") || issuer.starts_with("http://") {
        return issuer.trim_end_matches('/').to_owned();
    }
    if let Some(url) = public_url.get() {
        return url.trim_end_matches('/').to_owned();
    }
    let host = headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}")
}

/// `GET /.well-known/oauth-authorization-server`.
#[utoipa::path(
    get,
    path = "/.well-known/oauth-authorization-server",
    tag = "tokens",
    responses((status = 200, description = "RFC 8414 metadata: the issuer and its JWKS", body = ServerMetadata))
)]
pub async fn metadata(
    State(tokens): State<Arc<TokenService>>,
    State(public_url): State<PublicUrl>,
    headers: http::HeaderMap,
) -> Response {
    let base = base_url(&tokens, &public_url, &headers);
    let metadata = ServerMetadata {
        issuer: tokens.settings().issuer.clone(),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        response_types_supported: Vec::new(),
        service_documentation: format!("{base}/api/openapi.json"),
    };
    let mut response = json_response(StatusCode::OK, &metadata);
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}
