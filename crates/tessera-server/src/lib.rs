//! # tessera-server — the membership service
//!
//! Register, log in, see your profile, log out: server-rendered pages on
//! tessera's session engine, with users and sessions in an embedded SQLite
//! database by default, or PostgreSQL / Redis when one machine is not enough.
//!
//! The binary is `tessera` (`src/main.rs`); this library exposes the pieces so
//! integration tests can build the real server in-process and serve it on a
//! loopback port.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_rules;
pub mod activity_stats;
pub mod admin;
pub mod api;
pub mod app;
pub mod audit;
pub mod auth_events;
pub mod backends;
pub mod background;
pub mod cli;
pub mod client_ip;
pub mod compression;
pub mod config;
pub mod database;
pub mod edge;
pub mod error_pages;
pub mod file_permissions;
pub mod flash;
pub mod forward_auth;
pub mod groups;
pub mod health;
pub mod http_semantics;
pub mod log_format;
pub mod mail;
pub mod metrics;
pub mod oidc;
pub mod pages;
pub mod product_store;
pub mod public_url;
pub mod reauthentication;
pub mod registration_policy;
pub mod request_context;
pub mod request_id;
pub mod revocation_marks;
pub mod routes;
pub mod security_headers;
pub mod serve;
pub mod services;
pub mod session_store;
pub mod settings;
pub mod state;
pub mod static_files;
pub mod tls;
pub mod token_store;

pub use app::App;
pub use backends::{Backends, StartupError};
pub use config::AppConfig;
pub use state::AppState;
