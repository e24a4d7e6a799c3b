//! Built-in TLS: a real handshake with rustls, HSTS on every answer, clear
//! start-up errors for bad files.

mod harness;

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
