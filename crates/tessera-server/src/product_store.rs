//! Storage for the products resource.

use sqlx::any::AnyRow;
use sqlx::Row;
use tessera::Timestamp;

use crate::database::{Database, DatabaseError};

/// A stored product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductRow {
    /// ID.
    pub id: i64,
    /// 1–200 characters.
    pub name: String,
    /// Free text, possibly empty.
    pub description: String,
    /// A canonical decimal string, e.g. `12.5`.
    pub price: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// The user who created it; `None` for products made before products
    /// had owners (or whose owner's account was deleted).
    pub owner_id: Option<i64>,
}

/// Who asks to change or delete a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Editor {
    /// A member of the `admin` group: any product.
    Admin,
    /// Anyone else: only products this user owns.
    Owner(i64),
}

/// Changes to a product; `None` keeps the stored value.
#[derive(Debug, Clone, Default)]
pub struct ProductChanges {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New canonical price.
    pub price: Option<String>,
}

const COLUMNS: &str = "id, name, description, price, created_at, updated_at, owner_id";

fn product_from_row(row: AnyRow) -> Result<ProductRow, DatabaseError> {
    Ok(ProductRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        description: row.try_get(2)?,
        price: row.try_get(3)?,
        created_at: Timestamp(row.try_get(4)?),
        updated_at: Timestamp(row.try_get(5)?),
        owner_id: row.try_get(6)?,
    })
}

impl Database {
    /// A page of products in ID order, and how many there are in all.
    pub async fn list_products(&self, limit: i64, offset: i64) -> Result<(Vec<ProductRow>, i64), DatabaseError> {
        let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM products ORDER BY id LIMIT $1 OFFSET $2"))
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await?;
        let total: i64 = sqlx::query("SELECT COUNT(*) FROM products").fetch_one(&self.pool).await?.try_get(0)?;
        Ok((rows.into_iter().map(product_from_row).collect::<Result<_, _>>()?, total))
    }

    /// Adds a product owned by `owner_id`.
    pub async fn create_product(
        &self,
        owner_id: i64,
        name: &str,
        description: &str,
        price: &str,
        now: Timestamp,
    ) -> Result<ProductRow, DatabaseError> {
        let row = sqlx::query(&format!(
            "INSERT INTO products (name, description, price, created_at, updated_at, owner_id) \
             VALUES ($1, $2, $3, $4, $4, $5) RETURNING {COLUMNS}"
        ))
        .bind(name)
        .bind(description)
        .bind(price)
        .bind(now.as_millis())
        .bind(owner_id)
        .fetch_one(&self.pool)
        .await?;
        product_from_row(row)
    }

    /// The product with `id`.
    pub async fn product(&self, id: i64) -> Result<Option<ProductRow>, DatabaseError> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM products WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(product_from_row).transpose()
    }

    /// Applies `changes` in one statement (no lost updates between a read
    /// and a write, and the ownership check is part of it); `None` if there
    /// is no such product that `editor` may change.
    pub async fn update_product(
        &self,
        id: i64,
        editor: Editor,
        changes: &ProductChanges,
        now: Timestamp,
    ) -> Result<Option<ProductRow>, DatabaseError> {
        let owned = if matches!(editor, Editor::Owner(_)) { " AND owner_id = $6" } else { "" };
        let query = format!(
            "UPDATE products SET name = COALESCE($1, name), description = COALESCE($2, description), \
             price = COALESCE($3, price), updated_at = $4 WHERE id = $5{owned} RETURNING {COLUMNS}"
        );
        let mut query = sqlx::query(&query)
            .bind(changes.name.clone())
            .bind(changes.description.clone())
            .bind(changes.price.clone())
            .bind(now.as_millis())
            .bind(id);
        if let Editor::Owner(owner) = editor {
            query = query.bind(owner);
        }
        let row = query.fetch_optional(&self.pool).await?;
        row.map(product_from_row).transpose()
    }

    /// Deletes a product `editor` may delete; `false` if there was none.
    pub async fn delete_product(&self, id: i64, editor: Editor) -> Result<bool, DatabaseError> {
        let done = match editor {
            Editor::Admin => sqlx::query("DELETE FROM products WHERE id = $1").bind(id).execute(&self.pool).await?,
            Editor::Owner(owner) => {
                sqlx::query("DELETE FROM products WHERE id = $1 AND owner_id = $2")
                    .bind(id)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?
            }
        };
        Ok(done.rows_affected() > 0)
    }
}
