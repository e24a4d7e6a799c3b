//! `tessera config check` and `tessera config reference`, run as the real
//! binary; docs/configuration.md must be what `config reference` prints.

mod binary;

use binary::{command, run};

fn check(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut all = vec!["config", "check"];
    all.extend_from_slice(args);
    let mut command = command(&[]);
    command.args(&all);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = run(command, "");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tessera.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:4001\"\nshutdown_timeout = \"5s\"\n\
         [database]\nurl = \"postgres://app:hunter2@db.internal/tessera\"\n\
         [sessions]\nidle_timeout = \"10m\"\nstore_timeout = \"1s\"\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let (code, out, err) = check(&[], &[("TESSERA_CONFIG", config)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("listen = \"127.0.0.1:4001\"") && out.contains("idle_timeout = \"10m\""), "{out}");
    assert!(!out.contains("hunter2") && out.contains("app:***@db.internal"), "secrets are masked: {out}");
    // Environment beats the file, in both the new and the old spelling.
    let (code, out, _) = check(
        &[],
        &[("TESSERA_CONFIG", config), ("TESSERA_SESSIONS__IDLE_TIMEOUT", "20m"), ("TESSERA_LISTEN", "127.0.0.1:4002")],
    );
    assert_eq!(code, 0);
    assert!(out.contains("idle_timeout = \"20m\"") && out.contains("127.0.0.1:4002"), "{out}");
    // Flags beat both.
    let (code, out, _) = check(
        &["--listen", "127.0.0.1:4003", "--session-idle-timeout", "25m"],
        &[("TESSERA_CONFIG", config), ("TESSERA_SESSIONS__IDLE_TIMEOUT", "20m"), ("TESSERA_LISTEN", "127.0.0.1:4002")],
    );
    assert_eq!(code, 0);
    assert!(out.contains("idle_timeout = \"25m\"") && out.contains("127.0.0.1:4003"), "{out}");
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    for (text, key) in [
        ("[sessions]\nidle_timout = \"10m\"\n", "sessions.idle_timout"),
        ("[sesions]\nidle_timeout = \"10m\"\n", "sesions"),
        ("[sessions]\nidle_timeout = \"a while\"\n", "sessions.idle_timeout"),
        ("[server]\nmax_body_bytes = -1\n", "server.max_body_bytes"),
        ("[cookie]\nsame_site = \"none\"\n", "cookie.same_site"),
        ("[log]\nformat = \"xml\"\n", "log.format"),
        ("[sessions]\nidle_timeout = \"24h\"\n", "sessions.absolute_timeout"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, _, err) = check(&["--config", file.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(key), "{text}: the error names {key}: {err}");
    }
    let (code, _, err) = check(&[], &[("TESSERA_SERVER__MAX_BODY_BYTES", "lots")]);
    assert_eq!(code, 2);
    assert!(err.contains("server.max_body_bytes") && err.contains("TESSERA_SERVER__MAX_BODY_BYTES"), "{err}");
    let (code, _, err) = check(&["--config", "/nonexistent/tessera.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--config"), "{err}");
}

/// Regenerates the reference and compares it with the committed one. Run
/// with `TESSERA_UPDATE_DOCS=1` to rewrite docs/configuration.md.
#[test]
fn configuration_reference_is_up_to_date() {
    let output = run(command(&["config", "reference"]), "");
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    assert!(generated.contains("`idle_timeout`") && generated.contains("`TESSERA_SESSIONS__IDLE_TIMEOUT`"));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
    if std::env::var_os("TESSERA_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/configuration.md is out of date: run `TESSERA_UPDATE_DOCS=1 cargo test -p tessera-server --test config_cli` \
         (or `tessera config reference > docs/configuration.md`)"
    );
}
