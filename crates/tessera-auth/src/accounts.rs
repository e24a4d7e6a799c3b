//! Accounts: registration, password checks with transparent rehash, and
//! password changes, over any [`UserDirectory`].

use std::sync::Arc;
use tessera::password::{PasswordError, PasswordHasher};
use tessera::Clock;

use crate::database::DatabaseError;
use crate::directory::{CreateUserError, User, UserDirectory};
use crate::password_policy::{check_username, PasswordPolicy};
use crate::signed_in_users::SignedInUsers;

/// Why registration failed.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// The user name breaks the rules.
    #[error("{0}")]
    InvalidUsername(&'static str),
    /// The password breaks the policy.
    #[error("{0}")]
    InvalidPassword(String),
    /// The name is taken.
    #[error("That user name is taken.")]
    UsernameTaken,
    /// Too many accounts were created from this client address lately:
    /// wait this long. Nothing was hashed or created.
    #[error("too many sign-ups from this address")]
    Throttled(std::time::Duration),
    /// The password hashing queue is full: nothing was created; try again
    /// shortly (not the user's fault, and not counted against them).
    #[error("password hashing is busy")]
    Busy,
    /// A dependency is down.
    #[error(transparent)]
    Unavailable(AccountsUnavailable),
}

impl From<AccountsUnavailable> for RegisterError {
    fn from(error: AccountsUnavailable) -> Self {
        match error {
            AccountsUnavailable::Busy => RegisterError::Busy,
            down => RegisterError::Unavailable(down),
        }
    }
}

/// The database or the hashing pool cannot answer now.
#[derive(Debug, thiserror::Error)]
pub enum AccountsUnavailable {
    /// The database failed or the hashing pool is gone.
    #[error("accounts unavailable: {0}")]
    Down(String),
    /// The hashing queue is full ([`PasswordError::Busy`]): a refusal made
    /// before any work, to be answered "try again shortly".
    #[error("password hashing is busy")]
    Busy,
}

impl From<DatabaseError> for AccountsUnavailable {
    fn from(error: DatabaseError) -> Self {
        AccountsUnavailable::Down(error.to_string())
    }
}

impl From<PasswordError> for AccountsUnavailable {
    fn from(error: PasswordError) -> Self {
        match error {
            PasswordError::Busy => AccountsUnavailable::Busy,
            other => AccountsUnavailable::Down(other.to_string()),
        }
    }
}

/// The result of a login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// The credentials match an enabled account.
    Succeeded(User),
    /// They do not. `known_user` is for the audit trail only and must not
    /// change the answer.
    Failed {
        /// The account the name belongs to, if any.
        known_user: Option<i64>,
    },
}

/// User accounts: the directory plus password hashing and policy.
#[derive(Clone)]
pub struct Accounts {
    db: Arc<dyn UserDirectory>,
    signed_in: SignedInUsers,
    hasher: PasswordHasher,
    policy: PasswordPolicy,
    clock: Arc<dyn Clock>,
}

impl Accounts {
    /// Accounts in `directory`.
    pub fn new(
        directory: Arc<dyn UserDirectory>,
        hasher: PasswordHasher,
        policy: PasswordPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Accounts { signed_in: SignedInUsers::new(directory.clone()), db: directory, hasher, policy, clock }
    }

    /// The directory.
    pub fn directory(&self) -> &Arc<dyn UserDirectory> {
        &self.db
    }

    /// The users of signed-in requests, read at most every
    /// [`crate::signed_in_users::MAX_AGE`] (not for decisions that read a
    /// secret; see [`SignedInUsers`]).
    pub fn signed_in(&self) -> &SignedInUsers {
        &self.signed_in
    }

    /// The password rules.
    pub fn policy(&self) -> &PasswordPolicy {
        &self.policy
    }

    /// The password hasher (its pool and parameters).
    pub fn hasher(&self) -> &PasswordHasher {
        &self.hasher
    }

    /// Checks a new account's user name and password against the rules,
    /// without touching the database or hashing anything (so that a typo
    /// costs no sign-up allowance); the user name key.
    pub fn check_new(&self, username: &str, password: &str) -> Result<String, RegisterError> {
        let username_key = check_username(username).map_err(RegisterError::InvalidUsername)?;
        self.policy.check(password, username).map_err(|why| RegisterError::InvalidPassword(why.to_string()))?;
        Ok(username_key)
    }

    /// Registers a user.
    pub async fn register(&self, username: &str, password: &str) -> Result<User, RegisterError> {
        let username_key = self.check_new(username, password)?;
        if self.db.user_by_name(&username_key).await.map_err(AccountsUnavailable::from)?.is_some() {
            return Err(RegisterError::UsernameTaken);
        }
        let hash = self.hasher.hash(password.to_owned()).await.map_err(AccountsUnavailable::from)?;
        match self.db.create_user(username, &username_key, Some(&hash), self.clock.now()).await {
            Ok(user) => Ok(user),
            Err(CreateUserError::UsernameTaken) => Err(RegisterError::UsernameTaken),
            Err(CreateUserError::Unavailable(other)) => Err(AccountsUnavailable::from(other).into()),
        }
    }

    /// Whether `password` is `user`'s current password (for re-authentication).
    pub async fn verify_password(&self, user: &User, password: &str) -> Result<bool, AccountsUnavailable> {
        if password.len() > tessera::password::MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let verdict = self.hasher.verify(password.to_owned(), user.password_hash.clone()).await?;
        Ok(verdict.valid)
    }

    /// Replaces `user`'s password after checking the policy.
    pub async fn change_password(&self, user: &User, new_password: &str) -> Result<(), RegisterError> {
        self.policy
            .check(new_password, &user.username)
            .map_err(|why| RegisterError::InvalidPassword(why.to_string()))?;
        let hash = self.hasher.hash(new_password.to_owned()).await.map_err(AccountsUnavailable::from)?;
        self.db.set_password_hash(user.id, &hash).await.map_err(AccountsUnavailable::from)?;
        self.signed_in.forget(user.id);
        Ok(())
    }

    /// Checks `username` and `password`.
    ///
    /// Unknown names, malformed names, disabled accounts and wrong passwords
    /// all cost one argon2 verification and all fail alike, so neither the
    /// answer nor its timing tells which it was (the outcome names the user
    /// only for the audit trail). A hash made with outdated parameters is
    /// replaced while the plaintext is at hand.
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<LoginOutcome, AccountsUnavailable> {
        let user = match check_username(username) {
            Ok(key) => self.db.user_by_name(&key).await?,
            Err(_) => None,
        };
        let known_user = user.as_ref().map(|u| u.id);
        if password.len() > tessera::password::MAX_PASSWORD_BYTES {
            // Refused before hashing; the same "wrong credentials" answer.
            return Ok(LoginOutcome::Failed { known_user });
        }
        let stored = user.as_ref().and_then(|u| u.password_hash.clone());
        let verdict = self.hasher.verify(password.to_owned(), stored).await?;
        let Some(user) = user.filter(|u| verdict.valid && u.disabled_at.is_none()) else {
            return Ok(LoginOutcome::Failed { known_user });
        };
        if verdict.needs_rehash {
            let hash = self.hasher.hash(password.to_owned()).await?;
            self.db.set_password_hash(user.id, &hash).await?;
        }
        Ok(LoginOutcome::Succeeded(user))
    }
}
