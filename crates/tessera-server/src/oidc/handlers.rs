//! `POST /auth/oidc/{provider}/start`, `POST /auth/oidc/{provider}/reauthenticate`
//! and `GET /auth/oidc/{provider}/callback`.
//!
//! Three kinds of flow: a login (logged out), a link (logged in, from the
//! account page) and a re-authentication (logged in, "Confirm with …"). The
//! last two are step-ups: they send `max_age` (the recent-authentication
//! window) and the callback refuses an ID token whose `auth_time` is missing
//! or older, so a single sign-on session left open at the provider cannot
//! stand in for a fresh login (OpenID Connect Core 3.1.2.1, ASVS 6.8.4,
//! 7.6.1). Every login records the provider's `auth_time` as the moment of
//! authentication, never the time of the callback.

use std::time::Duration;

use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use tessera::{Clock, Timestamp};
use tessera_auth::{Authenticator, LoginError};
use tessera_axum::{CsrfForm, Problem};

use super::flow_cookie::{random_id, Flow, FLOW_LIFETIME};
use super::identities::{resolve, Outcome, ResolveError};
use super::provider::{Provider, VerifiedIdentity, VerifiedLogin};
use crate::audit::AuditKind;
use crate::auth_events::ServerEvents;
use crate::database::Database;
use crate::error_pages::ServerError;
use crate::forward_auth::ForwardAuthConfig;
use crate::oidc::Oidc;
use crate::pages::login::continue_login;
use crate::pages::PageContext;
use crate::reauthentication::{self, ProviderAuthentication, Reauthentication, Recency};
use crate::registration_policy::Registration;
use crate::services::services;
use std::sync::Arc;

/// The start form: its CSRF token, where to go after login, and (when a
/// logged-in user links with a stale authentication) the current password.
#[derive(Deserialize)]
pub struct StartForm {
    next: Option<String>,
    current_password: Option<String>,
}

/// The re-authentication form: its CSRF token and where to go afterwards.
#[derive(Deserialize)]
pub struct ReauthenticateForm {
    next: Option<String>,
}

/// What the provider sends back.
#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    iss: Option<String>,
    error: Option<String>,
}

services! {
    /// What the OpenID Connect routes use: the providers, the authentication
    /// core, the server's tables (flows, identities, groups), the audit trail,
    /// the registration policy, recent authentication, and where a login may go
    /// next.
    pub struct ProviderFlows {
        oidc: Arc<Oidc>,
        auth: Authenticator,
        db: Database,
        events: ServerEvents,
        registration: Registration,
        reauth: Reauthentication,
        forward_auth: Arc<ForwardAuthConfig>,
        clock: Arc<dyn Clock>,
    }
}

/// A refused login: a page in the site's look (or a problem document).
fn refused(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let mut response = status.into_response();
    response.extensions_mut().insert(Problem {
        status,
        kind: kind.to_owned(),
        title: title.to_owned(),
        detail: detail.to_owned(),
    });
    response
}

const START_AGAIN: &str = "Nothing was changed. Please start again from the login page.";

/// Starts a login (or, for a logged-in user, linking an identity): sets the
/// sealed flow cookie and redirects to the provider.
///
/// Linking adds a lasting way into the account, which a password change
/// does not remove, so it needs a recent authentication (ASVS 7.5.1): within
/// the window, or the current password with the form (throttled like
/// `/login`; a correct one steps the session up to a new ID). Otherwise
/// `401` and nothing starts. The link then sends `max_age`, and the
/// callback links only with an `auth_time` within it.
pub async fn start(
    flows: ProviderFlows,
    Path(provider_id): Path<String>,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<StartForm>,
) -> Response {
    let Some(provider) = flows.oidc.provider(&provider_id) else { return ServerError::NotFound.into_response() };
    if let Some(user) = &ctx.user {
        let password = form.current_password.as_deref();
        match flows.reauth.ensure_recent(&ctx.session, user, password, &ctx.client).await {
            Ok(Recency::Recent) => {}
            Ok(Recency::Stale) => {
                return refused(
                    StatusCode::UNAUTHORIZED,
                    "reauthentication-required",
                    "Confirm it is you",
                    &format!("{} Nothing was linked.", flows.reauth.stale_message(user)),
                );
            }
            Ok(Recency::Wrong) => {
                return refused(
                    StatusCode::UNAUTHORIZED,
                    "invalid-credentials",
                    "Wrong password",
                    "That is not your current password. Nothing was linked.",
                );
            }
            Ok(Recency::Throttled(wait)) => {
                let mut response = refused(
                    StatusCode::TOO_MANY_REQUESTS,
                    "throttled",
                    "Too many attempts",
                    &format!(
                        "Too many wrong passwords. Please wait {} before trying again. Nothing was linked.",
                        reauthentication::readable_wait(wait)
                    ),
                );
                let seconds = tessera_axum::retry_after_seconds(wait);
                response.headers_mut().insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
                return response;
            }
            Err(error) => return ServerError::from(error).into_response(),
        }
    }
    // A link is a step-up as well: the identity that becomes a lasting way
    // into the account must be proved by a sign-in within the window, not by
    // a provider session someone left open in this browser.
    let purpose = match &ctx.user {
        Some(user) => Purpose::Link(user.id),
        None => Purpose::Login,
    };
    // The link is bound to this session (its handle after any step-up above
    // gave it a new ID), not only to the user.
    let session = ctx.user.as_ref().and_then(|_| ctx.session.handle()).map(|h| h.as_str().to_owned());
    begin(&flows, &provider_id, provider, form.next, purpose, session).await
}

/// Starts a re-authentication at the provider for the logged-in user (the
/// "Confirm with …" buttons on `/account`): the way an account without a
/// password, or anyone who prefers their provider, makes the session
/// recently authenticated before linking, unlinking or deleting.
///
/// It sends `max_age` = the recent-authentication window, so the provider
/// must show its login again when its own sign-in is older; the callback
/// checks `auth_time` itself, records it as the authentication time and
/// steps the session up to a new ID. Only an identity already linked to
/// this account counts.
pub async fn reauthenticate(
    flows: ProviderFlows,
    Path(provider_id): Path<String>,
    ctx: PageContext,
    CsrfForm(form): CsrfForm<ReauthenticateForm>,
) -> Response {
    let Some(provider) = flows.oidc.provider(&provider_id) else { return ServerError::NotFound.into_response() };
    let Some(user) = &ctx.user else { return Redirect::to("/login").into_response() };
    match flows.db.identities_of(user.id).await {
        Ok(identities) if identities.iter().any(|i| i.issuer == provider.issuer()) => {}
        Ok(_) => {
            return refused(
                StatusCode::CONFLICT,
                "oidc-not-linked",
                "That provider is not linked to your account",
                "Confirm with a provider listed among your sign-in methods. Nothing was changed.",
            );
        }
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    begin(&flows, &provider_id, provider, form.next, Purpose::Reauthenticate(user.id), None).await
}

/// Why a flow was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Log in (or create an account); no step-up.
    Login,
    /// Link an identity to this logged-in user.
    Link(i64),
    /// Confirm this logged-in user at the provider (a step-up).
    Reauthenticate(i64),
}

/// Seals the flow into its cookie and redirects to the provider, with
/// `max_age` for step-ups.
async fn begin(
    flows: &ProviderFlows,
    provider_id: &str,
    provider: &Provider,
    next: Option<String>,
    purpose: Purpose,
    session: Option<String>,
) -> Response {
    // max_age = the window, not 0 (prompt=login): a sign-in at the provider
    // within the window counts just as a password typed here within it
    // does, and the provider must then return auth_time, which the callback
    // checks rather than trusting that the provider honoured a prompt.
    let max_age = match purpose {
        Purpose::Login => None,
        Purpose::Link(_) | Purpose::Reauthenticate(_) => Some(Duration::from_secs(flows.reauth.window().as_secs())),
    };
    let authorization = match provider.authorize(max_age).await {
        Ok(authorization) => authorization,
        Err(error) => {
            tracing::warn!(provider = %provider_id, %error, "OIDC login could not start");
            return refused(
                StatusCode::BAD_GATEWAY,
                "oidc-provider-unavailable",
                "The provider is not answering",
                "tessera could not reach the sign-in provider. Please try again in a moment, or log in another way.",
            );
        }
    };
    let flow = Flow {
        id: random_id(),
        provider: provider_id.to_owned(),
        state: authorization.state,
        nonce: authorization.nonce,
        pkce_verifier: authorization.pkce_verifier,
        next: flows.forward_auth.checked_next(next),
        link_user: match purpose {
            Purpose::Link(user) => Some(user),
            _ => None,
        },
        link_session: match purpose {
            Purpose::Link(_) => session,
            _ => None,
        },
        reauth_user: match purpose {
            Purpose::Reauthenticate(user) => Some(user),
            _ => None,
        },
        max_age: max_age.map(|age| age.as_secs()),
        expires_at: flows.oidc.now_millis() + FLOW_LIFETIME.as_millis() as i64,
    };
    let mut response = Redirect::to(&authorization.url).into_response();
    if let Err(error) = flows.oidc.sealer().set(&flow, response.headers_mut()) {
        return ServerError::unavailable(error).into_response();
    }
    tracing::info!(provider = %provider_id, ?purpose, max_age = flow.max_age, "OIDC login started");
    response
}

/// Finishes a login: checks the flow cookie, `state`, single use, then the
/// code exchange and the ID token, and logs in, links or creates the account.
pub async fn callback(
    flows: ProviderFlows,
    Path(provider_id): Path<String>,
    ctx: PageContext,
    Query(query): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let mut response = finish(&flows, &provider_id, &ctx, query, &headers).await;
    // The flow cookie is single-use whatever happened.
    flows.oidc.sealer().clear(response.headers_mut());
    response
}

async fn finish(
    flows: &ProviderFlows,
    provider_id: &str,
    ctx: &PageContext,
    query: CallbackQuery,
    headers: &HeaderMap,
) -> Response {
    let Some(provider) = flows.oidc.provider(provider_id) else { return ServerError::NotFound.into_response() };
    let now = flows.oidc.now_millis();
    let Some(flow) = flows.oidc.sealer().read(headers, now).filter(|f| f.provider == provider_id) else {
        tracing::info!(provider = %provider_id, "OIDC callback refused: no valid flow cookie");
        return refused(
            StatusCode::BAD_REQUEST,
            "oidc-no-flow",
            "This sign-in was not started here",
            &format!(
                "This sign-in was started in another browser, took longer than ten minutes, or was already finished. {START_AGAIN}"
            ),
        );
    };
    if let Some(error) = &query.error {
        let code: String = error.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        tracing::info!(provider = %provider_id, error = %code, "OIDC provider refused the login");
        return refused(
            StatusCode::BAD_REQUEST,
            "oidc-provider-refused",
            "The provider did not sign you in",
            &format!("The provider answered \u{201c}{code}\u{201d}. {START_AGAIN}"),
        );
    }
    let state_ok = query.state.as_deref().is_some_and(|s| constant_time_eq(s.as_bytes(), flow.state.as_bytes()));
    let issuer_ok = query.iss.as_deref().is_none_or(|iss| iss == provider.issuer());
    let Some(code) = query.code.filter(|_| state_ok && issuer_ok) else {
        tracing::info!(provider = %provider_id, state_ok, issuer_ok, "OIDC callback refused: state or issuer mismatch");
        return refused(
            StatusCode::BAD_REQUEST,
            "oidc-state-mismatch",
            "Sign-in refused",
            &format!("The answer from the provider does not belong to the sign-in this browser started. {START_AGAIN}"),
        );
    };
    match flows.db.consume_flow(&flow.id, flow.expires_at, now).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::info!(provider = %provider_id, "OIDC callback refused: replayed");
            return refused(
                StatusCode::BAD_REQUEST,
                "oidc-replayed",
                "This sign-in was already used",
                &format!("Each sign-in answer from the provider works once. {START_AGAIN}"),
            );
        }
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    let VerifiedLogin { identity, auth_time, groups } =
        match provider.finish(code, flow.pkce_verifier.clone(), &flow.nonce).await {
            Ok(login) => login,
            Err(error) => {
                tracing::info!(provider = %provider_id, %error, "OIDC callback refused: provider answer not verified");
                return refused(
                    StatusCode::BAD_REQUEST,
                    "oidc-unverified",
                    "The provider's answer could not be verified",
                    &format!("tessera could not confirm this sign-in with the provider. {START_AGAIN}"),
                );
            }
        };
    let now = Timestamp(now);

    // A step-up asked for a sign-in at most max_age old: check that the
    // provider says so, whatever happened to the request on its way through
    // the browser. Before anything is linked or marked.
    let fresh_at = match flow.max_age {
        Some(max_age) => {
            match reauthentication::check_provider_auth_time(auth_time, Duration::from_secs(max_age), now) {
                Ok(at) => Some(at),
                Err(why) => return stale_provider_login(flows, ctx, provider_id, &flow, why).await,
            }
        }
        None => None,
    };
    if let Some(asked) = flow.reauth_user {
        return reauthenticated(flows, ctx, provider_id, &flow, &identity, asked, fresh_at).await;
    }

    // Linking: the browser must still hold the very session that asked,
    // still logged in as the user who asked. Otherwise whoever signs in at
    // the provider next (after the user logged out, or in another account)
    // would link their identity to the first account and be logged in as
    // its owner.
    let current = ctx.user.as_ref().map(|u| u.id);
    if let Some(asked) = flow.link_user {
        let handle = ctx.session.handle();
        let same_session = match (&flow.link_session, &handle) {
            (Some(started), Some(handle)) => handle.matches(started),
            _ => false,
        };
        if current != Some(asked) || !same_session {
            tracing::info!(
                user_id = asked,
                provider = %provider_id,
                logged_in = current.is_some(),
                "OIDC link refused: the session that started it is gone or belongs to someone else"
            );
            return refused(
                StatusCode::CONFLICT,
                "oidc-session-changed",
                "You logged out or logged in as someone else meanwhile",
                &format!("The identity was not linked and nobody was logged in. {START_AGAIN}"),
            );
        }
    }
    let link_by_email = provider.config.link_by_verified_email;
    let signup = crate::registration_policy::oidc_signup(
        flows.registration.policy(),
        &provider.config,
        identity.verified_email.as_deref(),
    );
    let may_create = signup.is_ok();
    let outcome = resolve(&flows.db, &identity, flow.link_user, link_by_email, may_create, now).await;
    let user = match outcome {
        Ok(Outcome::Existing(user)) => user,
        Ok(Outcome::Linked(user)) => {
            flows.events.record(AuditKind::IdentityLinked, Some(user.id), &ctx.device, now).await;
            user
        }
        Ok(Outcome::Created(user)) => {
            tracing::info!(user_id = user.id, provider = %provider_id, "account created by OIDC login");
            user
        }
        Err(ResolveError::LinkedElsewhere) => {
            return refused(
                StatusCode::CONFLICT,
                "oidc-linked-elsewhere",
                "That identity belongs to another account",
                "It was not linked to yours. Log in with it to use that account, or unlink it there first.",
            );
        }
        Err(ResolveError::Disabled) => {
            return refused(
                StatusCode::FORBIDDEN,
                "account-disabled",
                "Sign-in refused",
                "This account cannot log in. Contact the administrator.",
            );
        }
        Err(ResolveError::SignupRefused) => {
            let refusal = signup.err().unwrap_or(crate::registration_policy::Refusal::ProviderSignupRefused);
            tracing::info!(provider = %provider_id, reason = %refusal, "OIDC login refused: no account, none created");
            return refused(StatusCode::FORBIDDEN, refusal.kind(), "No account for this sign-in", refusal.message());
        }
        Err(ResolveError::Database(error)) => return ServerError::unavailable(error).into_response(),
    };
    if provider.config.groups_claim.is_some() {
        // An absent claim means no groups from this provider (providers
        // often leave out empty claims): the safe reading for access rules.
        let groups = groups.unwrap_or_default();
        let source = format!("oidc:{provider_id}");
        if let Err(error) = flows.db.set_groups_from(user.id, &source, &groups, now).await {
            return ServerError::unavailable(error).into_response();
        }
        tracing::info!(user_id = user.id, provider = %provider_id, groups = groups.join(","), "groups from the provider's claim");
    }
    if flow.link_user.is_some() {
        // The user who linked stays as recently authenticated as the link
        // required; the new identity's sign-in does not prove the account
        // holder, so it adds nothing to the mark.
        // The session is the linking user's (checked above): nobody is
        // logged in by a link.
        tracing::info!(user_id = user.id, provider = %provider_id, "OIDC identity linked");
        return Redirect::to("/account").into_response();
    }
    let auth_age_secs = auth_time.map(|at| now.since(at).as_secs());
    tracing::info!(user_id = user.id, provider = %provider_id, auth_age_secs, "provider login succeeded (OIDC)");
    let next = flows.forward_auth.checked_next(flow.next);
    log_in_or_ask_second_factor(flows, ctx, &user, auth_time, next).await
}

/// Hands a provider login for `user` to the authentication core, which
/// logs it in or, for an account with two-step verification (or on a
/// server that requires it), starts the pending login: a provider login is
/// one factor as far as tessera knows (it does not read `acr` or `amr`),
/// exactly like a password.
async fn log_in_or_ask_second_factor(
    flows: &ProviderFlows,
    ctx: &PageContext,
    user: &tessera_auth::User,
    auth_time: Option<Timestamp>,
    next: Option<String>,
) -> Response {
    match flows.auth.provider(&ctx.client, user.clone(), auth_time, next.clone()).await {
        Ok(step) => continue_login(ctx, step, next),
        Err(LoginError::InvalidCredentials) => refused(
            StatusCode::FORBIDDEN,
            "account-disabled",
            "Sign-in refused",
            "This account cannot log in. Contact the administrator.",
        ),
        Err(error) => ServerError::unavailable(error).into_response(),
    }
}

/// Refuses a step-up whose ID token does not show a sign-in within the
/// `max_age` that was sent: audited for the user who asked, nothing changed.
async fn stale_provider_login(
    flows: &ProviderFlows,
    ctx: &PageContext,
    provider_id: &str,
    flow: &Flow,
    why: ProviderAuthentication,
) -> Response {
    let user_id = flow.link_user.or(flow.reauth_user);
    let (reason, auth_age_secs) = match why {
        ProviderAuthentication::MissingAuthTime => ("no auth_time", None),
        ProviderAuthentication::TooOld { age } => ("auth_time older than max_age", Some(age.as_secs())),
    };
    tracing::warn!(
        user_id,
        provider = %provider_id,
        max_age = flow.max_age,
        auth_age_secs,
        reason,
        "OIDC step-up refused: the provider did not confirm a recent sign-in"
    );
    flows.events.record(AuditKind::ReauthenticationRefused, user_id, &ctx.device, flows.clock.now()).await;
    let minutes = flow.max_age.unwrap_or_default().div_ceil(60);
    let nothing = if flow.link_user.is_some() { "Nothing was linked." } else { "Nothing was changed." };
    let when = match why {
        ProviderAuthentication::MissingAuthTime => "did not say when you last signed in there",
        ProviderAuthentication::TooOld { .. } => "answered from an earlier sign-in",
    };
    refused(
        StatusCode::UNAUTHORIZED,
        "oidc-reauthentication-stale",
        "Your provider did not confirm it is you",
        &format!(
            "This needs a sign-in at the provider within the last {minutes} minutes, but the provider {when}. \
             {nothing} Please try again: the provider should ask you to sign in."
        ),
    )
}

/// Finishes a re-authentication: the session must still be `asked`'s and
/// the identity linked to that account; then the session steps up (new ID)
/// with the provider's `auth_time` as the authentication time.
async fn reauthenticated(
    flows: &ProviderFlows,
    ctx: &PageContext,
    provider_id: &str,
    flow: &Flow,
    identity: &VerifiedIdentity,
    asked: i64,
    fresh_at: Option<Timestamp>,
) -> Response {
    if ctx.user.as_ref().map(|u| u.id) != Some(asked) {
        return refused(
            StatusCode::CONFLICT,
            "oidc-session-changed",
            "You logged out or logged in as someone else meanwhile",
            &format!("Nothing was changed. {START_AGAIN}"),
        );
    }
    match flows.db.identity(&identity.issuer, &identity.subject).await {
        Ok(Some(linked)) if linked.user_id == asked => {}
        Ok(_) => {
            tracing::info!(user_id = asked, provider = %provider_id, "OIDC step-up refused: identity not linked to the account");
            return refused(
                StatusCode::FORBIDDEN,
                "oidc-not-your-identity",
                "That is not one of your sign-in methods",
                "You signed in at the provider as someone whose identity is not linked to this account. \
                 Nothing was changed.",
            );
        }
        Err(error) => return ServerError::unavailable(error).into_response(),
    }
    // Re-authentication flows always send max_age, so fresh_at is known;
    // a flow without it proves nothing and is refused like a stale one.
    let Some(at) = fresh_at else {
        return stale_provider_login(flows, ctx, provider_id, flow, ProviderAuthentication::MissingAuthTime).await;
    };
    reauthentication::stepped_up(&ctx.session, at);
    tracing::info!(user_id = asked, provider = %provider_id, "re-authenticated at the provider (OIDC step-up)");
    let next = flows.forward_auth.checked_next(flow.next.clone());
    Redirect::to(next.as_deref().unwrap_or("/account")).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
