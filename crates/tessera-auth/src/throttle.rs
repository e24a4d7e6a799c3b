//! Brute-force throttling of logins, kept in the accounts database so that
//! every instance sharing it counts together.
//!
//! Every attempt is *reserved* — counted, atomically, before any password
//! or code is checked ([`Throttle::reserve`]) — so a burst of simultaneous
//! guesses verifies no more than a patient attacker could. Attempts are
//! counted per account (`account:<user name key>`) and per
//! client address (`ip:<IPv4>` or `ip:<IPv6 /64>`). Past a number of free
//! failures each further one blocks the key for an exponentially growing
//! delay (1 s, 2 s, 4 s, … capped at 15 minutes by default); attempts while
//! blocked are answered `429` with `Retry-After` *before* any password is
//! verified, and are not counted, so hammering a blocked account does not
//! extend the block. A success clears the account's counter; a quiet period
//! without failures clears any counter.
//!
//! So that the per-account counter cannot be used to keep a victim out,
//! a successful login leaves a *device cookie* (OWASP's "device cookies"
//! scheme): a browser that presents a valid one for the account it logs
//! into is counted under its own `device:` key instead of the account's, and
//! is therefore never blocked by failures made elsewhere. See
//! `docs/password-policy.md`.
//!
//! Sign-ups are counted too, per client address (`signup:<IPv4>` or
//! `signup:<IPv6 /64>`), in a fixed window: at most
//! [`ThrottleConfig::signups_per_address`] accounts per
//! [`ThrottleConfig::signup_window`] ([`Throttle::reserve_sign_up`]). Each
//! sign-up costs an argon2 hash, so without this one address could keep
//! every core busy and slow every other user's login down. A sign-up that
//! succeeds stays counted (accounts are what the counter limits).
//!
//! Passkey ceremonies are counted the same way, per client address
//! (`ceremony:<IPv4>` or `ceremony:<IPv6 /64>`): at most
//! [`ThrottleConfig::passkey_ceremonies_per_address`] begun per
//! [`ThrottleConfig::passkey_ceremony_window`]
//! ([`Throttle::reserve_passkey_ceremony`]), so that one address cannot
//! fill the table of stored challenges. A browser with a valid device
//! cookie (it signed in here before, to any account) is counted under its
//! own `ceremony:device:` key instead, so others at its address cannot keep
//! it from signing in with a passkey.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;
use sqlx::Row;
use tessera::{Clock, Timestamp};

use crate::database::{DatabaseError, TimedPool, TimedTransaction};

/// How failures turn into delays, and how many accounts one address may
/// create.
///
/// It is also the `[throttle]` section of a configuration file (serde, with
/// durations as text such as `15m`; with the `schemars` feature, a JSON
/// schema): one declaration, which the server's settings reference embeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failed logins allowed per account (or device) before delays start.
    pub account_free_failures: u32,
    /// Failed logins allowed per client address before delays start;
    /// higher, because many people can share one address (NAT, offices).
    pub ip_free_failures: u32,
    /// The first delay; each further failure doubles it.
    #[serde(with = "tessera::duration_text")]
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub base_delay: Duration,
    /// The longest delay one failure can cause.
    #[serde(with = "tessera::duration_text")]
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub max_delay: Duration,
    /// A counter with no failure for this long starts over.
    #[serde(with = "tessera::duration_text")]
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub quiet_period: Duration,
    /// Accounts that may be created from one client address (an IPv4
    /// address or an IPv6 /64) per `signup_window`, on the forms and
    /// `POST /api/signup` alike, and a passkey sign-up's begin (web or API)
    /// counts as one; past it `429` with `Retry-After`, before any password
    /// is hashed or any name looked up. Each sign-up costs an argon2 hash: the limit
    /// keeps one address from taking the CPU every login needs. Raise it
    /// for many people signing up behind one address (a campus, an
    /// onboarding day). Provider (OpenID Connect) sign-ups are not counted.
    pub signups_per_address: u32,
    /// The window of `signups_per_address`, from an address's first sign-up;
    /// once used up, the address waits for the window's end.
    #[serde(with = "tessera::duration_text")]
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub signup_window: Duration,
    /// Passkey ceremonies that may be begun from one client address (an
    /// IPv4 address or an IPv6 /64) per `passkey_ceremony_window`: the
    /// sign-in challenges of the login page (which begins one as it loads,
    /// for the autofill) and of `POST /api/passkeys/signin/begin` (which
    /// apps also use to confirm), and the challenges of
    /// `POST /api/passkeys/register/begin`. Past it `429` with
    /// `Retry-After`, and nothing is stored. Each begin keeps a
    /// challenge in the database for five minutes: the limit keeps one
    /// address from filling that table. Raise it for many people signing in
    /// behind one address. A browser that signed in here before (a valid
    /// device cookie, of any account: a sign-in begin names none) is counted
    /// under its own allowance of the same size instead of its address's,
    /// like the device cookie's rule for failed logins, so begins made by
    /// others at its address cannot keep it from passkey sign-in; a browser
    /// that never signed in here shares its address's. (A passkey sign-up's
    /// begin counts as a sign-up, under `signups_per_address`.)
    pub passkey_ceremonies_per_address: u32,
    /// The window of `passkey_ceremonies_per_address`, from an address's
    /// first ceremony; once used up, the address waits for the window's end.
    /// A counter is kept for its whole window, whatever `quiet_period`.
    #[serde(with = "tessera::duration_text")]
    #[cfg_attr(feature = "schemars", schemars(with = "String"))]
    pub passkey_ceremony_window: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            account_free_failures: 5,
            ip_free_failures: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            quiet_period: Duration::from_secs(60 * 60),
            // A household or office rarely creates more than a few accounts
            // an hour; ten hashes an hour cost nothing, while a flood from
            // one address is refused before its first eleventh hash.
            signups_per_address: 10,
            signup_window: Duration::from_secs(60 * 60),
            // A challenge lives five minutes: thirty per five minutes keep
            // at most sixty of one address's in the table at any time, and
            // are more than a household reloading its login page needs.
            passkey_ceremonies_per_address: 30,
            passkey_ceremony_window: Duration::from_secs(5 * 60),
        }
    }
}

impl ThrottleConfig {
    /// The block caused by the `failures`-th failure of a key allowed `free` ones.
    pub fn delay(&self, failures: i64, free: u32) -> Option<Duration> {
        let over = failures - i64::from(free);
        if over <= 0 {
            return None;
        }
        // 2^(over-1), computed without overflow: past 2^20 the cap is reached anyway.
        let factor = 1u32 << (over - 1).min(20) as u32;
        Some(self.base_delay.saturating_mul(factor).min(self.max_delay))
    }
}

/// One counter: its database key and how many failures it forgives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThrottleKey {
    /// `account:…`, `device:…` or `ip:…`.
    pub key: String,
    /// Failures before delays start.
    pub free_failures: u32,
}

/// The counters of a login attempt.
#[derive(Debug, Clone, Default)]
pub struct AttemptKeys {
    /// The account's counter, or the device's when the browser has a device
    /// cookie for this account; `None` for malformed user names.
    pub account: Option<ThrottleKey>,
    /// The client address's counter.
    pub ip: Option<ThrottleKey>,
}

impl AttemptKeys {
    /// Every counter of the attempt.
    pub fn all(&self) -> impl Iterator<Item = &ThrottleKey> {
        self.account.iter().chain(self.ip.iter())
    }
}

/// The throttle key of a client address: the address itself for IPv4, the
/// /64 network for IPv6 (one subscriber usually gets a whole /64).
pub fn ip_key(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let segments = v6.segments();
                let network = std::net::Ipv6Addr::new(segments[0], segments[1], segments[2], segments[3], 0, 0, 0, 0);
                format!("ip:{network}/64")
            }
        },
    }
}

/// The sign-up counter of a client address: like [`ip_key`], under
/// `signup:`.
pub fn signup_key(ip: IpAddr) -> String {
    let address = ip_key(ip);
    format!("signup:{}", address.trim_start_matches("ip:"))
}

/// The passkey-ceremony counter of a client address: like [`ip_key`],
/// under `ceremony:`.
pub fn ceremony_key(ip: IpAddr) -> String {
    let address = ip_key(ip);
    format!("ceremony:{}", address.trim_start_matches("ip:"))
}

/// Login attempt counters in the database.
#[derive(Clone)]
pub struct Throttle {
    db: TimedPool,
    config: ThrottleConfig,
    clock: Arc<dyn Clock>,
    device_key: Arc<[u8; 32]>,
    /// Sign-up keys this instance found blocked: key → (blocked until,
    /// ask the database again after). See [`Throttle::reserve_sign_up`].
    blocked_sign_ups: Arc<Mutex<HashMap<String, (Timestamp, Timestamp)>>>,
}

/// How long an instance trusts a sign-up block it read from the database
/// before reading it again. A refused sign-up then costs no database write
/// (a flood of them would otherwise queue every login behind them for the
/// write lock), and a block lifted meanwhile (its sign-up given back after
/// a failure) is seen within this long.
pub const SIGN_UP_BLOCK_MEMORY: Duration = Duration::from_secs(5);

/// Blocked sign-up keys remembered before the memory starts over.
const SIGN_UP_BLOCK_MEMORY_KEYS: usize = 10_000;

/// An attempt counted before anything was verified. Settle it with
/// [`Throttle::succeeded`], [`Throttle::failed`] or [`Throttle::release`];
/// one dropped unsettled stays counted as a failure, the safe side.
#[derive(Debug)]
#[must_use = "a reservation is settled as a success, a failure or released"]
pub struct Reservation {
    keys: AttemptKeys,
    /// Per counter that this attempt blocked in advance: the block it set
    /// and the one it replaced, so that giving the attempt back restores it.
    blocks: Vec<(String, i64, i64)>,
}

impl Reservation {
    /// The counters this attempt was counted under.
    pub fn keys(&self) -> &AttemptKeys {
        &self.keys
    }
}

/// A sign-up counted before anything was hashed or created. It stays
/// counted unless given back with [`Throttle::release_sign_up`] (for a
/// sign-up that failed through no fault of the client's, such as a full
/// hashing queue); a sign-up that succeeds is *not* given back.
#[derive(Debug)]
pub struct SignUpReservation(Reservation);

impl Throttle {
    /// Counters in `db`; device cookies signed with `device_key` (a secret
    /// shared by every instance).
    pub fn new(db: TimedPool, config: ThrottleConfig, clock: Arc<dyn Clock>, device_key: [u8; 32]) -> Self {
        Throttle {
            db,
            config,
            clock,
            device_key: Arc::new(device_key),
            blocked_sign_ups: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// The counters for a login to `username_key` from `ip`; `device_cookie`
    /// is the value of the browser's device cookie, if it sent one.
    pub fn keys(&self, username_key: Option<&str>, ip: Option<IpAddr>, device_cookie: Option<&str>) -> AttemptKeys {
        let free = self.config.account_free_failures;
        let account = username_key.map(|name| match device_cookie.and_then(|c| self.device_token(c, name)) {
            Some(device) => ThrottleKey { key: format!("device:{device}"), free_failures: free },
            None => ThrottleKey { key: format!("account:{name}"), free_failures: free },
        });
        let ip = ip.map(|ip| ThrottleKey { key: ip_key(ip), free_failures: self.config.ip_free_failures });
        AttemptKeys { account, ip }
    }

    /// Counts an attempt on every counter of `keys` *before* anything is
    /// verified: `Ok(reservation)` if it may go ahead, `Err(wait)` if a
    /// counter is blocked (then nothing is counted, so hammering a blocked
    /// account does not extend the block).
    ///
    /// The count and the block it may start are written in one transaction
    /// that holds the counters' rows, so N simultaneous attempts on any
    /// number of instances verify at most the remaining allowance: the
    /// attempt that uses up the last free one blocks the counter for the
    /// delay its failure would earn, and the attempts behind it are refused
    /// without a password or code being checked. A success lifts the block
    /// again ([`Throttle::succeeded`]).
    pub async fn reserve(&self, keys: &AttemptKeys) -> Result<Result<Reservation, Duration>, DatabaseError> {
        let now = self.clock.now();
        let quiet_since = Timestamp(now.as_millis().saturating_sub(millis(self.config.quiet_period)));
        let mut tx = self.db.begin().await?;
        let mut blocks = Vec::new();
        for key in keys.all() {
            // Counted only while not blocked: the WHERE of the upsert holds
            // the row lock (PostgreSQL) or the write lock (SQLite) until commit.
            let row = sqlx::query(
                "INSERT INTO throttle (key, failures, blocked_until, updated_at) VALUES ($1, 1, 0, $2) \
                 ON CONFLICT (key) DO UPDATE SET \
                 failures = CASE WHEN throttle.updated_at <= $3 THEN 1 ELSE throttle.failures + 1 END, \
                 updated_at = $2 \
                 WHERE throttle.blocked_until <= $2 \
                 RETURNING failures, blocked_until",
            )
            .bind(&key.key)
            .bind(now.as_millis())
            .bind(quiet_since.as_millis())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else {
                tx.rollback().await?;
                let wait = self.retry_after(keys).await?.unwrap_or(Duration::from_secs(1));
                return Ok(Err(wait));
            };
            let attempts: i64 = row.try_get(0)?;
            let previous: i64 = row.try_get(1)?;
            // Should this attempt fail, the next one waits: block now, so the
            // attempts racing this one are refused before they verify anything.
            if let Some(delay) = self.config.delay(attempts + 1, key.free_failures) {
                block(&mut tx, &key.key, now.plus(delay).as_millis(), previous, &mut blocks).await?;
            }
        }
        tx.commit().await?;
        Ok(Ok(Reservation { keys: keys.clone(), blocks }))
    }

    /// How long until an attempt with `keys` may be made, if any of its
    /// counters is blocked now.
    pub async fn retry_after(&self, keys: &AttemptKeys) -> Result<Option<Duration>, DatabaseError> {
        let now = self.clock.now();
        let mut longest: Option<Duration> = None;
        for key in keys.all() {
            let row = sqlx::query("SELECT blocked_until FROM throttle WHERE key = $1")
                .bind(&key.key)
                .fetch_optional(&self.db)
                .await?;
            let Some(row) = row else { continue };
            let until = Timestamp(row.try_get(0)?);
            if until > now {
                let wait = until.since(now);
                longest = Some(longest.map_or(wait, |l| l.max(wait)));
            }
        }
        Ok(longest)
    }

    /// The attempt failed: it stays counted. Returns the wait its failure
    /// caused, if the counters are now blocked, so the answer can say so at
    /// once rather than on the next try.
    pub async fn failed(&self, reservation: Reservation) -> Result<Option<Duration>, DatabaseError> {
        self.retry_after(&reservation.keys).await
    }

    /// The attempt succeeded: the account's (or device's) counter is
    /// cleared, and the attempt is taken back from the address's counter.
    /// The address's earlier failures are kept: otherwise an attacker
    /// holding one valid account could wipe them between guesses at others.
    pub async fn succeeded(&self, reservation: Reservation) -> Result<(), DatabaseError> {
        if let Some(account) = &reservation.keys.account {
            sqlx::query("DELETE FROM throttle WHERE key = $1").bind(&account.key).execute(&self.db).await?;
        }
        if let Some(ip) = &reservation.keys.ip {
            self.take_back(&reservation, ip).await?;
        }
        Ok(())
    }

    /// The attempt neither failed nor finished (a right password waiting
    /// for its second factor): it is taken back from every counter, which
    /// keep their earlier failures, so re-entering the password cannot reset
    /// the back-off on code guesses.
    pub async fn release(&self, reservation: Reservation) -> Result<(), DatabaseError> {
        for key in reservation.keys.all() {
            self.take_back(&reservation, key).await?;
        }
        Ok(())
    }

    /// One attempt less on `key`; the block the reservation set in advance,
    /// if any, is replaced by the one it found, unless another attempt has
    /// moved the block since.
    async fn take_back(&self, reservation: &Reservation, key: &ThrottleKey) -> Result<(), DatabaseError> {
        let block = reservation.blocks.iter().find(|(k, _, _)| *k == key.key);
        let (ours, previous) = block.map_or((-1, -1), |(_, ours, previous)| (*ours, *previous));
        sqlx::query(
            "UPDATE throttle SET failures = failures - 1, \
             blocked_until = CASE WHEN blocked_until = $2 THEN $3 ELSE blocked_until END \
             WHERE key = $1 AND failures > 0",
        )
        .bind(&key.key)
        .bind(ours)
        .bind(previous)
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Counts a sign-up from `ip` *before* anything is hashed or created:
    /// `Ok(reservation)` if the address has allowance left in its window,
    /// `Err(wait)` (nothing counted) until the window ends if not.
    ///
    /// Like [`Throttle::reserve`], one transaction holds the counter's row:
    /// the sign-up that takes the last of the allowance blocks the address
    /// until the window's end, so N simultaneous sign-ups on any number of
    /// instances create at most the allowance. A block once read is
    /// remembered by this instance for [`SIGN_UP_BLOCK_MEMORY`], so that the
    /// refusals of a flood touch no database.
    pub async fn reserve_sign_up(&self, ip: IpAddr) -> Result<Result<SignUpReservation, Duration>, DatabaseError> {
        let key = ThrottleKey { key: signup_key(ip), free_failures: self.config.signups_per_address };
        let reserved = self.reserve_in_window(key, self.config.signup_window).await?;
        Ok(reserved.map(SignUpReservation))
    }

    /// Counts a passkey ceremony begun from `ip` *before* its challenge is
    /// stored: `Ok(())` if the address has allowance left in its window
    /// ([`ThrottleConfig::passkey_ceremonies_per_address`] per
    /// [`ThrottleConfig::passkey_ceremony_window`]), `Err(wait)` (nothing
    /// counted) until the window ends if not. Counted like sign-ups, in one
    /// transaction holding the counter's row, so N simultaneous begins on
    /// any number of instances store at most the allowance; a ceremony
    /// stays counted whether or not it is finished.
    ///
    /// `device_cookie` is the browser's device cookie, if it sent one. Like
    /// the login throttle's rule for an account, a browser that signed in
    /// here before ([`Throttle::is_device_here`]: any account, as a begin
    /// names none) is counted under its own key (`ceremony:device:<nonce>`,
    /// with the same allowance) instead of the address's, so begins made
    /// by others at its address never refuse it, and its own begins do not
    /// use up theirs.
    pub async fn reserve_passkey_ceremony(
        &self,
        ip: IpAddr,
        device_cookie: Option<&str>,
    ) -> Result<Result<(), Duration>, DatabaseError> {
        let key = match device_cookie.and_then(|cookie| self.device_here_token(cookie)) {
            Some(device) => format!("ceremony:device:{device}"),
            None => ceremony_key(ip),
        };
        let key = ThrottleKey { key, free_failures: self.config.passkey_ceremonies_per_address };
        let reserved = self.reserve_in_window(key, self.config.passkey_ceremony_window).await?;
        Ok(reserved.map(|_| ()))
    }

    /// Counts one use of `key`'s allowance (its `free_failures`) in a fixed
    /// `window` from the key's first use: the use that takes the last of it
    /// blocks the key until the window's end. A block once read is
    /// remembered for [`SIGN_UP_BLOCK_MEMORY`], so refusals touch no
    /// database.
    async fn reserve_in_window(
        &self,
        key: ThrottleKey,
        window: Duration,
    ) -> Result<Result<Reservation, Duration>, DatabaseError> {
        let now = self.clock.now();
        if let Some(wait) = self.remembered_sign_up_block(&key.key, now) {
            return Ok(Err(wait));
        }
        let window = millis(window);
        let window_over = now.as_millis().saturating_sub(window);
        let mut tx = self.db.begin().await?;
        // `updated_at` holds the start of the window here: a window that has
        // ended starts over with this use.
        let row = sqlx::query(
            "INSERT INTO throttle (key, failures, blocked_until, updated_at) VALUES ($1, 1, 0, $2) \
             ON CONFLICT (key) DO UPDATE SET \
             failures = CASE WHEN throttle.updated_at <= $3 THEN 1 ELSE throttle.failures + 1 END, \
             updated_at = CASE WHEN throttle.updated_at <= $3 THEN $2 ELSE throttle.updated_at END \
             WHERE throttle.blocked_until <= $2 \
             RETURNING failures, blocked_until, updated_at",
        )
        .bind(&key.key)
        .bind(now.as_millis())
        .bind(window_over)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            let name = key.key.clone();
            let keys = AttemptKeys { account: None, ip: Some(key) };
            let wait = self.retry_after(&keys).await?.unwrap_or(Duration::from_secs(1));
            self.remember_sign_up_block(name, now, wait);
            return Ok(Err(wait));
        };
        let count: i64 = row.try_get(0)?;
        let previous: i64 = row.try_get(1)?;
        let window_start: i64 = row.try_get(2)?;
        let mut blocks = Vec::new();
        if count >= i64::from(key.free_failures) {
            // The allowance is used up: the next use waits for the end of
            // the window, and so do the ones racing this one.
            block(&mut tx, &key.key, window_start.saturating_add(window), previous, &mut blocks).await?;
        }
        tx.commit().await?;
        Ok(Ok(Reservation { keys: AttemptKeys { account: None, ip: Some(key) }, blocks }))
    }

    /// The wait of a window block (sign-ups, passkey ceremonies) on `key`
    /// this instance read lately.
    fn remembered_sign_up_block(&self, key: &str, now: Timestamp) -> Option<Duration> {
        let memory = self.blocked_sign_ups.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (until, recheck) = memory.get(key)?;
        (now < *recheck && now < *until).then(|| until.since(now))
    }

    fn remember_sign_up_block(&self, key: String, now: Timestamp, wait: Duration) {
        let mut memory = self.blocked_sign_ups.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if memory.len() >= SIGN_UP_BLOCK_MEMORY_KEYS {
            memory.clear();
        }
        memory.insert(key, (now.plus(wait), now.plus(SIGN_UP_BLOCK_MEMORY.min(wait))));
    }

    /// Gives a sign-up back (it failed through no fault of the client's,
    /// such as a full hashing queue or a database error): one sign-up less,
    /// and the block it set, if any, lifted.
    pub async fn release_sign_up(&self, reservation: SignUpReservation) -> Result<(), DatabaseError> {
        self.release(reservation.0).await
    }

    /// Drops counters that are neither blocked nor recent; returns how many.
    /// A login counter is recent until its quiet period has passed since
    /// its last failure; a sign-up or passkey-ceremony counter, whose
    /// `updated_at` is the start of its window, while that window lasts —
    /// whatever the window's length next to the quiet period, so that no
    /// counter is dropped in the middle of its window (which would give the
    /// address its allowance again).
    pub async fn purge(&self) -> Result<u64, DatabaseError> {
        let now = self.clock.now().as_millis();
        let quiet_since = now.saturating_sub(millis(self.config.quiet_period));
        let sign_ups_over = now.saturating_sub(millis(self.config.signup_window));
        let ceremonies_over = now.saturating_sub(millis(self.config.passkey_ceremony_window));
        let done = sqlx::query(
            "DELETE FROM throttle WHERE blocked_until <= $2 AND CASE \
             WHEN key LIKE 'signup:%' THEN updated_at <= $3 \
             WHEN key LIKE 'ceremony:%' THEN updated_at <= $4 \
             ELSE updated_at <= $1 END",
        )
        .bind(quiet_since)
        .bind(now)
        .bind(sign_ups_over)
        .bind(ceremonies_over)
        .execute(&self.db)
        .await?;
        Ok(done.rows_affected())
    }

    /// A fresh device cookie value for `username_key`, to send after a
    /// successful login (name: [`DEVICE_COOKIE`], lifetime:
    /// [`DEVICE_COOKIE_LIFETIME`]): `nonce.account-tag.here-tag`, the first
    /// tag an HMAC over the account and the nonce ([`Throttle::is_device_of`]),
    /// the second over the nonce alone, which says "this browser signed in
    /// here before" whatever the account ([`Throttle::is_device_here`]).
    pub fn new_device_cookie(&self, username_key: &str) -> Option<String> {
        let mut nonce = [0u8; 16];
        OsRng.fill_bytes(&mut nonce);
        let nonce = URL_SAFE_NO_PAD.encode(nonce);
        let mac = self.device_mac(username_key, &nonce)?;
        let tag = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        let here = URL_SAFE_NO_PAD.encode(self.device_here_mac(&nonce)?.finalize().into_bytes());
        Some(format!("{nonce}.{tag}.{here}"))
    }

    /// Whether `value` is a valid device cookie of this server for any
    /// account: the browser signed in here before (within the cookie's
    /// lifetime). What exempts a browser from the per-address allowance of
    /// passkey ceremonies ([`Throttle::reserve_passkey_ceremony`]), whose
    /// begins name no account. A cookie made before the account-free tag
    /// existed (two parts) is not one until the browser's next sign-in.
    pub fn is_device_here(&self, value: &str) -> bool {
        self.device_here_token(value).is_some()
    }

    /// The nonce of `value` if its account-free tag is valid.
    fn device_here_token(&self, value: &str) -> Option<String> {
        if value.len() > 200 {
            return None;
        }
        let mut parts = value.split('.');
        let (nonce, _account_tag, here) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let here = URL_SAFE_NO_PAD.decode(here).ok()?;
        // verify_slice compares in constant time.
        self.device_here_mac(nonce)?.verify_slice(&here).ok()?;
        Some(nonce.to_owned())
    }

    /// HMAC-SHA256 over the nonce alone, under its own label.
    fn device_here_mac(&self, nonce: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.device_key.as_slice()).ok()?;
        mac.update(b"tessera device cookie v1 signed in here\0");
        mac.update(nonce.as_bytes());
        Some(mac)
    }

    /// Whether `value` is a valid device cookie for `username_key` (the
    /// browser signed in to that account before).
    pub fn is_device_of(&self, value: &str, username_key: &str) -> bool {
        self.device_token(value, username_key).is_some()
    }

    /// The nonce of `value` if it is a valid device cookie for `username_key`.
    fn device_token(&self, value: &str, username_key: &str) -> Option<String> {
        if value.len() > 200 {
            return None;
        }
        // `nonce.tag`, or `nonce.tag.here-tag` (see `new_device_cookie`).
        let mut parts = value.split('.');
        let (nonce, tag) = (parts.next()?, parts.next()?);
        if parts.nth(1).is_some() {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let mac = self.device_mac(username_key, nonce)?;
        // verify_slice compares in constant time.
        mac.verify_slice(&tag).ok()?;
        Some(nonce.to_owned())
    }

    /// HMAC-SHA256 over the user name key and the nonce. HMAC takes keys of
    /// any length, so `None` never happens in practice.
    fn device_mac(&self, username_key: &str, nonce: &str) -> Option<Hmac<Sha256>> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.device_key.as_slice()).ok()?;
        mac.update(b"tessera device cookie v1\0");
        mac.update(username_key.as_bytes());
        mac.update(b"\0");
        mac.update(nonce.as_bytes());
        Some(mac)
    }
}

/// The device cookie's name (prefixed like the session cookie).
pub const DEVICE_COOKIE: &str = "device";

/// How long a browser stays a known device after its last successful login.
pub const DEVICE_COOKIE_LIFETIME: Duration = Duration::from_secs(180 * 24 * 3600);

/// Blocks `key` until `until` (milliseconds) inside `tx`, the transaction
/// that counted the attempt and holds the counter's row, and notes the block
/// it replaced (`previous`) in `blocks`, so that giving the attempt back
/// restores it ([`Throttle::release`]).
async fn block(
    tx: &mut TimedTransaction,
    key: &str,
    until: i64,
    previous: i64,
    blocks: &mut Vec<(String, i64, i64)>,
) -> Result<(), DatabaseError> {
    sqlx::query("UPDATE throttle SET blocked_until = $2 WHERE key = $1")
        .bind(key)
        .bind(until)
        .execute(&mut **tx)
        .await?;
    blocks.push((key.to_owned(), until, previous));
    Ok(())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_and_stop_at_the_cap() {
        let config = ThrottleConfig::default();
        assert_eq!(config.delay(5, 5), None);
        assert_eq!(config.delay(6, 5), Some(Duration::from_secs(1)));
        assert_eq!(config.delay(7, 5), Some(Duration::from_secs(2)));
        assert_eq!(config.delay(10, 5), Some(Duration::from_secs(16)));
        assert_eq!(config.delay(15, 5), Some(Duration::from_secs(512)));
        assert_eq!(config.delay(16, 5), Some(Duration::from_secs(900)));
        assert_eq!(config.delay(i64::MAX, 5), Some(Duration::from_secs(900)));
    }

    #[test]
    fn signup_keys() {
        assert_eq!(signup_key("192.0.2.7".parse().unwrap()), "signup:192.0.2.7");
        assert_eq!(signup_key("2001:db8:1:2:3:4:5:6".parse().unwrap()), "signup:2001:db8:1:2::/64");
    }

    #[test]
    fn ceremony_keys() {
        assert_eq!(ceremony_key("192.0.2.7".parse().unwrap()), "ceremony:192.0.2.7");
        assert_eq!(ceremony_key("2001:db8:1:2:3:4:5:6".parse().unwrap()), "ceremony:2001:db8:1:2::/64");
    }

    #[tokio::test]
    async fn device_cookies_name_the_account_and_say_the_browser_signed_in_here() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("throttle.db").display());
        let db = TimedPool::connect(&url, crate::database::DEFAULT_QUERY_TIMEOUT).await.unwrap();
        let clock: Arc<dyn Clock> = Arc::new(tessera::ManualClock::new());
        let throttle = Throttle::new(db.clone(), ThrottleConfig::default(), clock.clone(), [7; 32]);
        let other = Throttle::new(db, ThrottleConfig::default(), clock, [8; 32]);
        let cookie = throttle.new_device_cookie("alice").unwrap();
        assert_eq!(cookie.split('.').count(), 3, "{cookie}");
        assert!(throttle.is_device_of(&cookie, "alice"));
        assert!(!throttle.is_device_of(&cookie, "bob"), "another account's");
        assert!(throttle.is_device_here(&cookie), "signed in here, whatever the account");
        assert!(!other.is_device_here(&cookie), "another server's key");
        // A cookie of the two-part format is still the account's, but says
        // nothing of "here" until the next sign-in.
        let old = cookie.rsplit_once('.').unwrap().0;
        assert!(throttle.is_device_of(old, "alice"));
        assert!(!throttle.is_device_here(old));
        // Tampered: the account tag moved into the "here" place, or a part added.
        let (nonce, rest) = cookie.split_once('.').unwrap();
        let (tag, _) = rest.split_once('.').unwrap();
        assert!(!throttle.is_device_here(&format!("{nonce}.{tag}.{tag}")));
        assert!(!throttle.is_device_here(&format!("{cookie}.x")));
        assert!(!throttle.is_device_of(&format!("{cookie}.x"), "alice"));
    }

    #[test]
    fn ip_keys() {
        assert_eq!(ip_key("192.0.2.7".parse().unwrap()), "ip:192.0.2.7");
        assert_eq!(ip_key("::ffff:192.0.2.7".parse().unwrap()), "ip:192.0.2.7");
        assert_eq!(ip_key("2001:db8:1:2:3:4:5:6".parse().unwrap()), "ip:2001:db8:1:2::/64");
        assert_eq!(ip_key("2001:db8:1:2:ffff::1".parse().unwrap()), "ip:2001:db8:1:2::/64");
    }
}
