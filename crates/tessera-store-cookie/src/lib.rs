//! # tessera-store-cookie — the whole session in one sealed cookie
//!
//! [`CookieSealer`] encrypts and authenticates session payloads with
//! XChaCha20-Poly1305 (a random 192-bit nonce per cookie, so nonces never
//! repeat in practice). The cookie's name is bound into the authenticated
//! data: a value cannot be replayed under another cookie name. Keys form a
//! ring: new cookies use the newest key, older keys still open cookies and
//! the engine re-seals those with the newest key.
//!
//! A cookie cannot be deleted from an attacker's copy, so logout needs help
//! from the server: [`tessera::RevocationMarks`] keeps a per-user "valid
//! after" time. [`MemoryRevocationMarks`] is an in-process implementation;
//! the tessera server keeps marks in its database.
//!
//! ```
//! use std::sync::Arc;
//! use tessera::SessionEngine;
//! use tessera_store_cookie::{CookieSealer, MemoryRevocationMarks, SealingKey};
//!
//! let sealer = CookieSealer::new("__Host-id", vec![SealingKey::generate(1)]).unwrap();
//! let engine = SessionEngine::sealed(Arc::new(sealer), Arc::new(MemoryRevocationMarks::default()));
//! assert!(engine.is_sealed());
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod marks;
mod sealer;

pub use marks::MemoryRevocationMarks;
pub use sealer::{CookieSealer, SealerError, SealingKey};
