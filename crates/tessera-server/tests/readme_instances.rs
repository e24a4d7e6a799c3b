//! The README's "Several instances" commands, run verbatim: every line of
//! the section's shell block that starts an instance on `--listen` is run
//! by `sh` exactly as written (in a directory where
//! `./target/release/tessera` is this build's binary), two at a time, and
//! both instances of each pair must come up and share sessions.
//!
//! Issue #18: the second instance used to exit with `metrics.listen
//! 127.0.0.1:9300: Address already in use`.
//!
//! The commands name the shared `test` database; `PGOPTIONS` (read by the
//! PostgreSQL driver) points them at a fresh schema so that the command
//! lines stay verbatim and runs do not see each other's tables.

mod binary;
mod harness;
mod services;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use harness::{unique_name, Browser};

const PASSWORD: &str = "correct horse battery";

/// The shell lines of the README's "Several instances" block that start an
/// instance on a fixed port, in order, without the trailing `&`.
fn readme_instance_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme.split("\n## Several instances").nth(1).expect("the README has a Several instances section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("a sh block");
    block
        .lines()
        .filter(|line| line.starts_with("./target/release/tessera ") && line.contains("--listen"))
        .map(|line| line.trim_end().trim_end_matches('&').trim_end().to_owned())
        .collect()
}

/// A running `sh -c 'exec LINE'`.
struct Instance {
    child: Child,
    line: String,
    log: std::path::PathBuf,
}

impl Instance {
    fn start(dir: &std::path::Path, line: &str, schema: &str, index: usize) -> Instance {
        let log = dir.join(format!("instance-{index}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("exec {line}")).current_dir(dir);
        for (name, _) in std::env::vars() {
            if name.starts_with("TESSERA_") || name == "RUST_LOG" || name.starts_with("PG") {
                command.env_remove(name);
            }
        }
        command.env("PGOPTIONS", format!("-c search_path={schema}"));
        command.stdin(Stdio::null()).stdout(Stdio::from(file.try_clone().unwrap())).stderr(Stdio::from(file));
        Instance { child: command.spawn().expect("sh runs"), line: line.to_owned(), log }
    }

    fn port(&self) -> u16 {
        let address = self.line.split("--listen ").nth(1).and_then(|r| r.split_whitespace().next()).unwrap();
        address.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the instance accepts connections; panics with its log if
    /// it exits first.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port())).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("`{}` exited ({status}):\n{}", self.line, self.log_text());
            }
            assert!(Instant::now() < deadline, "`{}` did not listen:\n{}", self.line, self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fresh_schema() -> String {
    let schema = format!("tessera_t_{:016x}", rand::random::<u64>());
    let status = Command::new("psql")
        .args(["postgres://postgres@127.0.0.1:5432/test", "-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .status()
        .expect("psql runs");
    assert!(status.success(), "creating schema {schema}");
    schema
}

/// Runs one pair of README lines and checks both instances serve, and that
/// a session made on the first works on the second.
async fn run_pair(lines: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("target/release")).unwrap();
    std::os::unix::fs::symlink(binary::exe(), dir.path().join("target/release/tessera")).unwrap();
    for port in [3001, 3002] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port}, which the README's commands use, is taken by something else; free it and rerun"
        );
    }
    let schema = fresh_schema();
    let mut instances: Vec<Instance> =
        lines.iter().enumerate().map(|(i, line)| Instance::start(dir.path(), line, &schema, i)).collect();
    for instance in &mut instances {
        instance.wait_listening();
    }
    // Started alike, both stay up (no late bind failure on another port).
    tokio::time::sleep(Duration::from_millis(500)).await;
    for instance in &mut instances {
        assert!(instance.child.try_wait().unwrap().is_none(), "`{}` exited:\n{}", instance.line, instance.log_text());
    }
    let first = format!("http://localhost:{}", instances[0].port());
    let second = format!("http://localhost:{}", instances[1].port());
    for base in [&first, &second] {
        let ready = reqwest::get(format!("{base}/readyz")).await.unwrap();
        assert_eq!(ready.status(), 200, "{base}/readyz");
    }
    let mut on_first = Browser::new(&first);
    assert_eq!(on_first.register(&unique_name("readme"), PASSWORD).await.status, 303);
    let mut on_second = on_first.clone();
    on_second.base = second.clone();
    assert_eq!(on_second.get("/profile").await.status, 200, "a session made on one instance works on the other");
    drop(instances);
    let _ = Command::new("psql")
        .args(["postgres://postgres@127.0.0.1:5432/test", "-q", "-c", &format!("DROP SCHEMA {schema} CASCADE")])
        .status();
}

#[test]
fn the_readme_lists_two_pairs_of_instances() {
    let lines = readme_instance_commands();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(lines.iter().all(|l| !l.contains("metrics")), "the README's commands start instances plainly: {lines:#?}");
}

/// One test for both pairs: they use the same two ports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_several_instances_come_up_verbatim() {
    if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
        return;
    }
    let lines = readme_instance_commands();
    run_pair(&lines[0..2]).await;
    if services::reachable("Redis", "127.0.0.1:6379") {
        run_pair(&lines[2..4]).await;
    }
}
