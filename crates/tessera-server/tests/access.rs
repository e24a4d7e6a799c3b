//! Who may create an account and which groups they are in, through the
//! real web form and the admin commands (run in-process on the server's
//! database): invitations, closed registration, groups on `/account`.

mod harness;

use std::time::Duration;

use harness::{test_config, unique_name, TestServer};
use tessera::ManualClock;
use tessera_auth::UserDirectory;
use tessera_server::admin::{self, AdminContext, AdminError};
use tessera_server::cli::{AdminCommand, GroupCommand, InviteCommand};
use tessera_server::registration_policy::RegistrationPolicy;
use tessera_server::AppConfig;
use tessera_server::Backends;
use tokio::net::TcpListener;

const PASSWORD: &str = "correct horse battery";

async fn server(registration: RegistrationPolicy) -> (TestServer, AdminContext, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = test_config(dir.path(), &clock);
    config.registration = registration;
    config.public_url = Some(format!("http://localhost:{}", listener.local_addr().unwrap().port()));
    let admin_config: AppConfig = config.clone();
    let server = TestServer::start_on(config, clock, listener).await;
    let backends = Backends::open(&admin_config, None).await.unwrap();
    (server, AdminContext { backends, config: admin_config }, dir)
}

async fn admin(context: &AdminContext, command: AdminCommand) -> Result<String, AdminError> {
    let mut out = Vec::new();
    admin::run(context, &command, &mut std::io::empty(), &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

fn group(command: GroupCommand) -> AdminCommand {
    AdminCommand::Group(command)
}

#[tokio::test]
async fn invitations_through_the_web_form_and_groups_from_the_cli() {
    let (server, context, _dir) = server(RegistrationPolicy::Invite).await;

    // Without an invitation the form says so, and posting it is refused.
    let mut stranger = server.browser();
    let form = stranger.get("/register").await;
    assert!(form.body.contains("need an invitation"), "{}", form.body);
    let name = unique_name("stranger");
    let refused = stranger.register(&name, PASSWORD).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(server.app_state.db.users().user_by_name(&name.to_lowercase()).await.unwrap().is_none());

    // `admin invite create` prints a link; it carries the token into the form.
    let out = admin(
        &context,
        AdminCommand::Invite(InviteCommand::Create {
            groups: vec!["Staff".into()],
            expires: Duration::from_secs(3600),
        }),
    )
    .await
    .unwrap();
    let link = out.lines().find_map(|l| l.strip_prefix("invitation: ")).expect("a link").to_owned();
    assert!(link.starts_with(&format!("{}/register?invite=", server.base)), "{out}");
    assert!(out.contains("groups: staff"), "{out}");
    let path = &link[server.base.len()..];
    let token = path.rsplit('=').next().unwrap();
    let mut invited = server.browser();
    let form = invited.get(path).await;
    assert!(form.body.contains(&format!("name=\"invite\" value=\"{token}\"")), "{}", form.body);
    assert!(!form.body.contains("need an invitation"));
    let name = unique_name("invited");
    let fields = [("username", name.as_str()), ("password", PASSWORD), ("invite", token)];
    let done = invited.submit(path, "/register", &fields).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let account = invited.get("/account").await;
    assert_eq!(account.element_text("groups").as_deref(), Some("staff"));
    let listed = admin(&context, AdminCommand::Invite(InviteCommand::List)).await.unwrap();
    assert!(listed.starts_with("0 open invitation(s)"), "{listed}");

    // The same link again: refused.
    let mut second = server.browser();
    let again = second
        .submit(path, "/register", &[("username", &unique_name("again")), ("password", PASSWORD), ("invite", token)])
        .await;
    assert_eq!(again.status, 403);
    assert!(again.body.contains("not valid"), "{}", again.body);

    // Groups from the command line, shown on /account.
    let out = admin(&context, group(GroupCommand::Add { group: "ops".into(), username: name.clone() })).await.unwrap();
    assert!(out.contains("added"), "{out}");
    let out = admin(&context, group(GroupCommand::Add { group: "OPS".into(), username: name.clone() })).await.unwrap();
    assert!(out.contains("already"), "{out}");
    assert_eq!(invited.get("/account").await.element_text("groups").as_deref(), Some("ops, staff"));
    let list = admin(&context, group(GroupCommand::List { group: None })).await.unwrap();
    assert_eq!(list, format!("ops: {name}\nstaff: {name}\n"));
    admin(&context, group(GroupCommand::Remove { group: "staff".into(), username: name.clone() })).await.unwrap();
    let missing = admin(&context, group(GroupCommand::Remove { group: "staff".into(), username: name.clone() })).await;
    assert_eq!(missing.unwrap_err().exit_code(), admin::EXIT_NOT_FOUND);
    let bad = admin(&context, group(GroupCommand::Add { group: "a b".into(), username: name.clone() })).await;
    assert_eq!(bad.unwrap_err().exit_code(), admin::EXIT_USAGE);
    let nobody =
        admin(&context, group(GroupCommand::Add { group: "ops".into(), username: "nobody-here".into() })).await;
    assert_eq!(nobody.unwrap_err().exit_code(), admin::EXIT_NOT_FOUND);
    assert_eq!(invited.get("/account").await.element_text("groups").as_deref(), Some("ops"));
    context.backends.close().await;
    server.stop().await;
}

#[tokio::test]
async fn closed_registration_refuses_the_form() {
    let (server, context, _dir) = server(RegistrationPolicy::Closed).await;
    let mut browser = server.browser();
    assert!(browser.get("/register").await.body.contains("does not accept new accounts"));
    let refused = browser.register(&unique_name("c"), PASSWORD).await;
    assert_eq!(refused.status, 403);
    assert!(refused.body.contains("does not accept new accounts"));
    // The invitation command warns that the link will not work.
    let out = admin(
        &context,
        AdminCommand::Invite(InviteCommand::Create { groups: vec![], expires: Duration::from_secs(60) }),
    )
    .await
    .unwrap();
    assert!(out.contains("warning"), "{out}");
    context.backends.close().await;
    server.stop().await;
}
