//! What `/proc` says about a process: CPU time and peak resident memory.

use std::sync::OnceLock;

use crate::Fallible;

/// CPU time (user + system, all threads) of `pid`, in microseconds.
pub(crate) fn cpu_micros(pid: u32) -> Fallible<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name is in parentheses and may contain spaces: fields are
    // counted from the closing one. utime and stime are fields 14 and 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks =
        |index: usize| -> Fallible<u64> { Ok(fields.get(index).ok_or("short /proc/PID/stat")?.parse::<u64>()?) };
    let total = ticks(11)? + ticks(12)?;
    Ok(total * 1_000_000 / clock_ticks_per_second())
}

/// `VmHWM` (peak resident set) and `VmRSS` of `pid`, in bytes.
pub(crate) fn memory(pid: u32) -> Fallible<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok((status_kib(&status, "VmHWM:")? * 1024, status_kib(&status, "VmRSS:")? * 1024))
}

/// `VmRSS` of this process, in bytes.
pub(crate) fn own_rss() -> Fallible<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    Ok(status_kib(&status, "VmRSS:")? * 1024)
}

fn status_kib(status: &str, field: &str) -> Fallible<u64> {
    let line = status.lines().find(|line| line.starts_with(field)).ok_or("field missing in /proc/PID/status")?;
    Ok(line[field.len()..].trim().trim_end_matches("kB").trim().parse()?)
}

fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}
