//! What passwords and user names are accepted.

use tessera::password::MAX_PASSWORD_BYTES;

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

/// Rules for passwords.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy {
    /// Fewest characters (Unicode scalar values) accepted.
    pub min_chars: usize,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        PasswordPolicy { min_chars: 8 }
    }
}

impl PasswordPolicy {
    /// Checks a new password; the error says why it was refused.
    pub fn check(&self, password: &str) -> Result<(), String> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(format!("Passwords are at most {MAX_PASSWORD_BYTES} bytes long."));
        }
        if password.chars().count() < self.min_chars {
            return Err(format!("Passwords are at least {} characters long.", self.min_chars));
        }
        Ok(())
    }
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
    fn passwords() {
        let policy = PasswordPolicy::default();
        assert!(policy.check("1234567").is_err());
        assert!(policy.check("12345678").is_ok());
        assert!(policy.check("ünïcødé✓").is_ok(), "characters, not bytes");
        assert!(policy.check(&"x".repeat(1024)).is_ok());
        assert!(policy.check(&"x".repeat(1025)).is_err());
    }
}
