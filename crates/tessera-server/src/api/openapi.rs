//! `GET /api/openapi.json`: the OpenAPI 3.1 description, generated from the
//! handlers' annotations so it cannot drift from the code unnoticed (a test
//! compares its paths with [`super::ROUTES`]).

use axum::response::Response;
use http::StatusCode;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::problem::{json_response, ProblemDocument};
use super::{account, auth, products, tokens};

/// The API's OpenAPI document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "tessera API",
        description = "Accounts, JWT access tokens with rotating refresh tokens, and a products resource. \
                       Every error is an RFC 9457 problem document (application/problem+json) with a stable `type`."
    ),
    paths(
        auth::signup,
        auth::signin,
        auth::refresh,
        auth::signout,
        auth::me,
        account::list,
        account::revoke,
        account::revoke_others,
        account::change_password,
        account::delete,
        products::list,
        products::create,
        products::show,
        products::replace,
        products::patch,
        products::delete,
        tokens::jwks,
        document,
    ),
    components(schemas(ProblemDocument)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Sign up, sign in, tokens"),
        (name = "account", description = "Sessions, password, deletion; sensitive operations need the current password"),
        (name = "products", description = "Products; bearer token or session cookie (+ X-CSRF-Token for unsafe methods). Every signed-in user may read every product; only its owner (`owner_id`) or a member of the `admin` group may change or delete it: anyone else gets 403 `forbidden` (not 404, since the product is readable anyway)."),
        (name = "tokens", description = "Public keys"),
        (name = "meta", description = "This document"),
    )
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
        // Cookie-authenticated unsafe methods also need the X-CSRF-Token header.
        components.add_security_scheme("cookie", SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new("__Host-id"))));
    }
}

/// `GET /api/openapi.json`.
#[utoipa::path(
    get,
    path = "/api/openapi.json",
    tag = "meta",
    responses((status = 200, description = "This OpenAPI 3.1 document", body = Object))
)]
pub async fn document() -> Response {
    json_response(StatusCode::OK, &ApiDoc::openapi())
}
