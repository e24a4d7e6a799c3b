//! The address browsers use for tessera (`server.public_url`).

/// The public base URL (`https://auth.example.com`), if configured: OpenID
/// Connect callbacks, forward-auth login redirects, the token issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublicUrl(pub Option<String>);

impl PublicUrl {
    /// The URL, if one is configured.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref()
    }
}
