//! `tessera admin …`: users, sessions, keys, groups and invitations, from
//! the command line.
//!
//! Every action prints what it did on standard output, errors on standard
//! error, and exits with a code a script can act on ([`AdminError::exit_code`]).

pub mod audit;
pub mod groups;
pub mod keys;
pub mod sessions;
pub mod users;

use std::io::Write;
use tessera_auth::UserDirectory;

use crate::backends::Backends;
use crate::cli::{AdminAuditCommand, AdminCommand, AdminSessionsCommand, GroupCommand, InviteCommand, UserCommand};
use crate::config::AppConfig;
use crate::database::DatabaseError;
use tessera_auth::password_policy::check_username;
use tessera_auth::User;

/// Exit code: done.
pub const EXIT_OK: u8 = 0;
/// Exit code: a store or the database failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or configuration.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: no such user (or session).
pub const EXIT_NOT_FOUND: u8 = 3;
/// Exit code: refused (name taken, password too weak, …).
pub const EXIT_REFUSED: u8 = 4;

/// Why an admin action did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database or the session store failed.
    #[error("{0}")]
    Failed(String),
    /// Bad input.
    #[error("{0}")]
    Usage(String),
    /// No such user or session.
    #[error("{0}")]
    NotFound(String),
    /// The action was refused.
    #[error("{0}")]
    Refused(String),
}

impl AdminError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            AdminError::Failed(_) => EXIT_FAILED,
            AdminError::Usage(_) => EXIT_USAGE,
            AdminError::NotFound(_) => EXIT_NOT_FOUND,
            AdminError::Refused(_) => EXIT_REFUSED,
        }
    }
}

impl From<DatabaseError> for AdminError {
    fn from(error: DatabaseError) -> Self {
        AdminError::Failed(error.to_string())
    }
}

impl From<tessera::StoreError> for AdminError {
    fn from(error: tessera::StoreError) -> Self {
        AdminError::Failed(format!("session store: {error}"))
    }
}

/// What admin actions work with.
pub struct AdminContext {
    /// Database and session engine.
    pub backends: Backends,
    /// The configuration (hasher, policy, clock).
    pub config: AppConfig,
}

impl AdminContext {
    /// The user called `username`, or [`AdminError::NotFound`].
    pub async fn user(&self, username: &str) -> Result<User, AdminError> {
        let key = check_username(username).map_err(|why| AdminError::Usage(format!("{username:?}: {why}")))?;
        self.backends
            .db
            .users()
            .user_by_name(&key)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no user {username:?}")))
    }
}

/// Runs `command`, writing its report to `out`, reading passwords from `input`.
pub async fn run(
    context: &AdminContext,
    command: &AdminCommand,
    input: &mut dyn std::io::BufRead,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    match command {
        AdminCommand::User(UserCommand::Create { username, password_stdin }) => {
            users::create(context, username, *password_stdin, input, out).await
        }
        AdminCommand::User(UserCommand::Disable { username }) => {
            users::set_enabled(context, username, false, out).await
        }
        AdminCommand::User(UserCommand::Enable { username }) => users::set_enabled(context, username, true, out).await,
        AdminCommand::User(UserCommand::ResetPassword { username, password_stdin }) => {
            users::reset_password(context, username, *password_stdin, input, out).await
        }
        AdminCommand::User(UserCommand::ResetSecondFactor { username }) => {
            users::reset_second_factor(context, username, out).await
        }
        AdminCommand::Sessions(AdminSessionsCommand::List { username }) => sessions::list(context, username, out).await,
        AdminCommand::Sessions(AdminSessionsCommand::Revoke { username, handle, all }) => {
            sessions::revoke(context, username, handle.as_deref(), *all, out).await
        }
        AdminCommand::Sessions(AdminSessionsCommand::PurgeExpired) => sessions::purge_expired(context, out).await,
        AdminCommand::RotateKeys => keys::rotate(context, out).await,
        AdminCommand::Audit(AdminAuditCommand::Purge { older_than }) => audit::purge(context, *older_than, out).await,
        AdminCommand::Group(GroupCommand::Add { group, username }) => groups::add(context, group, username, out).await,
        AdminCommand::Group(GroupCommand::Remove { group, username }) => {
            groups::remove(context, group, username, out).await
        }
        AdminCommand::Group(GroupCommand::List { group }) => groups::list(context, group.as_deref(), out).await,
        AdminCommand::Invite(InviteCommand::Create { groups, expires }) => {
            groups::invite(context, groups, *expires, out).await
        }
        AdminCommand::Invite(InviteCommand::List) => groups::invitations(context, out).await,
    }
}

/// Writes a line of the report; a closed standard output is not an error
/// worth failing an action that already happened.
pub(crate) fn say(out: &mut dyn Write, line: impl std::fmt::Display) {
    let _ = writeln!(out, "{line}");
}
