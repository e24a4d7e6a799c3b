//! Who may enter which address behind forward-auth: an ordered list of
//! rules, in the spirit of Authelia's access control, matched on the host
//! (wildcards allowed) and a path prefix, each with a policy and optionally
//! restricted to named users, groups or verified email domains.
//!
//! Pure: [`evaluate`] takes the rules, the address and what is known about
//! the user, and says what to do. The first rule whose host, path and
//! subject match decides; an address no rule matches is refused
//! (**default deny**). See `docs/forward-auth.md`.

use serde::{Deserialize, Serialize};

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Refuse everyone (403).
    Deny,
    /// Let everyone in, logged in or not.
    Bypass,
    /// Any logged-in user the rule's subject allows.
    OneFactor,
    /// Like `one_factor`, and the account must have two-step verification.
    TwoFactor,
}

/// One rule: `[[forward_auth.rules]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRule {
    /// Hosts the rule is about: `app.example.com`, `app.example.com:8443`
    /// (that port only), `*.example.com` (every subdomain, not the domain
    /// itself) or `*` (every host). Required, at least one.
    pub hosts: Vec<String>,
    /// Path prefixes: `/admin` matches `/admin` and `/admin/…` (not
    /// `/administrator`); `/static/` matches everything under it. Empty:
    /// every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// `deny`, `bypass`, `one_factor` or `two_factor`. Required.
    pub policy: Policy,
    /// Only these user names (case-insensitive). With `groups` and
    /// `email_domains`: a user matching any of the three lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Only members of one of these groups (`tessera admin group add`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Only users with a verified email address in one of these domains.
    /// Accounts have no verified email address yet, so today this matches
    /// nobody.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_domains: Vec<String>,
}

impl AccessRule {
    /// Checks what the types cannot: hosts, paths, names.
    pub fn validate(&self) -> Result<(), String> {
        if self.hosts.is_empty() {
            return Err("hosts: at least one host (or \"*\") is required".into());
        }
        for host in &self.hosts {
            let name = host.strip_prefix("*.").unwrap_or(host);
            let name = match name.rsplit_once(':') {
                Some((name, port)) if !port.is_empty() && port.parse::<u16>().is_ok() => name,
                _ => name,
            };
            let ok = host == "*"
                || (!name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
                    && !name.starts_with('.')
                    && !name.ends_with('.'));
            if !ok {
                return Err(format!("hosts: {host:?} is not a host such as app.example.com or *.example.com"));
            }
        }
        for path in &self.paths {
            if !path.starts_with('/') || path.contains(['?', '#', '\\']) || path.chars().any(char::is_control) {
                return Err(format!("paths: {path:?} is not a path prefix such as /admin"));
            }
        }
        for domain in &self.email_domains {
            if domain.is_empty() || domain.contains('@') || domain.chars().any(char::is_whitespace) {
                return Err(format!("email_domains: {domain:?} is not a domain such as example.com"));
            }
        }
        for name in self.users.iter().chain(&self.groups) {
            if name.trim().is_empty() {
                return Err("users and groups must not contain empty names".into());
            }
        }
        Ok(())
    }

    fn matches_host(&self, host: &str, port: Option<u16>) -> bool {
        self.hosts.iter().any(|pattern| {
            let pattern = pattern.to_ascii_lowercase();
            if pattern == "*" {
                return true;
            }
            let (name, want_port) = match pattern.rsplit_once(':') {
                Some((name, p)) => match p.parse::<u16>() {
                    Ok(p) => (name.to_owned(), Some(p)),
                    Err(_) => (pattern.clone(), None),
                },
                None => (pattern.clone(), None),
            };
            if want_port.is_some() && want_port != port {
                return false;
            }
            match name.strip_prefix("*.") {
                Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
                None => host == name,
            }
        })
    }

    fn matches_path(&self, path: &str) -> bool {
        self.paths.is_empty()
            || self.paths.iter().any(|prefix| {
                if prefix.ends_with('/') {
                    path.starts_with(prefix.as_str())
                } else {
                    path == prefix || path.strip_prefix(prefix.as_str()).is_some_and(|rest| rest.starts_with('/'))
                }
            })
    }

    fn has_subject(&self) -> bool {
        !(self.users.is_empty() && self.groups.is_empty() && self.email_domains.is_empty())
    }

    fn matches_subject(&self, subject: &Subject) -> bool {
        if !self.has_subject() {
            return true;
        }
        let user = self.users.iter().any(|u| u.eq_ignore_ascii_case(&subject.username));
        let group = self.groups.iter().any(|g| subject.groups.iter().any(|have| have.eq_ignore_ascii_case(g)));
        let domain = self.email_domains.iter().any(|d| {
            subject.verified_emails.iter().any(|email| {
                email.rsplit_once('@').is_some_and(|(_, have)| have.eq_ignore_ascii_case(d.trim_start_matches('@')))
            })
        });
        user || group || domain
    }
}

/// The address a proxy asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host, lowercase, without the port.
    pub host: String,
    /// The port, if the URL names one.
    pub port: Option<u16>,
    /// The path, percent-decoded.
    pub path: String,
}

impl Target {
    /// The target of an absolute http(s) URL. `None` for anything else, and
    /// for paths that could mean another path to the application than to
    /// the rules: dot segments, backslashes or `;` path parameters (also
    /// percent-encoded), encoded NULs and slashes, or invalid UTF-8 once
    /// decoded.
    pub fn from_url(text: &str) -> Option<Target> {
        if text.len() > 8192 || text.chars().any(char::is_control) {
            return None;
        }
        // The raw path, before `url` normalizes it: an application may
        // resolve `..` differently, so such addresses match no rule at all.
        let after_scheme = text.split_once("://")?.1;
        let authority_end = after_scheme.find('/').unwrap_or(after_scheme.len());
        let (authority, raw_path) = after_scheme.split_at(authority_end);
        let raw_path = if raw_path.is_empty() { "/" } else { raw_path };
        let raw_path = raw_path.split(['?', '#']).next().unwrap_or("/");
        let url = url::Url::parse(text).ok()?;
        if !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        let host = url.host_str()?.to_ascii_lowercase();
        // The authority as sent must be exactly the host (and port) the
        // parser found. A proxy builds this URL from the client's Host
        // header, which it did not route by: `status.example.com?` or
        // `a@b` would make the rules judge one host while the proxy serves
        // another (and take the path from the raw text).
        if !authority_is(authority, &host, url.port_or_known_default()) {
            return None;
        }
        let lower = raw_path.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%00") || lower.contains("%5c") {
            return None;
        }
        let path = percent_encoding::percent_decode_str(raw_path).decode_utf8().ok()?.into_owned();
        // `;` starts path parameters, which some servers (Tomcat) strip
        // before routing: `/admin;x/users` would be `/admin/users` there.
        // Empty segments (`//admin`): proxies and servers merge slashes
        // after the check. A `%` left after decoding: an application that
        // decodes twice would see another path.
        // Whitespace or control characters once decoded, and segments
        // ending in a dot (`/admin.`, `/admin%20`): servers that trim them
        // (Windows, some frameworks) would route to `/admin`, which the
        // rules never saw.
        if path.contains(['\\', ';', '%'])
            || path.contains("//")
            || path.chars().any(|c| c.is_whitespace() || c.is_control())
            || path.split('/').any(|segment| segment == "." || segment == ".." || segment.ends_with('.'))
        {
            return None;
        }
        if !path.starts_with('/') {
            return None;
        }
        Some(Target { host, port: url.port(), path })
    }
}

/// Whether `authority` (the text between `://` and the path) is exactly
/// `host` with no port or with `port`: no user info, no `?`, `#` or `\`,
/// no characters the URL parser dropped or decoded.
fn authority_is(authority: &str, host: &str, port: Option<u16>) -> bool {
    let (name, port_text) = match authority.rsplit_once(':') {
        // `[::1]` alone: the colon is inside the brackets.
        Some((name, port_text)) if !port_text.contains(']') => (name, Some(port_text)),
        _ => (authority, None),
    };
    let port_ok = match port_text {
        None => true,
        Some(text) => !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && text.parse::<u16>().ok() == port,
    };
    port_ok && name.eq_ignore_ascii_case(host)
}

/// What is known about a logged-in user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    /// The user name.
    pub username: String,
    /// The user's groups.
    pub groups: Vec<String>,
    /// Verified email addresses of the account (none yet: accounts have no
    /// verified email of their own).
    pub verified_emails: Vec<String>,
}

/// What `/auth/verify` should answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request through.
    Allow,
    /// Let the request through if the account has two-step verification;
    /// otherwise send the user to set it up, or refuse.
    AllowWithSecondFactor,
    /// Nobody is logged in, and a rule may let the user in after logging in.
    LoginRequired,
    /// Refuse (403).
    Deny,
}

/// The decision, and the index of the rule that made it (`None`: no rule
/// matched, default deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What to answer.
    pub verdict: Verdict,
    /// Which rule decided.
    pub rule: Option<usize>,
}

/// The first rule matching `target` and `subject` decides; no match denies.
///
/// Without a user (`subject` is `None`), a rule restricted to users, groups
/// or email domains might match after a login, so it asks for one (unless
/// an earlier rule decided already).
pub fn evaluate(rules: &[AccessRule], target: &Target, subject: Option<&Subject>) -> Decision {
    for (index, rule) in rules.iter().enumerate() {
        if !rule.matches_host(&target.host, target.port) || !rule.matches_path(&target.path) {
            continue;
        }
        let decided = |verdict| Decision { verdict, rule: Some(index) };
        match subject {
            Some(subject) => {
                if !rule.matches_subject(subject) {
                    continue;
                }
                return decided(match rule.policy {
                    Policy::Deny => Verdict::Deny,
                    Policy::Bypass | Policy::OneFactor => Verdict::Allow,
                    Policy::TwoFactor => Verdict::AllowWithSecondFactor,
                });
            }
            None => {
                return decided(match rule.policy {
                    Policy::Bypass if !rule.has_subject() => Verdict::Allow,
                    Policy::Deny if !rule.has_subject() => Verdict::Deny,
                    _ => Verdict::LoginRequired,
                });
            }
        }
    }
    Decision { verdict: Verdict::Deny, rule: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(hosts: &[&str], paths: &[&str], policy: Policy) -> AccessRule {
        AccessRule {
            hosts: hosts.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
            policy,
            users: vec![],
            groups: vec![],
            email_domains: vec![],
        }
    }

    fn target(url: &str) -> Target {
        Target::from_url(url).unwrap_or_else(|| panic!("{url} is a target"))
    }

    fn user(name: &str, groups: &[&str]) -> Subject {
        Subject {
            username: name.into(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            verified_emails: vec![],
        }
    }

    #[test]
    fn default_deny_when_nothing_matches() {
        let rules = vec![rule(&["app.example.com"], &[], Policy::OneFactor)];
        let d = evaluate(&rules, &target("https://other.example.com/"), Some(&user("a", &[])));
        assert_eq!(d, Decision { verdict: Verdict::Deny, rule: None });
        let d = evaluate(&[], &target("https://app.example.com/"), Some(&user("a", &["admin"])));
        assert_eq!(d.verdict, Verdict::Deny, "no rules at all: nobody");
        let d = evaluate(&[], &target("https://app.example.com/"), None);
        assert_eq!(d.verdict, Verdict::Deny, "anonymous too, without a detour to the login page");
    }

    #[test]
    fn hosts_wildcards_and_ports() {
        let rules = vec![
            rule(&["*.corp.example"], &[], Policy::OneFactor),
            rule(&["app.example.com:8443"], &[], Policy::Bypass),
        ];
        let alice = user("alice", &[]);
        for (url, verdict) in [
            ("https://wiki.corp.example/", Verdict::Allow),
            ("https://a.b.corp.example/", Verdict::Allow),
            ("https://WIKI.Corp.Example/", Verdict::Allow),
            ("https://corp.example/", Verdict::Deny),
            ("https://evilcorp.example/", Verdict::Deny),
            ("https://wiki.corp.example.evil/", Verdict::Deny),
            ("https://app.example.com:8443/", Verdict::Allow),
            ("https://app.example.com/", Verdict::Deny),
            ("https://app.example.com:9443/", Verdict::Deny),
        ] {
            assert_eq!(evaluate(&rules, &target(url), Some(&alice)).verdict, verdict, "{url}");
        }
        assert_eq!(evaluate(&[rule(&["*"], &[], Policy::Deny)], &target("http://x/"), None).verdict, Verdict::Deny);
    }

    #[test]
    fn paths_are_prefixes_on_segment_boundaries() {
        let rules = vec![
            rule(&["app.example.com"], &["/admin"], Policy::Deny),
            rule(&["app.example.com"], &["/public/"], Policy::Bypass),
            rule(&["app.example.com"], &[], Policy::OneFactor),
        ];
        let alice = user("alice", &[]);
        for (path, verdict) in [
            ("/admin", Verdict::Deny),
            ("/admin/users", Verdict::Deny),
            ("/admin?x=1", Verdict::Deny),
            ("/administrator", Verdict::Allow),
            ("/public/logo.png", Verdict::Allow),
            ("/", Verdict::Allow),
        ] {
            let t = target(&format!("https://app.example.com{path}"));
            assert_eq!(evaluate(&rules, &t, Some(&alice)).verdict, verdict, "{path}");
        }
        assert_eq!(evaluate(&rules, &target("https://app.example.com/public/x"), None).verdict, Verdict::Allow);
        assert_eq!(evaluate(&rules, &target("https://app.example.com/wiki"), None).verdict, Verdict::LoginRequired);
        // Percent-encoding does not get around a prefix.
        let t = target("https://app.example.com/%61dmin/users");
        assert_eq!(t.path, "/admin/users");
        assert_eq!(evaluate(&rules, &t, Some(&alice)).verdict, Verdict::Deny);
    }

    #[test]
    fn ambiguous_paths_are_no_target() {
        for url in [
            "https://app.example.com/public/../admin",
            "https://app.example.com/public/%2e%2e/admin",
            "https://app.example.com/public%2f..%2fadmin",
            "https://app.example.com/public/..\\admin",
            "https://app.example.com/a%00b",
            "https://app.example.com/%ff",
            "https://app.example.com/./x",
            "https://app.example.com/admin;jsessionid=1/users",
            "https://app.example.com/admin%3bx/users",
            "https://app.example.com//admin",
            "https://app.example.com/public//admin",
            "https://app.example.com/%252e/admin",
            "https://app.example.com/admin%20",
            "https://app.example.com/admin%09",
            "https://app.example.com/admin.",
            "https://app.example.com/admin./x",
            "ftp://app.example.com/",
            "not a url",
        ] {
            assert_eq!(Target::from_url(url), None, "{url}");
        }
        assert_eq!(target("https://App.Example.com:8443/x?y").port, Some(8443));
        assert_eq!(target("https://app.example.com").path, "/");
        assert_eq!(target("https://app.example.com/v1.2/file.txt").path, "/v1.2/file.txt");
    }

    /// A proxy builds the original URL from the client's Host header, which
    /// it did not route by: an authority the parser reads as another host
    /// (or a path taken from the raw text after it) is no target.
    #[test]
    fn the_authority_must_be_exactly_the_host() {
        for url in [
            "http://status.example.com?/admin",
            "http://status.example.com#/admin",
            "http://status.example.com\\@wiki.example.com/admin",
            "http://user@status.example.com/admin",
            "http://status.example.com:/admin",
            "http://status.example.com:80x/admin",
            "http://status.example.com:8080/admin?x".replace(":8080", ":99999").as_str(),
            "http://st%61tus.example.com/admin",
        ] {
            assert_eq!(Target::from_url(url), None, "{url}");
        }
        assert_eq!(target("http://status.example.com:80/admin").host, "status.example.com");
        assert_eq!(target("http://[::1]:8080/x").port, Some(8080));
        assert_eq!(target("http://[::1]/x").host, "[::1]");
    }

    #[test]
    fn subjects_users_groups_domains() {
        let mut staff = rule(&["staff.example.com"], &[], Policy::OneFactor);
        staff.groups = vec!["staff".into()];
        let mut bob_only = rule(&["staff.example.com"], &[], Policy::TwoFactor);
        bob_only.users = vec!["Bob".into()];
        let mut by_domain = rule(&["staff.example.com"], &[], Policy::OneFactor);
        by_domain.email_domains = vec!["example.com".into()];
        let rules = vec![staff, bob_only, by_domain];
        let t = target("https://staff.example.com/");
        assert_eq!(evaluate(&rules, &t, Some(&user("eve", &[]))), Decision { verdict: Verdict::Deny, rule: None });
        assert_eq!(evaluate(&rules, &t, Some(&user("eve", &["STAFF"]))).verdict, Verdict::Allow);
        assert_eq!(evaluate(&rules, &t, Some(&user("bob", &[]))).verdict, Verdict::AllowWithSecondFactor);
        let mut mailed = user("mallory", &[]);
        mailed.verified_emails = vec!["m@example.com".into()];
        assert_eq!(evaluate(&rules, &t, Some(&mailed)).rule, Some(2));
        mailed.verified_emails = vec!["m@evil-example.com".into()];
        assert_eq!(evaluate(&rules, &t, Some(&mailed)).verdict, Verdict::Deny);
        assert_eq!(evaluate(&rules, &t, None).verdict, Verdict::LoginRequired, "may match after a login");
    }

    #[test]
    fn first_match_wins_and_policies() {
        let mut deny_contractors = rule(&["*"], &[], Policy::Deny);
        deny_contractors.groups = vec!["contractors".into()];
        let rules = vec![deny_contractors, rule(&["*"], &[], Policy::TwoFactor)];
        let t = target("http://x.test/");
        assert_eq!(evaluate(&rules, &t, Some(&user("c", &["contractors"]))).verdict, Verdict::Deny);
        assert_eq!(
            evaluate(&rules, &t, Some(&user("d", &[]))),
            Decision { verdict: Verdict::AllowWithSecondFactor, rule: Some(1) }
        );
        assert_eq!(evaluate(&rules, &t, None).verdict, Verdict::LoginRequired);
    }

    #[test]
    fn validation() {
        assert!(rule(&["app.example.com", "*.corp.example", "x.test:8443", "*"], &["/a", "/b/"], Policy::Deny)
            .validate()
            .is_ok());
        assert!(rule(&[], &[], Policy::Deny).validate().is_err());
        assert!(rule(&["https://app"], &[], Policy::Deny).validate().is_err());
        assert!(rule(&["a b"], &[], Policy::Deny).validate().is_err());
        assert!(rule(&["app"], &["admin"], Policy::Deny).validate().is_err());
        let mut r = rule(&["app"], &[], Policy::Deny);
        r.email_domains = vec!["@x@y".into()];
        assert!(r.validate().is_err());
    }
}
