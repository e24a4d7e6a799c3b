//! `tessera admin sessions list|revoke|purge-expired`.

use std::io::Write;

use tessera::{SessionEngine, Timestamp};

use super::{say, AdminContext, AdminError};

fn when(t: Timestamp) -> String {
    time::OffsetDateTime::from_unix_timestamp(t.as_millis() / 1000)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| t.as_millis().to_string())
}

/// Lists a user's live sessions.
pub async fn list(context: &AdminContext, username: &str, out: &mut dyn Write) -> Result<(), AdminError> {
    let user = context.user(username).await?;
    let engine = &context.backends.engine;
    if engine.is_sealed() {
        say(out, "sessions are sealed in cookies (cookie://): the server keeps no list of them");
        return Ok(());
    }
    let sessions = engine.sessions_of(&user.id.to_string()).await?;
    say(out, format!("{} session(s) of {:?}", sessions.len(), user.username));
    if !sessions.is_empty() {
        say(out, format!("{:<24} {:<21} {:<21} {:<21} device", "handle", "created", "last active", "expires"));
    }
    for record in &sessions {
        let device = format!(
            "{} {}",
            record.device.ip.as_deref().unwrap_or("-"),
            record.device.user_agent.as_deref().unwrap_or("-")
        );
        say(
            out,
            format!(
                "{:<24} {:<21} {:<21} {:<21} {device}",
                SessionEngine::handle_of(record).to_string(),
                when(record.created_at),
                when(record.last_active),
                when(record.expires_at),
            ),
        );
    }
    Ok(())
}

/// Ends one session (by handle) or all sessions of a user.
pub async fn revoke(
    context: &AdminContext,
    username: &str,
    handle: Option<&str>,
    all: bool,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let user = context.user(username).await?;
    let engine = &context.backends.engine;
    let user_id = user.id.to_string();
    match (handle, all) {
        (_, true) => {
            let ended = engine.revoke_all(&user_id, None).await?;
            if engine.is_sealed() {
                say(out, format!("every sealed-cookie session of {:?} issued until now is refused", user.username));
            } else {
                say(out, format!("ended {ended} session(s) of {:?}", user.username));
            }
            Ok(())
        }
        (Some(handle), false) => {
            if engine.revoke(&user_id, handle).await? {
                say(out, format!("ended session {handle} of {:?}", user.username));
                Ok(())
            } else {
                Err(AdminError::NotFound(format!("{:?} has no live session {handle}", user.username)))
            }
        }
        (None, false) => Err(AdminError::Usage("give --handle HANDLE or --all".into())),
    }
}

/// Removes expired sessions now.
pub async fn purge_expired(context: &AdminContext, out: &mut dyn Write) -> Result<(), AdminError> {
    let purged = context.backends.engine.purge_expired().await?;
    say(out, format!("purged {purged} expired session(s)"));
    Ok(())
}
