//! # tessera-store-sqlite — sessions in SQLite
#![forbid(unsafe_code)]
#![warn(missing_docs)]
