//! HTML for browsers, JSON for API clients.

use http::header::{ACCEPT, CONTENT_TYPE};
use http::HeaderMap;

/// Whether the client would rather have JSON than HTML: it asks for
/// `application/json` (or `application/problem+json`) and not `text/html`,
/// or it sent JSON and did not ask for HTML.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers.get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("text/html") {
        return false;
    }
    if accept.contains("json") {
        return true;
    }
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    content_type.contains("json")
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
