//! Password hashing: argon2id, PHC strings, a bounded pool off the async threads.
//!
//! Passwords are normalised to Unicode NFKC before hashing and before
//! verification (NIST SP 800-63B), so the same password typed on a keyboard
//! that produces another normal form (a precomposed `é` or `e` + combining
//! accent, a full-width digit) still matches.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use tessera::password::PasswordHasher;
//! let hasher = PasswordHasher::new();
//! let phc = hasher.hash("correct horse battery staple".into()).await.unwrap();
//! assert!(hasher.verify("correct horse battery staple".into(), Some(phc.clone())).await.unwrap().valid);
//! assert!(!hasher.verify("wrong".into(), Some(phc)).await.unwrap().valid);
//! // Unknown users cost the same time as wrong passwords:
//! assert!(!hasher.verify("anything".into(), None).await.unwrap().valid);
//! # }
//! ```

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::rngs::OsRng;
use tokio::sync::Semaphore;
use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// Longest password accepted, in bytes. Longer ones are refused before any
/// hashing, so a megabyte "password" cannot be used to burn CPU; nothing is
/// ever truncated.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// The NFKC form of `password`, the form that is hashed and checked
/// against password rules. Borrowed when the input is already normalised
/// (the common, ASCII case).
pub fn normalize_password(password: &str) -> Cow<'_, str> {
    match is_nfkc_quick(password.chars()) {
        IsNormalized::Yes => Cow::Borrowed(password),
        _ => Cow::Owned(password.nfkc().collect()),
    }
}

/// Why hashing or verifying failed.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("password longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// The stored hash is not a PHC string argon2 understands.
    #[error("stored password hash is malformed: {0}")]
    MalformedHash(String),
    /// argon2 refused (should not happen with valid parameters).
    #[error("password hashing failed: {0}")]
    Hashing(String),
    /// The hashing pool is gone (the runtime is shutting down).
    #[error("password hashing pool unavailable")]
    PoolClosed,
    /// Every core is hashing and the queue in front of them is full: the
    /// work was refused without waiting, so that a flood of logins or
    /// sign-ups cannot make every other user's wait grow without bound.
    /// Nothing was checked; the caller should answer "try again shortly"
    /// (HTTP 503 with `Retry-After`), never "wrong password".
    #[error("password hashing is busy; try again shortly")]
    Busy,
}

/// How many hashes may wait per core, by default, when every core is busy
/// (see [`PasswordHasher::with_queue_limit`]). With OWASP's parameters one
/// hash takes some 20–50 ms of one core, so the last of 8 waits about a
/// third of a second: slower than usual, but an answer, where a longer
/// queue would only turn a flood into a hang for everyone.
pub const DEFAULT_QUEUE_PER_CORE: usize = 8;

/// The result of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    /// The password matches.
    pub valid: bool,
    /// The hash was made with other parameters than the current ones; the
    /// caller should store a new hash (it has the plaintext right now).
    pub needs_rehash: bool,
}

/// argon2id with OWASP's parameters (m = 19456 KiB, t = 2, p = 1) unless told
/// otherwise, running at most one hash per core so that a login flood queues
/// instead of starving every other request.
///
/// The queue is bounded: at most `8 × cores` hashes wait for a core by
/// default ([`PasswordHasher::with_queue_limit`]); past that, `hash` and
/// `verify` answer [`PasswordError::Busy`] at once instead of queuing, so a
/// flood costs its senders refusals and everyone else a bounded wait.
///
/// Hashes run on threads of their own (`tessera-argon2`, one per core) at
/// the lowest scheduling priority (nice 19, `SCHED_BATCH` on Linux): a CPU
/// with nothing else to do gives them all its time, but a request worker
/// that has work wins the core. With equal priorities a login flood would
/// halve the CPU of every other request on a busy machine.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    pool: Arc<Semaphore>,
    threads: Arc<HashThreads>,
    dummy_hash: Arc<String>,
    /// Hashes admitted and not finished: running plus waiting for a core.
    admitted: Arc<AtomicUsize>,
    /// One per core (running) plus the queue limit (waiting).
    capacity: usize,
    cores: usize,
}

/// A place among the admitted hashes, given back when dropped: when the
/// hash is done, or when the caller stops waiting for a core (a client
/// that went away must not keep its place).
struct Admission {
    admitted: Arc<AtomicUsize>,
}

impl Admission {
    /// A place, if fewer than `capacity` are taken. The count is raised
    /// first and lowered again on refusal, so racing callers can never
    /// together exceed `capacity`.
    fn take(admitted: &Arc<AtomicUsize>, capacity: usize) -> Option<Admission> {
        let before = admitted.fetch_add(1, Ordering::AcqRel);
        let admission = Admission { admitted: Arc::clone(admitted) };
        (before < capacity).then_some(admission)
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A piece of hashing work for the pool's threads.
type HashJob = Box<dyn FnOnce() + Send>;

/// The hashing threads. Dropping the last [`PasswordHasher`] clone drops
/// the sender, which ends the threads once the queue is empty.
struct HashThreads {
    jobs: Mutex<mpsc::Sender<HashJob>>,
}

impl HashThreads {
    fn start(count: usize) -> Self {
        let (sender, receiver) = mpsc::channel::<HashJob>();
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..count {
            let receiver = Arc::clone(&receiver);
            let spawned = std::thread::Builder::new().name("tessera-argon2".into()).spawn(move || {
                lower_priority();
                loop {
                    // The lock is held only while waiting for the next job.
                    let job = match receiver.lock() {
                        Ok(queue) => queue.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
            // A thread that cannot be spawned leaves the others; with none at
            // all, `run` reports `PoolClosed` instead of hanging.
            drop(spawned);
        }
        HashThreads { jobs: Mutex::new(sender) }
    }

    fn submit(&self, job: HashJob) -> Result<(), PasswordError> {
        let sender = self.jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        sender.send(job).map_err(|_| PasswordError::PoolClosed)
    }
}

/// Puts the calling thread at the lowest priority the OS grants without
/// privileges. Best effort: where it is refused, hashing simply competes
/// as an equal, as it did before.
fn lower_priority() {
    use thread_priority::{ThreadPriority, ThreadSchedulePolicy};
    #[cfg(target_os = "linux")]
    let policy = ThreadSchedulePolicy::Normal(thread_priority::NormalThreadSchedulePolicy::Batch);
    #[cfg(not(target_os = "linux"))]
    let policy = ThreadSchedulePolicy::Normal(thread_priority::NormalThreadSchedulePolicy::Other);
    let _ = thread_priority::set_thread_priority_and_policy(
        thread_priority::thread_native_id(),
        ThreadPriority::Min,
        policy,
    );
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher").field("params", &self.params).finish_non_exhaustive()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PasswordHasher {
    /// OWASP parameters, pool sized to the machine's cores.
    pub fn new() -> Self {
        // These constants are valid argon2 parameters; `Params::new` only
        // rejects out-of-range values.
        let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
        Self::with_params(params)
    }

    /// Custom parameters (tests use cheap ones).
    pub fn with_params(params: Params) -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let dummy_hash = hash_blocking(&params, b"tessera dummy password").unwrap_or_default();
        PasswordHasher {
            params,
            pool: Arc::new(Semaphore::new(cores)),
            threads: Arc::new(HashThreads::start(cores)),
            dummy_hash: Arc::new(dummy_hash),
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity: cores + DEFAULT_QUEUE_PER_CORE * cores,
            cores,
        }
    }

    /// At most `waiting` hashes wait for a free core; more are refused with
    /// [`PasswordError::Busy`]. `0` means none wait: only as many hashes as
    /// there are cores are admitted.
    pub fn with_queue_limit(mut self, waiting: usize) -> Self {
        self.capacity = self.cores.saturating_add(waiting);
        self
    }

    /// The number of hashing threads (one per core).
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// How many hashes may wait for a core before more are refused.
    pub fn queue_limit(&self) -> usize {
        self.capacity - self.cores
    }

    /// Free cores, for metrics (0: hashes are queuing).
    pub fn available_slots(&self) -> usize {
        self.pool.available_permits()
    }

    /// Hashes waiting for a core right now, for metrics.
    pub fn waiting(&self) -> usize {
        self.admitted.load(Ordering::Acquire).min(self.capacity).saturating_sub(self.cores - self.available_slots())
    }

    /// Hashes the NFKC form of a password into a PHC string with a fresh
    /// random salt. [`PasswordError::TooLong`] if the password or its
    /// normal form is longer than [`MAX_PASSWORD_BYTES`].
    pub async fn hash(&self, password: String) -> Result<String, PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let password = normalize_password(&password).into_owned();
        // NFKC can expand (one ligature becomes several letters): the bound
        // holds for what is actually hashed.
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let params = self.params.clone();
        self.run(move || hash_blocking(&params, password.as_bytes())).await?
    }

    /// Verifies `password` against `stored` (a PHC string). With `stored =
    /// None` (unknown user) it verifies against a dummy hash and reports
    /// failure, so both cases take the same time.
    ///
    /// The NFKC form is checked first. A hash made before normalisation was
    /// introduced may hold a non-normalised password: when the input is not
    /// in NFKC and the normal form does not match, the input as typed is
    /// tried too and a match asks for a rehash. The second try depends only
    /// on the password typed, never on whether the account exists.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<Verification, PasswordError> {
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let known = stored.is_some();
        let phc = stored.unwrap_or_else(|| (*self.dummy_hash).clone());
        let params = self.params.clone();
        self.run(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| PasswordError::MalformedHash(e.to_string()))?;
            let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
            let normalized = normalize_password(&password);
            let mut valid = argon.verify_password(normalized.as_bytes(), &parsed).is_ok();
            let mut legacy = false;
            if !valid && normalized != password.as_str() {
                legacy = argon.verify_password(password.as_bytes(), &parsed).is_ok();
                valid = legacy;
            }
            let valid = valid && known;
            let needs_rehash = valid && (legacy || !uses_params(&parsed, &params));
            Ok(Verification { valid, needs_rehash })
        })
        .await?
    }

    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, PasswordError> {
        // Admitted before waiting, or refused without waiting at all.
        let admission = Admission::take(&self.admitted, self.capacity).ok_or(PasswordError::Busy)?;
        let permit = self.pool.clone().acquire_owned().await.map_err(|_| PasswordError::PoolClosed)?;
        let (done, result) = tokio::sync::oneshot::channel();
        self.threads.submit(Box::new(move || {
            let value = work();
            // Given back only when the core is free again (a caller that
            // stopped waiting for the answer still occupied a core until
            // now), and before the answer, so the caller finds it free.
            drop(permit);
            drop(admission);
            let _ = done.send(value);
        }))?;
        // A job that panicked drops `done`: reported, not hung.
        result.await.map_err(|_| PasswordError::PoolClosed)
    }
}

fn hash_blocking(params: &Params, password: &[u8]) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password(password, &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| PasswordError::Hashing(e.to_string()))
}

fn uses_params(hash: &PasswordHash<'_>, params: &Params) -> bool {
    if hash.algorithm.as_str() != "argon2id" || hash.version != Some(0x13) {
        return false;
    }
    match Params::try_from(hash) {
        Ok(found) => {
            found.m_cost() == params.m_cost() && found.t_cost() == params.t_cost() && found.p_cost() == params.p_cost()
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordHasher {
        PasswordHasher::with_params(Params::new(1024, 1, 1, None).unwrap())
    }

    #[tokio::test]
    async fn owasp_parameters_by_default() {
        let phc = PasswordHasher::new().hash("a long enough password".into()).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    }

    #[tokio::test]
    async fn flags_old_parameters_for_rehash() {
        let old = cheap().hash("password one".into()).await.unwrap();
        let current = PasswordHasher::new();
        let verdict = current.verify("password one".into(), Some(old)).await.unwrap();
        assert!(verdict.valid && verdict.needs_rehash);
        let fresh = current.hash("password one".into()).await.unwrap();
        let verdict = current.verify("password one".into(), Some(fresh)).await.unwrap();
        assert!(verdict.valid && !verdict.needs_rehash);
    }

    #[tokio::test]
    async fn normal_forms_match_each_other() {
        let hasher = cheap();
        // "é" precomposed (NFC) and as "e" + combining acute (NFD); a
        // full-width "１" is "1" in NFKC.
        let phc = hasher.hash("caf\u{e9} \u{ff11}23 longer phrase".into()).await.unwrap();
        for typed in ["caf\u{e9} 123 longer phrase", "cafe\u{301} \u{ff11}23 longer phrase"] {
            assert!(hasher.verify(typed.into(), Some(phc.clone())).await.unwrap().valid, "{typed:?}");
        }
        assert!(!hasher.verify("cafe 123 longer phrase".into(), Some(phc)).await.unwrap().valid);
        assert_eq!(normalize_password("plain ascii"), Cow::Borrowed("plain ascii"));
    }

    #[tokio::test]
    async fn hashes_of_unnormalised_passwords_still_verify_and_ask_for_a_rehash() {
        let hasher = cheap();
        let typed = "cafe\u{301} \u{ff11}23 longer phrase";
        // What a hash made before normalisation looks like.
        let legacy = hash_blocking(&hasher.params, typed.as_bytes()).unwrap();
        let verdict = hasher.verify(typed.into(), Some(legacy)).await.unwrap();
        assert!(verdict.valid && verdict.needs_rehash);
    }

    /// The hashing threads run at the lowest priority, so a login flood
    /// cannot take the CPU from request workers.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_the_lowest_priority() {
        let hasher = cheap();
        hasher.hash("warm the pool up".into()).await.unwrap();
        // Other tests in this process start pools of their own at any time,
        // and a thread lowers its priority only once it runs: a thread seen
        // at 0 must reach 19 shortly, never stay at 0.
        let mut niceness = Vec::new();
        for _ in 0..50 {
            niceness = argon2_thread_niceness();
            if niceness.iter().all(|nice| *nice == Some(19)) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!niceness.is_empty(), "no tessera-argon2 thread found");
        assert!(niceness.iter().all(|nice| *nice == Some(19)), "{niceness:?}");
    }

    /// The `nice` value of every `tessera-argon2` thread of this process.
    #[cfg(target_os = "linux")]
    fn argon2_thread_niceness() -> Vec<Option<i32>> {
        let mut niceness = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let Ok(task) = task else { continue };
            let dir = task.path();
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if name.trim() != "tessera-argon2" {
                continue;
            }
            let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
            // Fields after the parenthesised name; `nice` is field 19 of stat.
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
            niceness.push(fields.get(16).and_then(|nice| nice.parse::<i32>().ok()));
        }
        niceness
    }

    /// More simultaneous hashes than cores plus the queue limit: the surplus
    /// is refused at once with `Busy`, none waits, and the refused ones cost
    /// nothing (they never reach a hashing thread).
    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_waiting() {
        // OWASP parameters: each hash takes milliseconds, far longer than
        // admitting or refusing all of them takes.
        let hasher = PasswordHasher::new().with_queue_limit(2);
        let capacity = hasher.cores() + 2;
        let total = capacity + 40;
        let started = std::time::Instant::now();
        let results = futures::future::join_all((0..total).map(|i| hasher.hash(format!("password number {i}")))).await;
        let busy = results.iter().filter(|r| matches!(r, Err(PasswordError::Busy))).count();
        let hashed = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(busy + hashed, total, "only Busy or a hash");
        assert!(hashed >= capacity, "{hashed} hashed: the admitted ones must not be refused");
        assert!(busy >= total - capacity, "{busy} refused of {total}; capacity {capacity}");
        // Everything is given back: the pool admits a full load again.
        assert_eq!(hasher.admitted.load(Ordering::Acquire), 0);
        assert_eq!(hasher.waiting(), 0);
        let again = futures::future::join_all((0..capacity).map(|i| hasher.hash(format!("again {i}")))).await;
        assert!(again.iter().all(Result::is_ok), "{again:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
    }

    /// A caller that stops waiting for a core gives its place back.
    #[tokio::test]
    async fn abandoned_waits_give_their_place_back() {
        let hasher = PasswordHasher::new().with_queue_limit(1);
        for _ in 0..50 {
            let waiting = hasher.verify("some password".into(), None);
            // Dropped after one poll: admitted, then abandoned.
            let _ = futures::FutureExt::now_or_never(waiting);
        }
        // Let the hashes already handed to threads finish.
        let results = futures::future::join_all((0..hasher.cores() + 1).map(|_| async {
            for _ in 0..200 {
                match hasher.hash("after the abandoned ones".into()).await {
                    Err(PasswordError::Busy) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
                    other => return other,
                }
            }
            Err(PasswordError::Busy)
        }))
        .await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        // An abandoned hash may still be running on its thread (the new ones
        // can run beside it on another core): its place comes back when it
        // finishes, so wait for that rather than race it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while hasher.admitted.load(Ordering::Acquire) != 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(hasher.admitted.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn refuses_long_passwords_and_bad_hashes() {
        let hasher = cheap();
        assert!(matches!(hasher.hash("x".repeat(1025)).await, Err(PasswordError::TooLong)));
        assert!(hasher.hash("x".repeat(1024)).await.is_ok());
        // 300 × U+FDFA is 900 bytes as typed; each expands to 33 bytes in NFKC.
        assert!(matches!(hasher.hash("\u{fdfa}".repeat(300)).await, Err(PasswordError::TooLong)));
        assert!(matches!(
            hasher.verify("x".into(), Some("not a phc".into())).await,
            Err(PasswordError::MalformedHash(_))
        ));
    }
}
