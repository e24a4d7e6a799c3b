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

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::Method;
use metrics::{counter, gauge, histogram, Counter, Histogram};
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

/// The per-request metrics (`tessera_http_requests_total` and
/// `tessera_http_request_duration_seconds`), recorded by [`crate::edge`].
///
/// Looking a metric up by its labels costs the recorder an allocation and a
/// hash of every label on each call; the handles are looked up once per
/// route, method and status and kept here, so a request costs a read lock
/// and two atomic updates.
#[derive(Default)]
pub struct RequestMetrics {
    routes: RwLock<HashMap<Box<str>, RouteHandles>>,
}

/// The handles of one route.
#[derive(Default)]
struct RouteHandles {
    durations: Vec<(Method, Histogram)>,
    counts: Vec<(Method, u16, Counter)>,
}

impl RouteHandles {
    fn find(&self, method: &Method, status: u16) -> Option<(&Histogram, &Counter)> {
        let histogram = self.durations.iter().find(|(m, _)| m == method).map(|(_, h)| h)?;
        let counter = self.counts.iter().find(|(m, s, _)| m == method && *s == status).map(|(_, _, c)| c)?;
        Some((histogram, counter))
    }
}

/// The method as a label: the standard ones, and `OTHER` for the rest, so
/// that clients sending made-up methods cannot grow the label set.
fn label_method(method: &Method) -> Method {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    if STANDARD.contains(method) {
        method.clone()
    } else {
        Method::from_bytes(b"OTHER").unwrap_or(Method::GET)
    }
}

impl RequestMetrics {
    /// Handles made in the process's recorder ([`handle`]).
    pub fn new() -> Self {
        handle();
        RequestMetrics::default()
    }

    /// Records one request of `route` (the matched path, or `unmatched`),
    /// answered with `status` after `elapsed`.
    pub fn record(&self, route: &str, method: &Method, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let method = &label_method(method);
        {
            let routes = self.routes.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some((histogram, counter)) = routes.get(route).and_then(|handles| handles.find(method, status)) {
                histogram.record(seconds);
                counter.increment(1);
                return;
            }
        }
        let mut routes = self.routes.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let handles = routes.entry(route.into()).or_default();
        if !handles.durations.iter().any(|(m, _)| m == method) {
            let histogram = histogram!(
                "tessera_http_request_duration_seconds",
                "route" => route.to_owned(),
                "method" => method.as_str().to_owned()
            );
            handles.durations.push((method.clone(), histogram));
        }
        if !handles.counts.iter().any(|(m, s, _)| m == method && *s == status) {
            let counter = counter!(
                "tessera_http_requests_total",
                "route" => route.to_owned(),
                "method" => method.as_str().to_owned(),
                "status" => status.to_string()
            );
            handles.counts.push((method.clone(), status, counter));
        }
        if let Some((histogram, counter)) = handles.find(method, status) {
            histogram.record(seconds);
            counter.increment(1);
        }
    }
}

/// A session store that times every call, counts errors and time-outs, and
/// counts created sessions (for metrics and hourly activity stats).
pub struct MeteredStore {
    inner: Arc<dyn SessionStore>,
    /// The handles of each operation, by [`Op`] (looked up once, not per call).
    ops: Vec<OpHandles>,
    created: Counter,
    activity: Option<ActivityStats>,
}

/// The store operations, as metric labels.
#[derive(Debug, Clone, Copy)]
enum Op {
    Load,
    Create,
    Save,
    Regenerate,
    Touch,
    Destroy,
    ListForUser,
    DestroyForUser,
    PurgeExpired,
    Ping,
}

impl Op {
    const ALL: [Op; 10] = [
        Op::Load,
        Op::Create,
        Op::Save,
        Op::Regenerate,
        Op::Touch,
        Op::Destroy,
        Op::ListForUser,
        Op::DestroyForUser,
        Op::PurgeExpired,
        Op::Ping,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::Load => "load",
            Op::Create => "create",
            Op::Save => "save",
            Op::Regenerate => "regenerate",
            Op::Touch => "touch",
            Op::Destroy => "destroy",
            Op::ListForUser => "list_for_user",
            Op::DestroyForUser => "destroy_for_user",
            Op::PurgeExpired => "purge_expired",
            Op::Ping => "ping",
        }
    }
}

/// The metrics of one store operation.
struct OpHandles {
    duration: Histogram,
    errors: Counter,
    timeouts: Counter,
}

impl MeteredStore {
    /// Wraps `inner`, labelled `name` (`sqlite`, `postgres`, `redis`, `memory`).
    pub fn new(inner: Arc<dyn SessionStore>, name: &'static str, activity: Option<ActivityStats>) -> Self {
        handle();
        let ops = Op::ALL
            .iter()
            .map(|op| {
                let op = op.label();
                OpHandles {
                    duration: histogram!("tessera_store_call_duration_seconds", "store" => name, "op" => op),
                    errors: counter!("tessera_store_call_errors_total", "store" => name, "op" => op, "kind" => "error"),
                    timeouts: counter!(
                        "tessera_store_call_errors_total", "store" => name, "op" => op, "kind" => "timeout"
                    ),
                }
            })
            .collect();
        let created = counter!("tessera_sessions_created_total", "store" => name);
        MeteredStore { inner, ops, created, activity }
    }

    async fn timed<T>(
        &self,
        op: Op,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let handles = &self.ops[op as usize];
        let mut guard = CallGuard { handles, started: Instant::now(), finished: false };
        let result = call.await;
        guard.finished = true;
        handles.duration.record(guard.started.elapsed().as_secs_f64());
        if result.is_err() {
            handles.errors.increment(1);
        }
        result
    }
}

/// Counts a call dropped before it finished (the engine's time-out).
struct CallGuard<'a> {
    handles: &'a OpHandles,
    started: Instant,
    finished: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.handles.duration.record(self.started.elapsed().as_secs_f64());
            self.handles.timeouts.increment(1);
        }
    }
}

#[async_trait]
impl SessionStore for MeteredStore {
    async fn load(&self, key: &SessionKey) -> Result<Option<SessionRecord>, StoreError> {
        let loaded = self.timed(Op::Load, self.inner.load(key)).await;
        if let Err(StoreError::Corrupt(why)) = &loaded {
            // The engine treats it as no session and deletes it; the
            // operator should still hear of it (a bug, a tampered store, a
            // rollback across a layout change). `why` says which part of the
            // record did not parse; stores name kinds, not values, though a
            // JSON parser's message may quote a few bytes of a damaged one.
            tracing::warn!(error = %why, "an unreadable session record was dropped");
        }
        loaded
    }

    async fn create(&self, record: &SessionRecord) -> Result<WriteOutcome, StoreError> {
        let outcome = self.timed(Op::Create, self.inner.create(record)).await?;
        if outcome == WriteOutcome::Written {
            self.created.increment(1);
            if let Some(activity) = &self.activity {
                activity.session_created();
            }
        }
        Ok(outcome)
    }

    async fn save(&self, record: &SessionRecord, expected_version: u64) -> Result<WriteOutcome, StoreError> {
        self.timed(Op::Save, self.inner.save(record, expected_version)).await
    }

    async fn regenerate(
        &self,
        old_key: &SessionKey,
        expected_version: u64,
        record: &SessionRecord,
    ) -> Result<WriteOutcome, StoreError> {
        self.timed(Op::Regenerate, self.inner.regenerate(old_key, expected_version, record)).await
    }

    async fn touch(&self, key: &SessionKey, last_active: Timestamp, expires_at: Timestamp) -> Result<bool, StoreError> {
        self.timed(Op::Touch, self.inner.touch(key, last_active, expires_at)).await
    }

    async fn destroy(&self, key: &SessionKey) -> Result<bool, StoreError> {
        self.timed(Op::Destroy, self.inner.destroy(key)).await
    }

    async fn list_for_user(&self, user_id: &str) -> Result<Vec<SessionRecord>, StoreError> {
        self.timed(Op::ListForUser, self.inner.list_for_user(user_id)).await
    }

    async fn destroy_for_user(&self, user_id: &str, keep: Option<&SessionKey>) -> Result<u64, StoreError> {
        self.timed(Op::DestroyForUser, self.inner.destroy_for_user(user_id, keep)).await
    }

    async fn purge_expired(&self) -> Result<u64, StoreError> {
        self.timed(Op::PurgeExpired, self.inner.purge_expired()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(Op::Ping, self.inner.ping()).await
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
