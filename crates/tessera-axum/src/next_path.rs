//! Where to send a user after login: same-site relative paths only.

/// Returns `next` if it is a safe same-site relative path, else `None`.
///
/// Accepted: a path starting with a single `/` followed by something other
/// than `/` or `\`. Refused: absolute URLs (`https://evil`), scheme-relative
/// ones (`//evil`, `/\evil`, which browsers treat like `//`), `javascript:`
/// and other schemes, control characters and anything over 2048 bytes.
///
/// ```
/// use tessera_axum::safe_next;
/// assert_eq!(safe_next("/profile?tab=1"), Some("/profile?tab=1"));
/// assert_eq!(safe_next("//evil.example"), None);
/// assert_eq!(safe_next("/\\evil.example"), None);
/// assert_eq!(safe_next("https://evil.example"), None);
/// assert_eq!(safe_next("javascript:alert(1)"), None);
/// ```
pub fn safe_next(next: &str) -> Option<&str> {
    let bytes = next.as_bytes();
    if bytes.is_empty() || bytes.len() > 2048 || bytes[0] != b'/' {
        return None;
    }
    if matches!(bytes.get(1), Some(b'/') | Some(b'\\')) {
        return None;
    }
    // Browsers strip tabs and newlines from URLs ("/\t/evil" becomes "//evil")
    // and some treat backslashes as slashes: refuse every control character
    // and any backslash at all.
    if next.chars().any(|c| c.is_control() || c == '\\') {
        return None;
    }
    Some(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_open_redirect_shape() {
        for bad in [
            "",
            "profile",
            "//evil",
            "/\\evil",
            "\\\\evil",
            "https://evil",
            "http:/evil",
            "javascript:alert(1)",
            "/\t/evil",
            "/\n/evil",
            "/%0a",
            "data:text/html,x",
        ] {
            if bad == "/%0a" {
                // Percent-encoded characters stay encoded in the Location header: harmless.
                assert!(safe_next(bad).is_some());
                continue;
            }
            assert_eq!(safe_next(bad), None, "{bad:?} accepted");
        }
        for good in ["/", "/profile", "/account/sessions?x=1#top", "/a/b/../c"] {
            assert_eq!(safe_next(good), Some(good));
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(3000))), None);
    }
}
