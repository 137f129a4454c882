//! Indexes on tenant tables: declared at creation (built in the creating transaction) or added
//! later with `CREATE INDEX CONCURRENTLY` (reads and writes continue), listed and dropped. The
//! DDL runs as the tenant, the table's owner; the catalog reads run as the service role. Index
//! names are ours (`ix_` and 16 hex digits), never the caller's.
//!
//! The rows reader (`query::relation`) reads the unique ones, to page ordered reads by keyset.

mod concurrent;
pub mod routes;

pub use concurrent::{build_concurrently, drop_concurrently, drop_given_up, storage_bytes};

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgDatabaseError;
use sqlx::{PgPool, QueryBuilder};
use utoipa::ToSchema;

use super::plan::Plan;
use super::store::ColumnInfo;
use super::types::PgType;
use crate::db::ident::{ColumnIdent, Ident};
use crate::db::quota;
use crate::db::tenant::{self, TenantTx};
use crate::error::ApiError;

/// Most indexes on one table (declared and added together).
pub const MAX_INDEXES_PER_TABLE: usize = 8;
/// Most columns in one index.
pub const MAX_INDEX_COLUMNS: usize = 8;

/// An index to build: the table's columns, in order, and whether it is unique.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexRequest {
    /// 1 to 8 distinct columns of the table, exact names.
    pub columns: Vec<String>,
    /// A unique index refuses duplicate values.
    #[serde(default)]
    pub unique: bool,
}

/// An index of a table.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct IndexBody {
    /// The name the service gave it (for `DELETE /tables/{name}/indexes/{index}/`).
    pub index_name: String,
    /// Its columns, in order.
    pub columns: Vec<String>,
    /// Whether it refuses duplicates.
    pub unique: bool,
    /// Bytes on disk (counted in the tenant's storage quota).
    pub size_bytes: i64,
    /// `false` only while a concurrent build is under way (or after one failed and before it
    /// was dropped): PostgreSQL does not use it yet.
    pub valid: bool,
}

/// A validated index: our name, the columns, uniqueness.
#[derive(Debug, Clone)]
pub struct IndexSpec {
    /// Generated name.
    pub name: Ident,
    /// The columns, quoted on output.
    pub columns: Vec<ColumnIdent>,
    /// Unique?
    pub unique: bool,
}

fn invalid(detail: String) -> ApiError {
    ApiError::bad_request("invalid_index", detail)
}

/// A fresh index name: `ix_` and 16 random hex digits.
fn new_name() -> Ident {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    Ident::new(format!("ix_{}", &hex[..16])).expect("BUG: ix_ + hex is always a valid identifier")
}

/// Whether PostgreSQL has a default btree operator class for the catalog type: every type a
/// table can be created with has one, but `json` and the geometric types (`point`, ...) have
/// none.
fn has_btree(type_name: &str) -> bool {
    type_name != "json" && PgType::parse(type_name).is_ok()
}

/// Checks requests against the table's columns and the limits, and names them; `existing`
/// indexes already on the table count towards [`MAX_INDEXES_PER_TABLE`].
pub fn validate(
    requests: &[IndexRequest],
    existing: usize,
    table: &[ColumnInfo],
) -> Result<Vec<IndexSpec>, ApiError> {
    if existing + requests.len() > MAX_INDEXES_PER_TABLE {
        return Err(ApiError::bad_request(
            "too_many_indexes",
            format!(
                "a table may have at most {MAX_INDEXES_PER_TABLE} indexes; it has {existing} and {} more were asked for",
                requests.len()
            ),
        ));
    }
    requests
        .iter()
        .map(|request| {
            if request.columns.is_empty() || request.columns.len() > MAX_INDEX_COLUMNS {
                return Err(invalid(format!(
                    "an index has 1 to {MAX_INDEX_COLUMNS} columns, not {}",
                    request.columns.len()
                )));
            }
            let mut columns = Vec::with_capacity(request.columns.len());
            for (i, name) in request.columns.iter().enumerate() {
                let info = table.iter().find(|c| &c.column_name == name).ok_or_else(|| {
                    ApiError::bad_request("unknown_column", format!("the table has no column {name:?}"))
                })?;
                if request.columns[..i].contains(name) {
                    return Err(invalid(format!("column {name:?} is listed twice in one index")));
                }
                if !has_btree(&info.column_type) {
                    return Err(ApiError::bad_request(
                        "unsupported_operation",
                        format!(
                            "column {name:?} is of type {}, which has no ordering, so it cannot be indexed",
                            info.column_type
                        ),
                    ));
                }
                columns.push(ColumnIdent::new(name.clone()).map_err(|e| invalid(e.to_string()))?);
            }
            Ok(IndexSpec {
                name: new_name(),
                columns,
                unique: request.unique,
            })
        })
        .collect()
}

/// The create form's `indexes` and `unique` fields (JSON lists of column lists).
pub fn from_form(
    indexes: Option<&str>,
    unique: Option<&str>,
) -> Result<Vec<IndexRequest>, ApiError> {
    let mut requests = Vec::new();
    for (field, text, is_unique) in [("indexes", indexes, false), ("unique", unique, true)] {
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            continue;
        };
        let lists: Vec<Vec<String>> = serde_json::from_str(text).map_err(|e| {
            invalid(format!(
                "{field} must be a JSON list of column lists, like [[\"source\"], [\"a\", \"b\"]]: {e}"
            ))
        })?;
        requests.extend(lists.into_iter().map(|columns| IndexRequest {
            columns,
            unique: is_unique,
        }));
    }
    Ok(requests)
}

/// `CREATE [UNIQUE] INDEX name ON schema.table (columns)`, optionally `CONCURRENTLY`.
fn create_statement(
    schema: &Ident,
    table: &Ident,
    spec: &IndexSpec,
    concurrently: bool,
) -> QueryBuilder<sqlx::Postgres> {
    let mut ddl = QueryBuilder::new(if spec.unique {
        "CREATE UNIQUE INDEX "
    } else {
        "CREATE INDEX "
    });
    if concurrently {
        ddl.push("CONCURRENTLY ");
    }
    ddl.push(&spec.name)
        .push(" ON ")
        .push(schema)
        .push(".")
        .push(table)
        .push(" (");
    for (i, column) in spec.columns.iter().enumerate() {
        if i > 0 {
            ddl.push(", ");
        }
        ddl.push(column);
    }
    ddl.push(")");
    ddl
}

/// The create form's `indexes` and `unique`, checked against the planned table's columns.
pub fn declared(
    indexes: Option<&str>,
    unique: Option<&str>,
    plan: &Plan,
) -> Result<Vec<IndexSpec>, ApiError> {
    let requests = from_form(indexes, unique)?;
    let columns: Vec<ColumnInfo> = plan
        .columns
        .iter()
        .map(|c| ColumnInfo {
            column_name: c.name.clone(),
            column_type: c.pg.to_string(),
        })
        .collect();
    validate(&requests, 0, &columns)
}

/// Builds the declared indexes of a new table in its creating transaction, as the tenant,
/// then measures the tenant's storage with them (409 over `storage_quota`) and analyzes the
/// table so the planner knows its values at once. The columns of a unique index become
/// `NOT NULL` (a unique index is a key: every row has one value), which lets ordered reads
/// over them page by keyset.
pub async fn create_declared(
    tx: &mut TenantTx,
    schema: &Ident,
    table: &Ident,
    specs: &[IndexSpec],
    storage_quota: u64,
) -> Result<(), ApiError> {
    if specs.is_empty() {
        return Ok(());
    }
    for spec in specs.iter().filter(|s| s.unique) {
        let mut alter = QueryBuilder::new("ALTER TABLE ");
        alter.push(schema).push(".").push(table);
        for (i, column) in spec.columns.iter().enumerate() {
            alter.push(if i > 0 { ", " } else { " " });
            alter
                .push("ALTER COLUMN ")
                .push(column)
                .push(" SET NOT NULL");
        }
        alter
            .build()
            .execute(&mut **tx)
            .await
            .map_err(|e| build_error(e, spec))?;
    }
    for spec in specs {
        create_statement(schema, table, spec, false)
            .build()
            .execute(&mut **tx)
            .await
            .map_err(|e| build_error(e, spec))?;
    }
    quota::check_storage(tx.storage_bytes(schema).await?, storage_quota)?;
    let mut analyze = QueryBuilder::new("ANALYZE ");
    analyze.push(schema).push(".").push(table);
    analyze.build().execute(&mut **tx).await?;
    Ok(())
}

/// What a failed build means to the caller: duplicates under a unique index, a null in a key,
/// a value too large for an index entry (all 400 `index_failed`, naming the index and the
/// reason), or the usual tenant failures.
fn build_error(e: sqlx::Error, spec: &IndexSpec) -> ApiError {
    if let sqlx::Error::Database(db) = &e {
        let detail = db
            .try_downcast_ref::<PgDatabaseError>()
            .and_then(PgDatabaseError::detail)
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let columns: Vec<&str> = spec.columns.iter().map(ColumnIdent::as_str).collect();
        let reason = match db.code().as_deref() {
            Some("23505") => Some("the values are not unique"),
            Some("23502") => Some("a unique index is a key, and a row has no value for it"),
            Some("54000") => Some("a value is too large for an index entry"),
            _ => None,
        };
        if let Some(reason) = reason {
            return ApiError::bad_request(
                "index_failed",
                format!(
                    "index {} on {columns:?} cannot be built: {reason}: {}{detail}",
                    spec.name.as_str(),
                    db.message()
                ),
            );
        }
    }
    tenant::classify_error(e, "invalid_value").unwrap_or_else(ApiError::from)
}

/// The table's indexes, by name (catalog read as the service role).
pub async fn list(
    pool: &PgPool,
    schema: &Ident,
    table: &Ident,
) -> Result<Vec<IndexBody>, ApiError> {
    Ok(sqlx::query_as::<_, IndexBody>(
        "SELECT i.relname::text AS index_name,
                array_agg(a.attname::text ORDER BY k.ord) AS columns,
                x.indisunique AS unique, s.size AS size_bytes, x.indisvalid AS valid
           FROM pg_catalog.pg_index x
           JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
           JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
           JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace
          -- NULL for an index a concurrent drop removed after the catalog scan: not listed.
          CROSS JOIN LATERAL (SELECT pg_catalog.pg_relation_size(i.oid) AS size) s
          CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
           JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
          WHERE n.nspname = $1 AND t.relname = $2 AND s.size IS NOT NULL
          GROUP BY i.oid, i.relname, x.indisunique, x.indisvalid, s.size
          ORDER BY i.relname",
    )
    .bind(schema.as_str())
    .bind(table.as_str())
    .fetch_all(pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Vec<ColumnInfo> {
        [
            ("id", "bigint"),
            ("Source", "text"),
            ("meta", "json"),
            ("at", "point"),
        ]
        .iter()
        .map(|(n, t)| ColumnInfo {
            column_name: (*n).to_owned(),
            column_type: (*t).to_owned(),
        })
        .collect()
    }

    fn request(columns: &[&str]) -> IndexRequest {
        IndexRequest {
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            unique: false,
        }
    }

    #[test]
    fn columns_are_checked_and_names_are_ours() {
        let specs = validate(&[request(&["id", "Source"])], 0, &table()).expect("valid");
        assert!(specs[0].name.as_str().starts_with("ix_"));
        assert_eq!(specs[0].columns[1].as_str(), "Source");
        for (bad, code) in [
            (request(&["source"]), "unknown_column"),
            (request(&["id", "id"]), "invalid_index"),
            (request(&[]), "invalid_index"),
            (request(&["meta"]), "unsupported_operation"),
            (request(&["at"]), "unsupported_operation"),
        ] {
            let e = validate(&[bad], 0, &table()).expect_err("refused");
            assert_eq!(e.code(), code, "{e}");
        }
        let e = validate(&[request(&["id"])], MAX_INDEXES_PER_TABLE, &table()).expect_err("full");
        assert_eq!(e.code(), "too_many_indexes");
    }

    #[test]
    fn the_form_fields_are_lists_of_column_lists() {
        let requests =
            from_form(Some(r#"[["a"], ["b", "c"]]"#), Some(r#"[["id"]]"#)).expect("parses");
        assert_eq!(requests.len(), 3);
        assert!(requests[2].unique && !requests[0].unique);
        assert!(from_form(Some(r#"["a"]"#), None).is_err());
        assert!(from_form(None, Some("")).expect("empty").is_empty());
    }
}
