//! Where the real PostgreSQL and Redis are, and what to do when they are not.
#![allow(dead_code)]

/// A PostgreSQL URL whose connections work in a fresh schema of their own,
/// so that tests never see tables or migration records left by other runs
/// (or by other branches' migrations in the shared database).
pub fn postgres_url() -> String {
    let base = base_postgres_url();
    let schema = format!("tessera_t_{:016x}", rand::random::<u64>());
    let status = std::process::Command::new("psql")
        .args([base.as_str(), "-q", "-c", &format!("CREATE SCHEMA {schema}")])
        .status()
        .expect("psql runs");
    assert!(status.success(), "creating schema {schema}");
    let separator = if base.contains('?') { '&' } else { '?' };
    format!("{base}{separator}options=-c%20search_path%3D{schema}")
}

/// The PostgreSQL URL of the test database itself.
fn base_postgres_url() -> String {
    std::env::var("TESSERA_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The Redis URL for tests.
pub fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Whether `address` accepts TCP connections. When it does not: a panic if
/// services are required (CI), else a loud skip message and `false`.
pub fn reachable(service: &str, address: &str) -> bool {
    match std::net::TcpStream::connect_timeout(&address.parse().unwrap(), std::time::Duration::from_secs(2)) {
        Ok(_) => true,
        Err(error) => {
            if std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some() {
                panic!("{service} is required but unreachable at {address}: {error}");
            }
            eprintln!("SKIPPED: {service} unreachable at {address}: {error}");
            false
        }
    }
}
