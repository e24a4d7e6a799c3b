//! SIGTERM with a slow request in flight: the request completes, new
//! connections are refused, the process exits 0. A request that never ends
//! is cut at the shutdown deadline.

mod binary;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use binary::Server;

/// Sends the head of a POST and part of its body; the rest comes later.
fn start_slow_post(port: u16, body: &str, sent: usize) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body.as_bytes()[..sent]).unwrap();
    stream.flush().unwrap();
    stream
}

#[test]
fn sigterm_lets_the_in_flight_request_finish_then_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut server = Server::start(dir.path(), &db, &["--shutdown-timeout", "20s"], &[]);
    let body = "username=someone&password=correct+horse+battery&csrf_token=xyz";
    let mut slow = start_slow_post(server.port, body, 10);
    std::thread::sleep(Duration::from_millis(300));

    server.signal("-TERM");
    std::thread::sleep(Duration::from_millis(700));
    assert!(server.child.try_wait().unwrap().is_none(), "still running while a request is in flight");
    assert!(
        TcpStream::connect(("127.0.0.1", server.port)).is_err(),
        "no new connections are accepted after the signal"
    );

    // The rest of the body, slowly.
    for chunk in body.as_bytes()[10..].chunks(8) {
        slow.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut response = String::new();
    let _ = slow.read_to_string(&mut response);
    assert!(response.starts_with("HTTP/1.1 "), "the in-flight request got its answer: {response:.200}");
    assert!(response.contains("x-request-id"), "{response:.300}");

    let status = server.wait(Duration::from_secs(15)).expect("exits after the request");
    assert_eq!(status.code(), Some(0), "{}", server.log_text());
    let log = server.log_text();
    assert!(log.contains("shutdown signal received") && log.contains("tessera stopped"), "{log}");
}

#[test]
fn a_request_that_never_ends_is_cut_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("t.db").display());
    let mut server = Server::start(dir.path(), &db, &["--shutdown-timeout", "1s"], &[]);
    let _stuck = start_slow_post(server.port, "username=a&password=b&csrf_token=c", 5);
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    server.signal("-TERM");
    let status = server.wait(Duration::from_secs(15)).expect("exits at the deadline");
    assert_eq!(status.code(), Some(0));
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(6), "stopped after {took:?}");
    assert!(server.log_text().contains("did not finish within the shutdown time-out"));
}
