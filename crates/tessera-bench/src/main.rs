//! # tessera-bench — tessera against a bare axum app and tower-sessions
//!
//! `cargo run --release -p tessera-bench` (or `scripts/bench.sh`) runs every
//! measurement and writes `docs/benchmarks.md`, `docs/benchmarks.json` and
//! `docs/benchmarks.svg`. `--quick` makes short runs to check that it works.
//! `server` runs only the rows of the real `tessera` server (issue #17).
//! `signup-flood` measures one thing on its own: a login's latency while
//! another address floods sign-ups (for `docs/reliability.md`).
//!
//! The same binary is the servers under test (`serve`), the idle-session
//! memory probe (`idle-sessions`) and the argon2id timer (`hash-time`): the
//! orchestrator starts them as child processes pinned to CPU 1, so that their
//! CPU time and peak memory are their own.

mod apps;
mod chart;
mod idle;
mod load;
mod orchestrate;
mod plan;
mod procstat;
mod profile;
mod report;
mod report_server;
mod server;
mod server_rows;
mod services;
mod signup_flood;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "tessera-bench", about = "Benchmarks tessera against bare axum and tower-sessions")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Short runs (2 s, 1 repetition, 100 000 idle sessions) to check that everything works.
    #[arg(long)]
    quick: bool,
    /// Where to write benchmarks.md, benchmarks.json and benchmarks.svg.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
    /// Measure nothing: render benchmarks.md and the chart again from this
    /// JSON file of an earlier run (after editing findings.md, say).
    #[arg(long)]
    render: Option<PathBuf>,
    /// Seconds the release build before this run took (`scripts/bench.sh`
    /// times it), so that the report states the whole run's cost.
    #[arg(long)]
    build_secs: Option<u64>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serves one app on 127.0.0.1:PORT (started by the orchestrator).
    Serve(apps::ServeArgs),
    /// Stores idle sessions in the memory store and reports RSS per session.
    IdleSessions(idle::IdleArgs),
    /// Drives one app's route in process, for instruction-count profiling.
    Profile(profile::ProfileArgs),
    /// Times one argon2id verification with tessera's default parameters.
    HashTime {
        /// How many verifications to average.
        #[arg(long, default_value_t = 10)]
        iterations: u32,
    },
    /// The server rows alone (issue #17): the release `tessera` binary on
    /// each session store against bare axum, tower-sessions and Express;
    /// keeps the library figures already in `OUT/benchmarks.json`.
    Server(orchestrate::ServerArgs),
    /// A login's latency from one address while another floods sign-ups,
    /// against the real tessera server (`scripts/bench.sh signup-flood`).
    SignupFlood(signup_flood::FloodArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(args)) => apps::serve(args),
        Some(Command::IdleSessions(args)) => idle::run(args),
        Some(Command::Profile(args)) => profile::run(args),
        Some(Command::HashTime { iterations }) => idle::hash_time(iterations),
        Some(Command::SignupFlood(args)) => signup_flood::run(args),
        Some(Command::Server(args)) => orchestrate::run_server_rows(args),
        None => match cli.render {
            Some(json) => report::render(&json, &cli.out),
            None => orchestrate::run(cli.quick, cli.build_secs, &cli.out),
        },
    };
    if let Err(error) = result {
        eprintln!("tessera-bench: {error}");
        std::process::exit(1);
    }
}

/// Errors are reported as text: this is a command-line tool.
pub(crate) type Fallible<T = ()> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
