//! The session cookie's name and attributes.

use std::time::Duration;

use cookie::Cookie;

/// The `SameSite` policy of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent on top-level navigations from other sites (links), not on
    /// cross-site subresource or form posts. The default: users arriving from
    /// a link stay logged in.
    #[default]
    Lax,
    /// Never sent on cross-site requests.
    Strict,
}

/// How the session cookie is named and flagged.
///
/// Secure by default: `HttpOnly` always, `Secure` on, `SameSite=Lax`,
/// `Path=/`, no `Domain`, and therefore the `__Host-` name prefix, which makes
/// browsers refuse the cookie unless it was set that way by this very host.
///
/// ```
/// use tessera::CookieConfig;
/// let config = CookieConfig::default();
/// assert_eq!(config.cookie_name(), "__Host-id");
/// let cookie = config.session_cookie("value".into(), None).to_string();
/// assert!(cookie.contains("HttpOnly") && cookie.contains("Secure") && cookie.contains("SameSite=Lax"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    /// The base name; the effective name may carry a prefix. Default `id`.
    pub name: String,
    /// Whether the cookie is `Secure` (sent over HTTPS only; browsers also
    /// accept it on `http://localhost`). Default `true`.
    pub secure: bool,
    /// The `SameSite` attribute. Default `Lax`.
    pub same_site: SameSite,
    /// A `Domain` attribute, to share the session with sibling hosts (for
    /// forward-auth). `__Host-` forbids a domain, so such cookies use the
    /// weaker `__Secure-` prefix. Default none.
    pub domain: Option<String>,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig { name: "id".to_owned(), secure: true, same_site: SameSite::Lax, domain: None }
    }
}

impl CookieConfig {
    /// The name as sent to browsers: `__Host-` + name when secure without a
    /// domain, `__Secure-` + name when secure with a domain, else the bare name.
    pub fn cookie_name(&self) -> String {
        self.prefixed(&self.name)
    }

    /// Applies this configuration's prefix rule to another cookie name (used
    /// for companion cookies such as the pre-session CSRF cookie).
    pub fn prefixed(&self, name: &str) -> String {
        match (self.secure, &self.domain) {
            (true, None) => format!("__Host-{name}"),
            (true, Some(_)) => format!("__Secure-{name}"),
            (false, _) => name.to_owned(),
        }
    }

    /// The cookie carrying `value`, kept by the browser for `max_age` (or
    /// until the browser session ends when `None`).
    pub fn session_cookie(&self, value: String, max_age: Option<Duration>) -> Cookie<'static> {
        self.cookie(self.cookie_name(), value, max_age)
    }

    /// A cookie that makes the browser delete the session cookie.
    pub fn removal_cookie(&self) -> Cookie<'static> {
        self.cookie(self.cookie_name(), String::new(), Some(Duration::ZERO))
    }

    /// A cookie with this configuration's attributes and any name.
    pub fn cookie(&self, name: String, value: String, max_age: Option<Duration>) -> Cookie<'static> {
        let mut builder = Cookie::build((name, value)).http_only(true).secure(self.secure).path("/").same_site(
            match self.same_site {
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::Strict => cookie::SameSite::Strict,
            },
        );
        if let Some(domain) = &self.domain {
            builder = builder.domain(domain.clone());
        }
        if let Some(max_age) = max_age {
            let seconds = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            builder = builder.max_age(cookie::time::Duration::seconds(seconds));
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_follow_the_rules() {
        let mut config = CookieConfig::default();
        assert_eq!(config.cookie_name(), "__Host-id");
        config.domain = Some("example.com".into());
        assert_eq!(config.cookie_name(), "__Secure-id");
        config.secure = false;
        assert_eq!(config.cookie_name(), "id");
    }

    #[test]
    fn removal_expires_immediately() {
        let text = CookieConfig::default().removal_cookie().to_string();
        assert!(text.starts_with("__Host-id=;"), "{text}");
        assert!(text.contains("Max-Age=0"), "{text}");
        assert!(text.contains("Path=/") && !text.contains("Domain"), "{text}");
    }
}
