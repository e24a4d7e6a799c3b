//! `tessera admin user create|disable|enable|reset-password|reset-second-factor`.

use std::io::{BufRead, Write};

use rand::Rng;

use super::{say, AdminContext, AdminError};
use crate::accounts::{Accounts, RegisterError};
use crate::audit::AuditKind;
use crate::second_factor::SecondFactors;
use tessera::DeviceInfo;

/// A password from the first line of `input`, or a generated one (printed
/// once by the caller).
fn obtain_password(from_stdin: bool, input: &mut dyn BufRead) -> Result<(String, bool), AdminError> {
    if from_stdin {
        let mut line = String::new();
        input.read_line(&mut line).map_err(|e| AdminError::Usage(format!("reading the password: {e}")))?;
        let password = line.trim_end_matches(['\r', '\n']).to_owned();
        if password.is_empty() {
            return Err(AdminError::Usage("no password on standard input".into()));
        }
        Ok((password, false))
    } else {
        const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let mut rng = rand::thread_rng();
        let password = (0..20).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
        Ok((password, true))
    }
}

fn accounts(context: &AdminContext) -> Accounts {
    Accounts::new(
        context.backends.db.clone(),
        context.config.hasher.clone(),
        context.config.password_policy,
        context.config.clock.clone(),
    )
}

/// Revokes every API refresh-token family of the user, and every access
/// token issued before now (the per-user mark).
async fn revoke_api_tokens(context: &AdminContext, user_id: i64) -> Result<u64, AdminError> {
    Ok(context.backends.db.revoke_all_refresh_tokens(user_id, context.config.clock.now()).await?)
}

/// Creates a user.
pub async fn create(
    context: &AdminContext,
    username: &str,
    password_stdin: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let (password, generated) = obtain_password(password_stdin, input)?;
    let user = accounts(context).register(username, &password).await.map_err(|error| match error {
        RegisterError::InvalidUsername(why) => AdminError::Usage(format!("{username:?}: {why}")),
        RegisterError::InvalidPassword(why) => AdminError::Refused(why),
        RegisterError::UsernameTaken => AdminError::Refused(format!("user name {username:?} is taken")),
        RegisterError::Unavailable(e) => AdminError::Failed(e.to_string()),
    })?;
    say(out, format!("created user {:?} (id {})", user.username, user.id));
    if generated {
        say(out, format!("password: {password}"));
        say(out, "(shown once; pass --password-stdin to choose one)");
    }
    Ok(())
}

/// Disables (ending every session) or enables a user.
pub async fn set_enabled(
    context: &AdminContext,
    username: &str,
    enabled: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let user = context.user(username).await?;
    let when = if enabled { None } else { Some(context.config.clock.now()) };
    context.backends.db.set_disabled(user.id, when).await?;
    if enabled {
        say(out, format!("enabled user {:?}", user.username));
    } else {
        let ended = context.backends.engine.revoke_all(&user.id.to_string(), None).await?;
        let tokens = revoke_api_tokens(context, user.id).await?;
        say(
            out,
            format!("disabled user {:?}; ended {ended} session(s) and {tokens} API refresh token(s)", user.username),
        );
    }
    Ok(())
}

/// Sets a new password and ends every session of the user.
pub async fn reset_password(
    context: &AdminContext,
    username: &str,
    password_stdin: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let user = context.user(username).await?;
    let (password, generated) = obtain_password(password_stdin, input)?;
    context
        .config
        .password_policy
        .check(&password, &user.username)
        .map_err(|why| AdminError::Refused(why.to_string()))?;
    let hash = context.config.hasher.hash(password.clone()).await.map_err(|e| AdminError::Failed(e.to_string()))?;
    context.backends.db.set_password_hash(user.id, &hash).await?;
    let ended = context.backends.engine.revoke_all(&user.id.to_string(), None).await?;
    let tokens = revoke_api_tokens(context, user.id).await?;
    say(
        out,
        format!("password of {:?} reset; ended {ended} session(s) and {tokens} API refresh token(s)", user.username),
    );
    if generated {
        say(out, format!("password: {password}"));
        say(out, "(shown once; pass --password-stdin to choose one)");
    }
    Ok(())
}

/// Turns two-step verification off (app secret and recovery codes) and ends
/// every session and every API token (refresh families, and access tokens
/// through the user's "not before" mark), so that whoever holds one now
/// must sign in again.
pub async fn reset_second_factor(
    context: &AdminContext,
    username: &str,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let user = context.user(username).await?;
    let factors = SecondFactors::new(context.backends.db.clone(), context.config.clock.clone());
    if !factors.disable(user.id).await? {
        return Err(AdminError::Refused(format!("{:?} has no two-step verification", user.username)));
    }
    let now = context.config.clock.now();
    context.backends.db.record(AuditKind::SecondFactorDisabled, Some(user.id), &DeviceInfo::default(), now).await;
    let ended = context.backends.engine.revoke_all(&user.id.to_string(), None).await?;
    // API tokens too: they were obtained with the factor being reset, and
    // whoever holds them must sign in again like a browser must.
    let tokens = revoke_api_tokens(context, user.id).await?;
    say(
        out,
        format!(
            "two-step verification of {:?} turned off; ended {ended} session(s) and {tokens} API refresh token(s)",
            user.username
        ),
    );
    Ok(())
}
