//! Bursts of simultaneous requests, and their answers.
//!
//! [`burst`] is truly simultaneous: every request is written on its own
//! connection except for its last byte, and only when all are waiting are
//! the last bytes sent, so no handler can start before the others have
//! arrived (`login_races.rs`, `signup_flood.rs`). [`forms_at_once`] posts
//! forms through a client, released together by a barrier.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Browser;

/// A raw HTTP/1.1 request.
pub fn request(address: SocketAddr, method: &str, path: &str, headers: &[(&str, String)], body: &str) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nhost: localhost:{}\r\nconnection: close\r\n", address.port());
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("content-length: {}\r\n\r\n{body}", body.len()));
    text.into_bytes()
}

/// A form body, URL-encoded.
pub fn form(fields: &[(&str, &str)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        out.append_pair(k, v);
    }
    out.finish()
}

/// An answer to a raw request: status and head (lower-case header names).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Writes every request but its last byte on its own connection, then
/// releases all the last bytes together; the answers, in order.
pub async fn burst(targets: Vec<(SocketAddr, Vec<u8>)>) -> Vec<Answer> {
    let mut held = Vec::new();
    for (address, bytes) in targets {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (head, last) = bytes.split_at(bytes.len() - 1);
        stream.write_all(head).await.unwrap();
        stream.flush().await.unwrap();
        held.push((stream, last.to_vec()));
    }
    // Give the server time to read every head and wait in the body.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let answers = held.into_iter().map(|(mut stream, last)| {
        tokio::spawn(async move {
            stream.write_all(&last).await.unwrap();
            let mut answer = Vec::new();
            stream.read_to_end(&mut answer).await.unwrap();
            let text = String::from_utf8_lossy(&answer).into_owned();
            let status = text.split(' ').nth(1).and_then(|code| code.parse::<u16>().ok()).unwrap_or(0);
            let head = text.split("\r\n\r\n").next().unwrap_or("").to_owned();
            Answer { status, head }
        })
    });
    futures::future::join_all(answers).await.into_iter().map(|r| r.unwrap()).collect()
}

/// The status codes of a [`burst`], in order.
pub async fn burst_statuses(targets: Vec<(SocketAddr, Vec<u8>)>) -> Vec<u16> {
    burst(targets).await.into_iter().map(|answer| answer.status).collect()
}

/// Posts every (path, fields) of `forms` to `base` with `browser`'s
/// cookies, each from its own task, all released together by a barrier and
/// none following redirects: (path, status) of each, in order.
pub async fn forms_at_once(
    base: &str,
    browser: &Browser,
    forms: Vec<(&'static str, Vec<(&'static str, String)>)>,
) -> Vec<(&'static str, u16)> {
    let cookies = browser.cookie_header();
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(forms.len()));
    let mut tasks = vec![];
    for (path, form) in forms {
        let (client, barrier, cookies) = (client.clone(), barrier.clone(), cookies.clone());
        let url = format!("{base}{path}");
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let status = client.post(url).header("cookie", cookies).form(&form).send().await.unwrap().status();
            (path, status.as_u16())
        }));
    }
    let mut answers = vec![];
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}
