//! What passwords and user names are accepted.
//!
//! Passwords follow NIST SP 800-63B rev 4 and OWASP ASVS 5.0 §6.2: a
//! configurable minimum length (default 12), at least 64 characters always
//! accepted, no composition rules, Unicode NFKC before anything else, and
//! refusal of passwords that are common or breached, made of sequential or
//! repeated characters, or derived from the user name or the service name.
//! Every refusal says why. See `docs/password-policy.md`.

use std::collections::HashSet;
use std::io::Read;
use std::sync::OnceLock;

use tessera::password::{normalize_password, MAX_PASSWORD_BYTES};

/// The service's name: passwords derived from it are refused.
pub const SERVICE_NAME: &str = "tessera";

/// Default minimum length, in characters.
pub const DEFAULT_MIN_CHARS: usize = 12;

/// Passwords of this many characters are always long enough, whatever the
/// configured minimum (ASVS 6.2.9 asks that at least 64 be allowed).
pub const ALWAYS_LONG_ENOUGH: usize = 64;

/// Smallest minimum that may be configured (ASVS 6.2.1).
pub const LOWEST_MIN_CHARS: usize = 8;

/// Rules for user names: 3–64 characters of ASCII letters, digits, `.`, `_`
/// and `-`, compared case-insensitively.
pub fn check_username(username: &str) -> Result<String, &'static str> {
    let length = username.chars().count();
    if !(3..=64).contains(&length) {
        return Err("User names are 3 to 64 characters long.");
    }
    if !username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err("User names may contain only letters, digits, '.', '_' and '-'.");
    }
    Ok(username.to_ascii_lowercase())
}

/// Why a new password was refused. `Display` is the message shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyViolation {
    /// Fewer characters than the minimum.
    #[error("Passwords are at least {min} characters long.")]
    TooShort {
        /// The minimum in force.
        min: usize,
    },
    /// More bytes than can be hashed.
    #[error("Passwords are at most {max} bytes long.")]
    TooLong {
        /// [`MAX_PASSWORD_BYTES`].
        max: usize,
    },
    /// On the list of common and breached passwords.
    #[error("This password is on a list of common or breached passwords; choose another.")]
    Common,
    /// Made of sequential or repeated characters (`123456789012`, `aaaa…`, `qwerty…`).
    #[error("This password is made of sequential or repeated characters (like 1234 or aaaa); choose another.")]
    Sequential,
    /// Derived from the user name.
    #[error("This password is too close to your user name; choose another.")]
    ContainsUsername,
    /// Derived from the service's name.
    #[error("This password is too close to the name of this service; choose another.")]
    ContainsServiceName,
}

/// Rules for passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values, after NFKC) accepted. Values
    /// above [`ALWAYS_LONG_ENOUGH`] act as [`ALWAYS_LONG_ENOUGH`].
    pub min_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy { min_chars: DEFAULT_MIN_CHARS }
    }
}

impl PasswordPolicy {
    /// A policy with minimum length `min_chars`.
    pub fn new(min_chars: usize) -> Self {
        PasswordPolicy { min_chars }
    }

    /// The minimum actually enforced: never above [`ALWAYS_LONG_ENOUGH`].
    pub fn effective_min_chars(&self) -> usize {
        self.min_chars.min(ALWAYS_LONG_ENOUGH)
    }

    /// Checks a new password for the account `username`; the error says why
    /// it was refused. The password is checked in its NFKC form, the form
    /// that is hashed.
    pub fn check(&self, password: &str, username: &str) -> Result<(), PolicyViolation> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PolicyViolation::TooLong { max: MAX_PASSWORD_BYTES });
        }
        let password = normalize_password(password);
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PolicyViolation::TooLong { max: MAX_PASSWORD_BYTES });
        }
        let min = self.effective_min_chars();
        if password.chars().count() < min {
            return Err(PolicyViolation::TooShort { min });
        }
        let lower = password.to_lowercase();
        if is_common(&lower) {
            return Err(PolicyViolation::Common);
        }
        if is_sequential_or_repeated(&lower) {
            return Err(PolicyViolation::Sequential);
        }
        let username = normalize_password(username).to_lowercase();
        if derived_from(&lower, &username, min) {
            return Err(PolicyViolation::ContainsUsername);
        }
        if derived_from(&lower, SERVICE_NAME, min) {
            return Err(PolicyViolation::ContainsServiceName);
        }
        Ok(())
    }
}

/// The embedded lists of common and breached passwords, lowercased, one per
/// line, gzipped. See `data/LICENSE.md` for where they come from.
const LISTS: [&[u8]; 2] =
    [include_bytes!("../data/django-common-passwords.txt.gz"), include_bytes!("../data/zxcvbn-passwords.txt.gz")];

/// The common passwords, decompressed on first use and kept for the life of
/// the process (about 40,000 entries, well under a megabyte).
pub fn common_passwords() -> &'static HashSet<String> {
    static SET: OnceLock<HashSet<String>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut set = HashSet::with_capacity(50_000);
        for gz in LISTS {
            let mut text = String::new();
            // The lists are part of the binary and checked by tests; a corrupt
            // one would only make the set smaller, never crash a request.
            if let Err(error) = flate2::read::GzDecoder::new(gz).read_to_string(&mut text) {
                tracing::error!(%error, "embedded common-password list is unreadable");
            }
            set.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_lowercase));
        }
        set
    })
}

/// Undoes the usual letter-for-digit substitutions (`p@ssw0rd`), so that
/// they do not turn a listed password or a name into an accepted one.
fn unleet(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '0' => 'o',
            '1' | '!' => 'i',
            '3' => 'e',
            '4' | '@' => 'a',
            '5' | '$' => 's',
            '7' => 't',
            other => other,
        })
        .collect()
}

/// On the list as is, without substitutions, or once digits and symbols
/// tacked on at either end are removed (`dragon123456`, `!!monkey!!`).
fn is_common(lower: &str) -> bool {
    let list = common_passwords();
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    [lower.to_owned(), unleet(lower), core.to_owned(), unleet(core)]
        .iter()
        .any(|candidate| !candidate.is_empty() && list.contains(candidate))
}

/// Sequences whose neighbours count as "sequential": the alphabet, the
/// digits (with 9→0 as on the keyboard), and keyboard rows, each also read
/// backwards. The letter rows are joined end to start (`…op` → `as…`).
const SEQUENCES: &[&str] = &[
    "abcdefghijklmnopqrstuvwxyz",
    "01234567890",
    "qwertyuiopasdfghjklzxcvbnm",
    "qwertyuiop[]\\",
    "asdfghjkl;'",
    "zxcvbnm,./",
    "azertyuiopqsdfghjklmwxcvbn",
    "qwertzuiopasdfghjklyxcvbnm",
    "`1234567890-=",
    "~!@#$%^&*()_+",
    "qaz",
    "wsx",
    "edc",
    "rfv",
    "tgb",
    "yhn",
    "ujm",
];

/// Whether `b` follows `a` (in either direction) in one of [`SEQUENCES`], or repeats it.
fn neighbours(a: char, b: char) -> bool {
    if a == b {
        return true;
    }
    SEQUENCES.iter().any(|seq| {
        let chars: Vec<char> = seq.chars().collect();
        chars.windows(2).any(|w| (w[0] == a && w[1] == b) || (w[0] == b && w[1] == a))
    })
}

/// Made of a short repeated unit (`abcabcabcabc`), or of so few runs of
/// sequential or repeated characters that it is a walk, not a secret: at
/// least three quarters of the neighbouring pairs follow a sequence.
fn is_sequential_or_repeated(lower: &str) -> bool {
    let chars: Vec<char> = lower.chars().collect();
    if chars.len() < 2 {
        return false;
    }
    // A period of at most 4 characters: "aaaa…", "abab…", "1212…", "passpass…".
    let periodic = (1..=4.min(chars.len() / 2)).any(|p| chars.iter().enumerate().all(|(i, c)| *c == chars[i % p]));
    if periodic {
        return true;
    }
    let runs = 1 + chars.windows(2).filter(|w| !neighbours(w[0], w[1])).count();
    runs * 4 <= chars.len()
}

/// Whether the password is built around `name` (or its reverse, or with
/// letter-for-digit substitutions): once every occurrence is removed, what
/// remains would not meet the length minimum on its own.
fn derived_from(lower: &str, name: &str, min: usize) -> bool {
    if name.chars().count() < 3 {
        return false;
    }
    let reversed: String = name.chars().rev().collect();
    for password in [lower.to_owned(), unleet(lower)] {
        for needle in [name.to_owned(), unleet(name), reversed.clone(), unleet(&reversed)] {
            if password.contains(&needle) {
                let rest = password.replace(&needle, "");
                if rest.chars().count() < min {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(check_username("Alice.B_c-9"), Ok("alice.b_c-9".into()));
        for bad in ["ab", "a b c", "ünï", "<script>", &"a".repeat(65), "a/b"] {
            assert!(check_username(bad).is_err(), "{bad}");
        }
        assert!(check_username(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn length() {
        let policy = PasswordPolicy::default();
        assert_eq!(policy.check("Tr0ub4dor&3", "alice"), Err(PolicyViolation::TooShort { min: 12 }));
        assert_eq!(policy.check("Tr0ub4dor&3x", "alice"), Ok(()));
        assert_eq!(policy.check("correct horse battery", "alice"), Ok(()));
        assert!(policy.check("ünïcødé✓ünï", "alice").is_err(), "11 characters, 20 bytes");
        assert!(policy.check("ünïcødé✓ünïx", "alice").is_ok(), "characters, not bytes");
        let long = "correct horse battery staple ".repeat(40);
        assert_eq!(policy.check(&long[..1024], "alice"), Ok(()));
        assert_eq!(
            policy.check(&"correct horse battery ".repeat(47), "alice"),
            Err(PolicyViolation::TooLong { max: 1024 })
        );
        // NFKC expansion counts: 300 × U+FDFA is 900 bytes typed, ~9900 normalised.
        assert_eq!(policy.check(&"\u{fdfa}".repeat(300), "alice"), Err(PolicyViolation::TooLong { max: 1024 }));
    }

    #[test]
    fn sixty_four_characters_are_always_enough_and_the_minimum_is_configurable() {
        let strict = PasswordPolicy::new(200);
        assert_eq!(strict.effective_min_chars(), 64);
        let phrase = "the quick brown fox jumps over the lazy dog while it sleeps ok!!";
        assert_eq!(phrase.chars().count(), 64);
        assert_eq!(strict.check(phrase, "alice"), Ok(()));
        assert_eq!(strict.check(&phrase[..63], "alice"), Err(PolicyViolation::TooShort { min: 64 }));
        let lax = PasswordPolicy::new(8);
        assert_eq!(lax.check("Xk7#qL9z", "alice"), Ok(()));
    }

    #[test]
    fn no_composition_rules() {
        let policy = PasswordPolicy::default();
        for fine in ["lowercase only words", "ZZ TOP IS A BAND", "8417 2093 5561", "ねこがすきですねこがすき"]
        {
            assert_eq!(policy.check(fine, "alice"), Ok(()), "{fine}");
        }
    }

    #[test]
    fn the_lists_are_embedded_and_large() {
        let list = common_passwords();
        assert!(list.len() >= 20_000, "{} entries", list.len());
        assert!(list.contains("password") && list.contains("123456") && list.contains("qwerty"));
    }

    #[test]
    fn common_and_breached_passwords_are_refused_case_insensitively() {
        let policy = PasswordPolicy::default();
        let long_listed: Vec<&String> =
            common_passwords().iter().filter(|p| p.is_ascii() && p.chars().count() >= 12).collect();
        assert!(!long_listed.is_empty());
        for listed in long_listed.iter().take(200) {
            let upper = listed.to_uppercase();
            let verdict = policy.check(&upper, "someone");
            assert!(verdict.is_err(), "{upper}");
        }
        for common in ["PASSWORD1234", "password123456", "Dragon123456", "P@ssw0rd2024!", "!!!iloveyou!!!"] {
            assert_eq!(policy.check(common, "alice"), Err(PolicyViolation::Common), "{common}");
        }
    }

    #[test]
    fn sequential_and_repeated_characters_are_refused() {
        let policy = PasswordPolicy::default();
        for walk in [
            "123456789012",
            "aaaaaaaaaaaa",
            "qwertyuiopas",
            "abcdefghijkl",
            "9876543210987",
            "abcabcabcabc",
            "1234abcd5678",
            "zxcvbnm,./asdfgh",
            "AAAAbbbbCCCC",
            "ab12ab12ab12",
        ] {
            // Some walks are on the breached list too, which is checked first.
            assert!(is_sequential_or_repeated(&walk.to_lowercase()), "{walk}");
            assert!(policy.check(walk, "alice").is_err(), "{walk}");
        }
        assert_eq!(policy.check("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "alice"), Err(PolicyViolation::Sequential));
        // Natural phrases have a few sequential pairs ("rs", "tt", "er"), not mostly.
        for fine in ["correct horse battery", "first stupid test", "a rusty nail in sussex"] {
            assert_eq!(policy.check(fine, "alice"), Ok(()), "{fine}");
        }
    }

    #[test]
    fn passwords_derived_from_names_are_refused() {
        let policy = PasswordPolicy::default();
        assert_eq!(policy.check("Alice.Smith2024", "alice.smith"), Err(PolicyViolation::ContainsUsername));
        assert_eq!(policy.check("@l1ce.sm1th!!", "alice.smith"), Err(PolicyViolation::ContainsUsername));
        assert_eq!(policy.check("htims.ecila99", "alice.smith"), Err(PolicyViolation::ContainsUsername));
        assert_eq!(policy.check("Tessera-Login!", "alice"), Err(PolicyViolation::ContainsServiceName));
        assert_eq!(policy.check("my t3ss3ra pw", "alice"), Err(PolicyViolation::ContainsServiceName));
        // A name inside an otherwise long enough password is fine.
        assert_eq!(policy.check("alice likes correct horse battery", "alice"), Ok(()));
    }

    #[test]
    fn refusals_say_why() {
        let policy = PasswordPolicy::default();
        let message = |p: &str| policy.check(p, "alice.smith").unwrap_err().to_string();
        assert!(message("short").contains("at least 12 characters"));
        assert!(message("PASSWORD1234").contains("common or breached"));
        assert!(message("123456789012").contains("sequential or repeated"));
        assert!(message("alice.smith2024").contains("user name"));
        assert!(message("tessera-2024!").contains("name of this service"));
    }

    #[test]
    fn the_normal_form_is_checked() {
        let policy = PasswordPolicy::default();
        // Full-width letters are ASCII in NFKC: still the listed "password1234".
        assert_eq!(policy.check("ｐａｓｓｗｏｒｄ1234", "alice"), Err(PolicyViolation::Common));
        // 11 characters as "e" + combining accent would be 12 scalar values
        // but 11 after NFKC: counted after normalisation.
        assert_eq!(policy.check("cafe\u{301}-au-lai", "alice"), Err(PolicyViolation::TooShort { min: 12 }));
    }
}
