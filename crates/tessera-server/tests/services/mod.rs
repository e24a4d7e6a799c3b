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

/// A MySQL/MariaDB URL naming a fresh database of its own (created with the
/// `mariadb` client), or `None` after a skip message when the server is
/// unreachable (a panic under CI).
pub fn mysql_url() -> Option<String> {
    let base = std::env::var("TESSERA_TEST_MYSQL_URL").unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into());
    let parsed = url::Url::parse(&base).expect("TESSERA_TEST_MYSQL_URL is a URL");
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(3306);
    if !reachable("MariaDB", &format!("{host}:{port}")) {
        return None;
    }
    let name = format!("tessera_t_{:016x}", rand::random::<u64>());
    let mut command = std::process::Command::new("mariadb");
    command.args(["-h", &host, "-P", &port.to_string(), "-u", parsed.username()]);
    if let Some(password) = parsed.password() {
        command.arg(format!("-p{password}"));
    }
    let status = command.args(["-e", &format!("CREATE DATABASE {name}")]).status().expect("the mariadb client runs");
    assert!(status.success(), "creating database {name}");
    let server = base.rsplit_once('/').map(|(server, _)| server).unwrap_or(&base);
    Some(format!("{server}/{name}"))
}

/// A MongoDB URL naming a fresh database of its own, on the server from
/// `TESSERA_TEST_MONGODB_URL` or the one `scripts/secantus.sh` started, or
/// `None` after a skip message when there is none (a panic under CI).
pub fn mongodb_url() -> Option<String> {
    let file = "/tmp/tessera-secantus/url";
    let base = match std::env::var("TESSERA_TEST_MONGODB_URL") {
        Ok(url) => url,
        Err(_) => match std::fs::read_to_string(file) {
            Ok(url) => url.trim().to_owned(),
            Err(error) => {
                if std::env::var_os("TESSERA_REQUIRE_SERVICES").is_some() {
                    panic!("MongoDB is required but {file} is unreadable ({error}): run scripts/secantus.sh");
                }
                eprintln!("SKIPPED: MongoDB: no TESSERA_TEST_MONGODB_URL and {file} is unreadable: {error}");
                return None;
            }
        },
    };
    let hosts = base.trim_start_matches("mongodb://").split(['/', '?']).next().unwrap_or_default().to_owned();
    let first = hosts.split(',').next().unwrap_or_default();
    if !reachable("MongoDB", first) {
        return None;
    }
    Some(format!("mongodb://{hosts}/tessera_t_{:016x}", rand::random::<u64>()))
}

/// Drops the database a [`mysql_url`] URL names.
pub fn drop_mysql_database(url: &str) {
    let parsed = url::Url::parse(url).expect("a mysql:// URL");
    let name = parsed.path().trim_start_matches('/');
    assert!(name.starts_with("tessera_t_"), "only test databases are dropped: {name}");
    let mut command = std::process::Command::new("mariadb");
    command.args(["-h", parsed.host_str().unwrap_or("127.0.0.1"), "-P", &parsed.port().unwrap_or(3306).to_string()]);
    command.args(["-u", parsed.username()]);
    if let Some(password) = parsed.password() {
        command.arg(format!("-p{password}"));
    }
    let status = command.args(["-e", &format!("DROP DATABASE {name}")]).status().expect("the mariadb client runs");
    assert!(status.success(), "dropping database {name}");
}
