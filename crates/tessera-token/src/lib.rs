//! # tessera-token — signed access tokens and opaque refresh tokens
//!
//! - [`KeyPair`]: an Ed25519 signing key whose `kid` is its RFC 7638
//!   thumbprint; keys go in and out as bytes, so the caller decides where
//!   they live (the tessera server keeps them in its database).
//! - [`KeyRing`]: the key that signs new tokens plus the public keys that
//!   still verify older ones; [`KeyRing::issue`], [`KeyRing::verify`] and
//!   [`KeyRing::jwks`].
//! - [`refresh`]: 256-bit opaque refresh tokens and the SHA-256 digests that
//!   are stored instead of them.
//!
//! Verification is strict on purpose: the algorithm is pinned to `EdDSA`,
//! the key is chosen by `kid` from the ring only (never from `jwk`, `jku`,
//! `x5u` or any other header), the header may carry nothing but `alg`,
//! `typ` and `kid`, `typ` must be `at+jwt` (RFC 9068), and `iss`, `aud`,
//! `sub`, `iat`, `nbf`, `exp`, `jti`, `client_id` and `scope` (RFC 9068
//! §2.2) must all be present with the right JSON types. Time is whatever the caller says it is, so a server can use
//! its own clock (and tests a manual one).
//!
//! ```
//! use std::time::Duration;
//! use tessera_token::{KeyPair, KeyRing, TokenSettings};
//!
//! let settings = TokenSettings::new("https://auth.example", "example-api");
//! let ring = KeyRing::new().with_signing_key(KeyPair::generate());
//! let now = 1_700_000_000;
//! let issued = ring.issue(&settings, "42", now).unwrap();
//! assert_eq!(issued.expires_in, 900);
//! let claims = ring.verify(&settings, &issued.token, now + 60).unwrap();
//! assert_eq!(claims.sub, "42");
//! // Fifteen minutes later the token is worthless.
//! assert!(ring.verify(&settings, &issued.token, now + 900).is_err());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod refresh;
mod verified;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `typ` header of access tokens (RFC 9068).
pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";

/// The `scope` of access tokens unless [`TokenSettings::scope`] says
/// otherwise: the whole API.
pub const DEFAULT_SCOPE: &str = "api";

/// The only signing algorithm issued and accepted.
pub const ALGORITHM: &str = "EdDSA";

/// Longest token text [`KeyRing::verify`] looks at; real ones are ~400 bytes.
const MAX_TOKEN_BYTES: usize = 4096;

/// A key that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Ed25519 keys are 32 bytes, private (seed) and public alike.
    #[error("an Ed25519 key is 32 bytes, not {0}")]
    WrongLength(usize),
    /// The bytes are not a point on the curve.
    #[error("not a valid Ed25519 public key")]
    InvalidPublicKey,
    /// The key could not be encoded for signing.
    #[error("the key could not be encoded: {0}")]
    Encoding(String),
}

/// Why a token was refused or could not be made.
///
/// Callers should answer every refusal the same way (401) and keep the
/// variant for logs; it never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token")]
    Malformed,
    /// A header that is not exactly what this library issues.
    #[error("unacceptable header: {0}")]
    UnacceptableHeader(&'static str),
    /// No key in the ring has this `kid` (unknown, or retired long ago).
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not match: tampered, or signed by someone else.
    #[error("invalid signature")]
    BadSignature,
    /// A claim is missing, has the wrong type, or the wrong value.
    #[error("invalid claims: {0}")]
    InvalidClaims(&'static str),
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// The ring has no private key to sign with.
    #[error("no signing key")]
    NoSigningKey,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Signing(String),
}

/// What issued tokens say and verified tokens must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSettings {
    /// The `iss` claim: the issuer's URL (RFC 9068 §2.2, RFC 8414).
    pub issuer: String,
    /// The `aud` claim.
    pub audience: String,
    /// The `client_id` claim (RFC 9068 §2.2): the client the token was
    /// issued to. Default: the audience.
    pub client_id: String,
    /// The `scope` claim (RFC 9068 §2.2.3): space-separated scopes granted.
    /// Default [`DEFAULT_SCOPE`].
    pub scope: String,
    /// How long an access token lives. Default 15 minutes.
    pub access_ttl: Duration,
    /// Tolerated clock difference for `exp` and `nbf`. Default zero: one
    /// clock both issues and verifies.
    pub leeway: Duration,
}

impl TokenSettings {
    /// Settings for `issuer` and `audience` with the defaults.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        let audience = audience.into();
        TokenSettings {
            issuer: issuer.into(),
            client_id: audience.clone(),
            scope: DEFAULT_SCOPE.to_owned(),
            audience,
            access_ttl: Duration::from_secs(15 * 60),
            leeway: Duration::ZERO,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// Issuer.
    pub iss: String,
    /// Audience (a single string).
    pub aud: String,
    /// Subject: the user ID.
    pub sub: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: i64,
    /// Not before, seconds since the Unix epoch.
    pub nbf: i64,
    /// Expires at, seconds since the Unix epoch.
    pub exp: i64,
    /// A unique token ID.
    pub jti: String,
    /// The client the token was issued to (RFC 9068).
    pub client_id: String,
    /// The scopes granted, space-separated (RFC 9068).
    pub scope: String,
    /// Issued at, milliseconds since the Unix epoch (private claim
    /// `iat_ms`; `iat` is whole seconds). With it, a per-user revocation
    /// mark made in the same second as the token still tells a token issued
    /// before the mark from one issued after it. Absent from tokens issued
    /// with [`KeyRing::issue`].
    #[serde(default, rename = "iat_ms", skip_serializing_if = "Option::is_none")]
    pub issued_at_ms: Option<i64>,
}

/// A freshly signed access token.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// What it says.
    pub claims: AccessClaims,
    /// Seconds until it expires.
    pub expires_in: u64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("token", &"<redacted>")
            .field("claims", &self.claims)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The RFC 7638 thumbprint of an Ed25519 public key: its `kid`.
///
/// ```
/// let kid = tessera_token::key_id(&[7u8; 32]);
/// assert_eq!(kid.len(), 43);
/// ```
pub fn key_id(public_key: &[u8; 32]) -> String {
    // Members in lexicographic order, no whitespace, as RFC 7638 requires.
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, URL_SAFE_NO_PAD.encode(public_key));
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// An Ed25519 key pair. The private half is wiped from memory on drop and
/// never shown by `Debug`.
#[derive(Clone)]
pub struct KeyPair {
    kid: String,
    key: SigningKey,
}

impl KeyPair {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let pair = KeyPair::from_seed(&seed);
        seed.fill(0);
        pair
    }

    /// The key stored earlier as [`KeyPair::private_key_bytes`].
    ///
    /// ```
    /// use tessera_token::KeyPair;
    /// let key = KeyPair::generate();
    /// let again = KeyPair::from_private_key_bytes(&key.private_key_bytes()).unwrap();
    /// assert_eq!(key.kid(), again.kid());
    /// ```
    pub fn from_private_key_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let seed: &[u8; 32] = bytes.try_into().map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(KeyPair::from_seed(seed))
    }

    fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        KeyPair { kid: key_id(&key.verifying_key().to_bytes()), key }
    }

    /// The key ID.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The 32-byte private seed, to store. Keep it secret.
    pub fn private_key_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The 32-byte public key, to publish.
    pub fn public_key_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyPair").field("kid", &self.kid).field("private", &"<redacted>").finish()
    }
}

struct Verifier {
    public: [u8; 32],
    decoding: DecodingKey,
}

struct Signer {
    kid: String,
    encoding: EncodingKey,
}

/// The signing key and every public key that still verifies tokens.
///
/// Rotation: build a new ring with the new pair as signing key and the old
/// public keys added with [`KeyRing::with_verification_key`] until the last
/// token they signed has expired.
#[derive(Default)]
pub struct KeyRing {
    signer: Option<Signer>,
    verifiers: BTreeMap<String, Verifier>,
    /// Tokens this ring verified (see [`verified`]).
    verified: verified::VerifiedTokens,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("signing_kid", &self.signing_kid())
            .field("kids", &self.verifiers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRing {
    /// An empty ring: verifies nothing, signs nothing.
    pub fn new() -> Self {
        KeyRing::default()
    }

    /// Signs new tokens with `pair` (replacing the previous signing key,
    /// whose public key stays in the ring) and verifies with it.
    pub fn with_signing_key(mut self, pair: KeyPair) -> Self {
        let public = pair.public_key_bytes();
        self.verifiers.insert(pair.kid.clone(), Verifier { public, decoding: DecodingKey::from_ed_der(&public) });
        // PKCS#8 is what jsonwebtoken's Ed25519 signer reads; encoding a
        // valid seed cannot fail, but a failure would only mean "no signer".
        self.signer = pair
            .key
            .to_pkcs8_der()
            .ok()
            .map(|der| Signer { kid: pair.kid.clone(), encoding: EncodingKey::from_ed_der(der.as_bytes()) });
        self
    }

    /// Also accepts tokens signed by the private half of `public_key`.
    pub fn with_verification_key(mut self, public_key: &[u8]) -> Result<Self, KeyError> {
        let public: [u8; 32] = public_key.try_into().map_err(|_| KeyError::WrongLength(public_key.len()))?;
        ed25519_dalek::VerifyingKey::from_bytes(&public).map_err(|_| KeyError::InvalidPublicKey)?;
        self.verifiers.insert(key_id(&public), Verifier { public, decoding: DecodingKey::from_ed_der(&public) });
        Ok(self)
    }

    /// The `kid` new tokens carry.
    pub fn signing_kid(&self) -> Option<&str> {
        self.signer.as_ref().map(|s| s.kid.as_str())
    }

    /// Whether `kid` verifies tokens.
    pub fn knows(&self, kid: &str) -> bool {
        self.verifiers.contains_key(kid)
    }

    /// Signs an access token for `subject`, valid from `now` (seconds since
    /// the Unix epoch) for `settings.access_ttl`.
    pub fn issue(&self, settings: &TokenSettings, subject: &str, now: i64) -> Result<IssuedToken, TokenError> {
        self.sign(settings, subject, now, None)
    }

    /// [`KeyRing::issue`] with a clock in milliseconds: the token also
    /// carries [`AccessClaims::issued_at_ms`].
    pub fn issue_at_millis(
        &self,
        settings: &TokenSettings,
        subject: &str,
        now_ms: i64,
    ) -> Result<IssuedToken, TokenError> {
        self.sign(settings, subject, now_ms.div_euclid(1000), Some(now_ms))
    }

    fn sign(
        &self,
        settings: &TokenSettings,
        subject: &str,
        now: i64,
        issued_at_ms: Option<i64>,
    ) -> Result<IssuedToken, TokenError> {
        let signer = self.signer.as_ref().ok_or(TokenError::NoSigningKey)?;
        let ttl = settings.access_ttl.as_secs();
        let mut jti = [0u8; 16];
        OsRng.fill_bytes(&mut jti);
        let claims = AccessClaims {
            iss: settings.issuer.clone(),
            aud: settings.audience.clone(),
            sub: subject.to_owned(),
            iat: now,
            nbf: now,
            exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
            jti: URL_SAFE_NO_PAD.encode(jti),
            client_id: settings.client_id.clone(),
            scope: settings.scope.clone(),
            issued_at_ms,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(ACCESS_TOKEN_TYPE.to_owned());
        header.kid = Some(signer.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &signer.encoding)
            .map_err(|error| TokenError::Signing(error.to_string()))?;
        Ok(IssuedToken { token, claims, expires_in: ttl })
    }

    /// Checks `token` at `now` (seconds since the Unix epoch) and returns
    /// its claims.
    ///
    /// ```
    /// use tessera_token::{KeyPair, KeyRing, TokenError, TokenSettings};
    /// let settings = TokenSettings::new("iss", "aud");
    /// let ring = KeyRing::new().with_signing_key(KeyPair::generate());
    /// // An unsigned token is refused whatever the casing of "none".
    /// let unsigned = "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.";
    /// assert!(matches!(ring.verify(&settings, unsigned, 0), Err(TokenError::UnacceptableHeader(_))));
    /// ```
    pub fn verify(&self, settings: &TokenSettings, token: &str, now: i64) -> Result<AccessClaims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some(header_part), Some(_), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let kid = check_header(header_part)?;
        let verifier = self.verifiers.get(&kid).ok_or(TokenError::UnknownKey)?;
        let digest = verified::digest(token);
        let claims = match self.verified.get(&digest) {
            Some(claims) => claims,
            None => {
                let claims = Self::verify_signature(settings, token, verifier)?;
                self.verified.insert(digest, &claims, now);
                claims
            }
        };
        Self::check_claims(settings, claims, now)
    }

    /// The signature, and the claims' presence and types.
    fn verify_signature(
        settings: &TokenSettings,
        token: &str,
        verifier: &Verifier,
    ) -> Result<AccessClaims, TokenError> {
        // The signature and the claims' presence and types; time is checked
        // below against the caller's clock, not the wall clock.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        let data = jsonwebtoken::decode::<AccessClaims>(token, &verifier.decoding, &validation).map_err(|error| {
            use jsonwebtoken::errors::ErrorKind;
            match error.kind() {
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm | ErrorKind::InvalidEddsaKey => {
                    TokenError::BadSignature
                }
                ErrorKind::InvalidIssuer => TokenError::InvalidClaims("wrong issuer"),
                ErrorKind::InvalidAudience => TokenError::InvalidClaims("wrong audience"),
                ErrorKind::MissingRequiredClaim(_) => TokenError::InvalidClaims("a required claim is missing"),
                ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                    TokenError::InvalidClaims("a claim is missing or has the wrong type")
                }
                _ => TokenError::Malformed,
            }
        })?;
        Ok(data.claims)
    }

    /// What is checked on every call, remembered token or not.
    fn check_claims(settings: &TokenSettings, claims: AccessClaims, now: i64) -> Result<AccessClaims, TokenError> {
        // Belt and braces: jsonwebtoken checked these too.
        if claims.iss != settings.issuer {
            return Err(TokenError::InvalidClaims("wrong issuer"));
        }
        if claims.aud != settings.audience {
            return Err(TokenError::InvalidClaims("wrong audience"));
        }
        if claims.sub.is_empty() || claims.jti.is_empty() {
            return Err(TokenError::InvalidClaims("empty sub or jti"));
        }
        if claims.client_id != settings.client_id {
            return Err(TokenError::InvalidClaims("wrong client_id"));
        }
        if claims.issued_at_ms.is_some_and(|ms| ms.div_euclid(1000) != claims.iat) {
            return Err(TokenError::InvalidClaims("iat_ms disagrees with iat"));
        }
        let leeway = i64::try_from(settings.leeway.as_secs()).unwrap_or(0);
        // RFC 7519: the token must not be accepted "on or after" exp.
        if now >= claims.exp.saturating_add(leeway) {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now.saturating_add(leeway) || claims.iat > now.saturating_add(leeway) {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// The public keys as a JSON Web Key Set, for `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Jwks {
        Jwks {
            keys: self
                .verifiers
                .iter()
                .map(|(kid, verifier)| Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: URL_SAFE_NO_PAD.encode(verifier.public),
                    kid: kid.clone(),
                    alg: ALGORITHM.into(),
                    key_use: "sig".into(),
                })
                .collect(),
        }
    }
}

/// Accepts only the header this library writes; returns its `kid`.
fn check_header(encoded: &str) -> Result<String, TokenError> {
    let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| TokenError::Malformed)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
    // Anything else — jwk, jku, x5u, x5c, crit, b64 … — could tell a careless
    // verifier where to get its key or how to read the payload; refuse.
    if let Some(extra) = header.keys().find(|k| !matches!(k.as_str(), "alg" | "typ" | "kid")) {
        return Err(TokenError::UnacceptableHeader(match extra.as_str() {
            "jwk" | "jku" | "x5u" | "x5c" | "x5t" | "x5t#S256" => "embedded or remote key reference",
            _ => "unexpected header parameter",
        }));
    }
    // Exact match: "none", "None", "NONE", "HS256", "eddsa" … are all refused.
    if header.get("alg").and_then(|v| v.as_str()) != Some(ALGORITHM) {
        return Err(TokenError::UnacceptableHeader("algorithm not allowed"));
    }
    let typ = header.get("typ").and_then(|v| v.as_str()).unwrap_or("");
    if !(typ.eq_ignore_ascii_case(ACCESS_TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")) {
        return Err(TokenError::UnacceptableHeader("not an access token"));
    }
    match header.get("kid").and_then(|v| v.as_str()) {
        Some(kid) if !kid.is_empty() => Ok(kid.to_owned()),
        _ => Err(TokenError::UnacceptableHeader("no kid")),
    }
}

/// A JSON Web Key Set (RFC 7517).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// One public Ed25519 key (RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Always `OKP`.
    pub kty: String,
    /// Always `Ed25519`.
    pub crv: String,
    /// The public key, base64url.
    pub x: String,
    /// The key ID.
    pub kid: String,
    /// Always `EdDSA`.
    pub alg: String,
    /// Always `sig`.
    #[serde(rename = "use")]
    pub key_use: String,
}

#[cfg(test)]
mod tests;
