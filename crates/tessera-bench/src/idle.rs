//! Memory per idle session in the memory store, and whether expired ones are
//! freed; and the time of one argon2id hash.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};
use tessera::password::PasswordHasher;
use tessera::{DeviceInfo, ExpiryPolicy, SessionEngine};
use tessera_store_memory::MemoryStore;

use crate::procstat::own_rss;
use crate::Fallible;

#[derive(Args, Debug)]
pub(crate) struct IdleArgs {
    /// How many sessions to store.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Their idle time-out in seconds (short, to watch them being freed).
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// How long to wait for the expired sessions to be freed, in seconds.
    #[arg(long, default_value_t = 30)]
    wait_secs: u64,
}

/// What the idle-session probe prints (one JSON line).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IdleResult {
    pub(crate) sessions: u64,
    pub(crate) rss_before: u64,
    pub(crate) rss_full: u64,
    pub(crate) bytes_per_session: f64,
    pub(crate) create_seconds: f64,
    /// Sessions still held after they expired and the wait ran out.
    pub(crate) left_after_expiry: u64,
    /// Seconds from the last session's deadline until the store held none.
    pub(crate) freed_after_seconds: Option<f64>,
    pub(crate) rss_after_expiry: u64,
}

/// Stores `count` sessions as `POST /login` makes them — `{user_id: 42,
/// name: "bench"}`, an owner (a distinct user each, so the per-user index
/// is paid in full), the client IP — through the engine, then lets them
/// expire without touching the store and waits for it to free them.
pub(crate) fn run(args: IdleArgs) -> Fallible {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async move {
        let store = Arc::new(MemoryStore::new());
        let idle = Duration::from_secs(args.idle_secs);
        let engine = SessionEngine::new(store.clone()).with_expiry(ExpiryPolicy::new(idle, Duration::from_secs(3600)));
        // Warm the allocator and the runtime before the baseline.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rss_before = own_rss()?;
        let started = Instant::now();
        for i in 0..args.count {
            let session = engine.load(None, DeviceInfo::new(Some("127.0.0.1".into()), None)).await?;
            session.insert("user_id", &42u64)?;
            session.insert("name", "bench")?;
            session.login(format!("user-{i}"));
            engine.commit(&session).await?;
        }
        let create_seconds = started.elapsed().as_secs_f64();
        let last_deadline = Instant::now() + idle;
        let rss_full = own_rss()?;
        let sessions = store.entry_count();
        let wait_until = last_deadline + Duration::from_secs(args.wait_secs);
        let mut freed_after_seconds = None;
        while Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(250)).await;
            if Instant::now() >= last_deadline && store.entry_count() == 0 {
                freed_after_seconds = Some(Instant::now().duration_since(last_deadline).as_secs_f64());
                break;
            }
        }
        let left_after_expiry = store.entry_count();
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(IdleResult {
            sessions,
            rss_before,
            rss_full,
            bytes_per_session: (rss_full.saturating_sub(rss_before)) as f64 / sessions.max(1) as f64,
            create_seconds,
            left_after_expiry,
            freed_after_seconds,
            rss_after_expiry: own_rss()?,
        })
    })?;
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

/// Prints the median wall time of one argon2id verification, in seconds, with
/// the parameters `PasswordHasher::new()` uses.
pub(crate) fn hash_time(iterations: u32) -> Fallible {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let seconds = runtime.block_on(async move {
        let hasher = PasswordHasher::new();
        let phc = hasher.hash(crate::apps::BENCH_PASSWORD.to_owned()).await?;
        let mut times = Vec::new();
        for _ in 0..iterations.max(1) {
            let started = Instant::now();
            hasher.verify(crate::apps::BENCH_PASSWORD.to_owned(), Some(phc.clone())).await?;
            times.push(started.elapsed().as_secs_f64());
        }
        // The median: other work on the machine only ever makes a hash slower.
        times.sort_by(f64::total_cmp);
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(times[times.len() / 2])
    })?;
    println!("{seconds}");
    Ok(())
}
