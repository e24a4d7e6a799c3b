//! Hourly activity counters: sessions created, logins, login failures and a
//! sample of active sessions, kept in the `activity_stats` table and drawn by
//! `tessera sessions stats`.
//!
//! Events are counted in memory and written every `stats.flush_interval`
//! (and at shutdown) with one upsert per hour touched, so a login costs no
//! extra database write. Several instances add up into the same rows.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::Row;
use tessera::Clock;

use crate::database::{Database, DatabaseError};

/// One hour of activity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HourCounts {
    /// Sessions created in the store.
    pub sessions_created: i64,
    /// Successful logins.
    pub logins: i64,
    /// Failed logins.
    pub login_failures: i64,
    /// The last sample of live sessions in the hour, where counting is cheap.
    pub active_sessions: Option<i64>,
}

/// A row of `activity_stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HourRow {
    /// Start of the hour, seconds since the Unix epoch.
    pub hour: i64,
    /// The counts.
    pub counts: HourCounts,
}

/// In-memory counters waiting to be written. Cloning shares them.
#[derive(Clone)]
pub struct ActivityStats {
    pending: Arc<Mutex<BTreeMap<i64, HourCounts>>>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ActivityStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityStats").finish_non_exhaustive()
    }
}

impl ActivityStats {
    /// Counters stamped with `clock`'s hour.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        ActivityStats { pending: Arc::default(), clock }
    }

    fn with_current(&self, change: impl FnOnce(&mut HourCounts)) {
        let hour = self.clock.now().as_millis().div_euclid(3_600_000) * 3600;
        let mut pending = self.pending.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        change(pending.entry(hour).or_default());
    }

    /// A session was created.
    pub fn session_created(&self) {
        self.with_current(|c| c.sessions_created += 1);
    }

    /// A login succeeded or failed.
    pub fn login(&self, success: bool) {
        self.with_current(|c| if success { c.logins += 1 } else { c.login_failures += 1 });
    }

    /// A sample of live sessions.
    pub fn active_sessions(&self, count: u64) {
        self.with_current(|c| c.active_sessions = Some(i64::try_from(count).unwrap_or(i64::MAX)));
    }

    /// Writes pending counts; on failure they are kept for the next flush.
    pub async fn flush(&self, db: &Database) -> Result<(), DatabaseError> {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|p| p.into_inner()));
        let mut failed = BTreeMap::new();
        let mut first_error = None;
        for (hour, counts) in taken {
            if let Err(error) = upsert(db, hour, counts).await {
                failed.insert(hour, counts);
                first_error.get_or_insert(error);
            }
        }
        if let Some(error) = first_error {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (hour, counts) in failed {
                let entry = pending.entry(hour).or_default();
                entry.sessions_created += counts.sessions_created;
                entry.logins += counts.logins;
                entry.login_failures += counts.login_failures;
                if entry.active_sessions.is_none() {
                    entry.active_sessions = counts.active_sessions;
                }
            }
            return Err(error);
        }
        Ok(())
    }

    /// Flushes every `every` until the task is dropped.
    pub async fn flush_periodically(self, db: Database, every: Duration) {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval.tick().await;
        loop {
            interval.tick().await;
            if let Err(error) = self.flush(&db).await {
                tracing::warn!(%error, "writing activity stats failed; kept for the next try");
            }
        }
    }
}

async fn upsert(db: &Database, hour: i64, counts: HourCounts) -> Result<(), DatabaseError> {
    sqlx::query(
        "INSERT INTO activity_stats (hour, sessions_created, logins, login_failures, active_sessions) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (hour) DO UPDATE SET \
         sessions_created = activity_stats.sessions_created + excluded.sessions_created, \
         logins = activity_stats.logins + excluded.logins, \
         login_failures = activity_stats.login_failures + excluded.login_failures, \
         active_sessions = COALESCE(excluded.active_sessions, activity_stats.active_sessions)",
    )
    .bind(hour)
    .bind(counts.sessions_created)
    .bind(counts.logins)
    .bind(counts.login_failures)
    .bind(counts.active_sessions)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// The rows of the last `hours` hours before `now_secs`, one per hour (hours
/// without activity are zero).
pub async fn recent(db: &Database, now_secs: i64, hours: u32) -> Result<Vec<HourRow>, DatabaseError> {
    let last = now_secs.div_euclid(3600) * 3600;
    let first = last - 3600 * i64::from(hours.max(1) - 1);
    let rows = sqlx::query(
        "SELECT hour, sessions_created, logins, login_failures, active_sessions FROM activity_stats \
         WHERE hour >= $1 ORDER BY hour",
    )
    .bind(first)
    .fetch_all(&db.pool)
    .await?;
    let mut by_hour = BTreeMap::new();
    for row in rows {
        let hour: i64 = row.try_get(0)?;
        by_hour.insert(
            hour,
            HourCounts {
                sessions_created: row.try_get(1)?,
                logins: row.try_get(2)?,
                login_failures: row.try_get(3)?,
                active_sessions: row.try_get(4)?,
            },
        );
    }
    Ok((0..i64::from(hours.max(1)))
        .map(|i| {
            let hour = first + 3600 * i;
            HourRow { hour, counts: by_hour.get(&hour).copied().unwrap_or_default() }
        })
        .collect())
}

const SPARKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

fn sparkline(values: &[i64]) -> String {
    let max = values.iter().copied().max().unwrap_or(0).max(1);
    values.iter().map(|v| if *v <= 0 { ' ' } else { SPARKS[((*v * 7 + max - 1) / max).clamp(0, 7) as usize] }).collect()
}

fn hour_label(hour: i64) -> String {
    let time = time::OffsetDateTime::from_unix_timestamp(hour).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:02}-{:02} {:02}:00", u8::from(time.month()), time.day(), time.hour())
}

/// The terminal view: a sparkline per series, then one bar per hour.
pub fn render_text(rows: &[HourRow]) -> String {
    let mut out = String::new();
    let series: [(&str, Vec<i64>); 4] = [
        ("sessions created", rows.iter().map(|r| r.counts.sessions_created).collect()),
        ("active sessions ", rows.iter().map(|r| r.counts.active_sessions.unwrap_or(0)).collect()),
        ("logins          ", rows.iter().map(|r| r.counts.logins).collect()),
        ("login failures  ", rows.iter().map(|r| r.counts.login_failures).collect()),
    ];
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else { return "no data\n".into() };
    let _ = writeln!(out, "Activity per hour, {} to {} UTC\n", hour_label(first.hour), hour_label(last.hour));
    for (name, values) in &series {
        let total: i64 = values.iter().sum();
        let peak = values.iter().copied().max().unwrap_or(0);
        let _ = writeln!(out, "{name} │{}│ total {total}, peak {peak}", sparkline(values));
    }
    let _ = writeln!(out);
    let max = rows.iter().map(|r| r.counts.sessions_created.max(r.counts.logins)).max().unwrap_or(0).max(1);
    let _ = writeln!(out, "hour (UTC)     created  logins  failed  active");
    for row in rows {
        let c = row.counts;
        let width = |v: i64| ((v * 30 + max - 1) / max) as usize;
        let active = c.active_sessions.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{}  {:>7}  {:>6}  {:>6}  {:>6}  {}{}",
            hour_label(row.hour),
            c.sessions_created,
            c.logins,
            c.login_failures,
            active,
            "█".repeat(width(c.logins)),
            "░".repeat(width(c.login_failures)),
        );
    }
    let _ = writeln!(out, "\n█ logins  ░ failures");
    out
}

/// Draws the chart as an SVG file with plotters: sessions created and active
/// as lines, logins and failures as bars.
pub fn render_svg(rows: &[HourRow], path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let max = rows
        .iter()
        .map(|r| {
            r.counts.sessions_created.max(r.counts.logins).max(r.counts.active_sessions.unwrap_or(0))
                + r.counts.login_failures
        })
        .max()
        .unwrap_or(0)
        .max(1);
    let n = rows.len() as i64;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("tessera activity per hour (UTC)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d(0i64..n, 0i64..(max + max / 10 + 1))
        .map_err(e)?;
    let labels: Vec<String> = rows.iter().map(|r| hour_label(r.hour)[6..].to_owned()).collect();
    chart
        .configure_mesh()
        .x_labels(12)
        .x_label_formatter(&|x| labels.get(*x as usize).cloned().unwrap_or_default())
        .y_desc("count")
        .draw()
        .map_err(e)?;
    let green = RGBColor(46, 139, 87);
    let red = RGBColor(200, 50, 50);
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let x = i as i64;
            Rectangle::new([(x, 0), (x + 1, r.counts.logins)], green.mix(0.6).filled())
        }))
        .map_err(e)?
        .label("logins")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], green.mix(0.6).filled()));
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let x = i as i64;
            let base = r.counts.logins;
            Rectangle::new([(x, base), (x + 1, base + r.counts.login_failures)], red.mix(0.7).filled())
        }))
        .map_err(e)?
        .label("login failures")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], red.mix(0.7).filled()));
    chart
        .draw_series(LineSeries::new(
            rows.iter().enumerate().map(|(i, r)| (i as i64, r.counts.sessions_created)),
            BLUE.stroke_width(2),
        ))
        .map_err(e)?
        .label("sessions created")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            rows.iter().enumerate().filter_map(|(i, r)| r.counts.active_sessions.map(|a| (i as i64, a))),
            BLACK.stroke_width(2),
        ))
        .map_err(e)?
        .label("active sessions")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_render() {
        let rows: Vec<HourRow> = (0..24)
            .map(|i| HourRow {
                hour: 1_700_000_000 / 3600 * 3600 + i * 3600,
                counts: HourCounts {
                    sessions_created: i * 3,
                    logins: i,
                    login_failures: i % 4,
                    active_sessions: Some(i * 2),
                },
            })
            .collect();
        let text = render_text(&rows);
        assert!(text.contains("sessions created") && text.contains('█'), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let svg = dir.path().join("a.svg");
        render_svg(&rows, &svg).unwrap();
        let body = std::fs::read_to_string(&svg).unwrap();
        assert!(body.contains("<svg") && body.contains("logins"), "{body:.300}");
    }
}
