//! The first layer of the tenant SQL sandbox: bound the size of the view's SQL, then parse it
//! (PostgreSQL dialect) and allow exactly one read-only SELECT over the tenant's own relations
//! with functions from an allow-list, for fast errors that point at the problem.
//!
//! This layer does not decide: a second parser can read text differently from PostgreSQL. The
//! user's own text is what runs, created `WITH NO DATA`, and `views::resolved` decides on what
//! PostgreSQL resolved it to. The other layers are the tenant role, revoked privileges and
//! timeouts.
//!
//! One file on purpose, though over 500 lines: nearly half is the function allow-list, and the
//! list and the walk that enforces it are reviewed together whenever either changes. The unit
//! tests live in `sandbox/tests.rs` and `sandbox/limits.rs`.

use std::collections::{BTreeSet, HashSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    DataType, Expr, ObjectName, ObjectNamePart, Query, SetExpr, Statement, TableFactor, Visit,
    Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

/// Longest accepted view SQL, in bytes.
pub const MAX_SQL_BYTES: usize = 64 * 1024;
/// Most tokens (words, literals, operators, punctuation) in a view's SQL: every level of an
/// expression tree has at least one, so this bounds the depth of every walk over it.
pub const MAX_SQL_TOKENS: usize = 8_000;
/// Deepest nesting of brackets.
pub const MAX_SQL_NESTING: usize = 40;
/// Stack of the thread that parses and walks the SQL: room for [`MAX_SQL_TOKENS`] levels of
/// recursion at several kilobytes each (unoptimised builds included). Reserved address space
/// only; pages are touched as the walk goes deeper.
const CHECK_STACK_BYTES: usize = 256 * 1024 * 1024;

/// Functions a view may call: aggregates, window, date/time, math, string, regular expression,
/// JSON, array and conditional functions. Everything else is refused. PostgreSQL's resolution
/// is checked against the same names (`views::resolved`), and also allows the cast functions.
pub const ALLOWED_FUNCTIONS: &[&str] = &[
    // aggregates
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "array_agg",
    "string_agg",
    "bool_and",
    "bool_or",
    "every",
    "bit_and",
    "bit_or",
    "bit_xor",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "variance",
    "var_pop",
    "var_samp",
    "corr",
    "covar_pop",
    "covar_samp",
    "regr_avgx",
    "regr_avgy",
    "regr_count",
    "regr_intercept",
    "regr_r2",
    "regr_slope",
    "regr_sxx",
    "regr_sxy",
    "regr_syy",
    "percentile_cont",
    "percentile_disc",
    "mode",
    "any_value",
    // window
    "row_number",
    "rank",
    "dense_rank",
    "percent_rank",
    "cume_dist",
    "ntile",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "nth_value",
    // date and time
    "date_trunc",
    "date_bin",
    "date_part",
    "age",
    "generate_series",
    "make_date",
    "make_time",
    "make_timestamp",
    "make_timestamptz",
    "make_interval",
    "now",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "to_timestamp",
    "to_date",
    "to_char",
    "justify_days",
    "justify_hours",
    "justify_interval",
    "isfinite",
    "timezone",
    "date_add",
    "date_subtract",
    "extract",
    "overlaps",
    // math
    "abs",
    "ceil",
    "ceiling",
    "floor",
    "round",
    "trunc",
    "sign",
    "sqrt",
    "cbrt",
    "power",
    "pow",
    "exp",
    "ln",
    "log",
    "log10",
    "mod",
    "div",
    "pi",
    "degrees",
    "radians",
    "sin",
    "cos",
    "tan",
    "asin",
    "acos",
    "atan",
    "atan2",
    "random",
    "width_bucket",
    "gcd",
    "lcm",
    "factorial",
    "scale",
    "min_scale",
    "trim_scale",
    "to_number",
    // strings
    "length",
    "char_length",
    "character_length",
    "octet_length",
    "bit_length",
    "lower",
    "upper",
    "initcap",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "lpad",
    "rpad",
    "substr",
    "substring",
    "position",
    "strpos",
    "replace",
    "translate",
    "concat",
    "concat_ws",
    "left",
    "right",
    "repeat",
    "reverse",
    "split_part",
    "starts_with",
    "format",
    "md5",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "encode",
    "decode",
    "to_hex",
    "ascii",
    "chr",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "string_to_array",
    "array_to_string",
    "overlay",
    "gen_random_uuid",
    "similar_to_escape",
    // regular expressions
    "regexp_match",
    "regexp_matches",
    "regexp_replace",
    "regexp_split_to_array",
    "regexp_split_to_table",
    "regexp_count",
    "regexp_instr",
    "regexp_like",
    "regexp_substr",
    // JSON
    "to_json",
    "to_jsonb",
    "json_build_object",
    "jsonb_build_object",
    "json_build_array",
    "jsonb_build_array",
    "json_object",
    "jsonb_object",
    "json_array_length",
    "jsonb_array_length",
    "json_each",
    "jsonb_each",
    "json_each_text",
    "jsonb_each_text",
    "json_extract_path",
    "jsonb_extract_path",
    "json_extract_path_text",
    "jsonb_extract_path_text",
    "json_object_keys",
    "jsonb_object_keys",
    "json_array_elements",
    "jsonb_array_elements",
    "json_array_elements_text",
    "jsonb_array_elements_text",
    "json_typeof",
    "jsonb_typeof",
    "jsonb_set",
    "jsonb_insert",
    "jsonb_strip_nulls",
    "json_strip_nulls",
    "jsonb_pretty",
    "jsonb_path_query",
    "jsonb_path_exists",
    "jsonb_path_match",
    "jsonb_path_query_array",
    "jsonb_path_query_first",
    "row_to_json",
    "array_to_json",
    // arrays
    "array_length",
    "cardinality",
    "array_append",
    "array_prepend",
    "array_cat",
    "array_position",
    "array_positions",
    "array_remove",
    "array_replace",
    "unnest",
    "array_dims",
    "array_lower",
    "array_upper",
    "array_ndims",
    "array_fill",
    "trim_array",
    // conditional
    "coalesce",
    "nullif",
    "greatest",
    "least",
];

/// Functions whose result changes from one call to the next: a view calling one is refreshed
/// even when its tables did not change.
const VOLATILE_FUNCTIONS: &[&str] = &[
    "now",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "random",
    "gen_random_uuid",
];

/// A checked view query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedQuery {
    /// The user's own statement, without a trailing semicolon: what PostgreSQL will resolve.
    pub sql: String,
    /// The tenant relations it reads (folded names).
    pub relations: BTreeSet<String>,
    /// Whether it calls a volatile or time-dependent function.
    pub volatile: bool,
}

/// Why a query was refused; the message says what is not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejected(pub String);

fn folded(part: &ObjectNamePart) -> String {
    match part {
        ObjectNamePart::Identifier(ident) if ident.quote_style.is_some() => ident.value.clone(),
        ObjectNamePart::Identifier(ident) => ident.value.to_lowercase(),
        ObjectNamePart::Function(f) => f.name.value.to_lowercase(),
    }
}

struct Checker<'a> {
    schema: &'a str,
    own: &'a HashSet<String>,
    ctes: HashSet<String>,
    relations: BTreeSet<String>,
    volatile: bool,
}

impl Checker<'_> {
    fn relation(&mut self, name: &ObjectName) -> ControlFlow<Rejected> {
        let parts: Vec<String> = name.0.iter().map(folded).collect();
        let table = match parts.as_slice() {
            [table] => table.clone(),
            [schema, table] if schema == self.schema => table.clone(),
            _ => {
                return ControlFlow::Break(Rejected(format!(
                    "relation {name} is not one of your tables or views"
                )));
            }
        };
        if self.ctes.contains(&table) {
            return ControlFlow::Continue(());
        }
        if !self.own.contains(&table) {
            return ControlFlow::Break(Rejected(format!(
                "relation {name} is not one of your tables or views"
            )));
        }
        self.relations.insert(table);
        ControlFlow::Continue(())
    }

    fn function(&mut self, name: &ObjectName) -> ControlFlow<Rejected> {
        let parts: Vec<String> = name.0.iter().map(folded).collect();
        let [function] = parts.as_slice() else {
            return ControlFlow::Break(Rejected(format!("function {name} is not allowed")));
        };
        if !ALLOWED_FUNCTIONS.contains(&function.as_str()) {
            return ControlFlow::Break(Rejected(format!("function {function} is not allowed")));
        }
        if VOLATILE_FUNCTIONS.contains(&function.as_str()) {
            self.volatile = true;
        }
        ControlFlow::Continue(())
    }
}

impl Visitor for Checker<'_> {
    type Break = Rejected;

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<Rejected> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.ctes.insert(cte.alias.name.value.to_lowercase());
                self.ctes.insert(cte.alias.name.value.clone());
            }
        }
        if !query.locks.is_empty() {
            return ControlFlow::Break(Rejected(
                "locking clauses (FOR UPDATE, FOR SHARE) are not allowed".to_owned(),
            ));
        }
        if query.for_clause.is_some() || query.settings.is_some() || query.format_clause.is_some() {
            return ControlFlow::Break(Rejected(
                "only plain PostgreSQL SELECT syntax is allowed".to_owned(),
            ));
        }
        check_body(&query.body)
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<Rejected> {
        match factor {
            TableFactor::Table {
                name, args: None, ..
            } => self.relation(name),
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            }
            | TableFactor::Function { name, .. } => self.function(name),
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<Rejected> {
        match expr {
            Expr::Function(function) => self.function(&function.name),
            Expr::Cast { data_type, .. } => check_type(data_type),
            Expr::TypedString(typed) => check_type(&typed.data_type),
            _ => ControlFlow::Continue(()),
        }
    }
}

fn check_body(body: &SetExpr) -> ControlFlow<Rejected> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => {
            ControlFlow::Break(Rejected("SELECT ... INTO is not allowed".to_owned()))
        }
        SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) | SetExpr::Table(_) => {
            ControlFlow::Continue(())
        }
        SetExpr::SetOperation { left, right, .. } => {
            check_body(left)?;
            check_body(right)
        }
        _ => ControlFlow::Break(Rejected(
            "only SELECT is allowed (no INSERT, UPDATE, DELETE or MERGE, also not inside WITH)"
                .to_owned(),
        )),
    }
}

/// Casts to the object-identifier types (`regclass`, `regproc`, ...) look into the catalogs,
/// whatever the quoting or schema of the type's name.
fn check_type(data_type: &DataType) -> ControlFlow<Rejected> {
    let name = data_type.to_string().to_lowercase().replace(['"', ' '], "");
    let refused = name.split(['.', '(']).any(|part| {
        let part = part.trim_start_matches('_');
        part.starts_with("reg") || part.starts_with("pg_") || part.starts_with("xml")
    });
    if refused {
        return ControlFlow::Break(Rejected(format!("the type {name} is not allowed")));
    }
    ControlFlow::Continue(())
}

/// Refuses SQL too long, too many tokens or too deeply nested for the walks after it, without
/// recursing: the tokenizer is a loop.
fn check_size(sql: &str) -> Result<(), Rejected> {
    if sql.len() > MAX_SQL_BYTES {
        return Err(Rejected(format!(
            "the query is {} bytes long; at most {MAX_SQL_BYTES} are allowed",
            sql.len()
        )));
    }
    // PostgreSQL's protocol ends the statement text at a NUL: the bytes after it would be read
    // as the rest of the message, and PostgreSQL would run a prefix of what was checked.
    if let Some(at) = sql.chars().position(|c| c == '\0') {
        return Err(Rejected(format!(
            "the query holds a NUL character (\\u0000) at character {}; PostgreSQL text cannot hold one",
            at + 1
        )));
    }
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| Rejected(format!("the query does not parse: {e}")))?;
    let mut count = 0usize;
    let mut depth = 0usize;
    for token in &tokens {
        match token {
            Token::Whitespace(_) => continue,
            // PostgreSQL ends an operator where `--` or `/*` starts a comment; sqlparser reads
            // them as part of the operator, and would then check text PostgreSQL never sees.
            Token::CustomBinaryOperator(op) if op.contains("--") || op.contains("/*") => {
                return Err(Rejected(format!(
                    "put a space between the operator and the comment in {op:?}"
                )));
            }
            Token::LParen | Token::LBracket | Token::LBrace => depth += 1,
            Token::RParen | Token::RBracket | Token::RBrace => depth = depth.saturating_sub(1),
            _ => {}
        }
        count += 1;
        if depth > MAX_SQL_NESTING {
            return Err(Rejected(format!(
                "the query nests brackets more than {MAX_SQL_NESTING} deep; use WITH to name the inner parts"
            )));
        }
    }
    if count > MAX_SQL_TOKENS {
        return Err(Rejected(format!(
            "the query has {count} tokens; at most {MAX_SQL_TOKENS} are allowed"
        )));
    }
    Ok(())
}

/// [`check`] on a thread of its own with a stack sized for the largest accepted query, so no
/// query can overflow the stack of a server thread (which would abort the process).
pub async fn check_on_own_stack(
    sql: String,
    schema: String,
    own: HashSet<String>,
) -> Result<CheckedQuery, Rejected> {
    // `check` bounds the size first, on the new thread: nothing is tokenised twice.
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sql-check".to_owned())
        .stack_size(CHECK_STACK_BYTES)
        .spawn(move || {
            let _ = done.send(check(&sql, &schema, &own));
        })
        .map_err(|e| {
            Rejected(format!(
                "the query could not be checked now ({e}); try again"
            ))
        })?;
    result
        .await
        .map_err(|_| Rejected("the query could not be checked; try again".to_owned()))?
}

/// Checks `sql` for the tenant whose schema is `schema` and whose tables and views are `own`.
/// Deep queries need a deep stack: the server calls [`check_on_own_stack`].
pub fn check(sql: &str, schema: &str, own: &HashSet<String>) -> Result<CheckedQuery, Rejected> {
    check_size(sql)?;
    let statements = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(MAX_SQL_NESTING * 2)
        .try_with_sql(sql)
        .and_then(|mut parser| parser.parse_statements())
        .map_err(|e| Rejected(format!("the query does not parse: {e}")))?;
    let [statement] = statements.as_slice() else {
        return Err(Rejected(format!(
            "exactly one statement is allowed, found {}",
            statements.len()
        )));
    };
    let Statement::Query(_) = statement else {
        return Err(Rejected("only a SELECT query is allowed".to_owned()));
    };
    let mut checker = Checker {
        schema,
        own,
        ctes: HashSet::new(),
        relations: BTreeSet::new(),
        volatile: false,
    };
    if let ControlFlow::Break(rejected) = statement.visit(&mut checker) {
        return Err(rejected);
    }
    Ok(CheckedQuery {
        sql: without_trailing_semicolons(sql).to_owned(),
        relations: checker.relations,
        volatile: checker.volatile,
    })
}

fn without_trailing_semicolons(sql: &str) -> &str {
    let mut sql = sql.trim_end();
    while let Some(shorter) = sql.strip_suffix(';') {
        sql = shorter.trim_end();
    }
    sql
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod limits;
