//! Finding (or starting) the Redis servers the tests run against.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Mutex;

use rand::Rng;
use tessera_store_redis::{RedisStore, RedisStoreConfig};

pub const DEFAULT_URL: &str = "redis://127.0.0.1:6379";
pub const DEFAULT_CLUSTER_URL: &str = "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103";

/// CI sets `TESSERA_REQUIRE_SERVICES`: a missing service is then a failure,
/// not a skip.
pub fn services_required() -> bool {
    std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some()
}

/// Panics under `TESSERA_REQUIRE_SERVICES`, otherwise says loudly that the
/// test did not run.
pub fn unavailable(test: &str, why: &str) {
    if services_required() {
        panic!("{test}: required service unavailable (TESSERA_REQUIRE_SERVICES is set): {why}");
    }
    eprintln!("SKIPPED: {test}: {why}");
    eprintln!("SKIPPED: (set TESSERA_REQUIRE_SERVICES=1 to make this a failure)");
}

/// A prefix no other run shares, so runs against a shared server never see
/// each other's keys.
pub fn random_prefix() -> String {
    format!("tessera-test-{:016x}:", rand::thread_rng().gen::<u64>())
}

pub fn standalone_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

pub fn cluster_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_CLUSTER_URL").unwrap_or_else(|_| DEFAULT_CLUSTER_URL.to_owned())
}

pub fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts")
}

/// The standalone store with a fresh prefix, or `None` (after reporting) if
/// no server answers.
pub async fn standalone(test: &str) -> Option<RedisStore> {
    let url = standalone_url();
    match RedisStoreConfig::new(&url).prefix(random_prefix()).connect().await {
        Ok(store) => Some(store),
        Err(e) => {
            unavailable(test, &format!("no Redis at {url}: {e}"));
            None
        }
    }
}

static CLUSTER_START: Mutex<Option<Result<(), String>>> = Mutex::new(None);

/// Runs `scripts/redis-cluster.sh start` once per test process (it is
/// idempotent, but concurrent runs of it would race each other).
fn start_default_cluster() -> Result<(), String> {
    let mut started = CLUSTER_START.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(result) = started.as_ref() {
        return result.clone();
    }
    let script = scripts_dir().join("redis-cluster.sh");
    let result = match std::process::Command::new("bash").arg(&script).arg("start").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "{} start failed: {}{}",
            script.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )),
        Err(e) => Err(format!("cannot run {}: {e}", script.display())),
    };
    *started = Some(result.clone());
    result
}

/// The cluster store with a fresh prefix. For the default URL the local
/// three-node cluster is started first if it is not up.
pub async fn cluster(test: &str) -> Option<RedisStore> {
    let url = cluster_url();
    if url == DEFAULT_CLUSTER_URL {
        if let Err(e) = tokio::task::spawn_blocking(start_default_cluster).await.unwrap() {
            unavailable(test, &e);
            return None;
        }
    }
    match RedisStoreConfig::new(&url).prefix(random_prefix()).connect().await {
        Ok(store) => {
            assert!(store.is_cluster(), "{url} must select cluster mode");
            Some(store)
        }
        Err(e) => {
            unavailable(test, &format!("no Redis Cluster at {url}: {e}"));
            None
        }
    }
}

/// The first node of a `redis+cluster://` URL as a plain `redis://` URL, for
/// raw commands such as `CLUSTER KEYSLOT` that any node answers.
pub fn first_cluster_node(url: &str) -> String {
    let rest = url.trim_start_matches("redis+cluster://");
    format!("redis://{}", rest.split(',').next().unwrap_or(rest))
}
