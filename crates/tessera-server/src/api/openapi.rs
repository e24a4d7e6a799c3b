//! `GET /api/openapi.json`: the OpenAPI 3.1 description, generated from the
//! handlers' annotations so it cannot drift from the code unnoticed (a test
//! compares its paths with [`super::ROUTES`]).

use axum::extract::State;
use axum::response::Response;
use http::header::CACHE_CONTROL;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::problem::{json_response, ProblemDocument};
use super::{account, auth, email, passkeys, products, tokens};
use tessera_auth::Authenticator;

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
        passkeys::signin_begin,
        passkeys::signin_finish,
        passkeys::register_begin,
        passkeys::register_finish,
        passkeys::signup_begin,
        passkeys::signup_finish,
        account::list,
        account::revoke,
        account::revoke_others,
        account::change_password,
        account::delete,
        email::request_reset,
        email::reset,
        email::verify,
        email::request_login,
        email::verify_login,
        email::request_verification,
        products::list,
        products::create,
        products::show,
        products::replace,
        products::patch,
        products::delete,
        tokens::jwks,
        tokens::metadata,
        document,
    ),
    components(schemas(ProblemDocument)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Sign up, sign in, tokens"),
        (name = "passkeys", description = "Passkeys (WebAuthn) for native apps: begin answers a `ceremony` ID and the WebAuthn options (JSON form); finish sends the ceremony ID and the credential back. Signing in answers a token pair."),
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
pub async fn document(State(auth): State<Authenticator>) -> Response {
    let mut response = json_response(StatusCode::OK, &document_value(auth.accounts().policy().effective_min_chars()));
    // The same for everyone: caches may keep it briefly.
    response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// The complete document, for a server whose passwords need `min_password`
/// characters: the annotations, then [`complete`].
pub fn document_value(min_password: usize) -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    complete(&mut doc, min_password);
    doc
}

/// Every operation's `operationId`: unique, and stable for code generators.
pub const OPERATION_IDS: &[(&str, &str, &str)] = &[
    ("post", "/api/signup", "signUp"),
    ("post", "/api/signin", "signIn"),
    ("post", "/api/token/refresh", "refreshToken"),
    ("post", "/api/signout", "signOut"),
    ("get", "/api/me", "getMe"),
    ("post", "/api/passkeys/signin/begin", "beginPasskeySignIn"),
    ("post", "/api/passkeys/signin/finish", "finishPasskeySignIn"),
    ("post", "/api/passkeys/register/begin", "beginPasskeyRegistration"),
    ("post", "/api/passkeys/register/finish", "finishPasskeyRegistration"),
    ("post", "/api/passkeys/signup/begin", "beginPasskeySignUp"),
    ("post", "/api/passkeys/signup/finish", "finishPasskeySignUp"),
    ("get", "/api/sessions", "listSessions"),
    ("post", "/api/sessions/revoke-others", "revokeOtherSessions"),
    ("delete", "/api/sessions/{handle}", "revokeSession"),
    ("post", "/api/password", "changePassword"),
    ("delete", "/api/account", "deleteAccount"),
    ("post", "/api/password/reset-request", "requestPasswordReset"),
    ("post", "/api/password/reset", "resetPassword"),
    ("post", "/api/email/verify", "verifyEmail"),
    ("get", "/api/products", "listProducts"),
    ("post", "/api/products", "createProduct"),
    ("get", "/api/products/{id}", "getProduct"),
    ("put", "/api/products/{id}", "replaceProduct"),
    ("patch", "/api/products/{id}", "patchProduct"),
    ("delete", "/api/products/{id}", "deleteProduct"),
    ("get", "/api/openapi.json", "getOpenApiDocument"),
    ("get", "/.well-known/jwks.json", "getJwks"),
    ("get", "/.well-known/oauth-authorization-server", "getAuthorizationServerMetadata"),
];

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

fn problem(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDocument"}}}
    })
}

fn header(description: &str, format: Option<&str>) -> Value {
    let mut schema = json!({"type": "string"});
    if let Some(format) = format {
        schema["format"] = json!(format);
    }
    json!({"description": description, "schema": schema})
}

/// What the annotations cannot say, or would say again on every handler:
///
/// - unique `operationId`s ([`OPERATION_IDS`]);
/// - the answers every operation of a kind can give: 400/413/415/422 with a
///   JSON body, 400 with query parameters, 401 when authenticated, 403 for
///   cookie-authenticated unsafe methods without `X-CSRF-Token`, 503 for
///   everything that uses the database or the session store;
/// - `WWW-Authenticate` on 401s, `Retry-After` on 429s and 503s, `Location`
///   on 201s, and `links` from created or listed resources to what can be
///   done with them;
/// - the constraints the server enforces on user names, passwords (the
///   running minimum), product fields and paging, and `format: date-time`.
pub fn complete(doc: &mut Value, min_password: usize) {
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        for (path, item) in paths.iter_mut() {
            for method in METHODS {
                if let Some(operation) = item.get_mut(method) {
                    complete_operation(path, method, operation);
                }
            }
        }
    }
    add_links(doc);
    constrain_schemas(doc, min_password);
}

fn complete_operation(path: &str, method: &str, operation: &mut Value) {
    if let Some((_, _, id)) = OPERATION_IDS.iter().find(|(m, p, _)| *m == method && *p == path) {
        operation["operationId"] = json!(id);
    }
    let has_body = operation.get("requestBody").is_some();
    let security = operation.get("security").and_then(Value::as_array).cloned().unwrap_or_default();
    let by_cookie = security.iter().any(|s| s.get("cookie").is_some());
    let has_query =
        operation.get("parameters").and_then(Value::as_array).is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
    let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { return };
    let mut add = |status: &str, description: &str| {
        responses.entry(status.to_owned()).or_insert_with(|| problem(description));
    };
    if has_body {
        add("400", "Malformed JSON or invalid UTF-8");
        add("413", "Body larger than `server.max_body_bytes`");
        add("415", "Not `application/json`, or a `Content-Encoding` other than identity");
        add("422", "JSON of the wrong shape (not an object, fields missing or invalid); the detail says which");
    } else if has_query {
        add("400", "Invalid query parameters");
    }
    if !security.is_empty() {
        add("401", "No valid bearer token or session cookie");
    }
    if by_cookie && method != "get" {
        add("403", "Cookie authentication without a valid `X-CSRF-Token`, or a cross-site request");
    }
    if path.starts_with("/api/") && path != "/api/openapi.json" {
        add("503", "The database or session store is not answering; nothing was changed. See `Retry-After`");
    }
    for (status, response) in responses.iter_mut() {
        let headers = match status.as_str() {
            "401" => vec![("WWW-Authenticate", header("The scheme to authenticate with (RFC 9110)", None))],
            "429" | "503" => vec![("Retry-After", header("Seconds to wait before trying again", None))],
            // Only products are created at an address of their own.
            "201" if path == "/api/products" => {
                vec![("Location", header("The address of what was created", Some("uri-reference")))]
            }
            "415" => vec![("Accept-Encoding", header("`identity`: bodies must not be compressed", None))],
            _ => vec![],
        };
        for (name, value) in headers {
            response["headers"][name] = value;
        }
    }
}

fn add_links(doc: &mut Value) {
    let product_links = json!({
        "GetProduct": {"operationId": "getProduct", "parameters": {"id": "$response.body#/id"}},
        "ReplaceProduct": {"operationId": "replaceProduct", "parameters": {"id": "$response.body#/id"}},
        "PatchProduct": {"operationId": "patchProduct", "parameters": {"id": "$response.body#/id"}},
        "DeleteProduct": {"operationId": "deleteProduct", "parameters": {"id": "$response.body#/id"}},
    });
    let token_links = json!({
        "RefreshToken": {
            "operationId": "refreshToken",
            "requestBody": {"refresh_token": "{$response.body#/refresh_token}"}
        },
        "SignOut": {"operationId": "signOut", "requestBody": {"refresh_token": "{$response.body#/refresh_token}"}},
    });
    let session_links = json!({
        "RevokeSession": {"operationId": "revokeSession", "parameters": {"handle": "$response.body#/0/handle"}},
    });
    for (path, method, status, links) in [
        ("/api/products", "post", "201", &product_links),
        ("/api/products/{id}", "get", "200", &product_links),
        ("/api/products/{id}", "put", "200", &product_links),
        ("/api/products/{id}", "patch", "200", &product_links),
        ("/api/signin", "post", "200", &token_links),
        ("/api/token/refresh", "post", "200", &token_links),
        ("/api/sessions", "get", "200", &session_links),
    ] {
        if let Some(response) = doc.pointer_mut(&format!("/paths/{}/{method}/responses/{status}", escape(path))) {
            response["links"] = links.clone();
        }
    }
}

/// A JSON pointer token (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A decimal as `canonical_price` accepts it, as a string.
const PRICE_PATTERN: &str = r"^\s*0*[0-9]{1,15}(\.[0-9]{1,6}0*)?\s*$";

fn constrain_schemas(doc: &mut Value, min_password: usize) {
    let max_password = tessera::password::MAX_PASSWORD_BYTES;
    let password = json!({"minLength": min_password, "maxLength": max_password});
    let name = json!({"minLength": 1, "maxLength": products::MAX_NAME_CHARS});
    let description = json!({"maxLength": products::MAX_DESCRIPTION_CHARS});
    let price = json!({"pattern": PRICE_PATTERN, "minimum": 0});
    let date_time = json!({"format": "date-time"});
    let username = json!({"minLength": 3, "maxLength": 64, "pattern": "^[A-Za-z0-9._-]+$"});
    let rules: [(&str, &str, &Value); 17] = [
        ("Credentials", "username", &username),
        ("Credentials", "password", &password),
        ("PasswordChange", "new_password", &password),
        ("NewProduct", "name", &name),
        ("NewProduct", "description", &description),
        ("NewProduct", "price", &price),
        ("ProductPatch", "name", &name),
        ("ProductPatch", "description", &description),
        ("ProductPatch", "price", &price),
        ("Product", "name", &name),
        ("Product", "created_at", &date_time),
        ("Product", "updated_at", &date_time),
        ("UserView", "created_at", &date_time),
        ("SessionView", "created_at", &date_time),
        ("SessionView", "last_seen", &date_time),
        ("UserView", "username", &username),
        ("Product", "description", &description),
    ];
    for (schema, property, constraints) in rules {
        if let Some(target) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties/{property}")) {
            for (key, value) in constraints.as_object().into_iter().flatten() {
                target[key] = value.clone();
            }
        }
    }
    // A price is a string or a number (taken from its exact text).
    for schema in ["NewProduct", "ProductPatch"] {
        if let Some(target) = doc.pointer_mut(&format!("/components/schemas/{schema}/properties/price")) {
            let nullable = target["type"].as_array().is_some_and(|t| t.contains(&json!("null")));
            target["type"] = if nullable { json!(["string", "number", "null"]) } else { json!(["string", "number"]) };
        }
    }
    let paging = [
        (
            "limit",
            json!({"type": "integer", "format": "int64", "minimum": 1, "maximum": products::MAX_PAGE, "default": 20}),
        ),
        ("offset", json!({"type": "integer", "format": "int64", "minimum": 0, "default": 0})),
    ];
    if let Some(parameters) = doc.pointer_mut("/paths/~1api~1products/get/parameters").and_then(Value::as_array_mut) {
        for parameter in parameters {
            if let Some((_, schema)) = paging.iter().find(|(name, _)| parameter["name"] == *name) {
                parameter["schema"] = schema.clone();
            }
        }
    }
}
