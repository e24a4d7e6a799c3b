//! Drives `examples/membership.rs` — the seeds' membership site in under
//! 60 lines on the public API — over HTTP: register, the visit counter, CSRF,
//! logout, throttled logins, a new session ID at login, the 404 page.

use std::collections::BTreeMap;

/// The example itself, compiled into this test: `cargo test --all-targets`
/// builds examples as test harnesses, not as the binaries `cargo run` makes,
/// so the test runs the example's own `main` on a thread instead.
#[allow(dead_code)]
#[path = "../examples/membership.rs"]
mod membership;

/// A browser: keeps cookies by hand (`Secure` cookies over plain HTTP on
/// loopback), never follows redirects.
struct Browser {
    base: String,
    client: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

struct Answer {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    body: String,
}

impl Browser {
    fn new(base: &str) -> Browser {
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { base: base.to_owned(), client, cookies: BTreeMap::new() }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let cookie = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
        let response = request.header("cookie", cookie).header("accept", "text/html").send().await.unwrap();
        let status = response.status().as_u16();
        let location = response.headers().get("location").map(|v| v.to_str().unwrap().to_owned());
        let set_cookies: Vec<String> =
            response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect();
        for cookie in &set_cookies {
            let (name, value) = cookie.split(';').next().unwrap().split_once('=').unwrap();
            if cookie.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Answer { status, location, set_cookies, body: response.text().await.unwrap() }
    }

    async fn get(&mut self, path: &str) -> Answer {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let request = self.client.post(format!("{}{path}", self.base)).form(fields);
        self.send(request).await
    }

    /// Posts `fields` to `path` with the CSRF token of the form at `form`.
    async fn submit(&mut self, form: &str, path: &str, fields: &[(&str, &str)]) -> Answer {
        let page = self.get(form).await;
        let marker = "name=\"csrf_token\" value=\"";
        let start = page.body.find(marker).expect("a CSRF field") + marker.len();
        let token = page.body[start..start + page.body[start..].find('"').unwrap()].to_owned();
        let mut all = vec![("csrf_token", token.as_str())];
        all.extend_from_slice(fields);
        self.post(path, &all).await
    }
}

fn visits(page: &Answer) -> u64 {
    let at = page.body.find("id=\"visits\">").expect("the counter") + "id=\"visits\">".len();
    page.body[at..at + page.body[at..].find('<').unwrap()].parse().unwrap()
}

#[tokio::test]
async fn the_membership_example_works_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    // The only test in this binary: the process environment is its own.
    std::env::set_var("MEMBERSHIP_DATABASE", format!("sqlite://{}", dir.path().join("membership.db").display()));
    std::env::set_var("MEMBERSHIP_LISTEN", address.to_string());
    std::thread::spawn(|| membership::main().expect("the example serves"));
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(address).is_err() {
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the example did not start listening");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let base = format!("http://{address}");
    let mut browser = Browser::new(&base);
    let password = "correct horse battery staple";

    // Register: logged in at once, with a secure session cookie.
    let registered = browser.submit("/register", "/register", &[("username", "alice"), ("password", password)]).await;
    assert_eq!((registered.status, registered.location.as_deref()), (303, Some("/profile")), "{}", registered.body);
    let cookie = registered.set_cookies.iter().find(|c| c.starts_with("__Host-id=")).expect("a session cookie");
    for attribute in ["HttpOnly", "Secure", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let first_id = browser.cookies["__Host-id"].clone();

    // The profile counts this session's visits.
    let profile = browser.get("/profile").await;
    assert_eq!(profile.status, 200);
    assert!(profile.body.contains("alice"));
    assert_eq!(visits(&profile), 1);
    assert_eq!(visits(&browser.get("/profile").await), 2);

    // Weak passwords and taken names are refused with the reason.
    let mut other = Browser::new(&base);
    let weak = other.submit("/register", "/register", &[("username", "bob"), ("password", "password")]).await;
    assert_eq!(weak.status, 422, "{}", weak.body);
    let taken = other.submit("/register", "/register", &[("username", "ALICE"), ("password", password)]).await;
    assert_eq!(taken.status, 409, "{}", taken.body);

    // No CSRF token, no state change.
    assert_eq!(browser.post("/logout", &[]).await.status, 403);
    assert_eq!(browser.get("/profile").await.status, 200, "still logged in");

    // Logout destroys the session: the old cookie no longer works.
    let out = browser.submit("/profile", "/logout", &[]).await;
    assert_eq!((out.status, out.location.as_deref()), (303, Some("/login")));
    let mut replay = Browser::new(&base);
    replay.cookies.insert("__Host-id".into(), first_id.clone());
    assert_eq!(replay.get("/profile").await.status, 303, "a logged-out session is dead");

    // Wrong passwords are throttled: the fifth failure says wait, and then
    // even the right password waits.
    for _ in 0..4 {
        let wrong = other.submit("/login", "/login", &[("username", "alice"), ("password", "wrong password")]).await;
        assert_eq!(wrong.status, 401, "{}", wrong.body);
    }
    let fifth = other.submit("/login", "/login", &[("username", "alice"), ("password", "wrong password")]).await;
    assert_eq!(fifth.status, 429, "{}", fifth.body);
    let blocked = browser.submit("/login", "/login", &[("username", "alice"), ("password", password)]).await;
    assert_eq!(blocked.status, 429, "even the right password waits");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;

    // Log in again: a new session ID.
    let login = browser.submit("/login", "/login", &[("username", "alice"), ("password", password)]).await;
    assert_eq!((login.status, login.location.as_deref()), (303, Some("/profile")), "{}", login.body);
    assert_ne!(browser.cookies["__Host-id"], first_id, "a new session ID at login");
    assert_eq!(visits(&browser.get("/profile").await), 1, "a new session starts counting again");

    // Unknown pages get the 404 page.
    let missing = browser.get("/no/such/page").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("Not found"));
}
