//! `/api/products`: a small CRUD resource behind authentication. Every
//! signed-in user reads every product; only the owner (the user who created
//! it) or a member of the `admin` group changes or deletes it. Others get
//! 403, not 404: they can read the product, so hiding it would hide nothing.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::identity::ApiUser;
use super::problem::{json_response, ApiError, ApiJson, ProblemDocument};
use super::rfc3339;
use crate::database::Database;
use crate::groups::ADMIN_GROUP;
use crate::product_store::{Editor, ProductChanges, ProductRow};
use std::sync::Arc;
use tessera::{Clock, Timestamp};

/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;
/// Most digits before the decimal point.
pub const MAX_INTEGER_DIGITS: usize = 15;
/// Most digits after the decimal point.
pub const MAX_FRACTION_DIGITS: usize = 6;
/// Largest page.
pub const MAX_PAGE: i64 = 100;

/// A product.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Product {
    /// ID.
    pub id: i64,
    /// 1–200 characters.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Exact decimal in canonical form (no exponent, no leading zeros, no
    /// trailing fractional zeros), as a string so no client rounds it.
    #[schema(example = "12.5")]
    pub price: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The ID of the user who created it, the only one (with members of
    /// the `admin` group) who may change or delete it; `null` for products
    /// made before products had owners, which only admins may change.
    pub owner_id: Option<i64>,
}

impl From<ProductRow> for Product {
    fn from(row: ProductRow) -> Self {
        Product {
            id: row.id,
            name: row.name,
            description: row.description,
            price: row.price,
            created_at: rfc3339(row.created_at),
            updated_at: rfc3339(row.updated_at),
            owner_id: row.owner_id,
        }
    }
}

/// A product to create, or to replace one with (`PUT`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NewProduct {
    /// 1–200 characters, not only spaces.
    pub name: String,
    /// Up to 10,000 characters; default empty.
    #[serde(default)]
    pub description: String,
    /// A decimal ≥ 0 with at most 15 integer and 6 fractional digits, as a
    /// JSON string (`"12.50"`) or number (`12.50`); kept exactly.
    #[schema(value_type = String, example = "12.50")]
    pub price: Box<RawValue>,
}

/// Changes to a product (`PATCH`); absent fields stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ProductPatch {
    /// 1–200 characters.
    pub name: Option<String>,
    /// Up to 10,000 characters.
    pub description: Option<String>,
    /// As for creation.
    #[schema(value_type = Option<String>, example = "9.99")]
    pub price: Option<Box<RawValue>>,
}

/// A page of products.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    /// The products, in ID order.
    pub items: Vec<Product>,
    /// How many products exist.
    pub total: i64,
    /// The page size used.
    pub limit: i64,
    /// How many were skipped.
    pub offset: i64,
}

/// Paging parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1–100, default 20.
    pub limit: Option<i64>,
    /// ≥ 0, default 0.
    pub offset: Option<i64>,
}

/// The canonical form of a non-negative decimal, or why it is refused.
///
/// Canonical: digits, at most one `.`, no leading zeros, no trailing
/// fractional zeros (`"012.50"` → `"12.5"`, `"3.000"` → `"3"`).
pub fn canonical_price(text: &str) -> Result<String, String> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err("price must be zero or more.".into());
    }
    let (integer, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if integer.is_empty() || !digits(integer) || !digits(fraction) || (text.contains('.') && fraction.is_empty()) {
        return Err(format!("price must be a plain decimal such as \"12.50\", not {text:?}."));
    }
    let integer = integer.trim_start_matches('0');
    let fraction = fraction.trim_end_matches('0');
    if integer.len() > MAX_INTEGER_DIGITS {
        return Err(format!("price has more than {MAX_INTEGER_DIGITS} digits before the decimal point."));
    }
    if fraction.len() > MAX_FRACTION_DIGITS {
        return Err(format!("price has more than {MAX_FRACTION_DIGITS} digits after the decimal point."));
    }
    let integer = if integer.is_empty() { "0" } else { integer };
    Ok(if fraction.is_empty() { integer.to_owned() } else { format!("{integer}.{fraction}") })
}

/// A price as sent: a JSON string, or a number taken from its exact text.
fn price_from_json(raw: &RawValue) -> Result<String, ApiError> {
    let text = raw.get();
    let decimal = if text.starts_with('"') {
        serde_json::from_str::<String>(text).map_err(|e| ApiError::Validation(format!("price: {e}")))?
    } else if text.starts_with(|c: char| c.is_ascii_digit() || c == '-') {
        if text.contains(['e', 'E']) {
            return Err(ApiError::Validation("price must be written without an exponent.".into()));
        }
        text.to_owned()
    } else {
        return Err(ApiError::Validation("price must be a decimal number or a string holding one.".into()));
    };
    canonical_price(&decimal).map_err(|reason| ApiError::Validation(capital(&reason)))
}

fn capital(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let chars = name.chars().count();
    if !(1..=MAX_NAME_CHARS).contains(&chars) || name.trim().is_empty() {
        return Err(ApiError::Validation(format!(
            "Name must be 1 to {MAX_NAME_CHARS} characters long and not only spaces (got {chars})."
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::Validation("Name must not contain control characters.".into()));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(ApiError::Validation(format!(
            "Description must be at most {MAX_DESCRIPTION_CHARS} characters long."
        )));
    }
    Ok(())
}

fn product_id(path: Result<Path<String>, PathRejection>) -> Result<i64, ApiError> {
    // A non-numeric ID names no product: 404 like any other missing one.
    path.ok().and_then(|Path(id)| id.parse::<i64>().ok()).ok_or(ApiError::NotFound)
}

fn full_changes(body: NewProduct) -> Result<ProductChanges, ApiError> {
    check_name(&body.name)?;
    check_description(&body.description)?;
    let price = price_from_json(&body.price)?;
    Ok(ProductChanges { name: Some(body.name), description: Some(body.description), price: Some(price) })
}

const PROBLEM: &str = "application/problem+json";

/// `GET /api/products`: a page of products.
#[utoipa::path(
    get,
    path = "/api/products",
    tag = "products",
    params(PageQuery),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "A page", body = ProductPage),
        (status = 400, description = "Invalid paging parameters", body = ProblemDocument, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = ProblemDocument, content_type = PROBLEM),
    )
)]
pub async fn list(
    State(db): State<Database>,
    _caller: ApiUser,
    query: Result<Query<PageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::InvalidQuery(e.body_text()))?;
    let limit = query.limit.unwrap_or(20);
    let offset = query.offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    if offset < 0 {
        return Err(ApiError::InvalidQuery("offset must be zero or more".into()));
    }
    let (rows, total) = db.list_products(limit, offset).await.map_err(ApiError::unavailable)?;
    let page = ProductPage { items: rows.into_iter().map(Product::from).collect(), total, limit, offset };
    Ok(json_response(StatusCode::OK, &page))
}

/// `POST /api/products`: creates a product.
#[utoipa::path(
    post,
    path = "/api/products",
    tag = "products",
    request_body = NewProduct,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 201, description = "Created; `Location` names it", body = Product),
        (status = 400, description = "Malformed JSON or invalid UTF-8", body = ProblemDocument, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = ProblemDocument, content_type = PROBLEM),
        (status = 403, description = "Cookie authentication without a valid X-CSRF-Token", body = ProblemDocument, content_type = PROBLEM),
        (status = 413, description = "Body too large", body = ProblemDocument, content_type = PROBLEM),
        (status = 415, description = "Not application/json", body = ProblemDocument, content_type = PROBLEM),
        (status = 422, description = "Invalid fields; the detail says which", body = ProblemDocument, content_type = PROBLEM),
    )
)]
pub async fn create(
    State(db): State<Database>,
    State(clock): State<Arc<dyn Clock>>,
    caller: ApiUser,
    ApiJson(body): ApiJson<NewProduct>,
) -> Result<Response, ApiError> {
    let changes = full_changes(body)?;
    let (Some(name), Some(description), Some(price)) = (changes.name, changes.description, changes.price) else {
        return Err(ApiError::Validation("name and price are required.".into()));
    };
    let row = db
        .create_product(caller.user.id, &name, &description, &price, clock.now())
        .await
        .map_err(ApiError::unavailable)?;
    let location = format!("/api/products/{}", row.id);
    let mut response = json_response(StatusCode::CREATED, &Product::from(row));
    if let Ok(value) = location.parse() {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /api/products/{id}`.
#[utoipa::path(
    get,
    path = "/api/products/{id}",
    tag = "products",
    params(("id" = i64, Path, description = "Product ID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "The product", body = Product),
        (status = 401, description = "Not authenticated", body = ProblemDocument, content_type = PROBLEM),
        (status = 404, description = "No such product", body = ProblemDocument, content_type = PROBLEM),
    )
)]
pub async fn show(
    State(db): State<Database>,
    _caller: ApiUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = product_id(path)?;
    let row = db.product(id).await.map_err(ApiError::unavailable)?.ok_or(ApiError::NotFound)?;
    Ok(json_response(StatusCode::OK, &Product::from(row)))
}

/// `PUT /api/products/{id}`: replaces a product.
#[utoipa::path(
    put,
    path = "/api/products/{id}",
    tag = "products",
    params(("id" = i64, Path, description = "Product ID")),
    request_body = NewProduct,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Replaced", body = Product),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = ProblemDocument, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: the caller is neither the product's owner nor in the `admin` group (403, not 404: every signed-in user can read every product, so hiding its existence would hide nothing); or cookie authentication without a valid X-CSRF-Token", body = ProblemDocument, content_type = PROBLEM),
        (status = 404, description = "No such product", body = ProblemDocument, content_type = PROBLEM),
        (status = 415, description = "Not application/json", body = ProblemDocument, content_type = PROBLEM),
        (status = 422, description = "Invalid fields", body = ProblemDocument, content_type = PROBLEM),
    )
)]
pub async fn replace(
    State(db): State<Database>,
    State(clock): State<Arc<dyn Clock>>,
    caller: ApiUser,
    path: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<NewProduct>,
) -> Result<Response, ApiError> {
    let id = product_id(path)?;
    let changes = full_changes(body)?;
    update(&db, clock.now(), &caller, id, changes).await
}

/// `PATCH /api/products/{id}`: changes some fields.
#[utoipa::path(
    patch,
    path = "/api/products/{id}",
    tag = "products",
    params(("id" = i64, Path, description = "Product ID")),
    request_body = ProductPatch,
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 200, description = "Changed", body = Product),
        (status = 400, description = "Malformed JSON", body = ProblemDocument, content_type = PROBLEM),
        (status = 401, description = "Not authenticated", body = ProblemDocument, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: the caller is neither the product's owner nor in the `admin` group (403, not 404: every signed-in user can read every product, so hiding its existence would hide nothing); or cookie authentication without a valid X-CSRF-Token", body = ProblemDocument, content_type = PROBLEM),
        (status = 404, description = "No such product", body = ProblemDocument, content_type = PROBLEM),
        (status = 415, description = "Not application/json", body = ProblemDocument, content_type = PROBLEM),
        (status = 422, description = "Invalid fields", body = ProblemDocument, content_type = PROBLEM),
    )
)]
pub async fn patch(
    State(db): State<Database>,
    State(clock): State<Arc<dyn Clock>>,
    caller: ApiUser,
    path: Result<Path<String>, PathRejection>,
    ApiJson(body): ApiJson<ProductPatch>,
) -> Result<Response, ApiError> {
    let id = product_id(path)?;
    if let Some(name) = &body.name {
        check_name(name)?;
    }
    if let Some(description) = &body.description {
        check_description(description)?;
    }
    let price = body.price.as_deref().map(price_from_json).transpose()?;
    update(&db, clock.now(), &caller, id, ProductChanges { name: body.name, description: body.description, price })
        .await
}

/// What `caller` may change: every product for members of `admin`, else
/// their own.
async fn editor(db: &Database, caller: &ApiUser) -> Result<Editor, ApiError> {
    let admin = db.in_group(caller.user.id, ADMIN_GROUP).await.map_err(ApiError::unavailable)?;
    Ok(if admin { Editor::Admin } else { Editor::Owner(caller.user.id) })
}

/// The refusal after a conditional change matched nothing: 403 if the
/// product exists (products are readable by every signed-in user, so a 404
/// would hide nothing), else 404.
async fn not_changed(db: &Database, id: i64) -> ApiError {
    match db.product(id).await {
        Ok(Some(_)) => ApiError::Forbidden(NOT_OWNER),
        Ok(None) => ApiError::NotFound,
        Err(error) => ApiError::unavailable(error),
    }
}

const NOT_OWNER: &str = "Only the product's owner or a member of the admin group may change or delete it.";

async fn update(
    db: &Database,
    now: Timestamp,
    caller: &ApiUser,
    id: i64,
    changes: ProductChanges,
) -> Result<Response, ApiError> {
    let editor = editor(db, caller).await?;
    let row = db.update_product(id, editor, &changes, now).await.map_err(ApiError::unavailable)?;
    match row {
        Some(row) => Ok(json_response(StatusCode::OK, &Product::from(row))),
        None => Err(not_changed(db, id).await),
    }
}

/// `DELETE /api/products/{id}`.
#[utoipa::path(
    delete,
    path = "/api/products/{id}",
    tag = "products",
    params(("id" = i64, Path, description = "Product ID")),
    security(("bearer" = []), ("cookie" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Not authenticated", body = ProblemDocument, content_type = PROBLEM),
        (status = 403, description = "`forbidden`: the caller is neither the product's owner nor in the `admin` group (403, not 404: every signed-in user can read every product, so hiding its existence would hide nothing); or cookie authentication without a valid X-CSRF-Token", body = ProblemDocument, content_type = PROBLEM),
        (status = 404, description = "No such product", body = ProblemDocument, content_type = PROBLEM),
    )
)]
pub async fn delete(
    State(db): State<Database>,
    caller: ApiUser,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = product_id(path)?;
    let editor = editor(&db, &caller).await?;
    if db.delete_product(id, editor).await.map_err(ApiError::unavailable)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_changed(&db, id).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_exact_and_canonical() {
        for (input, canonical) in [
            ("0", "0"),
            ("0.00", "0"),
            ("12.50", "12.5"),
            ("012.5", "12.5"),
            ("1999.99", "1999.99"),
            ("0.000001", "0.000001"),
            ("999999999999999.999999", "999999999999999.999999"),
            ("3.000", "3"),
        ] {
            assert_eq!(canonical_price(input).as_deref(), Ok(canonical), "{input}");
        }
        for bad in ["-1", "-0", "", ".5", "5.", "1e3", "1,5", "abc", "1.2.3", "+1", "1.0000001", "1234567890123456"] {
            assert!(canonical_price(bad).is_err(), "{bad}");
        }
    }
}
