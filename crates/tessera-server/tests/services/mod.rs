//! Where the real PostgreSQL and Redis are, and what to do when they are not.
#![allow(dead_code)]

/// The PostgreSQL URL for tests.
pub fn postgres_url() -> String {
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
