//! Creating an incremental view, in the view's creating transaction (as the service role,
//! after the sandbox accepted the unpopulated materialized view): [`create`] decides on the
//! resolved tree, [`finish`] (once the view has its id) replaces the materialized view by the
//! definitions and the table, and checks what PostgreSQL resolved the recompute query to.

use super::tree::{self, Node};
use super::{Incremental, IncrementalSpec, Refused, store};
use crate::db::ident::{ColumnIdent, Ident};
use crate::db::tenant::ServiceTx;
use crate::error::ApiError;
use crate::views::resolved;

/// What [`create`] found, for [`finish`].
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What is stored.
    pub inc: Incremental,
    original: Node,
    original_relid: u32,
    source_var: String,
    ids: super::Catalog,
    sql: String,
    range_sql: String,
}

/// `timestamp` and `timestamptz`.
const TIMESTAMP: i64 = 1114;
const TIMESTAMPTZ: i64 = 1184;

/// Decides whether the materialized view `schema.name` (created `WITH NO DATA` from `sql` and
/// accepted by the sandbox) can be refreshed by bucket as `spec` says.
pub async fn create(
    tx: &mut ServiceTx,
    user_id: uuid::Uuid,
    schema: &Ident,
    name: &Ident,
    sql: &str,
    spec: &IncrementalSpec,
    volatile: bool,
) -> Result<Result<Prepared, Refused>, ApiError> {
    if volatile {
        return Ok(Err(Refused(
            "the query calls a volatile or time-dependent function (now(), random(), ...): its buckets cannot be recomputed alone".to_owned(),
        )));
    }
    let ids = super::catalog(tx).await?;
    let (relid, text) = store::stored_tree(tx, schema, name).await?;
    let tree = match tree::parse(&text) {
        Ok(tree) => tree,
        Err(e) => return Ok(Err(Refused(e.to_string()))),
    };
    let query = match super::query_of(&tree) {
        Ok(q) => q.clone(),
        Err(e) => return Ok(Err(e)),
    };
    let checked = match super::check(&query, relid, spec, &ids) {
        Ok(found) => found,
        Err(e) => return Ok(Err(e)),
    };
    // Only uploaded tables: their appends record what changed. Another incremental view's
    // table (also a plain table) records nothing when it is refreshed, so a view over it
    // would never see its changes.
    let read = super::read_tables(&query, relid);
    if let Some(other) = store::not_uploaded(tx, user_id, schema, &read).await? {
        return Ok(Err(Refused(format!(
            "{other:?} is not an uploaded table (an incremental view's table records no changes for another incremental view to follow); read the tables it is made from, or make this view without incremental"
        ))));
    }
    let super::Checked {
        relid: source_relid,
        attno,
        bucket,
        source_var,
        alias,
    } = checked;
    let Some((table, column, type_id)) =
        store::source_column(tx, schema, source_relid, attno).await?
    else {
        return Ok(Err(Refused(
            "the bucket's column is not one of a table's".to_owned(),
        )));
    };
    if column != spec.source_column {
        return Ok(Err(Refused(format!(
            "the bucket {:?} is computed from {table}.{column}, not from source_column {:?}",
            spec.bucket_column, spec.source_column
        ))));
    }
    if type_id != TIMESTAMP && type_id != TIMESTAMPTZ {
        return Ok(Err(Refused(format!(
            "the source column {column:?} must be a timestamp or timestamptz column"
        ))));
    }
    let inc = Incremental {
        bucket_column: spec.bucket_column.clone(),
        source_table: table,
        source_column: column,
        with_time_zone: type_id == TIMESTAMPTZ,
        bucket,
    };
    let range_sql = match super::rewrite(sql, &inc, &alias) {
        Ok(sql) => sql,
        Err(e) => return Ok(Err(e)),
    };
    Ok(Ok(Prepared {
        inc,
        original: query,
        original_relid: relid,
        source_var,
        ids,
        sql: sql.to_owned(),
        range_sql,
    }))
}

/// Replaces the checked materialized view by the definitions (named by `view_id`) and the
/// table readers see; refuses when the recompute query does not resolve to the checked query
/// plus the source range, or uses anything but built-ins for it.
pub async fn finish(
    tx: &mut ServiceTx,
    schema: &Ident,
    name: &Ident,
    prepared: &Prepared,
    view_id: uuid::Uuid,
) -> Result<Result<(), Refused>, ApiError> {
    let (full, range) = store::definitions(view_id);
    let bucket = ColumnIdent::new(prepared.inc.bucket_column.clone())
        .map_err(|e| ApiError::bad_request("invalid_incremental", e.to_string()))?;
    store::as_tenant(tx, schema).await?;
    let mut drop = sqlx::QueryBuilder::new("DROP MATERIALIZED VIEW ");
    drop.push(schema).push(".").push(name);
    drop.build().execute(&mut **tx).await?;
    store::create_definition(tx, schema, &full, &prepared.sql).await?;
    if let Err(e) = store::create_definition(tx, schema, &range, &prepared.range_sql).await {
        return Ok(Err(Refused(format!(
            "the query could not be bounded on its source column ({e})"
        ))));
    }
    store::create_storage(tx, schema, name, &full, &bucket).await?;
    store::as_service(tx).await?;

    let tree_of = |text: &str| -> Result<Node, Refused> {
        let tree = tree::parse(text).map_err(|e| Refused(e.to_string()))?;
        super::query_of(&tree).cloned()
    };
    for (definition, bounded) in [(&full, false), (&range, true)] {
        let (relid, text) = store::stored_tree(tx, schema, definition).await?;
        let query = match tree_of(&text) {
            Ok(q) => q,
            Err(e) => return Ok(Err(e)),
        };
        if bounded {
            if let Err(e) = super::same_but_quals(
                &prepared.original,
                prepared.original_relid,
                &query,
                relid,
                &prepared.source_var,
                prepared.inc.with_time_zone,
                &prepared.ids,
            ) {
                return Ok(Err(e));
            }
            let refs = match resolved::scan(&text) {
                Ok(refs) => refs,
                Err(e) => return Ok(Err(Refused(e.0))),
            };
            let ids = |set: &std::collections::BTreeSet<u32>| {
                set.iter().map(|id| i64::from(*id)).collect::<Vec<_>>()
            };
            if store::outside_catalog(tx, &ids(&refs.functions), &ids(&refs.operators)).await? > 0 {
                return Ok(Err(Refused(
                    "the recompute query resolved to a function or operator outside pg_catalog"
                        .to_owned(),
                )));
            }
        } else if let Err(e) =
            super::same_but_quals_exact(&prepared.original, prepared.original_relid, &query, relid)
        {
            return Ok(Err(e));
        }
    }
    store::save(tx, view_id, &prepared.inc).await?;
    Ok(Ok(()))
}
