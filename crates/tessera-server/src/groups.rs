//! Groups of users: names that access rules (`docs/forward-auth.md`) and
//! product ownership (`admin`) refer to. Managed with
//! `tessera admin group add|remove|list`, shown on `/account`, sent to
//! applications in `X-Auth-Groups`.
//!
//! A group exists while it has members; names are compared
//! case-insensitively and stored lowercase.

use sqlx::Row;
use tessera::Timestamp;

use crate::database::{Database, DatabaseError};

/// The group whose members may change or delete anyone's products.
pub const ADMIN_GROUP: &str = "admin";

/// The canonical (lowercase) form of a group name: 1 to 64 ASCII letters,
/// digits, `.`, `_` and `-`, starting with a letter or digit.
pub fn check_group_name(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    let valid_chars = name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let starts_well = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !(1..=64).contains(&name.len()) || !valid_chars || !starts_well {
        return Err("a group name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit");
    }
    Ok(name.to_ascii_lowercase())
}

impl Database {
    /// The groups of `user_id`, sorted.
    pub async fn groups_of(&self, user_id: i64) -> Result<Vec<String>, DatabaseError> {
        let rows = sqlx::query("SELECT group_name FROM user_groups WHERE user_id = $1 ORDER BY group_name")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|row| row.try_get::<String, _>(0).map_err(DatabaseError::from)).collect()
    }

    /// Whether `user_id` is in `group` (a canonical name).
    pub async fn in_group(&self, user_id: i64, group: &str) -> Result<bool, DatabaseError> {
        let row = sqlx::query("SELECT 1 FROM user_groups WHERE user_id = $1 AND group_name = $2")
            .bind(user_id)
            .bind(group)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    /// Adds `user_id` to `group` (a canonical name), as an administrator's
    /// (or an invitation's) membership; `false` if already a member. A
    /// membership that came from a provider's groups claim becomes the
    /// administrator's, so the next login does not take it away.
    pub async fn add_to_group(&self, user_id: i64, group: &str, now: Timestamp) -> Result<bool, DatabaseError> {
        let existing = sqlx::query("SELECT source FROM user_groups WHERE user_id = $1 AND group_name = $2")
            .bind(user_id)
            .bind(group)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = existing {
            let source: String = row.try_get(0)?;
            if !source.is_empty() {
                sqlx::query("UPDATE user_groups SET source = '' WHERE user_id = $1 AND group_name = $2")
                    .bind(user_id)
                    .bind(group)
                    .execute(&self.pool)
                    .await?;
            }
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO user_groups (user_id, group_name, added_at, source) VALUES ($1, $2, $3, '') \
             ON CONFLICT (user_id, group_name) DO NOTHING",
        )
        .bind(user_id)
        .bind(group)
        .bind(now.as_millis())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Replaces the memberships of `user_id` that came from `source`
    /// (`oidc:<provider id>`) with `groups` (canonical names), in one
    /// transaction. Memberships from elsewhere stay as they are.
    pub async fn set_groups_from(
        &self,
        user_id: i64,
        source: &str,
        groups: &[String],
        now: Timestamp,
    ) -> Result<(), DatabaseError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM user_groups WHERE user_id = $1 AND source = $2")
            .bind(user_id)
            .bind(source)
            .execute(&mut *tx)
            .await?;
        for group in groups {
            sqlx::query(
                "INSERT INTO user_groups (user_id, group_name, added_at, source) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (user_id, group_name) DO NOTHING",
            )
            .bind(user_id)
            .bind(group)
            .bind(now.as_millis())
            .bind(source)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Removes `user_id` from `group`; `false` if not a member.
    pub async fn remove_from_group(&self, user_id: i64, group: &str) -> Result<bool, DatabaseError> {
        let done = sqlx::query("DELETE FROM user_groups WHERE user_id = $1 AND group_name = $2")
            .bind(user_id)
            .bind(group)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Every group with its members' user names, sorted; or one group's.
    pub async fn group_members(&self, only: Option<&str>) -> Result<Vec<(String, Vec<String>)>, DatabaseError> {
        const SELECT: &str = "SELECT g.group_name, u.username FROM user_groups g JOIN users u ON u.id = g.user_id";
        const ORDER: &str = "ORDER BY g.group_name, u.username_key";
        let rows = match only {
            Some(group) => {
                sqlx::query(&format!("{SELECT} WHERE g.group_name = $1 {ORDER}"))
                    .bind(group)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => sqlx::query(&format!("{SELECT} {ORDER}")).fetch_all(&self.pool).await?,
        };
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for row in rows {
            let group: String = row.try_get(0)?;
            let user: String = row.try_get(1)?;
            match groups.last_mut() {
                Some((name, members)) if *name == group => members.push(user),
                _ => groups.push((group, vec![user])),
            }
        }
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names() {
        assert_eq!(check_group_name("Staff").as_deref(), Ok("staff"));
        assert_eq!(check_group_name(" ops-team.eu_1 ").as_deref(), Ok("ops-team.eu_1"));
        for bad in ["", "-x", ".x", "a b", "a,b", "ü", &"x".repeat(65)] {
            assert!(check_group_name(bad).is_err(), "{bad:?}");
        }
    }
}
