//! The rows statement: `SELECT` over a tenant's relation built from the parsed parameters, every
//! identifier a validated [`Ident`] and every value a bind, and the mapping of its failures.

use sqlx::{Postgres, QueryBuilder};

use super::params::{Cursor, Filter, Format, Op, Position, RowsQuery};
use crate::db::ident::{ColumnIdent, Ident};
use crate::db::tenant;
use crate::error::ApiError;
use crate::tables::store::ColumnInfo;
use crate::tables::types::PgType;

/// A table or view to read.
#[derive(Debug, Clone)]
pub(crate) struct Relation {
    /// The tenant schema (and role).
    pub schema: Ident,
    /// The relation.
    pub name: Ident,
    /// Its columns, in order.
    pub columns: Vec<ColumnInfo>,
}

/// Output columns: name and type (when the type is one we know).
pub(super) type OutputColumns = Vec<(String, Option<PgType>)>;

/// A column of the relation, resolved for a statement.
struct Column {
    ident: ColumnIdent,
    pg: Option<PgType>,
    /// The catalog's type name (`json`, `point`, ...), for error messages.
    type_name: String,
}

/// Columns a statement filters or orders on, by name and catalog type: when PostgreSQL finds
/// no operator for one of them, the error names it.
pub(super) type Compared = Vec<(String, String)>;

impl Relation {
    fn column(&self, name: &str) -> Result<Column, ApiError> {
        let info = self
            .columns
            .iter()
            .find(|c| c.column_name == name)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "unknown_column",
                    format!("{:?} has no column {name:?}", self.name.as_str()),
                )
            })?;
        Ok(Column {
            ident: ColumnIdent::new(info.column_name.clone()).map_err(|e| {
                ApiError::Internal(anyhow::anyhow!("BUG: catalog column name: {e}"))
            })?,
            pg: PgType::parse(&info.column_type).ok(),
            type_name: info.column_type.clone(),
        })
    }
}

/// `json` (unlike `jsonb`) has no equality or ordering operator; saying so up front beats
/// PostgreSQL's "operator does not exist: json = jsonb".
fn refuse_json(column: &Column, what: &str) -> Result<(), ApiError> {
    if column.type_name == "json" {
        return Err(ApiError::bad_request(
            "unsupported_operation",
            format!(
                "column {:?} is of type json, which PostgreSQL cannot {what}; use like, ilike or is on it, or cast it to jsonb in the view (SELECT {}::jsonb AS {} ...)",
                column.ident.as_str(),
                column.ident,
                column.ident
            ),
        ));
    }
    Ok(())
}

/// Whether the value goes out as text (exact numerics, and everything Parquet cannot type).
fn as_text(pg: Option<PgType>, format: Format) -> bool {
    let exact_numeric = matches!(pg, Some(PgType::Numeric(_))) && format != Format::Parquet;
    let untyped_in_parquet = format == Format::Parquet
        && matches!(
            pg,
            None | Some(
                PgType::Numeric(None)
                    | PgType::Interval
                    | PgType::Uuid
                    | PgType::Bytea
                    | PgType::Jsonb
            )
        );
    exact_numeric || untyped_in_parquet
}

fn push_value(query: &mut QueryBuilder<Postgres>, column: &Column, value: String) {
    match column.pg {
        Some(pg) => {
            query
                .push("CAST(")
                .push_bind(value)
                .push(" AS ")
                .push(pg.to_string())
                .push(")");
        }
        None => {
            query.push_bind(value);
        }
    }
}

fn push_lhs(query: &mut QueryBuilder<Postgres>, column: &Column) {
    query.push("t.").push(&column.ident);
    if column.pg.is_none() {
        query.push("::text");
    }
}

fn push_filter(query: &mut QueryBuilder<Postgres>, column: &Column, filter: &Filter) {
    let comparison = |op: &str| op.to_owned();
    match &filter.op {
        Op::Eq(v) | Op::Neq(v) | Op::Gt(v) | Op::Gte(v) | Op::Lt(v) | Op::Lte(v) => {
            let op = match &filter.op {
                Op::Eq(_) => "=",
                Op::Neq(_) => "<>",
                Op::Gt(_) => ">",
                Op::Gte(_) => ">=",
                Op::Lt(_) => "<",
                _ => "<=",
            };
            push_lhs(query, column);
            query.push(format!(" {} ", comparison(op)));
            push_value(query, column, v.clone());
        }
        Op::Like(pattern) | Op::Ilike(pattern) => {
            let op = if matches!(filter.op, Op::Like(_)) {
                " LIKE "
            } else {
                " ILIKE "
            };
            query
                .push("t.")
                .push(&column.ident)
                .push("::text")
                .push(op)
                .push_bind(pattern.clone());
        }
        Op::In(values) => {
            push_lhs(query, column);
            query.push(" = ANY(");
            match column.pg {
                Some(pg) => {
                    query
                        .push("CAST(")
                        .push_bind(values.clone())
                        .push(" AS ")
                        .push(pg.to_string())
                        .push("[]))");
                }
                None => {
                    query.push_bind(values.clone()).push(")");
                }
            }
        }
        Op::IsNull => {
            query.push("t.").push(&column.ident).push(" IS NULL");
        }
        Op::IsNotNull => {
            query.push("t.").push(&column.ident).push(" IS NOT NULL");
        }
    }
}

/// Builds `SELECT t.ctid, to_json(x.*) FROM relation t, LATERAL (SELECT ...) x ...` for a
/// request. User columns may carry any name, the aliases `t` and `x` included, so every
/// reference is qualified: a bare `x` would resolve to a column named `x` first.
pub(super) fn build(
    relation: &Relation,
    query: &RowsQuery,
) -> Result<(QueryBuilder<Postgres>, OutputColumns, Compared), ApiError> {
    let mut compared = Compared::new();
    let selected: Vec<String> = match &query.select {
        Some(names) => names.clone(),
        None => relation
            .columns
            .iter()
            .map(|c| c.column_name.clone())
            .collect(),
    };
    let mut sql = QueryBuilder::new("SELECT t.ctid::text, to_json(x.*)::text FROM ");
    sql.push(&relation.schema)
        .push(".")
        .push(&relation.name)
        .push(" t, LATERAL (SELECT ");
    let mut out = Vec::with_capacity(selected.len());
    for (i, name) in selected.iter().enumerate() {
        let column = relation.column(name)?;
        if i > 0 {
            sql.push(", ");
        }
        sql.push("t.").push(&column.ident);
        if as_text(column.pg, query.format) {
            sql.push("::text");
        }
        sql.push(" AS ").push(&column.ident);
        out.push((name.clone(), column.pg));
    }
    sql.push(") x WHERE true");
    for filter in &query.filters {
        let column = relation.column(&filter.column)?;
        if !matches!(
            filter.op,
            Op::Like(_) | Op::Ilike(_) | Op::IsNull | Op::IsNotNull
        ) {
            refuse_json(&column, "compare")?;
        }
        compared.push((filter.column.clone(), column.type_name.clone()));
        sql.push(" AND ");
        push_filter(&mut sql, &column, filter);
    }
    if let Position::Cursor(Some(Cursor::After(tid))) = &query.position {
        if !query.order.is_empty() {
            return Err(ApiError::bad_request(
                "invalid_cursor",
                "this cursor belongs to another order",
            ));
        }
        sql.push(" AND t.ctid > CAST(")
            .push_bind(tid.clone())
            .push(" AS tid)");
    }
    sql.push(" ORDER BY ");
    for order in &query.order {
        let column = relation.column(&order.column)?;
        refuse_json(&column, "order")?;
        compared.push((order.column.clone(), column.type_name.clone()));
        sql.push("t.")
            .push(&column.ident)
            .push(if order.desc { " DESC" } else { " ASC" });
        match order.nulls_first {
            Some(true) => sql.push(" NULLS FIRST"),
            Some(false) => sql.push(" NULLS LAST"),
            None => &mut sql,
        };
        sql.push(", ");
    }
    sql.push("t.ctid");
    let offset = match &query.position {
        Position::Page { page, size } => (page - 1).saturating_mul(*size),
        Position::Cursor(Some(Cursor::Offset(n))) => *n,
        Position::Cursor(_) => 0,
    };
    if query.format == Format::Json {
        // One more than asked: whether it exists says if there is a next page.
        sql.push(" LIMIT ").push_bind(query.limit.saturating_add(1));
    } else if query.limit != i64::MAX {
        sql.push(" LIMIT ").push_bind(query.limit);
    }
    if offset > 0 {
        sql.push(" OFFSET ").push_bind(offset);
    }
    Ok((sql, out, compared))
}

/// Maps a failure of the rows statement: a type without the operator a filter or order needs
/// (`point` has no ordering, say) is the client's 400 naming the column, data errors are 400s
/// as everywhere, the rest is a 500.
pub(super) fn query_error(e: sqlx::Error, compared: &[(String, String)]) -> ApiError {
    if let sqlx::Error::Database(db) = &e
        // undefined_function (no such operator), indeterminate_datatype, ambiguous_function
        && matches!(db.code().as_deref(), Some("42883" | "42P18" | "42725"))
    {
        let message = db.message();
        let mut named: Vec<&(String, String)> = compared
            .iter()
            .filter(|(_, type_name)| message.contains(type_name.as_str()))
            .collect();
        if named.is_empty() {
            named = compared.iter().collect();
        }
        let columns = named
            .iter()
            .map(|(name, type_name)| format!("{name:?} ({type_name})"))
            .collect::<Vec<_>>()
            .join(", ");
        return ApiError::bad_request(
            "unsupported_operation",
            format!(
                "column {columns} cannot be filtered or ordered that way (PostgreSQL: {message}); use like, ilike or is, or cast the column to a comparable type in the view"
            ),
        );
    }
    tenant::classify_error(e, "invalid_filter").unwrap_or_else(ApiError::from)
}
