//! Every way in moves the same counters in the same way: a success and a
//! failure on the login form, on `/api/signin`, at the code prompt and with
//! a code on the API each add one to `tessera_logins_total{result}`, to the
//! hourly activity statistics and to the audit trail; a throttled attempt
//! is audited and counted as throttled on every path. (The provider login
//! is checked in `oidc.rs`.) One test in its own binary: the metrics
//! recorder is per process.

mod harness;

use harness::{test_config, unique_name, Browser, TestServer};
use tessera::{Clock, ManualClock};
use tessera_auth::second_factor::totp::{step_at, TotpSecret};
use tessera_auth::UserDirectory;
use tessera_server::activity_stats;

const PASSWORD: &str = "correct horse battery";

/// What one login attempt can move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Counters {
    metric_success: u64,
    metric_failure: u64,
    metric_throttled: u64,
    activity_logins: i64,
    activity_failures: i64,
    audit_succeeded: i64,
    audit_failed: i64,
    audit_throttled: i64,
}

impl std::ops::Sub for Counters {
    type Output = Counters;
    fn sub(self, o: Counters) -> Counters {
        Counters {
            metric_success: self.metric_success - o.metric_success,
            metric_failure: self.metric_failure - o.metric_failure,
            metric_throttled: self.metric_throttled - o.metric_throttled,
            activity_logins: self.activity_logins - o.activity_logins,
            activity_failures: self.activity_failures - o.activity_failures,
            audit_succeeded: self.audit_succeeded - o.audit_succeeded,
            audit_failed: self.audit_failed - o.audit_failed,
            audit_throttled: self.audit_throttled - o.audit_throttled,
        }
    }
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

async fn counters(server: &TestServer, user_id: i64) -> Counters {
    let text = tessera_server::metrics::handle().render();
    let db = &server.app_state.db;
    server.app_state.activity.flush(db).await.unwrap();
    let now_secs = server.clock.now().as_millis() / 1000;
    let rows = activity_stats::recent(db, now_secs, 2).await.unwrap();
    let audit = |kinds: &'static [&'static str]| async move {
        let events = db.audit_events(user_id, 10_000).await.unwrap();
        events.iter().filter(|e| kinds.contains(&e.kind.as_str())).count() as i64
    };
    Counters {
        metric_success: metric(&text, "tessera_logins_total{result=\"success\"}"),
        metric_failure: metric(&text, "tessera_logins_total{result=\"failure\"}"),
        metric_throttled: metric(&text, "tessera_login_throttled_total"),
        activity_logins: rows.iter().map(|r| r.counts.logins).sum(),
        activity_failures: rows.iter().map(|r| r.counts.login_failures).sum(),
        audit_succeeded: audit(&["login_succeeded"]).await,
        audit_failed: audit(&["login_failed", "second_factor_failed"]).await,
        audit_throttled: audit(&["login_throttled"]).await,
    }
}

const ONE_SUCCESS: Counters = Counters {
    metric_success: 1,
    metric_failure: 0,
    metric_throttled: 0,
    activity_logins: 1,
    activity_failures: 0,
    audit_succeeded: 1,
    audit_failed: 0,
    audit_throttled: 0,
};
const ONE_FAILURE: Counters = Counters {
    metric_success: 0,
    metric_failure: 1,
    metric_throttled: 0,
    activity_logins: 0,
    activity_failures: 1,
    audit_succeeded: 0,
    audit_failed: 1,
    audit_throttled: 0,
};
const ONE_THROTTLED: Counters = Counters {
    metric_success: 0,
    metric_failure: 0,
    metric_throttled: 1,
    activity_logins: 0,
    activity_failures: 0,
    audit_succeeded: 0,
    audit_failed: 0,
    audit_throttled: 1,
};

async fn api_signin(server: &TestServer, body: serde_json::Value) -> u16 {
    reqwest::Client::new()
        .post(format!("{}/api/signin", server.base))
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn user_id(server: &TestServer, name: &str) -> i64 {
    server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().unwrap().id
}

async fn enrol(server: &TestServer, browser: &mut Browser) -> TotpSecret {
    let setup = browser.submit("/account/two-factor", "/account/two-factor/setup", &[]).await;
    let typed = setup.element_text("totp-secret").expect("the secret is shown");
    let secret = TotpSecret::from_base32(&typed.replace(' ', "")).unwrap();
    let code = secret.code_at(step_at(server.clock.now()));
    assert_eq!(
        browser.submit("/account/two-factor", "/account/two-factor/confirm", &[("code", &code)]).await.status,
        200
    );
    secret
}

#[tokio::test]
async fn every_way_in_moves_the_same_counters() {
    let _ = tessera_server::metrics::handle();
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.throttle.account_free_failures = 3;
    config.throttle.ip_free_failures = 10_000;
    let server = TestServer::start(config, clock.clone()).await;

    // Password on the form.
    let name = unique_name("form");
    assert_eq!(server.browser().register(&name, PASSWORD).await.status, 303);
    let id = user_id(&server, &name).await;
    let before = counters(&server, id).await;
    assert_eq!(server.browser().login(&name, PASSWORD).await.status, 303);
    assert_eq!(counters(&server, id).await - before, ONE_SUCCESS, "form success");
    let before = counters(&server, id).await;
    assert_eq!(server.browser().login(&name, "wrong password!").await.status, 401);
    assert_eq!(counters(&server, id).await - before, ONE_FAILURE, "form failure");

    // Password on the API.
    let before = counters(&server, id).await;
    assert_eq!(api_signin(&server, serde_json::json!({"username": name, "password": PASSWORD})).await, 200);
    assert_eq!(counters(&server, id).await - before, ONE_SUCCESS, "API success");
    let before = counters(&server, id).await;
    assert_eq!(api_signin(&server, serde_json::json!({"username": name, "password": "wrong password!"})).await, 401);
    assert_eq!(counters(&server, id).await - before, ONE_FAILURE, "API failure");

    // The code prompt: the password step alone moves nothing.
    let name = unique_name("codes");
    let mut owner = server.browser();
    assert_eq!(owner.register(&name, PASSWORD).await.status, 303);
    let secret = enrol(&server, &mut owner).await;
    let id = user_id(&server, &name).await;
    let before = counters(&server, id).await;
    let mut browser = server.browser();
    assert_eq!(browser.login(&name, PASSWORD).await.location(), Some("/login/second-factor"));
    assert_eq!(counters(&server, id).await - before, Counters::default(), "the first factor alone is no login");
    let wrong = browser.submit("/login/second-factor", "/login/second-factor", &[("code", "abcdef")]).await;
    assert_eq!(wrong.status, 401);
    assert_eq!(counters(&server, id).await - before, ONE_FAILURE, "wrong code at the prompt");
    clock.advance(std::time::Duration::from_secs(30));
    let code = secret.code_at(step_at(clock.now()));
    let before = counters(&server, id).await;
    let done = browser.submit("/login/second-factor", "/login/second-factor", &[("code", &code)]).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(counters(&server, id).await - before, ONE_SUCCESS, "right code at the prompt");

    // A code on the API.
    clock.advance(std::time::Duration::from_secs(30));
    let before = counters(&server, id).await;
    let body = serde_json::json!({"username": name, "password": PASSWORD, "second_factor": "abcdef"});
    assert_eq!(api_signin(&server, body).await, 401);
    assert_eq!(counters(&server, id).await - before, ONE_FAILURE, "wrong code on the API");
    let code = secret.code_at(step_at(clock.now()));
    let before = counters(&server, id).await;
    let body = serde_json::json!({"username": name, "password": PASSWORD, "second_factor": code});
    assert_eq!(api_signin(&server, body).await, 200);
    assert_eq!(counters(&server, id).await - before, ONE_SUCCESS, "right code on the API");

    // Throttled attempts are audited and counted, on the form and the API.
    for path in ["form", "API"] {
        let name = unique_name("blocked");
        assert_eq!(server.browser().register(&name, PASSWORD).await.status, 303);
        let id = user_id(&server, &name).await;
        for _ in 0..3 {
            server.browser().login(&name, "wrong password!").await;
        }
        let before = counters(&server, id).await;
        let status = if path == "form" {
            server.browser().login(&name, PASSWORD).await.status
        } else {
            api_signin(&server, serde_json::json!({"username": name, "password": PASSWORD})).await
        };
        assert_eq!(status, 429, "{path}");
        assert_eq!(counters(&server, id).await - before, ONE_THROTTLED, "throttled on the {path}");
        // A flood of refused attempts (which cost nothing) is counted, but
        // written to the account's trail once a minute: it cannot push
        // older events off the activity page.
        let before = counters(&server, id).await;
        for _ in 0..5 {
            assert_eq!(server.browser().login(&name, PASSWORD).await.status, 429);
        }
        let flood = counters(&server, id).await - before;
        assert_eq!((flood.metric_throttled, flood.audit_throttled), (5, 0), "{path}: {flood:?}");
    }
    server.stop().await;
}
