//! The rows statement: `SELECT` over a tenant's relation built from the parsed parameters, every
//! identifier a validated [`Ident`] and every value a bind, and the mapping of its failures.

use sqlx::{Postgres, QueryBuilder};

use super::params::{Cursor, Filter, Format, Op, OrderBy, Position, RowsQuery, order_key};
use super::relation::OrderKeys;
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
    /// Its unique keys and `NOT NULL` columns (read only for a custom order).
    pub keys: OrderKeys,
}

/// How a statement orders its rows, for the cursor of the next page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Paging {
    /// The custom order covers a unique key, so it is total by itself: no `ctid` breaks ties.
    pub unique: bool,
    /// The order pages by keyset: a third output column (JSON pages) holds each row's order
    /// values as a JSON array of texts.
    pub keyset: bool,
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

/// One column of a keyset comparison: an order column, or the `ctid` tie-break (`column`
/// `None`).
struct KeyPart<'a> {
    column: Option<&'a Column>,
    desc: bool,
    nulls_first: bool,
    not_null: bool,
    value: Option<&'a str>,
}

impl KeyPart<'_> {
    fn push_column(&self, sql: &mut QueryBuilder<Postgres>) {
        match self.column {
            Some(column) => sql.push("t.").push(&column.ident),
            None => sql.push("t.ctid"),
        };
    }

    fn push_value(&self, sql: &mut QueryBuilder<Postgres>, value: &str) {
        match self.column {
            Some(column) => push_value(sql, column, value.to_owned()),
            None => {
                sql.push("CAST(")
                    .push_bind(value.to_owned())
                    .push(" AS tid)");
            }
        }
    }

    /// The rows after the cursor's value in this column alone.
    fn push_after(&self, sql: &mut QueryBuilder<Postgres>) {
        let op = if self.desc { " < " } else { " > " };
        match self.value {
            // NULLs sort first: every value comes after; last: nothing does.
            None if self.nulls_first && !self.not_null => {
                self.push_column(sql);
                sql.push(" IS NOT NULL");
            }
            None => {
                sql.push("false");
            }
            Some(value) if !self.not_null && !self.nulls_first => {
                sql.push("(");
                self.push_column(sql);
                sql.push(op);
                self.push_value(sql, value);
                sql.push(" OR ");
                self.push_column(sql);
                sql.push(" IS NULL)");
            }
            Some(value) => {
                self.push_column(sql);
                sql.push(op);
                self.push_value(sql, value);
            }
        }
    }

    /// The rows with the cursor's value in this column.
    fn push_equal(&self, sql: &mut QueryBuilder<Postgres>) {
        self.push_column(sql);
        match self.value {
            None => {
                sql.push(" IS NULL");
            }
            Some(value) => {
                sql.push(" = ");
                self.push_value(sql, value);
            }
        }
    }
}

/// The keyset predicate: the rows after the cursor's in the order. One row comparison
/// (`(a, b) > ($1, $2)`, which an index scan takes as its start) when every column sorts the
/// same way and holds no NULL; otherwise the expanded form `a > $1 OR (a = $1 AND b > $2)`
/// with the NULLs placed as the order places them, led by a bound on the first column
/// (`a >= $1`) whenever that bound holds, so an index on it still starts at the cursor.
fn push_keyset(sql: &mut QueryBuilder<Postgres>, parts: &[KeyPart<'_>]) {
    let simple = parts
        .iter()
        .all(|p| p.not_null && p.value.is_some() && p.desc == parts[0].desc);
    if simple {
        sql.push("(");
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            part.push_column(sql);
        }
        sql.push(if parts[0].desc { ") < (" } else { ") > (" });
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            part.push_value(sql, part.value.unwrap_or_default());
        }
        sql.push(")");
        return;
    }
    let first = &parts[0];
    if let Some(value) = first.value
        && (first.not_null || first.nulls_first)
    {
        first.push_column(sql);
        sql.push(if first.desc { " <= " } else { " >= " });
        first.push_value(sql, value);
        sql.push(" AND ");
    }
    sql.push("(");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        for earlier in &parts[..i] {
            earlier.push_equal(sql);
            sql.push(" AND ");
        }
        part.push_after(sql);
        sql.push(")");
    }
    sql.push(")");
}

/// Builds `SELECT t.ctid, to_json(x.*) FROM relation t, LATERAL (SELECT ...) x ...` for a
/// request. User columns may carry any name, the aliases `t` and `x` included, so every
/// reference is qualified: a bare `x` would resolve to a column named `x` first.
///
/// A custom order that covers a unique key of the relation is total, so it goes without the
/// `ctid` tie-break (an index on it then gives the order without a sort); cursors of a custom
/// order carry the last row's order values (and its `ctid` when that breaks ties) and the next
/// page starts with a keyset predicate, not an `OFFSET`.
pub(super) fn build(
    relation: &Relation,
    query: &RowsQuery,
) -> Result<(QueryBuilder<Postgres>, OutputColumns, Compared, Paging), ApiError> {
    build_after(relation, query, "")
}

/// [`build`], the statement preceded by `prefix` (`EXPLAIN `, a fixed text).
pub(super) fn build_after(
    relation: &Relation,
    query: &RowsQuery,
    prefix: &'static str,
) -> Result<(QueryBuilder<Postgres>, OutputColumns, Compared, Paging), ApiError> {
    let mut compared = Compared::new();
    let ordered: Vec<(Column, &OrderBy)> = query
        .order
        .iter()
        .map(|order| {
            let column = relation.column(&order.column)?;
            refuse_json(&column, "order")?;
            Ok((column, order))
        })
        .collect::<Result<_, ApiError>>()?;
    let in_order = |name: &String| query.order.iter().any(|o| &o.column == name);
    let paging = Paging {
        unique: !ordered.is_empty()
            && relation
                .keys
                .unique
                .iter()
                .any(|key| key.iter().all(in_order)),
        keyset: !ordered.is_empty() && ordered.iter().all(|(column, _)| column.pg.is_some()),
    };
    let selected: Vec<String> = match &query.select {
        Some(names) => names.clone(),
        None => relation
            .columns
            .iter()
            .map(|c| c.column_name.clone())
            .collect(),
    };
    let mut sql = QueryBuilder::new(prefix);
    sql.push("SELECT t.ctid::text, to_json(x.*)::text");
    if paging.keyset && query.format == Format::Json {
        sql.push(", json_build_array(");
        for (i, (column, _)) in ordered.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.push("t.").push(&column.ident).push("::text");
        }
        sql.push(")::text");
    }
    sql.push(" FROM ")
        .push(&relation.schema)
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
    for (column, order) in &ordered {
        compared.push((order.column.clone(), column.type_name.clone()));
    }
    match &query.position {
        Position::Cursor(Some(Cursor::After(tid))) => {
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
        Position::Cursor(Some(Cursor::Keyset { order, values, tid })) => {
            if !paging.keyset || *order != order_key(&query.order) || values.len() != ordered.len()
            {
                return Err(ApiError::bad_request(
                    "invalid_cursor",
                    "this cursor belongs to another order",
                ));
            }
            let tid = match (paging.unique, tid) {
                (true, _) => None,
                (false, Some(tid)) => Some(tid.as_str()),
                (false, None) => {
                    return Err(ApiError::bad_request(
                        "invalid_cursor",
                        "the table's unique indexes changed since this cursor was issued; read again from the first page",
                    ));
                }
            };
            let mut parts: Vec<KeyPart<'_>> = ordered
                .iter()
                .zip(values)
                .map(|((column, order), value)| KeyPart {
                    column: Some(column),
                    desc: order.desc,
                    nulls_first: order.nulls_first.unwrap_or(order.desc),
                    not_null: relation.keys.not_null.contains(&order.column),
                    value: value.as_deref(),
                })
                .collect();
            if let Some(tid) = tid {
                parts.push(KeyPart {
                    column: None,
                    desc: false,
                    nulls_first: false,
                    not_null: true,
                    value: Some(tid),
                });
            }
            sql.push(" AND ");
            push_keyset(&mut sql, &parts);
        }
        _ => {}
    }
    sql.push(" ORDER BY ");
    for (i, (column, order)) in ordered.iter().enumerate() {
        if i > 0 {
            sql.push(", ");
        }
        sql.push("t.")
            .push(&column.ident)
            .push(if order.desc { " DESC" } else { " ASC" });
        match order.nulls_first {
            Some(true) => sql.push(" NULLS FIRST"),
            Some(false) => sql.push(" NULLS LAST"),
            None => &mut sql,
        };
    }
    // A total order needs no tie-break, and an index in its order then needs no sort.
    if !paging.unique {
        sql.push(if ordered.is_empty() {
            "t.ctid"
        } else {
            ", t.ctid"
        });
    }
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
    Ok((sql, out, compared, paging))
}

/// `SELECT CAST($1 AS type), ...` over the values (and `ctid`) of the request's keyset cursor,
/// when it has one of this order: run as the service role when a JSON page failed on a value
/// that does not fit (and before an export), casts to the fixed types [`PgType`] renders,
/// nothing of the tenant's read; so that a value that
/// does not fit its column, a cursor issued for another table or view or for the table before
/// it was replaced, is the cursor's 400 `invalid_cursor`, not a filter's.
pub(super) fn cursor_check(
    relation: &Relation,
    query: &RowsQuery,
) -> Result<Option<QueryBuilder<Postgres>>, ApiError> {
    let Position::Cursor(Some(Cursor::Keyset { values, tid, .. })) = &query.position else {
        return Ok(None);
    };
    let mut check = QueryBuilder::new("SELECT CAST(");
    check.push_bind(tid.clone()).push(" AS tid)");
    for (order, value) in query.order.iter().zip(values) {
        let column = relation.column(&order.column)?;
        if let (Some(pg), Some(value)) = (column.pg, value) {
            check
                .push(", CAST(")
                .push_bind(value.clone())
                .push(" AS ")
                .push(pg.to_string())
                .push(")");
        }
    }
    Ok(Some(check))
}

/// Maps a failure of [`cursor_check`]: a value that does not cast is `invalid_cursor`.
pub(super) fn cursor_error(e: sqlx::Error) -> ApiError {
    match tenant::classify_error(e, "invalid_cursor") {
        Ok(ApiError::BadRequest {
            code: "invalid_cursor",
            detail,
        }) => ApiError::bad_request(
            "invalid_cursor",
            format!(
                "the cursor's values do not fit the columns of this order ({detail}): it was issued for another table or view, or before this one was replaced; read again from the first page"
            ),
        ),
        Ok(other) => other,
        Err(e) => ApiError::from(e),
    }
}

/// Maps a failure of the rows statement: a type without the operator a filter or order needs
/// (`point` has no ordering, say) is the client's 400 naming the column, data errors are 400s
/// as everywhere, the rest is a 500. A relation the tenant dropped, replaced or has not filled
/// since it was found is [`tenant::relation_changed`].
pub(super) fn query_error(e: sqlx::Error, compared: &[(String, String)]) -> ApiError {
    if let Some(changed) = tenant::relation_changed(&e) {
        return changed;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::params::OrderBy;

    fn relation(columns: &[(&str, &str)]) -> Relation {
        Relation {
            schema: Ident::new("t_0123").expect("valid"),
            name: Ident::new("calls").expect("valid"),
            columns: columns
                .iter()
                .map(|(name, ty)| ColumnInfo {
                    column_name: (*name).to_owned(),
                    column_type: (*ty).to_owned(),
                })
                .collect(),
            keys: OrderKeys::default(),
        }
    }

    fn calls() -> Relation {
        relation(&[("id", "bigint"), ("Caller", "text"), ("meta", "json")])
    }

    fn query(format: Format) -> RowsQuery {
        RowsQuery {
            select: None,
            filters: Vec::new(),
            order: Vec::new(),
            limit: 100,
            position: Position::Cursor(None),
            format,
        }
    }

    fn filter(column: &str, op: Op) -> Filter {
        Filter {
            column: column.to_owned(),
            op,
        }
    }

    fn sql_of(relation: &Relation, q: &RowsQuery) -> String {
        let (sql, _, _, _) = build(relation, q).expect("builds");
        sql.sql().as_str().to_owned()
    }

    fn refusal(relation: &Relation, q: &RowsQuery) -> (&'static str, String) {
        match build(relation, q) {
            Ok(_) => panic!("expected a refusal"),
            Err(e) => (e.code(), e.to_string()),
        }
    }

    #[test]
    fn the_default_page_reads_every_column_in_physical_order_with_one_row_more() {
        assert_eq!(
            sql_of(&calls(), &query(Format::Json)),
            "SELECT t.ctid::text, to_json(x.*)::text FROM \"t_0123\".\"calls\" t, LATERAL (SELECT \
             t.\"id\" AS \"id\", t.\"Caller\" AS \"Caller\", t.\"meta\" AS \"meta\") x WHERE true \
             ORDER BY t.ctid LIMIT $1"
        );
    }

    #[test]
    fn values_travel_as_binds_and_never_in_the_text() {
        let hostile = "x'); DROP TABLE calls; --";
        let mut q = query(Format::Json);
        q.filters = vec![
            filter("Caller", Op::Eq(hostile.to_owned())),
            filter("id", Op::In(vec!["1".to_owned(), hostile.to_owned()])),
            filter("Caller", Op::Like(hostile.to_owned())),
        ];
        let sql = sql_of(&calls(), &q);
        assert!(!sql.contains("DROP"), "{sql}");
        assert!(sql.contains("t.\"Caller\" = CAST($1 AS text)"), "{sql}");
        assert!(
            sql.contains("t.\"id\" = ANY(CAST($2 AS bigint[]))"),
            "{sql}"
        );
        assert!(sql.contains("t.\"Caller\"::text LIKE $3"), "{sql}");
    }

    #[test]
    fn hostile_column_names_are_quoted_wherever_they_appear() {
        let r = relation(&[("a\"b; --", "text"), ("x", "text"), ("t", "integer")]);
        let mut q = query(Format::Csv);
        q.filters = vec![filter("a\"b; --", Op::IsNull)];
        q.order = vec![OrderBy {
            column: "t".to_owned(),
            desc: true,
            nulls_first: Some(false),
        }];
        let sql = sql_of(&r, &q);
        assert!(
            sql.contains("t.\"a\"\"b; --\" AS \"a\"\"b; --\""),
            "select list: {sql}"
        );
        assert!(sql.contains("t.\"a\"\"b; --\" IS NULL"), "filter: {sql}");
        assert!(
            sql.contains("ORDER BY t.\"t\" DESC NULLS LAST, t.ctid"),
            "a column named like the alias stays qualified: {sql}"
        );
    }

    #[test]
    fn a_column_the_relation_lacks_is_refused_wherever_it_is_named() {
        let mut select = query(Format::Json);
        select.select = Some(vec!["id".to_owned(), "id\" FROM pg_authid --".to_owned()]);
        let mut filtered = query(Format::Json);
        filtered.filters = vec![filter("ctid", Op::IsNotNull)];
        let mut ordered = query(Format::Json);
        ordered.order = vec![OrderBy {
            column: "CALLER".to_owned(),
            desc: false,
            nulls_first: None,
        }];
        for q in [select, filtered, ordered] {
            let (code, detail) = refusal(&calls(), &q);
            assert_eq!(code, "unknown_column", "{detail}");
            assert!(detail.contains("\"calls\" has no column"), "{detail}");
        }
    }

    #[test]
    fn comparing_or_ordering_a_json_column_is_refused_up_front_but_pattern_and_null_tests_work() {
        let mut compared = query(Format::Json);
        compared.filters = vec![filter("meta", Op::Eq("{}".to_owned()))];
        let mut ordered = query(Format::Json);
        ordered.order = vec![OrderBy {
            column: "meta".to_owned(),
            desc: false,
            nulls_first: None,
        }];
        for q in [compared, ordered] {
            let (code, detail) = refusal(&calls(), &q);
            assert_eq!(code, "unsupported_operation");
            assert!(detail.contains("cast it to jsonb"), "{detail}");
        }
        let mut allowed = query(Format::Json);
        allowed.filters = vec![
            filter("meta", Op::Ilike("%a%".to_owned())),
            filter("meta", Op::IsNotNull),
        ];
        assert!(build(&calls(), &allowed).is_ok());
    }

    #[test]
    fn a_row_cursor_continues_after_its_row_and_only_in_the_default_order() {
        let mut q = query(Format::Json);
        q.position = Position::Cursor(Some(Cursor::After("(0,7)".to_owned())));
        let sql = sql_of(&calls(), &q);
        assert!(
            sql.contains("WHERE true AND t.ctid > CAST($1 AS tid) ORDER BY t.ctid LIMIT $2"),
            "{sql}"
        );
        q.order = vec![OrderBy {
            column: "id".to_owned(),
            desc: false,
            nulls_first: None,
        }];
        assert_eq!(refusal(&calls(), &q).0, "invalid_cursor");
    }

    #[test]
    fn pages_and_offset_cursors_skip_rows_by_a_bound_offset() {
        let mut paged = query(Format::Json);
        paged.position = Position::Page { page: 3, size: 10 };
        assert!(sql_of(&calls(), &paged).ends_with("LIMIT $1 OFFSET $2"));
        let mut first = query(Format::Json);
        first.position = Position::Page { page: 1, size: 10 };
        assert!(sql_of(&calls(), &first).ends_with("LIMIT $1"));
        let mut offset = query(Format::Json);
        offset.position = Position::Cursor(Some(Cursor::Offset(40)));
        assert!(sql_of(&calls(), &offset).ends_with("LIMIT $1 OFFSET $2"));
        let mut huge = query(Format::Json);
        huge.position = Position::Page {
            page: i64::MAX,
            size: i64::MAX,
        };
        assert!(
            build(&calls(), &huge).is_ok(),
            "the offset saturates instead of overflowing"
        );
    }

    fn order(column: &str, desc: bool, nulls_first: Option<bool>) -> OrderBy {
        OrderBy {
            column: column.to_owned(),
            desc,
            nulls_first,
        }
    }

    fn keyed() -> Relation {
        let mut r = calls();
        r.keys = OrderKeys {
            unique: vec![vec!["id".to_owned()]],
            not_null: vec!["id".to_owned()],
        };
        r
    }

    #[test]
    fn an_order_over_a_unique_key_has_no_tie_break_and_its_next_page_is_a_row_comparison() {
        let mut q = query(Format::Json);
        q.order = vec![order("id", true, None)];
        let (sql, _, _, paging) = build(&keyed(), &q).expect("builds");
        let sql = sql.sql().as_str().to_owned();
        assert_eq!(
            paging,
            Paging {
                unique: true,
                keyset: true
            }
        );
        assert!(
            sql.starts_with("SELECT t.ctid::text, to_json(x.*)::text, json_build_array(t.\"id\"::text)::text FROM"),
            "{sql}"
        );
        assert!(sql.ends_with("ORDER BY t.\"id\" DESC LIMIT $1"), "{sql}");
        q.position = Position::Cursor(Some(Cursor::Keyset {
            order: order_key(&q.order),
            values: vec![Some("17".to_owned())],
            tid: None,
        }));
        let sql = sql_of(&keyed(), &q);
        assert!(
            sql.contains(
                "WHERE true AND (t.\"id\") < (CAST($1 AS bigint)) ORDER BY t.\"id\" DESC LIMIT $2"
            ),
            "{sql}"
        );
        assert!(!sql.contains("OFFSET"), "{sql}");
    }

    #[test]
    fn a_nullable_or_mixed_order_keeps_the_tie_break_and_expands_the_keyset_with_its_nulls() {
        let mut q = query(Format::Json);
        q.order = vec![order("id", false, None), order("Caller", true, Some(false))];
        q.position = Position::Cursor(Some(Cursor::Keyset {
            order: order_key(&q.order),
            values: vec![Some("5".to_owned()), None],
            tid: Some("(0,9)".to_owned()),
        }));
        let sql = sql_of(&calls(), &q);
        assert!(
            sql.contains(
                "WHERE true AND (((t.\"id\" > CAST($1 AS bigint) OR t.\"id\" IS NULL)) \
                 OR (t.\"id\" = CAST($2 AS bigint) AND false) \
                 OR (t.\"id\" = CAST($3 AS bigint) AND t.\"Caller\" IS NULL AND t.ctid > CAST($4 AS tid))) \
                 ORDER BY t.\"id\" ASC, t.\"Caller\" DESC NULLS LAST, t.ctid LIMIT $5"
            ),
            "{sql}"
        );
        // Without its tie-break the cursor cannot continue a non-unique order.
        q.position = Position::Cursor(Some(Cursor::Keyset {
            order: order_key(&q.order),
            values: vec![Some("5".to_owned()), None],
            tid: None,
        }));
        assert_eq!(refusal(&calls(), &q).0, "invalid_cursor");
    }

    #[test]
    fn a_bound_on_the_first_column_leads_the_expanded_keyset_when_it_holds() {
        let mut q = query(Format::Json);
        q.order = vec![order("id", false, None), order("Caller", true, None)];
        q.position = Position::Cursor(Some(Cursor::Keyset {
            order: order_key(&q.order),
            values: vec![Some("5".to_owned()), Some("x".to_owned())],
            tid: None,
        }));
        let sql = sql_of(&keyed(), &q);
        assert!(
            sql.contains("WHERE true AND t.\"id\" >= CAST($1 AS bigint) AND ((t.\"id\" > CAST($2 AS bigint)) OR (t.\"id\" = CAST($3 AS bigint) AND t.\"Caller\" < CAST($4 AS text))) ORDER BY"),
            "{sql}"
        );
    }

    #[test]
    fn a_keyset_cursor_of_another_order_is_refused_and_an_old_offset_cursor_still_works() {
        let mut q = query(Format::Json);
        q.order = vec![order("id", false, None)];
        q.position = Position::Cursor(Some(Cursor::Keyset {
            order: order_key(&[order("id", true, None)]),
            values: vec![Some("1".to_owned())],
            tid: Some("(0,1)".to_owned()),
        }));
        assert_eq!(refusal(&calls(), &q).0, "invalid_cursor");
        q.position = Position::Cursor(Some(Cursor::Offset(40)));
        assert!(sql_of(&calls(), &q).ends_with("ORDER BY t.\"id\" ASC, t.ctid LIMIT $1 OFFSET $2"));
    }

    #[test]
    fn an_export_without_a_limit_has_no_limit_clause() {
        let mut q = query(Format::Csv);
        q.limit = i64::MAX;
        assert!(sql_of(&calls(), &q).ends_with("ORDER BY t.ctid"));
        q.limit = 5;
        assert!(sql_of(&calls(), &q).ends_with("ORDER BY t.ctid LIMIT $1"));
    }

    #[test]
    fn exact_numerics_go_out_as_text_and_parquet_types_what_it_can() {
        let r = relation(&[
            ("amount", "numeric(12,2)"),
            ("at", "timestamp with time zone"),
        ]);
        let json = sql_of(&r, &query(Format::Json));
        assert!(
            json.contains("t.\"amount\"::text AS \"amount\", t.\"at\" AS \"at\""),
            "{json}"
        );
        let (_, out, _, _) = build(&r, &query(Format::Parquet)).expect("builds");
        assert_eq!(out.len(), 2);
        assert!(
            !sql_of(&r, &query(Format::Parquet)).contains("\"amount\"::text"),
            "a numeric with a scale keeps its type in Parquet"
        );
    }

    #[test]
    fn compared_columns_are_reported_for_error_messages() {
        let mut q = query(Format::Json);
        q.filters = vec![filter("id", Op::Gt("1".to_owned()))];
        q.order = vec![OrderBy {
            column: "Caller".to_owned(),
            desc: false,
            nulls_first: None,
        }];
        let (_, _, compared, _) = build(&calls(), &q).expect("builds");
        assert_eq!(
            compared,
            [
                ("id".to_owned(), "bigint".to_owned()),
                ("Caller".to_owned(), "text".to_owned())
            ]
        );
    }
}
