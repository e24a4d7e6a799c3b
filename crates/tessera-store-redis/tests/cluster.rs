//! Conformance and slot placement against a three-node Redis Cluster
//! (`TESSERA_TEST_REDIS_CLUSTER_URL`, default the loopback cluster that
//! `scripts/redis-cluster.sh start` brings up on ports 7101-7103).

mod common;

use std::sync::Arc;

use tessera::SessionId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_cluster() {
    let Some(store) = common::cluster("conformance_cluster").await else { return };
    tessera_store_conformance::run(Arc::new(store)).await;
}

async fn keyslot(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn per_user_keys_share_a_slot() {
    let Some(store) = common::cluster("per_user_keys_share_a_slot").await else { return };
    let node = common::first_cluster_node(&common::cluster_url());
    let mut conn = redis::Client::open(node).unwrap().get_multiplexed_async_connection().await.unwrap();

    let mut slots = std::collections::HashSet::new();
    for user in ["alice", "bob@example.com", "", "%", "a}b{c", "{", "}", "}{", "ünï code", "x:y"] {
        let index = store.user_index_key(user);
        let index_slot = keyslot(&mut conn, &index).await;
        for name in ["throttle", "revoked", "{weird}"] {
            let other = store.user_key(user, name);
            assert_eq!(keyslot(&mut conn, &other).await, index_slot, "{index} and {other} must share a slot");
        }
        slots.insert(index_slot);
    }
    assert!(slots.len() > 3, "different users spread over slots: {slots:?}");

    // Sessions are tagged by their own key, so they spread too.
    let mut session_slots = std::collections::HashSet::new();
    for _ in 0..8 {
        session_slots.insert(keyslot(&mut conn, &store.session_key(&SessionId::generate().key())).await);
    }
    assert!(session_slots.len() > 1);
}
