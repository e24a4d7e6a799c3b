//! The benchmark's own Redis and PostgreSQL, pinned to CPU 0 with the load
//! generator, on free ports, so that nobody else's traffic lands on them and
//! they do not compete with the server under test for CPU 1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Fallible;

/// A free TCP port on 127.0.0.1.
pub(crate) fn free_port() -> Fallible<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A `redis-server` child, without persistence.
pub(crate) struct Redis {
    child: Child,
    pub(crate) url: String,
    port: u16,
}

impl Redis {
    pub(crate) fn start() -> Fallible<Self> {
        let port = free_port()?;
        let child = Command::new("taskset")
            .args(["-c", "0", "redis-server", "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--port", &port.to_string(), "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut redis = Redis { child, url: format!("redis://127.0.0.1:{port}/0"), port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.command("PING").map(|reply| !reply.starts_with("+PONG")).unwrap_or(true) {
            if Instant::now() > deadline || redis.child.try_wait()?.is_some() {
                return Err("redis-server did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// Sends one inline command and returns the first reply chunk.
    pub(crate) fn command(&self, command: &str) -> Fallible<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.write_all(format!("{command}\r\n").as_bytes())?;
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Empties the database between apps.
    pub(crate) fn flush(&self) -> Fallible {
        self.command("FLUSHALL")?;
        Ok(())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A throw-away PostgreSQL cluster (`initdb` + `postgres`), trust auth on
/// 127.0.0.1, run as the `postgres` user when we are root.
pub(crate) struct Postgres {
    child: Child,
    dir: PathBuf,
    pub(crate) url: String,
    port: u16,
}

impl Postgres {
    pub(crate) fn start(scratch: &Path) -> Fallible<Self> {
        let bin = postgres_bin_dir().ok_or("PostgreSQL server binaries (initdb) not found")?;
        let dir = scratch.join("pg");
        std::fs::create_dir_all(&dir)?;
        let as_root = Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false);
        if as_root {
            run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir))?;
            // The scratch directory must be reachable by the postgres user.
            let mut parent = dir.parent();
            while let Some(p) = parent {
                if p == Path::new("/") {
                    break;
                }
                let _ = Command::new("chmod").arg("o+x").arg(p).status();
                parent = p.parent();
            }
        }
        let user_command = |program: PathBuf| {
            let mut command = if as_root {
                let mut c = Command::new("setpriv");
                c.args(AS_POSTGRES).arg(program);
                c
            } else {
                Command::new(program)
            };
            command.stdout(Stdio::null()).stderr(Stdio::null());
            command
        };
        let data = dir.join("data");
        run(user_command(bin.join("initdb")).args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(&data))?;
        let port = free_port()?;
        let mut command = Command::new("taskset");
        command.args(["-c", "0"]);
        if as_root {
            command.arg("setpriv").args(AS_POSTGRES);
        }
        let child = command
            .arg(bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"])
            .arg("-k")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let mut postgres = Postgres { child, dir, url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), port };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if postgres.psql("SELECT 1").is_ok() {
                return Ok(postgres);
            }
            if Instant::now() > deadline || postgres.child.try_wait()?.is_some() {
                return Err("postgres did not start".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn psql(&self, sql: &str) -> Fallible {
        run(Command::new("psql")
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-p",
                &self.port.to_string(),
                "-c",
                sql,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null()))
    }

    /// A new, empty database `name` (dropped first if it exists); its URL.
    pub(crate) fn fresh_database(&self, name: &str) -> Fallible<String> {
        self.psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
        self.psql(&format!("CREATE DATABASE {name}"))?;
        Ok(format!("postgres://postgres@127.0.0.1:{}/{name}", self.port))
    }

    /// Empties the sessions table between apps (it may not exist yet).
    pub(crate) fn flush(&self) {
        let _ = self.psql("TRUNCATE tessera_sessions");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT: fast shutdown, backends included (taskset and setpriv exec,
        // so the child is the postmaster itself).
        let _ = Command::new("kill").arg("-INT").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `setpriv` arguments that become the postgres user (it execs, unlike
/// `runuser`, so the process we start is PostgreSQL itself).
const AS_POSTGRES: [&str; 4] = ["--reuid=postgres", "--regid=postgres", "--init-groups", "--"];

fn run(command: &mut Command) -> Fallible {
    let status = command.status()?;
    if !status.success() {
        return Err(format!("{command:?} failed: {status}").into());
    }
    Ok(())
}

fn postgres_bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}
