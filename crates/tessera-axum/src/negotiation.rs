//! HTML for browsers, JSON for API clients.

use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};

/// Whether the client would rather have JSON than HTML: it asks for
/// `application/json` (or `application/problem+json`) and not `text/html`,
/// or it sent JSON and did not ask for HTML.
pub fn wants_json(headers: &HeaderMap) -> bool {
    wants_json_given(headers.get(ACCEPT), headers.get(CONTENT_TYPE))
}

/// [`wants_json`] from the request's `Accept` and `Content-Type` values,
/// for a caller that kept them (cheap clones) to decide only when an error
/// answer needs it.
pub fn wants_json_given(accept: Option<&HeaderValue>, content_type: Option<&HeaderValue>) -> bool {
    let accept = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("text/html") {
        return false;
    }
    if accept.contains("json") {
        return true;
    }
    content_type.and_then(|v| v.to_str().ok()).unwrap_or("").contains("json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        map
    }

    #[test]
    fn browsers_get_html_and_api_clients_json() {
        assert!(!wants_json(&headers(&[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")])));
        assert!(wants_json(&headers(&[("accept", "application/json")])));
        assert!(wants_json(&headers(&[("content-type", "application/json")])));
        assert!(!wants_json(&headers(&[])));
    }
}
