//! Recovery codes: single-use lookup secrets for when the authenticator app
//! is lost.
//!
//! Each code is 25 characters from a 32-letter alphabet (125 random bits),
//! shown in five groups of five. At that strength a plain SHA-256 is an
//! acceptable way to store them (ASVS 6.5.2 asks for a slow salted hash
//! only below 112 bits), and the hash doubles as the lookup key, so
//! checking a code costs one indexed query instead of one argon2 run per
//! stored code.

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Codes issued at a time.
pub const CODES_PER_SET: usize = 10;

/// Characters per code, without the separators.
const CODE_CHARS: usize = 25;

/// Lower-case RFC 4648 base32 letters: no 0/O or 1/l/I to confuse.
const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A fresh set of codes, formatted for people (`abcde-fghij-…`).
pub fn generate_set() -> Vec<String> {
    (0..CODES_PER_SET).map(|_| generate()).collect()
}

fn generate() -> String {
    let mut random = [0u8; CODE_CHARS];
    OsRng.fill_bytes(&mut random);
    let mut code = String::with_capacity(CODE_CHARS + CODE_CHARS / 5);
    for (i, byte) in random.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            code.push('-');
        }
        // 256 is a multiple of 32: the low five bits are uniform.
        code.push(char::from(ALPHABET[usize::from(byte & 31)]));
    }
    code
}

/// The stored form of a code as the user typed it: separators and spaces
/// dropped, case folded, then SHA-256 in hex. `None` if it cannot be a code.
pub fn hash(input: &str) -> Option<String> {
    let normalized: String =
        input.chars().filter(|c| !c.is_whitespace() && *c != '-').map(|c| c.to_ascii_lowercase()).collect();
    if normalized.len() != CODE_CHARS || !normalized.bytes().all(|b| ALPHABET.contains(&b)) {
        return None;
    }
    Some(hex(&Sha256::digest(normalized.as_bytes())))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_are_distinct_well_formed_and_hashable() {
        let set = generate_set();
        assert_eq!(set.len(), CODES_PER_SET);
        let unique: std::collections::BTreeSet<_> = set.iter().collect();
        assert_eq!(unique.len(), CODES_PER_SET);
        for code in &set {
            assert_eq!(code.len(), 29, "{code}");
            assert_eq!(code.matches('-').count(), 4);
            assert!(hash(code).is_some());
        }
    }

    #[test]
    fn typing_variations_hash_alike_and_junk_does_not_hash() {
        let code = generate();
        let expected = hash(&code);
        assert_eq!(hash(&code.to_uppercase()), expected);
        assert_eq!(hash(&code.replace('-', " ")), expected);
        assert_eq!(hash(&code.replace('-', "")), expected);
        assert_ne!(hash(&generate()), expected);
        for junk in ["", "123456", "abcde-fghij", &format!("{code}a"), &code.replace('a', "1")] {
            if junk != code {
                assert_eq!(hash(junk), None, "{junk:?}");
            }
        }
    }
}
