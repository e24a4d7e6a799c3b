//! Durations as configuration files write them: `30m`, `2h 30m`, `1500ms`,
//! `400days` (humantime's text, with whole days past a month kept as days).
//! Use with `#[serde(with = "tessera::duration_text")]`; every duration
//! setting of tessera's crates is read and written this way.
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes `30m`; whole days past a month as `400days` (humantime's own
/// `1year 1month 4days 7h 26m 24s` counts its years and months in
/// fractional days).
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    const DAY: u64 = 24 * 3600;
    let text = humantime::format_duration(*value).to_string();
    let calendar = text.contains("month") || text.contains("year");
    if calendar && value.as_secs().is_multiple_of(DAY) && value.subsec_nanos() == 0 {
        return serializer.serialize_str(&format!("{}days", value.as_secs() / DAY));
    }
    serializer.serialize_str(&text)
}

/// Reads `30m`, `2h 30m`, `1500ms`.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e} (expected e.g. 2s, 30m, 12h)")))
}
