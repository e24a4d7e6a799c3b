//! A server that dies and comes back: calls fail fast while it is gone and
//! the same store instance recovers by itself.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tessera::{SessionStore, StoreError};
use tessera_store_conformance::record;
use tessera_store_redis::RedisStoreConfig;

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A private redis-server in the foreground, killed on drop.
struct Server(Child);

impl Server {
    fn start(port: u16) -> std::io::Result<Server> {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Server(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!("redis-server did not listen on {port}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    fn kill(mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn within<T>(what: &str, limit: Duration, fut: impl std::future::Future<Output = T>) -> T {
    let started = Instant::now();
    let out = tokio::time::timeout(limit + Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: hung (no answer after {:?})", limit + Duration::from_secs(5)));
    eprintln!("{what}: {:?}", started.elapsed());
    assert!(started.elapsed() <= limit, "{what}: took {:?}, limit {limit:?}", started.elapsed());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_fast_while_down_and_recovers() {
    let port = free_port();
    let server = match Server::start(port) {
        Ok(server) => server,
        Err(e) => {
            common::unavailable("fails_fast_while_down_and_recovers", &format!("cannot run redis-server: {e}"));
            return;
        }
    };
    let store = RedisStoreConfig::new(format!("redis://127.0.0.1:{port}")).connect().await.unwrap();
    let user = "outage-user";
    let before = record(Some(user), Duration::from_secs(3600));
    store.create(&before).await.unwrap();
    assert!(store.load(&before.key).await.unwrap().is_some());

    server.kill();
    let limit = Duration::from_secs(5);
    for round in 0..3 {
        let err = within("ping while down", limit, store.ping()).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "round {round}: {err:?}");
        let err = within("load while down", limit, store.load(&before.key)).await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "round {round}: {err:?}");
        let err = within("create while down", limit, store.create(&record(Some(user), Duration::from_secs(60))))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "round {round}: {err:?}");
        within("list while down", limit, store.list_for_user(user)).await.unwrap_err();
    }

    let _server = Server::start(port).unwrap();
    // The same instance, not a new one: it must reconnect by itself, on the
    // very first call after the restart.
    within("first ping after restart", limit, store.ping()).await.expect("the store must recover by itself");
    // The restarted server kept nothing (no persistence); the store works.
    assert!(store.load(&before.key).await.unwrap().is_none());
    let after = record(Some(user), Duration::from_secs(3600));
    store.create(&after).await.unwrap();
    assert_eq!(store.load(&after.key).await.unwrap().unwrap(), after);
    assert_eq!(store.list_for_user(user).await.unwrap().len(), 1);
}

fn signal(server: &Server, sig: &str) {
    let status = Command::new("kill").arg(format!("-{sig}")).arg(server.0.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -{sig} failed");
}

/// A server that accepts nothing and answers nothing (stopped with SIGSTOP)
/// is the case that hangs naive clients: the socket stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_fast_while_frozen_and_recovers() {
    let port = free_port();
    let server = match Server::start(port) {
        Ok(server) => server,
        Err(e) => {
            common::unavailable("fails_fast_while_frozen_and_recovers", &format!("cannot run redis-server: {e}"));
            return;
        }
    };
    let store = RedisStoreConfig::new(format!("redis://127.0.0.1:{port}")).connect().await.unwrap();
    let rec = record(Some("frozen-user"), Duration::from_secs(3600));
    store.create(&rec).await.unwrap();

    signal(&server, "STOP");
    let limit = Duration::from_secs(5);
    let err = within("load while frozen", limit, store.load(&rec.key)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let err = within("ping while frozen", limit, store.ping()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

    signal(&server, "CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.load(&rec.key).await {
            Ok(found) => {
                assert_eq!(found.unwrap(), rec);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting after SIGCONT: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("store did not recover after SIGCONT: {e}"),
        }
    }
    drop(server);
}
