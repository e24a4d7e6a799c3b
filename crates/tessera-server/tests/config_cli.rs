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

/// Issue #14 item 12: a password given as a query parameter of a URL (or
/// as another secret-looking parameter) is masked like one in the userinfo.
#[test]
fn passwords_in_url_query_parameters_are_masked() {
    let (code, out, err) = check(
        &[
            "--database",
            "postgres://app@db.internal/tessera?sslmode=require&password=hunter2",
            "--session-store",
            "redis://cache.internal:6379/0?password=swordfish&protocol=resp3",
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains("hunter2") && !err.contains("hunter2"), "the database password is masked: {out}{err}");
    assert!(!out.contains("swordfish") && !err.contains("swordfish"), "the store password is masked: {out}{err}");
    assert!(out.contains("postgres://app@db.internal/tessera?sslmode=require&password=***"), "{out}");
    assert!(out.contains("redis://cache.internal:6379/0?password=***&protocol=resp3"), "{out}");
    // An unsupported URL's error message masks it too.
    let (code, out, err) = check(&["--database", "mysql://app@db/x?password=hunter2"], &[]);
    assert_ne!(code, 0, "{out}");
    assert!(!err.contains("hunter2") && !out.contains("hunter2"), "{err}");
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

/// One setting of the sections that were flags only before: the file sets
/// it, an environment variable beats the file, the flag (if any) beats both.
struct Layered<'a> {
    file: String,
    file_shows: &'a str,
    env: (&'a str, String),
    env_shows: &'a str,
    flag: Option<(Vec<String>, &'a str)>,
}

fn provider_json(id: &str, secret: &str) -> String {
    format!(r#"{{"id":"{id}","issuer":"https://id.{id}.example","client_id":"tessera","client_secret":"{secret}"}}"#)
}

#[test]
fn every_section_layers_file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    // One key and three copies of its certificate, so the three layers can
    // name different files that all load.
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = dir.path().join("tls.key");
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    // Keys others can read are refused (issue #14 item 10).
    std::fs::set_permissions(&key, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600))
        .unwrap();
    let cert = |name: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, generated.cert.pem()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let (file_cert, env_cert, flag_cert) = (cert("file.crt"), cert("env.crt"), cert("flag.crt"));
    let key = key.to_str().unwrap().to_owned();
    let owned = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let file_cert_shown = format!("cert = {file_cert:?}");
    let env_cert_shown = format!("cert = {env_cert:?}");
    let flag_cert_shown = format!("cert = {flag_cert:?}");
    let cases = [
        Layered {
            file: format!("[tls]\ncert = {file_cert:?}\nkey = {key:?}\nhsts = true\n"),
            file_shows: &file_cert_shown,
            env: ("TESSERA_TLS__CERT", env_cert.clone()),
            env_shows: &env_cert_shown,
            flag: Some((owned(&["--tls-cert", &flag_cert]), &flag_cert_shown)),
        },
        Layered {
            file: "[tokens]\naccess_ttl = \"5m\"\nissuer = \"https://file.example\"\n".into(),
            file_shows: "access_ttl = \"5m\"",
            env: ("TESSERA_TOKENS__ACCESS_TTL", "7m".into()),
            env_shows: "access_ttl = \"7m\"",
            flag: Some((owned(&["--access-token-ttl", "9m"]), "access_ttl = \"9m\"")),
        },
        Layered {
            file: "[tokens]\nrefresh_ttl = \"2days\"\nissuer = \"https://file.example\"\n".into(),
            file_shows: "issuer = \"https://file.example\"",
            env: ("TESSERA_TOKENS__ISSUER", "https://env.example".into()),
            env_shows: "issuer = \"https://env.example\"",
            flag: Some((owned(&["--token-issuer", "https://flag.example"]), "issuer = \"https://flag.example\"")),
        },
        Layered {
            file: "[tokens]\nrefresh_family_lifetime = \"20days\"\n".into(),
            file_shows: "refresh_family_lifetime = \"20days\"",
            env: ("TESSERA_TOKENS__REFRESH_FAMILY_LIFETIME", "10days".into()),
            env_shows: "refresh_family_lifetime = \"10days\"",
            flag: Some((owned(&["--refresh-family-lifetime", "5days"]), "refresh_family_lifetime = \"5days\"")),
        },
        Layered {
            file: "[cookie]\ndomain = \"file.example\"\n".into(),
            file_shows: "domain = \"file.example\"",
            env: ("TESSERA_COOKIE__DOMAIN", "env.example".into()),
            env_shows: "domain = \"env.example\"",
            flag: Some((owned(&["--cookie-domain", "flag.example"]), "domain = \"flag.example\"")),
        },
        Layered {
            file: "[server]\npublic_url = \"https://file.example\"\n".into(),
            file_shows: "public_url = \"https://file.example\"",
            env: ("TESSERA_SERVER__PUBLIC_URL", "https://env.example".into()),
            env_shows: "public_url = \"https://env.example\"",
            flag: Some((owned(&["--public-url", "https://flag.example"]), "public_url = \"https://flag.example\"")),
        },
        Layered {
            file: "[server]\ntrusted_proxies = [\"10.0.0.0/8\"]\n".into(),
            file_shows: "\"10.0.0.0/8\"",
            env: ("TESSERA_SERVER__TRUSTED_PROXIES", "192.168.0.0/16".into()),
            env_shows: "\"192.168.0.0/16\"",
            flag: Some((owned(&["--trusted-proxy", "127.0.0.1"]), "\"127.0.0.1/32\"")),
        },
        Layered {
            file: "[[oidc.providers]]\nid = \"file\"\nissuer = \"https://id.file.example\"\n\
                   client_id = \"tessera\"\nclient_secret = \"file-secret\"\n"
                .into(),
            file_shows: "id = \"file\"",
            env: ("TESSERA_OIDC__PROVIDERS", format!("[{}]", provider_json("env", "env-secret"))),
            env_shows: "id = \"env\"",
            flag: Some((vec!["--oidc-provider".into(), provider_json("flag", "flag-secret")], "id = \"flag\"")),
        },
        Layered {
            file: "[forward_auth]\nprotected_hosts = [\"file.example\"]\nheaders = [\"X-File=email\"]\n".into(),
            file_shows: "\"file.example\"",
            env: ("TESSERA_FORWARD_AUTH__PROTECTED_HOSTS", "env.example, *.env.example".into()),
            env_shows: "\"*.env.example\"",
            flag: Some((owned(&["--protected-host", "flag.example"]), "\"flag.example\"")),
        },
        Layered {
            file: "[forward_auth]\nheaders = [\"X-File=email\"]\n".into(),
            file_shows: "\"X-File=email\"",
            env: ("TESSERA_FORWARD_AUTH__HEADERS", "X-Env=id".into()),
            env_shows: "\"X-Env=id\"",
            flag: Some((owned(&["--forward-auth-header", "X-Flag=username"]), "\"X-Flag=username\"")),
        },
        Layered {
            file: "[database]\nquery_timeout = \"2s\"\n".into(),
            file_shows: "query_timeout = \"2s\"",
            env: ("TESSERA_DATABASE__QUERY_TIMEOUT", "4s".into()),
            env_shows: "query_timeout = \"4s\"",
            flag: None,
        },
        Layered {
            file: "[throttle]\nbase_delay = \"2s\"\nip_free_failures = 50\n".into(),
            file_shows: "base_delay = \"2s\"",
            env: ("TESSERA_THROTTLE__BASE_DELAY", "3s".into()),
            env_shows: "base_delay = \"3s\"",
            flag: None,
        },
        Layered {
            file: "[sessions]\nreauth_window = \"5m\"\n[oidc]\njwks_min_refresh = \"1m\"\n".into(),
            file_shows: "jwks_min_refresh = \"1m\"",
            env: ("TESSERA_OIDC__JWKS_MIN_REFRESH", "2m".into()),
            env_shows: "jwks_min_refresh = \"2m\"",
            flag: None,
        },
        Layered {
            file: "[sessions]\nreauth_window = \"5m\"\n[metrics]\nactive_sessions_interval = \"1m\"\n".into(),
            file_shows: "reauth_window = \"5m\"",
            env: ("TESSERA_SESSIONS__REAUTH_WINDOW", "15m".into()),
            env_shows: "reauth_window = \"15m\"",
            flag: None,
        },
    ];
    let file = dir.path().join("tessera.toml");
    let config = file.to_str().unwrap();
    for case in &cases {
        std::fs::write(&file, &case.file).unwrap();
        let (code, out, err) = check(&[], &[("TESSERA_CONFIG", config)]);
        assert_eq!(code, 0, "{}: {err}", case.file);
        assert!(out.contains(case.file_shows), "{} shows {}: {out}", case.file, case.file_shows);
        let env = [("TESSERA_CONFIG", config), (case.env.0, case.env.1.as_str())];
        let (code, out, err) = check(&[], &env);
        assert_eq!(code, 0, "{}: {err}", case.env.0);
        assert!(out.contains(case.env_shows), "{} beats the file: {out}", case.env.0);
        assert!(!out.contains(case.file_shows), "{} replaces the file's value: {out}", case.env.0);
        if let Some((flag, shows)) = &case.flag {
            let flag: Vec<&str> = flag.iter().map(String::as_str).collect();
            let (code, out, err) = check(&flag, &env);
            assert_eq!(code, 0, "{flag:?}: {err}");
            assert!(out.contains(shows) && !out.contains(case.env_shows), "{flag:?} beats {}: {out}", case.env.0);
        }
        for secret in ["file-secret", "env-secret", "flag-secret"] {
            assert!(!out.contains(secret), "client secrets are masked: {out}");
        }
    }
    // The masked secret is still visibly there.
    let oidc_case = cases.iter().find(|case| case.file.contains("client_secret")).expect("an OIDC case");
    std::fs::write(&file, &oidc_case.file).unwrap();
    let (_, out, _) = check(&[], &[("TESSERA_CONFIG", config)]);
    assert!(out.contains("client_secret = \"***\""), "{out}");
}

#[test]
fn new_sections_reject_unknown_keys_and_bad_values_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let provider = "[[oidc.providers]]\nissuer = \"https://id.example\"\nclient_id = \"c\"\n";
    for (text, key) in [
        ("[tls]\ncert = \"/nonexistent/cert.pem\"\nkey = \"/nonexistent/key.pem\"\n", "tls.cert"),
        ("[tls]\ncert = \"/nonexistent/cert.pem\"\n", "tls.key"),
        ("[tls]\nhsts = \"sometimes\"\n", "tls.hsts"),
        ("[tls]\ncertificate = \"x\"\n", "tls.certificate"),
        ("[tokens]\naccess_ttl = \"forever\"\n", "tokens.access_ttl"),
        ("[tokens]\nrefresh_ttl = \"0s\"\n", "tokens.refresh_ttl"),
        ("[tokens]\nrefresh_family_lifetime = \"0s\"\n", "tokens.refresh_family_lifetime"),
        ("[tokens]\nissuer = \" \"\n", "tokens.issuer"),
        ("[tokens]\nttl = \"5m\"\n", "tokens.ttl"),
        ("[cookie]\ndomain = \"https://example.com/\"\n", "cookie.domain"),
        ("[server]\npublic_url = \"auth.example.com\"\n", "server.public_url"),
        (&format!("{provider}id = \"Not Valid\"\n"), "oidc.providers[0]"),
        (&format!("{provider}id = \"a\"\nsecret = \"s\"\n"), "secret"),
        (&format!("{provider}id = \"a\"\n{provider}id = \"a\"\n"), "oidc.providers[1]"),
        ("[oidc]\nprovider = []\n", "oidc.provider"),
        ("[forward_auth]\nheaders = [\"X-Remote-User\"]\n", "forward_auth.headers"),
        ("[forward_auth]\nprotected_host = []\n", "forward_auth.protected_host"),
        ("[database]\nquery_timeout = \"0s\"\n", "database.query_timeout"),
        ("[throttle]\nmax_delay = \"100ms\"\n", "throttle.max_delay"),
        ("[throttle]\naccount_free_failures = -1\n", "throttle.account_free_failures"),
        ("[metrics]\nactive_sessions_interval = \"often\"\n", "metrics.active_sessions_interval"),
    ] {
        std::fs::write(&file, text).unwrap();
        let (code, _, err) = check(&["--config", file.to_str().unwrap()], &[]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(key), "{text}: the error names {key}: {err}");
    }
    let (code, _, err) = check(&[], &[("TESSERA_TOKENS__ACCESS_TTL", "soon")]);
    assert_eq!(code, 2);
    assert!(err.contains("tokens.access_ttl") && err.contains("TESSERA_TOKENS__ACCESS_TTL"), "{err}");
    let (code, _, err) = check(&[], &[("TESSERA_OIDC__PROVIDERS", "[{\"id\":\"x\"}]")]);
    assert_eq!(code, 2);
    assert!(err.contains("oidc.providers") && err.contains("TESSERA_OIDC__PROVIDERS"), "{err}");
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
