//! Prometheus metrics: the recorder, the HTTP middleware, the metered
//! session store and the `/metrics` endpoint.
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `tessera_http_requests_total` | counter | `route` (matched path, never the raw path), `method`, `status` |
//! | `tessera_http_request_duration_seconds` | histogram | `route`, `method` |
//! | `tessera_logins_total` | counter | `result` = `success` / `failure` |
//! | `tessera_login_throttled_total` | counter | |
//! | `tessera_signup_throttled_total` | counter | sign-ups refused by the per-address allowance |
//! | `tessera_password_hasher_busy_total` | counter | requests answered 503 because the hashing queue was full |
//! | `tessera_password_hasher_waiting` | gauge | hashes waiting for a core (bounded by `passwords.hash_queue`) |
//! | `tessera_sessions_created_total` | counter | `store` |
//! | `tessera_active_sessions` | gauge | `store` (SQLite, PostgreSQL, memory; sampled) |
//! | `tessera_store_call_duration_seconds` | histogram | `store`, `op` |
//! | `tessera_store_call_errors_total` | counter | `store`, `op`, `kind` = `error` / `timeout` |
//! | `tessera_password_hasher_available_slots` | gauge | free argon2 slots (0 = logins queue) |
//! | `tessera_password_hasher_slots` | gauge | argon2 slots in all |

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tessera::password::PasswordHasher;
use tessera::{SessionKey, SessionRecord, SessionStore, StoreError, Timestamp, WriteOutcome};

use crate::activity_stats::ActivityStats;

/// Buckets of request and store latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. Instances in
/// one process (tests) share it.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only this recorder's data");
        }
        describe();
        handle
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("tessera_http_requests_total", "HTTP requests by matched route, method and status.");
    describe_histogram!("tessera_http_request_duration_seconds", Unit::Seconds, "HTTP request latency.");
    describe_counter!("tessera_logins_total", "Login attempts by result.");
    describe_counter!("tessera_login_throttled_total", "Login attempts refused by throttling.");
    describe_counter!("tessera_sessions_created_total", "Sessions created in the store.");
    describe_gauge!("tessera_active_sessions", "Live sessions in the store (sampled; where counting is cheap).");
    describe_histogram!("tessera_store_call_duration_seconds", Unit::Seconds, "Session store call latency.");
    describe_counter!("tessera_store_call_errors_total", "Session store calls that failed or timed out.");
    describe_gauge!("tessera_password_hasher_available_slots", "Free argon2 slots; 0 means logins are queueing.");
    describe_gauge!("tessera_password_hasher_slots", "argon2 slots in all (one per core).");
    describe_counter!("tessera_signup_throttled_total", "Sign-ups refused by the per-address allowance.");
    describe_counter!("tessera_password_hasher_busy_total", "Requests answered 503: the hashing queue was full.");
    describe_gauge!("tessera_password_hasher_waiting", "Hashes waiting for a core (bounded by passwords.hash_queue).");
    // Exist from the start so dashboards and alerts can refer to them.
    counter!("tessera_login_throttled_total").absolute(0);
    counter!("tessera_signup_throttled_total").absolute(0);
    counter!("tessera_password_hasher_busy_total").absolute(0);
}

/// Counts a login attempt.
pub fn login(success: bool) {
    counter!("tessera_logins_total", "result" => if success { "success" } else { "failure" }).increment(1);
}

/// Counts a login attempt refused by throttling (for the throttling to come).
pub fn login_throttled() {
    counter!("tessera_login_throttled_total").increment(1);
}

/// Counts a sign-up refused because its address used up its allowance.
pub fn signup_throttled() {
    counter!("tessera_signup_throttled_total").increment(1);
}

/// Counts a request answered `503` because the password hashing queue was
/// full (`passwords.hash_queue`).
pub fn hashing_busy() {
    counter!("tessera_password_hasher_busy_total").increment(1);
}

/// What `/metrics` needs besides the recorder.
#[derive(Clone)]
pub struct MetricsSource {
    hasher: PasswordHasher,
    slots: usize,
}

impl MetricsSource {
    /// Metrics of `hasher`, a clone of the one the server uses (they share
    /// the pool).
    pub fn new(hasher: PasswordHasher) -> Self {
        let slots = hasher.available_slots();
        handle();
        MetricsSource { hasher, slots }
    }

    /// The Prometheus text: samples gauges, then renders.
    pub fn render(&self) -> String {
        gauge!("tessera_password_hasher_available_slots").set(self.hasher.available_slots() as f64);
        gauge!("tessera_password_hasher_waiting").set(self.hasher.waiting() as f64);
        gauge!("tessera_password_hasher_slots").set(self.slots as f64);
        let handle = handle();
        handle.run_upkeep();
        handle.render()
    }
}

/// `GET /metrics`.
pub async fn endpoint(State(source): State<MetricsSource>) -> Response {
    ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], source.render()).into_response()
}

/// A router answering only `GET /metrics`, for the separate listener.
pub fn router(source: MetricsSource) -> axum::Router {
    axum::Router::new().route("/metrics", axum::routing::get(endpoint)).with_state(source)
}

/// Middleware: counts and times every request by matched route.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    histogram!("tessera_http_request_duration_seconds", "route" => route.clone(), "method" => method.clone())
        .record(started.elapsed().as_secs_f64());
    counter!("tessera_http_requests_total", "route" => route, "method" => method, "status" => status).increment(1);
    response
}

/// A session store that times every call, counts errors and time-outs, and
/// counts created sessions (for metrics and hourly activity stats).
pub struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    name: &'static str,
    activity: Option<ActivityStats>,
}

impl MeteredStore {
    /// Wraps `inner`, labelled `name` (`sqlite`, `postgres`, `redis`, `memory`).
    pub fn new(inner: Arc<dyn SessionStore>, name: &'static str, activity: Option<ActivityStats>) -> Self {
        handle();
        MeteredStore { inner, name, activity }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let mut guard = CallGuard { store: self.name, op, started: Instant::now(), finished: false };
        let result = call.await;
        guard.finished = true;
        histogram!("tessera_store_call_duration_seconds", "store" => self.name, "op" => op)
            .record(guard.started.elapsed().as_secs_f64());
        if result.is_err() {
            counter!("tessera_store_call_errors_total", "store" => self.name, "op" => op, "kind" => "error")
                .increment(1);
        }
        result
    }
}

/// Counts a call dropped before it finished (the engine's time-out).
struct CallGuard {
    store: &'static str,
    op: &'static str,
    started: Instant,
    finished: bool,
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.finished {
            histogram!("tessera_store_call_duration_seconds", "store" => self.store, "op" => self.op)
                .record(self.started.elapsed().as_secs_f64());
            counter!("tessera_store_call_errors_total", "store" => self.store, "op" => self.op, "kind" => "timeout")
                .increment(1);
        }
    }
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        self.timed("load", self.inner.load(key)).await
    }

    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError> {
        let outcome = self.timed("create", self.inner.create(record)).await?;
        if outcome == WriteOutcome::Written {
            counter!("tessera_sessions_created_total", "store" => self.name).increment(1);
            if let Some(activity) = &self.activity {
                activity.session_created();
            }
        }
        Ok(outcome)
    }

    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError> {
        self.timed("save", self.inner.save(record, expected_version)).await
    }

    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        self.timed("regenerate", self.inner.regenerate(old_key, expected_version, record)).await
    }

    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError> {
        self.timed("touch", self.inner.touch(key, last_active, expires_at)).await
    }

    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError> {
        self.timed("destroy", self.inner.destroy(key)).await
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.timed("list_for_user", self.inner.list_for_user(user_id)).await
    }

    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        self.timed("destroy_for_user", self.inner.destroy_for_user(user_id, keep)).await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.timed("purge_expired", self.inner.purge_expired()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed("ping", self.inner.ping()).await
    }
}

/// Records a sampled count of live sessions.
pub fn set_active_sessions(store: &'static str, count: u64) {
    gauge!("tessera_active_sessions", "store" => store).set(count as f64);
}

/// Runs the recorder's upkeep now and then, so histograms do not grow
/// between scrapes.
pub async fn upkeep_periodically(every: Duration) {
    let mut interval = tokio::time::interval(every);
    loop {
        interval.tick().await;
        handle().run_upkeep();
    }
}
