//! # tessera — the session engine
//!
//! This crate is the heart of tessera and knows nothing of any web framework or
//! database. It defines:
//!
//! - [`SessionId`] and [`SessionKey`]: the 256-bit secret that travels in the
//!   cookie, and the SHA-256 digest of it that stores use as their key (so a dump
//!   of a store yields no usable cookie);
//! - [`SessionRecord`]: what a store keeps, versioned for compare-and-swap;
//! - [`Session`]: the per-request handle with typed get/insert/update/remove and
//!   a log of changes that can be replayed when a concurrent request won the race;
//! - [`SessionStore`]: the narrow async trait every store implements;
//! - [`SessionEngine`]: loading, expiry (idle and absolute), touching, saving
//!   with compare-and-swap and retry, regeneration and destruction;
//! - [`CookieConfig`]: the session cookie's name and attributes;
//! - [`password`]: argon2id hashing on a bounded pool.
//!
//! Framework glue lives in `tessera-axum`; stores live in `tessera-store-*`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod clock;
mod cookie_config;
mod data;
pub mod duration_text;
mod engine;
mod error;
mod expiry;
mod id;
pub mod password;
mod record;
mod sealed;
mod session;
mod store;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use cookie_config::{CookieConfig, SameSite};
pub use data::SessionData;
pub use engine::{CookieUpdate, EngineFuture, SessionEngine};
pub use error::{SessionDataError, StoreError};
pub use expiry::ExpiryPolicy;
pub use id::{SessionHandle, SessionId, SessionKey};
pub use record::{DeviceInfo, SessionRecord};
pub use sealed::{CookieSealer, Opened, RevocationMarks};
pub use session::Session;
pub use store::{SessionStore, WriteOutcome};
