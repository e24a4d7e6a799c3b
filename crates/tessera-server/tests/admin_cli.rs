//! `tessera admin …` run as the real binary against the database of a real
//! running server: users, sessions, purge and key rotation, with their
//! output and exit codes.

mod binary;
mod harness;

use binary::{admin, Server};
use harness::Browser;

const PASSWORD: &str = "correct horse battery";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_manage_users_sessions_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tessera.db").display());

    // Users: create (password on stdin), taken name, generated password, bad name.
    let (code, out, err) = admin(&db, &["user", "create", "alice", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created user \"alice\""), "{out}");
    let (code, _, err) = admin(&db, &["user", "create", "Alice", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert_eq!(code, 4, "a taken name is refused: {err}");
    assert!(err.contains("taken"), "{err}");
    let (code, out, _) = admin(&db, &["user", "create", "bob"], "");
    assert_eq!(code, 0);
    let bob_password = out.lines().find_map(|l| l.strip_prefix("password: ")).expect("generated password shown");
    assert_eq!(bob_password.len(), 20);
    let (code, _, err) = admin(&db, &["user", "create", "x", "--password-stdin"], "short\n");
    assert_eq!(code, 2, "{err}");
    let (code, _, _) = admin(&db, &["user", "create", "carol", "--password-stdin"], "short\n");
    assert_eq!(code, 4, "a weak password is refused");
    let (code, _, err) = admin(&db, &["user", "disable", "nobody"], "");
    assert_eq!(code, 3, "unknown user: {err}");
    assert!(err.contains("no user"), "{err}");

    // Sessions made through the real server, seen and ended from the CLI.
    let server = Server::start(dir.path(), &db, &[], &[]);
    let mut first = Browser::new(&server.base);
    assert_eq!(first.login("alice", PASSWORD).await.status, 303);
    let mut second = Browser::new(&server.base);
    assert_eq!(second.login("alice", PASSWORD).await.status, 303);
    let mut bob = Browser::new(&server.base);
    assert_eq!(bob.login("bob", bob_password).await.status, 303);

    let (code, out, _) = admin(&db, &["sessions", "list", "alice"], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("2 session(s) of \"alice\""), "{out}");
    let handle = out.lines().nth(2).and_then(|l| l.split_whitespace().next()).unwrap().to_owned();
    let (code, out, _) = admin(&db, &["sessions", "revoke", "alice", "--handle", &handle], "");
    assert_eq!(code, 0);
    assert!(out.contains(&handle), "{out}");
    let (code, _, _) = admin(&db, &["sessions", "revoke", "alice", "--handle", &handle], "");
    assert_eq!(code, 3, "an ended session is not found again");
    let (_, out, _) = admin(&db, &["sessions", "list", "alice"], "");
    assert!(out.starts_with("1 session(s)"), "{out}");
    let statuses = [first.get("/profile").await.status, second.get("/profile").await.status];
    assert!(statuses.contains(&200) && statuses.contains(&303), "one session ended, one alive: {statuses:?}");

    // Disable: sessions end, login refused; enable: login works again.
    let (code, out, _) = admin(&db, &["user", "disable", "alice"], "");
    assert_eq!(code, 0);
    assert!(out.contains("ended 1 session(s)"), "{out}");
    assert_eq!(first.get("/profile").await.status, 303);
    assert_eq!(second.get("/profile").await.status, 303);
    assert_eq!(Browser::new(&server.base).login("alice", PASSWORD).await.status, 401);
    let (code, _, _) = admin(&db, &["user", "enable", "alice"], "");
    assert_eq!(code, 0);
    assert_eq!(Browser::new(&server.base).login("alice", PASSWORD).await.status, 303);

    // Reset password: bob's session ends, the old password stops working.
    let (code, out, _) = admin(&db, &["user", "reset-password", "bob", "--password-stdin"], "a brand new passphrase\n");
    assert_eq!(code, 0);
    assert!(out.contains("ended 1 session(s)"), "{out}");
    assert_eq!(bob.get("/profile").await.status, 303);
    assert_eq!(Browser::new(&server.base).login("bob", bob_password).await.status, 401);
    assert_eq!(Browser::new(&server.base).login("bob", "a brand new passphrase").await.status, 303);

    // Revoke all, purge, rotate keys.
    let (code, out, _) = admin(&db, &["sessions", "revoke", "bob", "--all"], "");
    assert_eq!(code, 0);
    assert!(out.contains("ended 1 session(s)"), "{out}");
    let (code, out, _) = admin(&db, &["sessions", "purge-expired"], "");
    assert_eq!(code, 0);
    assert!(out.starts_with("purged "), "{out}");
    let (code, out, _) = admin(&db, &["rotate-keys"], "");
    assert_eq!(code, 0);
    assert!(out.contains("key 2 is now the newest"), "{out}");
    let (_, out, _) = admin(&db, &["rotate-keys"], "");
    assert!(out.contains("key 3 is now the newest"), "{out}");
    let (code, _, _) = admin(&db, &["sessions", "revoke", "bob"], "");
    assert_eq!(code, 2, "neither --handle nor --all is a usage error");
    let (code, _, err) = admin("mysql://nowhere", &["sessions", "purge-expired"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("database.url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_resets_a_lost_second_factor() {
    use tessera::{Clock, SystemClock};
    use tessera_auth::second_factor::totp::{step_at, TotpSecret};

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("tessera.db").display());
    let (code, _, err) = admin(&db, &["user", "create", "dave", "--password-stdin"], &format!("{PASSWORD}\n"));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = admin(&db, &["user", "reset-second-factor", "dave"], "");
    assert_eq!(code, 4, "nothing to reset is refused: {err}");
    assert!(err.contains("no two-step verification"), "{err}");

    let server = Server::start(dir.path(), &db, &[], &[]);
    let mut browser = Browser::new(&server.base);
    assert_eq!(browser.login("dave", PASSWORD).await.status, 303);
    let setup = browser.submit("/account/two-factor", "/account/two-factor/setup", &[]).await;
    let secret = TotpSecret::from_base32(&setup.element_text("totp-secret").unwrap().replace(' ', "")).unwrap();
    let code = secret.code_at(step_at(SystemClock.now()));
    let on = browser.submit("/account/two-factor", "/account/two-factor/confirm", &[("code", &code)]).await;
    assert_eq!(on.status, 200, "{}", on.body);
    let pending = Browser::new(&server.base).login("dave", PASSWORD).await;
    assert_eq!(pending.location(), Some("/login/second-factor"));

    let (code, out, err) = admin(&db, &["user", "reset-second-factor", "dave"], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("turned off; ended 1 session(s)"), "{out}");
    assert_eq!(browser.get("/profile").await.status, 303, "the user's sessions ended");
    let login = Browser::new(&server.base).login("dave", PASSWORD).await;
    assert_eq!(login.location(), Some("/profile"), "the password alone logs in again");
}
