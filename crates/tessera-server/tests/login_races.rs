//! Throttling that cannot be raced: 60 attempts released at the same
//! instant verify at most the counter's allowance, on every way in (the
//! login form, `/api/signin`, the code prompt, codes on the API), for one
//! account and for unknown names from one address; once on SQLite and once
//! on two instances sharing PostgreSQL.
//!
//! The bursts are truly simultaneous: every request is written on its own
//! connection except for its last byte, and only when all 60 are waiting
//! are the last bytes sent, so no handler can start before the others have
//! arrived. How many attempts were *verified* is read from the audit trail,
//! which the core writes once per checked password or code.

mod harness;
mod services;

use std::net::SocketAddr;

use harness::burst::{burst_statuses, form, request};
use harness::{test_config, unique_name, TestServer};
use tessera::{Clock, ManualClock};
use tessera_auth::second_factor::totp::{step_at, TotpSecret};
use tessera_auth::UserDirectory;

const PASSWORD: &str = "correct horse battery";
const BURST: usize = 60;
/// The default allowances (`throttle.account_free_failures`, `ip_free_failures`).
const ACCOUNT_ALLOWANCE: i64 = 5;
const ADDRESS_ALLOWANCE: i64 = 20;

/// One or two instances over one users database.
struct Cluster {
    servers: Vec<TestServer>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn sqlite() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let config = test_config(dir.path(), &clock);
        Cluster { servers: vec![TestServer::start(config, clock).await], _dir: dir }
    }

    async fn postgres_pair() -> Option<Cluster> {
        if !services::reachable("PostgreSQL", "127.0.0.1:5432") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new();
        let mut config = test_config(dir.path(), &clock);
        config.database_url = services::postgres_url();
        let first = TestServer::start(config.clone(), clock.clone()).await;
        let second = TestServer::start(config, clock).await;
        Some(Cluster { servers: vec![first, second], _dir: dir })
    }

    fn first(&self) -> &TestServer {
        &self.servers[0]
    }

    fn addresses(&self) -> Vec<SocketAddr> {
        self.servers.iter().map(|s| s.address).collect()
    }

    /// Audit rows of `kind` (for `user_id`, or for no known user).
    async fn audited(&self, kind: &str, user_id: Option<i64>) -> i64 {
        let pool = self.first().app_state.db.pool();
        let row: (i64,) = match user_id {
            Some(id) => sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE kind = $1 AND user_id = $2")
                .bind(kind)
                .bind(id)
                .fetch_one(pool)
                .await
                .unwrap(),
            None => sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE kind = $1 AND user_id IS NULL")
                .bind(kind)
                .fetch_one(pool)
                .await
                .unwrap(),
        };
        row.0
    }

    async fn user_id(&self, name: &str) -> i64 {
        self.first().app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap().id
    }

    async fn stop(self) {
        for server in self.servers {
            server.stop().await;
        }
    }
}

/// 60 web-form logins with wrong passwords for one account, spread over
/// the instances, from one browser.
async fn web_form_burst(cluster: &Cluster, name: &str, password: impl Fn(usize) -> String) -> Vec<u16> {
    let mut browser = cluster.first().browser();
    let token = browser.get("/login").await.csrf();
    let cookies = browser.cookie_header();
    let addresses = cluster.addresses();
    let targets = (0..BURST)
        .map(|i| {
            let address = addresses[i % addresses.len()];
            let body = form(&[("csrf_token", &token), ("username", name), ("password", &password(i))]);
            let headers = [
                ("cookie", cookies.clone()),
                ("content-type", "application/x-www-form-urlencoded".to_owned()),
                ("accept", "text/html".to_owned()),
            ];
            (address, request(address, "POST", "/login", &headers, &body))
        })
        .collect();
    burst_statuses(targets).await
}

/// 60 API sign-ins, spread over the instances.
async fn api_burst(cluster: &Cluster, body: impl Fn(usize) -> serde_json::Value) -> Vec<u16> {
    let addresses = cluster.addresses();
    let targets = (0..BURST)
        .map(|i| {
            let address = addresses[i % addresses.len()];
            let headers = [("content-type", "application/json".to_owned()), ("accept", "application/json".to_owned())];
            (address, request(address, "POST", "/api/signin", &headers, &body(i).to_string()))
        })
        .collect();
    burst_statuses(targets).await
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

/// Wrong passwords for one account on the login form, then the right one.
async fn one_account_on_the_form(cluster: &Cluster) {
    let name = unique_name("burst");
    let mut owner = cluster.first().browser();
    assert_eq!(owner.register(&name, PASSWORD).await.status, 303);
    let user_id = cluster.user_id(&name).await;
    let statuses = web_form_burst(cluster, &name, |i| format!("wrong guess number {i}")).await;
    let verified = cluster.audited("login_failed", Some(user_id)).await;
    eprintln!("form, one account: {verified} of {BURST} verified; statuses {statuses:?}");
    assert!(verified <= ACCOUNT_ALLOWANCE, "{verified} wrong passwords verified; the allowance is {ACCOUNT_ALLOWANCE}");
    assert!(verified >= 1, "the burst reached the server");
    assert_eq!(count(&statuses, 401) + count(&statuses, 429), BURST, "{statuses:?}");
    assert_eq!(count(&statuses, 429) as i64, BURST as i64 - count(&statuses, 401) as i64);
    // Refused attempts reach the account's trail (once a minute per
    // instance: a flood of them must not push older events off the page).
    let throttled = cluster.audited("login_throttled", Some(user_id)).await;
    assert!((1..=cluster.servers.len() as i64).contains(&throttled), "{throttled} login_throttled rows");
    // The allowance is used up: the right password is refused unchecked.
    let late = cluster.first().browser().login(&name, PASSWORD).await;
    assert_eq!(late.status, 429, "a right password after the burst waits like any other");
}

/// Wrong passwords for one account on the API, then the right one.
async fn one_account_on_the_api(cluster: &Cluster) {
    let name = unique_name("apiburst");
    assert_eq!(cluster.first().browser().register(&name, PASSWORD).await.status, 303);
    let user_id = cluster.user_id(&name).await;
    let statuses =
        api_burst(cluster, |i| serde_json::json!({"username": name, "password": format!("wrong guess {i}")})).await;
    let verified = cluster.audited("login_failed", Some(user_id)).await;
    eprintln!("API, one account: {verified} of {BURST} verified; statuses {statuses:?}");
    assert!(verified <= ACCOUNT_ALLOWANCE, "{verified} wrong passwords verified; the allowance is {ACCOUNT_ALLOWANCE}");
    assert!(verified >= 1);
    assert_eq!(count(&statuses, 401) + count(&statuses, 429), BURST, "{statuses:?}");
    let late = api_burst_one(cluster, serde_json::json!({"username": name, "password": PASSWORD})).await;
    assert_eq!(late, 429, "a right password after the burst is refused");
}

async fn api_burst_one(cluster: &Cluster, body: serde_json::Value) -> u16 {
    let address = cluster.first().address;
    let headers = [("content-type", "application/json".to_owned())];
    burst_statuses(vec![(address, request(address, "POST", "/api/signin", &headers, &body.to_string()))]).await[0]
}

/// Unknown names from one address: the address's allowance bounds them.
async fn unknown_names_from_one_address(cluster: &Cluster) {
    let before = cluster.audited("login_failed", None).await;
    let mut browser = cluster.first().browser();
    let token = browser.get("/login").await.csrf();
    let cookies = browser.cookie_header();
    let addresses = cluster.addresses();
    let targets = (0..BURST)
        .map(|i| {
            let address = addresses[i % addresses.len()];
            let body = form(&[
                ("csrf_token", &token),
                ("username", &unique_name("nobody")),
                ("password", "guess guess guess"),
            ]);
            let headers = [
                ("cookie", cookies.clone()),
                ("content-type", "application/x-www-form-urlencoded".to_owned()),
                ("accept", "text/html".to_owned()),
            ];
            (address, request(address, "POST", "/login", &headers, &body))
        })
        .collect();
    let statuses = burst_statuses(targets).await;
    let verified = cluster.audited("login_failed", None).await - before;
    eprintln!("form, unknown names: {verified} of {BURST} verified; statuses {statuses:?}");
    assert!(verified <= ADDRESS_ALLOWANCE, "{verified} unknown names verified; the allowance is {ADDRESS_ALLOWANCE}");
    assert!(verified >= 1);
    assert_eq!(count(&statuses, 401) + count(&statuses, 429), BURST, "{statuses:?}");
}

/// Registers `name` with an authenticator app; its secret.
async fn enrolled(server: &TestServer, name: &str) -> TotpSecret {
    let mut browser = server.browser();
    assert_eq!(browser.register(name, PASSWORD).await.status, 303);
    let setup = browser.submit("/account/two-factor", "/account/two-factor/setup", &[]).await;
    let typed = setup.element_text("totp-secret").expect("the secret is shown");
    let secret = TotpSecret::from_base32(&typed.replace(' ', "")).unwrap();
    let code = secret.code_at(step_at(server.clock.now()));
    let done = browser.submit("/account/two-factor", "/account/two-factor/confirm", &[("code", &code)]).await;
    assert_eq!(done.status, 200, "{}", done.body);
    secret
}

/// Wrong codes at the prompt of one pending login, and on the API.
async fn codes_on_both_paths(cluster: &Cluster) {
    let name = unique_name("codes");
    let secret = enrolled(cluster.first(), &name).await;
    let user_id = cluster.user_id(&name).await;

    // The web prompt: one pending login, 60 wrong codes at once.
    let mut browser = cluster.first().browser();
    let pending = browser.login(&name, PASSWORD).await;
    assert_eq!(pending.location(), Some("/login/second-factor"));
    let token = browser.get("/login/second-factor").await.csrf();
    let cookies = browser.cookie_header();
    let addresses = cluster.addresses();
    let right = secret.code_at(step_at(cluster.first().clock.now()));
    let wrong = if right == "000000" { "111111" } else { "000000" };
    let targets = (0..BURST)
        .map(|i| {
            let address = addresses[i % addresses.len()];
            let body = form(&[("csrf_token", &token), ("code", wrong)]);
            let headers = [
                ("cookie", cookies.clone()),
                ("content-type", "application/x-www-form-urlencoded".to_owned()),
                ("accept", "text/html".to_owned()),
            ];
            (address, request(address, "POST", "/login/second-factor", &headers, &body))
        })
        .collect();
    let statuses = burst_statuses(targets).await;
    let verified = cluster.audited("second_factor_failed", Some(user_id)).await;
    eprintln!("form, codes: {verified} of {BURST} verified; statuses {statuses:?}");
    assert!(verified <= ACCOUNT_ALLOWANCE, "{verified} codes verified; the allowance is {ACCOUNT_ALLOWANCE}");
    assert!(verified >= 1);
    // The right code now waits too.
    let late = browser.submit("/login/second-factor", "/login/second-factor", &[("code", &right)]).await;
    assert_eq!(late.status, 429, "{}", late.body);

    // The API: the right password and 60 wrong codes, on another account.
    let name = unique_name("apicodes");
    enrolled(cluster.first(), &name).await;
    let user_id = cluster.user_id(&name).await;
    let statuses =
        api_burst(cluster, |_| serde_json::json!({"username": name, "password": PASSWORD, "second_factor": wrong}))
            .await;
    let verified = cluster.audited("second_factor_failed", Some(user_id)).await;
    eprintln!("API, codes: {verified} of {BURST} verified; statuses {statuses:?}");
    assert!(verified <= ACCOUNT_ALLOWANCE, "{verified} codes verified; the allowance is {ACCOUNT_ALLOWANCE}");
    assert!(verified >= 1);
    assert_eq!(count(&statuses, 401) + count(&statuses, 429), BURST, "{statuses:?}");
}

/// Each scenario on a fresh database: the address counter is shared by
/// every request of a test (all come from 127.0.0.1), so scenarios must not
/// use up each other's allowance.
macro_rules! on_both_backends {
    ($($scenario:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let cluster = super::Cluster::sqlite().await;
                    super::$scenario(&cluster).await;
                    cluster.stop().await;
                }
            )*
        }
        mod two_instances_over_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $scenario() {
                    let Some(cluster) = super::Cluster::postgres_pair().await else { return };
                    super::$scenario(&cluster).await;
                    cluster.stop().await;
                }
            )*
        }
    };
}

on_both_backends!(one_account_on_the_form, one_account_on_the_api, codes_on_both_paths, unknown_names_from_one_address);
