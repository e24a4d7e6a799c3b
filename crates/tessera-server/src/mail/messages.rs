//! The messages: each a plain-text and an HTML part, naming the site and
//! linking to its public URL. Nothing here stores or logs a secret.

use lettre::message::{Mailbox, MultiPart};
use lettre::Message;
use tessera_auth::{Notice, Prepared};
use tessera_axum::escape_html;

/// Who sends, and where links point.
#[derive(Debug, Clone)]
pub struct Site {
    /// The name messages sign with.
    pub name: String,
    /// The public base URL, without a trailing slash.
    pub base_url: String,
    /// `From`.
    pub from: Mailbox,
}

/// The link of a verification mail (a page that asks before it uses it,
/// so a mail scanner following links confirms nothing).
pub fn verify_link(base_url: &str, token: &str) -> String {
    format!("{base_url}/email/verify?token={token}")
}

/// The link of a reset mail.
pub fn reset_link(base_url: &str, token: &str) -> String {
    format!("{base_url}/password/reset?token={token}")
}

/// The link of a sign-in mail (a page that asks before it signs in, and
/// only in the browser that asked for the link).
pub fn sign_in_link(base_url: &str, token: &str) -> String {
    format!("{base_url}/login/email/link?token={token}")
}

/// The message for `prepared`.
pub fn render(site: &Site, prepared: &Prepared) -> Result<Message, String> {
    let (to, subject, paragraphs, action) = content(site, prepared);
    let text = {
        let mut text = paragraphs.join("\n\n");
        if let Some((label, url)) = &action {
            text = text.replace("{action}", &format!("{label}: {url}"));
        }
        format!("{text}\n\n-- \n{} · {}\n", site.name, site.base_url)
    };
    let html = {
        let mut body = String::new();
        for paragraph in &paragraphs {
            if paragraph == "{action}" {
                if let Some((label, url)) = &action {
                    body.push_str(&format!("<p><a href=\"{}\">{}</a></p>\n", escape_html(url), escape_html(label)));
                }
            } else {
                body.push_str(&format!("<p>{}</p>\n", escape_html(paragraph).replace('\n', "<br>")));
            }
        }
        format!(
            "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n<body>\n{body}\
             <p style=\"color:#666\">{site} · <a href=\"{url}\">{url}</a></p>\n</body></html>\n",
            title = escape_html(&subject),
            site = escape_html(&site.name),
            url = escape_html(&site.base_url),
        )
    };
    let to: Mailbox = to.parse().map_err(|e| format!("recipient: {e}"))?;
    Message::builder()
        .from(site.from.clone())
        .to(to)
        .subject(subject)
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| e.to_string())
}

type Content = (String, String, Vec<String>, Option<(String, String)>);

fn content(site: &Site, prepared: &Prepared) -> Content {
    let name = &site.name;
    match prepared {
        Prepared::Verify { to, token, code, lifetime } => (
            to.clone(),
            format!("Confirm your email address for {name}"),
            vec![
                format!("Someone, hopefully you, asked to use this address for an account at {name}."),
                "{action}".into(),
                format!("Or enter this code on your account page: {code}"),
                format!(
                    "The link and the code work once, for {}. If this was not you, ignore this mail: \
                     the address will not be used.",
                    humantime::format_duration(*lifetime)
                ),
            ],
            Some(("Confirm this address".into(), verify_link(&site.base_url, token))),
        ),
        Prepared::PasswordReset { to, username, token, lifetime } => (
            to.clone(),
            format!("Reset your {name} password"),
            vec![
                format!("Someone, hopefully you, asked to reset the password of the account {username} at {name}."),
                "{action}".into(),
                format!(
                    "The link works once, for {}. Afterwards every device signed in to the account is signed out. \
                     If this was not you, ignore this mail: your password stays as it is.",
                    humantime::format_duration(*lifetime)
                ),
            ],
            Some(("Choose a new password".into(), reset_link(&site.base_url, token))),
        ),
        Prepared::SignIn { to, username, code, token, lifetime } => {
            let lifetime = humantime::format_duration(*lifetime);
            let mut paragraphs =
                vec![format!("Someone, hopefully you, asked to sign in to the account {username} at {name}.")];
            let action = match (code, token) {
                (Some(code), _) => {
                    paragraphs.push(format!("Your sign-in code: {code}"));
                    paragraphs.push(format!(
                        "Enter it in the browser where you asked for it. It works once, for {lifetime}, and only \
                         there. Never tell it to anyone: {name} will never ask you for it."
                    ));
                    None
                }
                (None, Some(token)) => {
                    paragraphs.push("{action}".into());
                    paragraphs.push(format!(
                        "Open the link in the browser where you asked for it: it works once, for {lifetime}, and \
                         only there."
                    ));
                    Some(("Sign in".into(), sign_in_link(&site.base_url, token)))
                }
                (None, None) => None,
            };
            paragraphs.push(
                "If this was not you, ignore this mail: nobody can sign in with it without the browser that \
                 asked."
                    .into(),
            );
            (to.clone(), format!("Sign in to {name}"), paragraphs, action)
        }
        Prepared::Notice { to, username, notice, at, device, ip } => {
            let what = match notice {
                Notice::NewDeviceSignIn => "New sign-in to your account",
                Notice::PasswordChanged => "Your password was changed",
                Notice::SecondFactorAdded => "Two-step verification was turned on",
                Notice::SecondFactorRemoved => "Two-step verification was turned off",
                Notice::EmailChanged => "Your account's email address was changed",
                Notice::PasskeyAdded => "A passkey was added to your account",
                Notice::PasskeyRemoved => "A passkey was removed from your account",
            };
            let (when, _) = crate::pages::display_time(tessera::Timestamp(*at));
            let mut facts = format!("Account: {username}\nWhen: {when}");
            if let Some(device) = device.as_deref().filter(|d| !d.is_empty()) {
                facts.push_str(&format!("\nDevice: {device}"));
            }
            if let Some(ip) = ip.as_deref().filter(|d| !d.is_empty()) {
                facts.push_str(&format!("\nAddress: {ip}"));
            }
            (
                to.clone(),
                format!("{name}: {what}"),
                vec![
                    format!("{what}."),
                    facts,
                    "If this was you, there is nothing to do. If not, sign out the devices you do not know \
                     and change your password:"
                        .into(),
                    "{action}".into(),
                ],
                Some(("Your devices".into(), format!("{}/account/sessions", site.base_url))),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_mail_has_both_parts_and_escapes_the_name() {
        let site = Site {
            name: "Example <Corp>".into(),
            base_url: "https://auth.example.com".into(),
            from: "tessera <no-reply@example.com>".parse().unwrap(),
        };
        let prepared = Prepared::PasswordReset {
            to: "alice@example.com".into(),
            username: "alice".into(),
            token: "t".repeat(43),
            lifetime: std::time::Duration::from_secs(900),
        };
        let message = String::from_utf8(render(&site, &prepared).unwrap().formatted()).unwrap();
        assert!(message.contains("multipart/alternative"), "{message}");
        assert!(message.contains("text/plain") && message.contains("text/html"), "{message}");
        assert!(message.contains("Example &lt;Corp&gt;"), "{message}");
        let (_, _, paragraphs, action) = content(&site, &prepared);
        assert!(paragraphs[0].contains("alice"));
        assert_eq!(action.unwrap().1, format!("https://auth.example.com/password/reset?token={}", "t".repeat(43)));
    }

    #[test]
    fn a_sign_in_mail_has_the_code_or_the_link_never_both() {
        let site = Site {
            name: "Example".into(),
            base_url: "https://auth.example.com".into(),
            from: "tessera <no-reply@example.com>".parse().unwrap(),
        };
        let lifetime = std::time::Duration::from_secs(600);
        let code = Prepared::SignIn {
            to: "alice@example.com".into(),
            username: "alice".into(),
            code: Some("012345".into()),
            token: None,
            lifetime,
        };
        let (to, subject, paragraphs, action) = content(&site, &code);
        assert_eq!((to.as_str(), subject.as_str()), ("alice@example.com", "Sign in to Example"));
        assert!(action.is_none() && paragraphs.iter().any(|p| p.contains("012345") && p.contains("code")));
        assert!(paragraphs.iter().any(|p| p.contains("10m") && p.contains("only there")), "{paragraphs:?}");
        let link = Prepared::SignIn {
            to: "alice@example.com".into(),
            username: "alice".into(),
            code: None,
            token: Some("k".repeat(43)),
            lifetime,
        };
        let (_, _, paragraphs, action) = content(&site, &link);
        assert_eq!(action.unwrap().1, format!("https://auth.example.com/login/email/link?token={}", "k".repeat(43)));
        assert!(!paragraphs.iter().any(|p| p.contains("code:")));
        let message = String::from_utf8(render(&site, &link).unwrap().formatted()).unwrap();
        assert!(message.contains("text/plain") && message.contains("text/html"));
    }
}
