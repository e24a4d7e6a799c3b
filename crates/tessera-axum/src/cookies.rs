//! Request cookies and `Set-Cookie` headers: the one place tessera reads a
//! `Cookie` header (parsed by the `cookie` crate) and writes cookies. The
//! session layer, the server's flash messages and its OpenID Connect flow
//! cookie all go through here.

use cookie::Cookie;
use http::header::{COOKIE, SET_COOKIE};
use http::{HeaderMap, HeaderValue};

/// The values of every cookie called `name` in the request's `Cookie`
/// headers, in the order the browser sent them (several can share a name:
/// one set for a parent domain, say). Values are as sent, not decoded.
///
/// The header is split at `;` as the `cookie` crate's `split_parse` does,
/// but only pieces that start with `name` are handed to its parser: a
/// browser sends every cookie of the site, and parsing all of them for each
/// name the session layer looks up was a tenth of a signed-in API request.
pub fn values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(COOKIE)
        .into_iter()
        .filter_map(|header| header.to_str().ok())
        .flat_map(|header| header.split(';'))
        .filter(move |piece| piece.trim_start().starts_with(name))
        .filter_map(|piece| Cookie::parse(piece).ok())
        .filter(move |cookie| cookie.name_raw() == Some(name))
        .filter_map(|cookie| cookie.value_raw())
}

/// The first value of the cookie called `name`, if the request has one.
pub fn value<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    values(headers, name).next()
}

/// Adds `cookie` to the response headers as one more `Set-Cookie`.
pub fn set(headers: &mut HeaderMap, cookie: &Cookie<'_>) {
    // A cookie built from valid names and values always makes a valid header.
    if let Ok(value) = HeaderValue::from_str(&cookie.to_string()) {
        headers.append(SET_COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(cookies: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for cookie in cookies {
            headers.append(COOKIE, HeaderValue::from_str(cookie).unwrap());
        }
        headers
    }

    #[test]
    fn finds_every_value_of_a_name_across_headers() {
        let headers = request(&["a=1; flash=welcome;b=2", "flash=second", "flash"]);
        assert_eq!(values(&headers, "flash").collect::<Vec<_>>(), ["welcome", "second"]);
        assert_eq!(value(&headers, "b"), Some("2"));
        assert_eq!(value(&headers, "missing"), None);
        assert_eq!(value(&headers, "fla"), None, "names match exactly");
        assert_eq!(value(&headers, "flashy"), None, "a longer name is another cookie");
        let spaced = request(&[" flash = spaced ;other=1"]);
        assert_eq!(value(&spaced, "flash"), Some("spaced"), "whitespace around the pair, as the cookie crate trims it");
    }

    #[test]
    fn skips_what_is_not_a_cookie_and_non_utf8_headers() {
        let mut headers = request(&["=novalue; ok=1"]);
        headers.append(COOKIE, HeaderValue::from_bytes(b"x=\xff").unwrap());
        assert_eq!(value(&headers, "ok"), Some("1"));
        assert_eq!(value(&headers, "x"), None);
    }

    #[test]
    fn sets_one_header_per_cookie() {
        let mut headers = HeaderMap::new();
        set(&mut headers, &Cookie::new("a", "1"));
        set(&mut headers, &Cookie::new("b", "2"));
        assert_eq!(headers.get_all(SET_COOKIE).iter().count(), 2);
    }
}
