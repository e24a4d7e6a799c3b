//! `tessera admin group add|remove|list` and `tessera admin invite create|list`.

use std::io::Write;
use std::time::Duration;

use tessera::Timestamp;

use super::{say, AdminContext, AdminError};
use crate::api::rfc3339;
use crate::groups::check_group_name;
use crate::registration_policy::RegistrationPolicy;

fn group_name(group: &str) -> Result<String, AdminError> {
    check_group_name(group).map_err(|why| AdminError::Usage(format!("{group:?}: {why}")))
}

/// Adds `username` to `group`.
pub async fn add(context: &AdminContext, group: &str, username: &str, out: &mut dyn Write) -> Result<(), AdminError> {
    let group = group_name(group)?;
    let user = context.user(username).await?;
    if context.backends.db.add_to_group(user.id, &group, context.config.clock.now()).await? {
        say(out, format!("added {:?} to group {group:?}", user.username));
    } else {
        say(out, format!("{:?} is already in group {group:?}", user.username));
    }
    Ok(())
}

/// Removes `username` from `group`.
pub async fn remove(
    context: &AdminContext,
    group: &str,
    username: &str,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let group = group_name(group)?;
    let user = context.user(username).await?;
    if context.backends.db.remove_from_group(user.id, &group).await? {
        say(out, format!("removed {:?} from group {group:?}", user.username));
        Ok(())
    } else {
        Err(AdminError::NotFound(format!("{:?} is not in group {group:?}", user.username)))
    }
}

/// Lists groups and members: `GROUP: user, user`.
pub async fn list(context: &AdminContext, group: Option<&str>, out: &mut dyn Write) -> Result<(), AdminError> {
    let only = group.map(group_name).transpose()?;
    let groups = context.backends.db.group_members(only.as_deref()).await?;
    if let (Some(only), true) = (&only, groups.is_empty()) {
        return Err(AdminError::NotFound(format!("no group {only:?} (a group exists while it has members)")));
    }
    if groups.is_empty() {
        say(out, "no groups");
    }
    for (name, members) in groups {
        say(out, format!("{name}: {}", members.join(", ")));
    }
    Ok(())
}

/// Creates an invitation and prints its link once.
pub async fn invite(
    context: &AdminContext,
    groups: &[String],
    expires: Duration,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let groups = groups.iter().map(|g| group_name(g)).collect::<Result<Vec<_>, _>>()?;
    let now = context.config.clock.now();
    let millis = i64::try_from(expires.as_millis()).map_err(|_| AdminError::Usage("--expires is too long".into()))?;
    let expires_at = Timestamp(now.as_millis().saturating_add(millis));
    let invitation = context.backends.db.create_invitation(&groups, now, expires_at).await?;
    let base = context.config.public_url.as_deref().unwrap_or("").trim_end_matches('/');
    // The token is base64url: nothing in it needs escaping in a URL.
    say(out, format!("invitation: {base}/register?invite={}", invitation.token));
    say(out, format!("expires: {}", rfc3339(invitation.expires_at)));
    if !groups.is_empty() {
        say(out, format!("groups: {}", groups.join(", ")));
    }
    if base.is_empty() {
        say(out, "(server.public_url is not set: prefix the path with the server's address)");
    }
    match context.config.registration {
        RegistrationPolicy::Invite => {}
        RegistrationPolicy::Open => say(out, "note: accounts.registration is \"open\": anyone can register anyway"),
        RegistrationPolicy::Closed => {
            say(out, "warning: accounts.registration is \"closed\": this invitation will be refused until it is \"invite\" or \"open\"")
        }
    }
    Ok(())
}

/// Lists unused, unexpired invitations.
pub async fn invitations(context: &AdminContext, out: &mut dyn Write) -> Result<(), AdminError> {
    let open = context.backends.db.open_invitations(context.config.clock.now()).await?;
    say(out, format!("{} open invitation(s)", open.len()));
    for (expires_at, groups) in open {
        let groups = if groups.is_empty() { "-".to_owned() } else { groups.replace(',', ", ") };
        say(out, format!("expires {}  groups {groups}", rfc3339(expires_at)));
    }
    Ok(())
}
