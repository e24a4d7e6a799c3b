//! `tessera admin audit …`: the audit trail.

use std::io::Write;
use std::time::Duration;

use super::{say, AdminContext, AdminError};

/// Deletes the audit events older than `older_than`, or than the configured
/// retention (`audit.retention`).
pub async fn purge(
    context: &AdminContext,
    older_than: Option<Duration>,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let keep = older_than.unwrap_or(context.config.audit_retention);
    if keep.is_zero() {
        return Err(AdminError::Usage("--older-than must be longer than zero".into()));
    }
    let now = context.config.clock.now().as_millis();
    let cutoff = now.saturating_sub(i64::try_from(keep.as_millis()).unwrap_or(i64::MAX));
    let purged = context.backends.db.purge_audit_events(tessera::Timestamp(cutoff)).await?;
    say(out, format!("purged {purged} audit event(s) older than {}", days_or_exact(keep)));
    Ok(())
}

/// `400d` for whole days (humantime would say `1year 1month 4days 7h…`).
fn days_or_exact(duration: Duration) -> String {
    const DAY: u64 = 24 * 3600;
    if duration.as_secs().is_multiple_of(DAY) && duration.subsec_nanos() == 0 {
        format!("{}d", duration.as_secs() / DAY)
    } else {
        humantime::format_duration(duration).to_string()
    }
}
