//! `tessera admin rotate-keys`.

use std::io::Write;

use super::{say, AdminContext, AdminError};

/// Rotates every key the server owns: the cookie sealing key and the JWT
/// signing keys through [`rotate_jwt_signing_keys`].
pub async fn rotate(context: &AdminContext, out: &mut dyn Write) -> Result<(), AdminError> {
    rotate_cookie_sealing_key(context, out).await?;
    rotate_jwt_signing_keys(context, out).await?;
    Ok(())
}

/// Adds a newer cookie sealing key; older keys keep opening existing cookies.
/// Running servers load keys at start: restart them (one at a time) to seal
/// with the new key.
pub async fn rotate_cookie_sealing_key(context: &AdminContext, out: &mut dyn Write) -> Result<(), AdminError> {
    // Make sure key 1 exists first, so that rotating never leaves a gap.
    context.backends.db.cookie_sealing_keys().await?;
    let id = context.backends.db.rotate_cookie_key().await?;
    say(out, format!("cookie sealing key rotated: key {id} is now the newest (older keys still open cookies)"));
    Ok(())
}

/// Adds a new JWT signing key for API access tokens (the same as `tessera
/// keys rotate`); old public keys keep verifying until their tokens expire.
pub async fn rotate_jwt_signing_keys(context: &AdminContext, out: &mut dyn Write) -> Result<(), AdminError> {
    let kid = crate::api::tokens::TokenService::rotate_keys(&context.backends.db, context.config.clock.now())
        .await
        .map_err(|e| AdminError::Failed(e.to_string()))?;
    say(out, format!("JWT signing key rotated: {}", crate::api::tokens::rotation_note(&kid)));
    Ok(())
}
