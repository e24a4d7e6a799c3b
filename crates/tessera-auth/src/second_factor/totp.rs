//! Authenticator-app codes (TOTP, RFC 6238) with the parameters every app
//! supports: HMAC-SHA-1, 6 digits, 30-second steps.
//!
//! The code computation and its constant-time comparison are `totp-rs`'s;
//! this module adds what a server needs around them: secrets from the OS
//! random source, the step a code belongs to (so that a code is accepted
//! once), and the setup QR code.

use rand::rngs::OsRng;
use rand::RngCore;
use tessera::Timestamp;
use totp_rs::{Algorithm, Secret, TOTP};

use crate::password_policy::SERVICE_NAME;

/// Seconds per code.
pub const STEP_SECONDS: u64 = 30;

/// Digits per code.
pub const DIGITS: usize = 6;

/// 160 bits: RFC 4226's recommended length for HMAC-SHA-1 keys.
const SECRET_BYTES: usize = 20;

/// A TOTP shared secret. It never appears in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

impl TotpSecret {
    /// A new secret from the operating system's random source (ASVS 6.5.3).
    pub fn generate() -> Self {
        let mut bytes = vec![0u8; SECRET_BYTES];
        OsRng.fill_bytes(&mut bytes);
        TotpSecret(bytes)
    }

    /// Reads a stored secret (unpadded RFC 4648 base32).
    pub fn from_base32(text: &str) -> Option<Self> {
        let bytes = Secret::Encoded(text.to_owned()).to_bytes().ok()?;
        (bytes.len() >= 16).then_some(TotpSecret(bytes))
    }

    /// The secret as unpadded base32: how it is stored, and what a person
    /// types into an app that cannot scan the QR code.
    pub fn to_base32(&self) -> String {
        self.totp("").get_secret_base32()
    }

    /// The `otpauth://` URI an authenticator app reads from the QR code.
    pub fn otpauth_uri(&self, account: &str) -> String {
        self.totp(account).get_url()
    }

    /// The setup QR code as an inline `<svg>` element (no XML prolog), for
    /// embedding in a page: the CSP allows no `data:` images, and the
    /// secret must not travel in a separately cached image URL.
    pub fn qr_svg(&self, account: &str) -> Option<String> {
        let code = qrcode::QrCode::new(self.otpauth_uri(account).as_bytes()).ok()?;
        let svg = code.render::<qrcode::render::svg::Color<'_>>().min_dimensions(200, 200).build();
        let start = svg.find("<svg")?;
        Some(svg[start..].to_owned())
    }

    /// The time step `code` belongs to, if it is this step's code or the
    /// previous step's, or `None`.
    ///
    /// One step back tolerates a code typed just before it rolled over
    /// (RFC 6238 §5.2 recommends allowing one step of delay); codes from the
    /// future are refused, so a code lives at most one step after it was
    /// shown. Which step matched is what replay protection records.
    pub fn matching_step(&self, code: &str, now: Timestamp) -> Option<u64> {
        let code = normalize(code)?;
        let current = step_at(now);
        let totp = self.totp("");
        [current, current.saturating_sub(1)].into_iter().find(|step| totp.check(&code, step * STEP_SECONDS))
    }

    /// The code of `step` (for tests and the admin CLI's diagnostics).
    pub fn code_at(&self, step: u64) -> String {
        self.totp("").generate(step * STEP_SECONDS)
    }

    fn totp(&self, account: &str) -> TOTP {
        // `new_unchecked`: the checked constructor refuses `:` in account
        // names, which the URI encodes anyway; the secret length and digit
        // count are this module's constants.
        TOTP::new_unchecked(
            Algorithm::SHA1,
            DIGITS,
            0,
            STEP_SECONDS,
            self.0.clone(),
            Some(SERVICE_NAME.to_owned()),
            account.to_owned(),
        )
    }
}

/// The 30-second step `now` falls in.
pub fn step_at(now: Timestamp) -> u64 {
    u64::try_from(now.as_millis().max(0)).unwrap_or(0) / 1000 / STEP_SECONDS
}

/// Whether `input` looks like an authenticator code (after removing the
/// spaces apps show in the middle), rather than a recovery code.
pub fn looks_like_code(input: &str) -> bool {
    normalize(input).is_some()
}

/// The code's digits without spaces, if it is `DIGITS` ASCII digits.
fn normalize(code: &str) -> Option<String> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (digits.len() == DIGITS && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: u64, offset_secs: u64) -> Timestamp {
        Timestamp(((step * STEP_SECONDS + offset_secs) * 1000) as i64)
    }

    #[test]
    fn rfc_6238_test_vector() {
        // RFC 6238 appendix B, SHA-1, T = 59 s: 94287082 (8 digits); the
        // 6-digit code is its last six digits.
        let secret = TotpSecret(b"12345678901234567890".to_vec());
        assert_eq!(secret.code_at(1), "287082");
    }

    #[test]
    fn accepts_this_and_the_previous_step_only() {
        let secret = TotpSecret::generate();
        let now = at(1000, 7);
        assert_eq!(secret.matching_step(&secret.code_at(1000), now), Some(1000));
        assert_eq!(secret.matching_step(&secret.code_at(999), now), Some(999));
        assert_eq!(secret.matching_step(&secret.code_at(998), now), None);
        assert_eq!(secret.matching_step(&secret.code_at(1001), now), None, "no codes from the future");
    }

    #[test]
    fn codes_with_spaces_are_read_and_junk_is_refused() {
        let secret = TotpSecret::generate();
        let code = secret.code_at(5);
        let spaced = format!("{} {}", &code[..3], &code[3..]);
        assert_eq!(secret.matching_step(&spaced, at(5, 0)), Some(5));
        for junk in ["", "12345", "1234567", "abcdef", "１２３４５６"] {
            assert_eq!(secret.matching_step(junk, at(5, 0)), None, "{junk:?}");
        }
    }

    #[test]
    fn base32_round_trips_and_debug_hides_the_secret() {
        let secret = TotpSecret::generate();
        assert_eq!(TotpSecret::from_base32(&secret.to_base32()), Some(secret.clone()));
        assert_eq!(format!("{secret:?}"), "TotpSecret(..)");
        assert_eq!(TotpSecret::from_base32("not base32!"), None);
    }

    #[test]
    fn the_uri_and_qr_code_name_the_service_and_account() {
        let secret = TotpSecret::generate();
        let uri = secret.otpauth_uri("alice:odd name");
        assert!(uri.starts_with("otpauth://totp/tessera:alice%3Aodd%20name?secret="), "{uri}");
        assert!(uri.contains("&issuer=tessera"));
        let svg = secret.qr_svg("alice").unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg:.80}");
    }
}
