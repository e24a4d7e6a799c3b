//! Built-in TLS: a real handshake with rustls, HSTS on every answer, clear
//! start-up errors for bad files.

mod harness;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use harness::test_config;
use rustls::pki_types::{CertificateDer, ServerName};
use tessera::ManualClock;
use tessera_server::App;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn serves_https_with_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let tls = tessera_server::tls::server_config(&cert_path, &key_path).unwrap();

    let clock = ManualClock::new();
    let mut config = test_config(dir.path(), &clock);
    config.hsts = true;
    let app = App::build(config).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve_tls(listener, tls, async {
        let _ = stopped.await;
    }));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(certified.cert.der().to_vec())).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(address).await.unwrap();
    let mut stream = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    stream.write_all(b"GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.ok();
    let answer = String::from_utf8_lossy(&answer).to_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer:.300}");
    assert!(answer.contains("strict-transport-security: max-age=63072000; includesubdomains"), "{answer:.600}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(address).await.unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut buffer = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(3), plain.read_to_end(&mut buffer)).await;
    assert!(!String::from_utf8_lossy(&buffer).contains("200 OK"));

    let _ = stop.send(());
    let _ = server.await;
}

#[test]
fn bad_files_name_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let error = tessera_server::tls::server_config(&missing, &missing).unwrap_err().to_string();
    assert!(error.starts_with("--tls-cert"), "{error}");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a pem").unwrap();
    let error = tessera_server::tls::server_config(&empty, &empty).unwrap_err().to_string();
    assert!(error.starts_with("--tls-cert"), "{error}");
}

/// Issue #14 item 10: a TLS key file that others can read is refused, with
/// a message naming the file and the fix.
#[test]
fn a_key_file_others_can_read_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    for mode in [0o644, 0o640, 0o604] {
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(mode)).unwrap();
        let error = tessera_server::tls::server_config(&cert_path, &key_path).unwrap_err().to_string();
        assert!(error.starts_with("--tls-key"), "{error}");
        assert!(error.contains(&format!("chmod 600 {}", key_path.display())), "{error}");
    }
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(tessera_server::tls::server_config(&cert_path, &key_path).is_ok());
    // The certificate is public: its mode does not matter.
    std::fs::set_permissions(&cert_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(tessera_server::tls::server_config(&cert_path, &key_path).is_ok());
}

/// Issue #14 item 10: the SQLite database is created readable by the
/// owner only, with its `-wal` and `-shm` files; an existing database that
/// others can read stops the server from starting.
#[tokio::test]
async fn the_database_is_private_and_an_open_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let app = App::build(test_config(dir.path(), &clock)).await.unwrap();
    // A write, so that the WAL and shared-memory files exist.
    app.state.db.secret("file-mode-test").await.unwrap();
    for name in ["tessera.db", "tessera.db-wal", "tessera.db-shm"] {
        let path = dir.path().join(name);
        let mode = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{name}: {e}")).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
    }
    drop(app);

    let other = tempfile::tempdir().unwrap();
    let database = other.path().join("tessera.db");
    tessera_server::database::Database::connect(&format!("sqlite://{}", database.display()))
        .await
        .unwrap()
        .close()
        .await;
    std::fs::set_permissions(&database, std::fs::Permissions::from_mode(0o644)).unwrap();
    let error = match App::build(test_config(other.path(), &clock)).await {
        Ok(_) => panic!("a world-readable database was used"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains(&format!("chmod 600 {}", database.display())) && error.contains("0644"), "{error}");
}
