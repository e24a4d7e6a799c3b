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

const COLUMNS: &str = "id, name, description, price, created_at, updated_at";

fn product_from_row(row: AnyRow) -> Result<ProductRow, DatabaseError> {
    Ok(ProductRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        description: row.try_get(2)?,
        price: row.try_get(3)?,
        created_at: Timestamp(row.try_get(4)?),
        updated_at: Timestamp(row.try_get(5)?),
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

    /// Adds a product.
    pub async fn create_product(
        &self,
        name: &str,
        description: &str,
        price: &str,
        now: Timestamp,
    ) -> Result<ProductRow, DatabaseError> {
        let row = sqlx::query(&format!(
            "INSERT INTO products (name, description, price, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             RETURNING {COLUMNS}"
        ))
        .bind(name)
        .bind(description)
        .bind(price)
        .bind(now.as_millis())
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
    /// and a write); `None` if there is no such product.
    pub async fn update_product(
        &self,
        id: i64,
        changes: &ProductChanges,
        now: Timestamp,
    ) -> Result<Option<ProductRow>, DatabaseError> {
        let row = sqlx::query(&format!(
            "UPDATE products SET name = COALESCE($1, name), description = COALESCE($2, description), \
             price = COALESCE($3, price), updated_at = $4 WHERE id = $5 RETURNING {COLUMNS}"
        ))
        .bind(changes.name.clone())
        .bind(changes.description.clone())
        .bind(changes.price.clone())
        .bind(now.as_millis())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(product_from_row).transpose()
    }

    /// Deletes a product; `false` if there was none.
    pub async fn delete_product(&self, id: i64) -> Result<bool, DatabaseError> {
        let done = sqlx::query("DELETE FROM products WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}
