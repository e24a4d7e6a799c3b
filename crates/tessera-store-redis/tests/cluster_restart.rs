//! A cluster that goes away and comes back (rebuilt from scratch, with new
//! node IDs): calls fail fast meanwhile and the same store recovers.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use rand::Rng;
use tessera::{SessionStore, StoreError};
use tessera_store_conformance::record;
use tessera_store_redis::RedisStoreConfig;

/// A base port whose three node ports and three cluster-bus ports
/// (port + 10000) are all free.
fn free_base() -> u16 {
    for _ in 0..100 {
        let base: u16 = rand::thread_rng().gen_range(20000..30000);
        let ports = [base, base + 1, base + 2, base + 10000, base + 10001, base + 10002];
        let listeners: Vec<_> = ports.iter().map(|p| TcpListener::bind(("127.0.0.1", *p))).collect();
        if listeners.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no free port range for a private cluster");
}

fn cluster_script(action: &str, base: u16) -> Result<(), String> {
    let script = common::scripts_dir().join("redis-cluster.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg(action)
        .arg(base.to_string())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{action} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Stops the private cluster even when an assertion fails.
struct Guard(u16);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = cluster_script("stop", self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_outage_fails_fast_and_recovers() {
    let base = free_base();
    if let Err(e) = tokio::task::spawn_blocking(move || cluster_script("start", base)).await.unwrap() {
        common::unavailable("cluster_outage_fails_fast_and_recovers", &e);
        return;
    }
    let _guard = Guard(base);
    let url = format!("redis+cluster://127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}", base, base + 1, base + 2);
    let store = RedisStoreConfig::new(&url).connect().await.unwrap();
    let before = record(Some("cluster-outage"), Duration::from_secs(3600));
    store.create(&before).await.unwrap();

    tokio::task::spawn_blocking(move || cluster_script("stop", base)).await.unwrap().unwrap();
    for _ in 0..2 {
        let started = Instant::now();
        let err = tokio::time::timeout(Duration::from_secs(10), store.load(&before.key))
            .await
            .expect("load on a dead cluster hung")
            .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        eprintln!("load on a dead cluster failed in {:?}: {err}", started.elapsed());
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    tokio::task::spawn_blocking(move || cluster_script("start", base)).await.unwrap().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the cluster: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("store did not recover after the cluster came back: {e}"),
        }
    }
    let after = record(Some("cluster-outage"), Duration::from_secs(3600));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.create(&after).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for writes: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("writes did not recover: {e}"),
        }
    }
    assert_eq!(store.load(&after.key).await.unwrap().unwrap(), after);
    let listed = store.list_for_user("cluster-outage").await.unwrap();
    assert_eq!(listed.len(), 1);
}
