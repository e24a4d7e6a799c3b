//! `tessera admin user create|disable|enable|reset-password|reset-second-factor`.

use std::io::{BufRead, Write};

use rand::Rng;

use super::{say, AdminContext, AdminError};
use crate::activity_stats::ActivityStats;
use crate::auth_events::ServerEvents;
use tessera_auth::{Authenticator, Channel, Client, RegisterError};

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

/// The authentication core, as the server builds it: admin changes end
/// sessions and tokens, and are audited, exactly as the server's own.
async fn authenticator(context: &AdminContext) -> Result<Authenticator, AdminError> {
    let activity = ActivityStats::new(context.config.clock.clone());
    let events = ServerEvents::new(context.backends.db.clone(), activity);
    Ok(context.backends.authenticator(&context.config, events).await?)
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
    let auth = authenticator(context).await?;
    let user =
        auth.sign_up(Channel::Admin, &Client::default(), username, &password).await.map_err(|error| match error {
            RegisterError::InvalidUsername(why) => AdminError::Usage(format!("{username:?}: {why}")),
            RegisterError::InvalidPassword(why) => AdminError::Refused(why),
            RegisterError::UsernameTaken => AdminError::Refused(format!("user name {username:?} is taken")),
            // Administrators' commands are not throttled; a busy hashing
            // queue (a flood on a running server) is a failure to retry.
            error @ (RegisterError::Throttled(_) | RegisterError::Busy) => AdminError::Failed(error.to_string()),
            RegisterError::Unavailable(e) => AdminError::Failed(e.to_string()),
        })?;
    say(out, format!("created user {:?} (id {})", user.username, user.id));
    if generated {
        say(out, format!("password: {password}"));
        say(out, "(shown once; pass --password-stdin to choose one)");
    }
    Ok(())
}

/// Disables (ending every session and API token) or enables a user.
pub async fn set_enabled(
    context: &AdminContext,
    username: &str,
    enabled: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let user = context.user(username).await?;
    let auth = authenticator(context).await?;
    let revoked = auth.set_disabled(Channel::Admin, &Client::default(), user.id, !enabled).await?;
    let revoked = revoked.ok_or_else(|| AdminError::NotFound(format!("no user {username:?}")))?;
    if enabled {
        say(out, format!("enabled user {:?}", user.username));
    } else {
        say(
            out,
            format!(
                "disabled user {:?}; ended {} session(s) and {} API refresh token(s)",
                user.username, revoked.sessions, revoked.tokens
            ),
        );
    }
    Ok(())
}

/// Sets a new password and ends every session and API token of the user.
pub async fn reset_password(
    context: &AdminContext,
    username: &str,
    password_stdin: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let user = context.user(username).await?;
    let (password, generated) = obtain_password(password_stdin, input)?;
    let auth = authenticator(context).await?;
    let revoked =
        auth.change_password(Channel::Admin, &Client::default(), &user, &password, None).await.map_err(|error| {
            match error {
                RegisterError::Unavailable(e) => AdminError::Failed(e.to_string()),
                error @ RegisterError::Busy => AdminError::Failed(error.to_string()),
                why => AdminError::Refused(why.to_string()),
            }
        })?;
    say(
        out,
        format!(
            "password of {:?} reset; ended {} session(s) and {} API refresh token(s)",
            user.username, revoked.sessions, revoked.tokens
        ),
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
    let auth = authenticator(context).await?;
    let Some(revoked) = auth.reset_second_factor(Channel::Admin, &Client::default(), user.id).await? else {
        return Err(AdminError::Refused(format!("{:?} has no two-step verification", user.username)));
    };
    say(
        out,
        format!(
            "two-step verification of {:?} turned off; ended {} session(s) and {} API refresh token(s)",
            user.username, revoked.sessions, revoked.tokens
        ),
    );
    Ok(())
}
