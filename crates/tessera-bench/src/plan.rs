//! What is measured, how often, and what it costs in time.
//!
//! Every measured run is a 1 s warm-up followed by a 3 s `wrk` run on the
//! same server and route, so a run costs 5 s with the check requests. The
//! whole benchmark — the release build of a clean clone (about 8 minutes on
//! the 2-core machine), these runs and the server rows of issue #17 (about
//! 2 minutes, [`crate::server_rows`]) — must fit in 15 minutes, which leaves
//! about 4 minutes for the library rows: 39 runs, not the 72 of "every app ×
//! every route × 3 repetitions", so:
//!
//! - every row that a target is judged on runs 3 times (interleaved:
//!   repetition 1 of every app, then repetition 2, …) and is reported as the
//!   median with min–max; the tower-sessions memory rows it is compared
//!   with run twice;
//! - `GET /hello` is the same code in every app of a family (it never
//!   touches the session, so no store is called): it runs once for the
//!   tessera family (on the memory store) and once for the tower-sessions
//!   family, and 3 times on `bare`, whose median is the baseline of every
//!   overhead;
//! - rows that are reported without a target (SQLite, PostgreSQL, the
//!   cookie store, the logins on Redis, tower-sessions on Redis) run once.

use serde::{Deserialize, Serialize};

/// The four routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Route {
    Hello,
    Login,
    Me,
    Counter,
}

impl Route {
    pub(crate) const ALL: [Route; 4] = [Route::Hello, Route::Login, Route::Me, Route::Counter];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Route::Hello => "GET /hello",
            Route::Login => "POST /login",
            Route::Me => "GET /me",
            Route::Counter => "GET /counter",
        }
    }

    pub(crate) fn method_path(self) -> (&'static str, &'static str) {
        match self {
            Route::Hello => ("GET", "/hello"),
            Route::Login => ("POST", "/login"),
            Route::Me => ("GET", "/me"),
            Route::Counter => ("GET", "/counter"),
        }
    }
}

/// One app and how many repetitions each of its routes gets (0: not run).
#[derive(Debug, Clone)]
pub(crate) struct AppPlan {
    pub(crate) app: &'static str,
    /// Repetitions of hello, login, me, counter.
    pub(crate) reps: [u32; 4],
}

impl AppPlan {
    pub(crate) fn reps(&self, route: Route) -> u32 {
        self.reps[route as usize]
    }
}

/// Durations and counts of one benchmark run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) quick: bool,
    pub(crate) warmup_secs: u64,
    pub(crate) run_secs: u64,
    pub(crate) repetitions: u32,
    pub(crate) connections: u32,
    /// Session cookies the `/me` and `/counter` runs cycle through (one
    /// login each, before the run): more than the connections, so that two
    /// requests in flight rarely share a session.
    pub(crate) cookies: usize,
    pub(crate) idle_sessions: u64,
    pub(crate) idle_timeout_secs: u64,
    pub(crate) flood_connections: u32,
}

impl Settings {
    pub(crate) fn new(quick: bool) -> Self {
        Settings {
            quick,
            warmup_secs: 1,
            run_secs: if quick { 2 } else { 3 },
            repetitions: if quick { 1 } else { 3 },
            connections: crate::load::CONNECTIONS,
            cookies: 256,
            idle_sessions: if quick { 100_000 } else { 500_000 },
            idle_timeout_secs: if quick { 3 } else { 5 },
            // As many logins at once as the server (one core) takes in:
            // one hashing plus its queue. More would be answered `503 busy`
            // at once, in a loop that measures refusals, not logins (and
            // keeps the low-priority hashing threads off the core).
            flood_connections: 1 + tessera::password::DEFAULT_QUEUE_PER_CORE as u32,
        }
    }

    /// The apps in the order they are interleaved.
    pub(crate) fn apps(&self) -> Vec<AppPlan> {
        let n = self.repetitions;
        let plan = |app, reps: [u32; 4]| AppPlan { app, reps: reps.map(|r| r.min(n)) };
        vec![
            plan("bare", [3, 0, 0, 0]),
            plan("tessera-memory", [1, 3, 3, 3]),
            plan("tessera-redis", [0, 1, 3, 3]),
            plan("tessera-sqlite", [0, 1, 1, 1]),
            plan("tessera-postgres", [0, 1, 1, 1]),
            plan("tessera-cookie", [0, 1, 1, 1]),
            plan("tower-sessions-memory", [1, 2, 2, 2]),
            plan("tower-sessions-redis", [0, 1, 1, 1]),
        ]
    }

    /// Seconds the measurements should take, excluding apps that are skipped.
    pub(crate) fn estimate_secs(&self, skipped: &[&str]) -> u64 {
        let per_run = self.warmup_secs + self.run_secs + 1;
        let runs: u64 = self
            .apps()
            .iter()
            .filter(|plan| !skipped.contains(&plan.app))
            .map(|plan| plan.reps.iter().map(|&r| u64::from(r)).sum::<u64>())
            .sum();
        let servers = u64::from(self.repetitions) * self.apps().len() as u64;
        // The login flood (probe alone, probe under flood), the hash timer,
        // and the idle sessions (creation, expiry, freeing).
        let login = 3 * per_run + 5;
        let idle = self.idle_sessions / 100_000 + self.idle_timeout_secs + 15;
        runs * per_run + servers + login + idle
    }
}
