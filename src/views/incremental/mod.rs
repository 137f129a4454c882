//! Incremental views: a `GROUP BY` over a time bucket of one table's timestamp column, kept as
//! a table the service maintains and recomputed only in the buckets appends touched.
//!
//! Acceptance is decided on what PostgreSQL resolved the view to ([`check`], on the stored
//! query tree of the unpopulated materialized view the sandbox already checked): the bucket
//! column's expression must be one of `pg_catalog.date_trunc` / `pg_catalog.date_bin` by
//! function id, applied to a column (a `Var`) of a table in the top-level `FROM`, with
//! constant arguments. Anything else is refused with a 400 that says why; nothing falls back
//! silently to a full refresh at creation (a refused shape can be created without
//! `incremental`).
//!
//! The recompute query adds a predicate on the source column (so an index on it is used):
//! the user's SQL with that predicate appended by [`rewrite`], written on the resolved column
//! (the source table's range-table name and the catalog's column name, never an expression
//! copied from the user's text), which is then created as a view and must resolve to the
//! user's own tree plus exactly the two added comparisons of that column ([`same_but_quals`]);
//! a second parser's reading never decides what runs. Every table read must be an uploaded
//! one: only their appends record what an incremental refresh recomputes.

mod create;
pub mod refresh;
mod rewrite;
pub mod store;
pub mod tree;

pub use create::{Prepared, create, finish};
pub use rewrite::{FROM_SETTING, TO_SETTING, rewrite, same_but_quals, same_but_quals_exact};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use tree::Node;

/// What a view declares to be refreshed incrementally (`incremental` of `POST /views/create/`).
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IncrementalSpec {
    /// The output column holding the bucket (`date_trunc('hour', c.record_timestamp) AS hour`).
    pub bucket_column: String,
    /// The timestamp column of the source table the bucket is computed from.
    pub source_column: String,
}

/// The bucket function, with the constants PostgreSQL stored for it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(tag = "function", rename_all = "snake_case")]
pub enum Bucket {
    /// `date_trunc(unit, col [, zone])`.
    DateTrunc {
        /// The unit, lower case (`hour`, `day`, ...).
        unit: String,
        /// The time zone argument, when given.
        zone: Option<String>,
    },
    /// `date_bin(stride, col, origin)`.
    DateBin {
        /// The stride in microseconds (days and months are refused: not fixed lengths).
        stride_us: i64,
        /// The origin, microseconds since 2000-01-01 00:00 (UTC for `timestamptz`).
        origin_us: i64,
    },
}

/// What the check found, stored in `tinydevcrm.views.incremental`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Incremental {
    /// The output column of the bucket.
    pub bucket_column: String,
    /// The source table (name in the tenant's schema).
    pub source_table: String,
    /// The source column, as the catalog spells it.
    pub source_column: String,
    /// `true` for `timestamptz`, `false` for `timestamp`.
    pub with_time_zone: bool,
    /// The bucket function and its constants.
    pub bucket: Bucket,
}

/// Why a view cannot be incremental, for the 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("incremental: {0}")]
pub struct Refused(pub String);

fn refuse<T>(why: impl Into<String>) -> Result<T, Refused> {
    Err(Refused(why.into()))
}

/// Units `date_trunc` accepts that have a fixed or calendar length, with one bucket's length as
/// interval text (an upper bound for zones with daylight saving: see `refresh`).
pub const UNITS: &[(&str, &str)] = &[
    ("microseconds", "1 microsecond"),
    ("milliseconds", "1 millisecond"),
    ("second", "1 second"),
    ("minute", "1 minute"),
    ("hour", "1 hour"),
    ("day", "1 day"),
    ("week", "7 days"),
    ("month", "1 month"),
    ("quarter", "3 months"),
    ("year", "1 year"),
    ("decade", "10 years"),
    ("century", "100 years"),
    ("millennium", "1000 years"),
];

/// Function ids PostgreSQL gave the bucket functions and aggregates it accepts, looked up by
/// signature in `pg_catalog` (never by a name the tenant could also create elsewhere).
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// `date_trunc(text, timestamp)`.
    pub trunc: u32,
    /// `date_trunc(text, timestamptz)`.
    pub trunc_tz: u32,
    /// `date_trunc(text, timestamptz, text)`.
    pub trunc_zone: u32,
    /// `date_bin(interval, timestamp, timestamp)`.
    pub bin: u32,
    /// `date_bin(interval, timestamptz, timestamptz)`.
    pub bin_tz: u32,
    /// Every `pg_catalog` `count`, `sum`, `min`, `max` and `avg`.
    pub aggregates: Vec<u32>,
    /// `>=(timestamp, timestamp)` and `<(timestamp, timestamp)`: the recompute range.
    pub ge_lt: (u32, u32),
    /// `>=(timestamptz, timestamptz)` and `<(timestamptz, timestamptz)`.
    pub ge_lt_tz: (u32, u32),
    /// `current_setting(text)`: where the recompute range's bounds are read from.
    pub current_setting: u32,
}

/// Reads the ids of [`Catalog`].
pub async fn catalog(conn: &mut sqlx::PgConnection) -> Result<Catalog, sqlx::Error> {
    let (trunc, trunc_tz, trunc_zone, bin, bin_tz, aggregates, operators, current_setting): (
        i64,
        i64,
        i64,
        i64,
        i64,
        Vec<i64>,
        Vec<i64>,
        i64,
    ) = sqlx::query_as(
            "SELECT 'pg_catalog.date_trunc(text, pg_catalog.timestamp)'::pg_catalog.regprocedure::oid::int8,
                    'pg_catalog.date_trunc(text, pg_catalog.timestamptz)'::pg_catalog.regprocedure::oid::int8,
                    'pg_catalog.date_trunc(text, pg_catalog.timestamptz, text)'::pg_catalog.regprocedure::oid::int8,
                    'pg_catalog.date_bin(interval, pg_catalog.timestamp, pg_catalog.timestamp)'::pg_catalog.regprocedure::oid::int8,
                    'pg_catalog.date_bin(interval, pg_catalog.timestamptz, pg_catalog.timestamptz)'::pg_catalog.regprocedure::oid::int8,
                    (SELECT array_agg(oid::int8) FROM pg_catalog.pg_proc
                     WHERE pronamespace = 'pg_catalog'::pg_catalog.regnamespace AND prokind = 'a'
                       AND proname IN ('count', 'sum', 'min', 'max', 'avg')),
                    ARRAY['pg_catalog.>=(pg_catalog.timestamp, pg_catalog.timestamp)'::pg_catalog.regoperator::oid::int8,
                          'pg_catalog.<(pg_catalog.timestamp, pg_catalog.timestamp)'::pg_catalog.regoperator::oid::int8,
                          'pg_catalog.>=(pg_catalog.timestamptz, pg_catalog.timestamptz)'::pg_catalog.regoperator::oid::int8,
                          'pg_catalog.<(pg_catalog.timestamptz, pg_catalog.timestamptz)'::pg_catalog.regoperator::oid::int8],
                    'pg_catalog.current_setting(text)'::pg_catalog.regprocedure::oid::int8",
        )
        .fetch_one(conn)
        .await?;
    let id = |v: i64| u32::try_from(v).unwrap_or(0);
    let op = |i: usize| operators.get(i).copied().map_or(0, id);
    Ok(Catalog {
        ge_lt: (op(0), op(1)),
        ge_lt_tz: (op(2), op(3)),
        current_setting: id(current_setting),
        trunc: id(trunc),
        trunc_tz: id(trunc_tz),
        trunc_zone: id(trunc_zone),
        bin: id(bin),
        bin_tz: id(bin_tz),
        aggregates: aggregates.into_iter().map(id).collect(),
    })
}

/// The resolved shape of an accepted view, for [`same_but_quals`] and the registry.
#[derive(Debug, Clone)]
pub struct Shape {
    /// What is stored.
    pub incremental: Incremental,
    /// The source table's id.
    pub source_relid: u32,
    /// The source column's number.
    pub source_attno: i64,
    /// The bucket's `Var`, canonical text: what the rewritten predicates must compare.
    pub source_var: String,
}

/// The one query of a stored view's tree (`ev_action` is a list of one query).
pub fn query_of(tree: &Node) -> Result<&Node, Refused> {
    match tree {
        Node::List(items) if items.len() == 1 && items[0].label() == Some("QUERY") => Ok(&items[0]),
        _ => refuse("the view is not a single query"),
    }
}

/// Range-table entries other than the view's own `old`/`new` placeholders (PostgreSQL 15 keeps
/// them in a view's rule), with their 1-based index.
fn own_entries(query: &Node, view_relid: u32) -> Vec<(usize, &Node)> {
    query
        .list("rtable")
        .iter()
        .enumerate()
        .map(|(i, e)| (i + 1, e))
        .filter(|(_, e)| e.number("relid") != Some(i64::from(view_relid)))
        .collect()
}

/// Decides whether the resolved query `query` (of the view whose relation id is `view_relid`)
/// can be refreshed by bucket, per `spec`. The source column's name and type, and whether the
/// tables read are uploaded ones, are looked up by the caller.
pub fn check(
    query: &Node,
    view_relid: u32,
    spec: &IncrementalSpec,
    ids: &Catalog,
) -> Result<Checked, Refused> {
    let flags = [
        ("hasWindowFuncs", "window functions"),
        (
            "hasTargetSRFs",
            "set-returning functions in the select list",
        ),
        (
            "hasSubLinks",
            "subqueries in expressions (IN, EXISTS, scalar subqueries)",
        ),
        ("hasDistinctOn", "DISTINCT ON"),
        ("hasRecursive", "WITH RECURSIVE"),
        ("hasForUpdate", "locking clauses"),
    ];
    for (flag, what) in flags {
        if query.flag(flag) {
            return refuse(format!("{what} are not allowed in an incremental view"));
        }
    }
    let empty = [
        ("cteList", "WITH (common table expressions)"),
        ("setOperations", "UNION, INTERSECT and EXCEPT"),
        ("limitCount", "LIMIT"),
        ("limitOffset", "OFFSET"),
        (
            "havingQual",
            "HAVING (a condition over a bucket's aggregates is kept; use a view over this one)",
        ),
        ("distinctClause", "DISTINCT"),
        ("groupingSets", "GROUPING SETS, ROLLUP and CUBE"),
        ("windowClause", "WINDOW"),
    ];
    for (field, what) in empty {
        let present = match query.get(field) {
            Node::Null => false,
            Node::List(items) => !items.is_empty(),
            _ => true,
        };
        if present {
            return refuse(format!("{what} is not allowed in an incremental view"));
        }
    }
    if query.list("groupClause").is_empty() {
        return refuse("the query must GROUP BY the bucket column");
    }
    // Every range-table entry a table or a join of tables: no subqueries, functions, VALUES.
    let entries = own_entries(query, view_relid);
    for (_, entry) in &entries {
        match entry.number("rtekind") {
            Some(0) if entry.atom("relkind") == Some("r") => {}
            Some(0) => return refuse("only tables may be read, not views"),
            Some(2) => {}
            _ => {
                return refuse(
                    "only tables and joins may be in FROM (no subqueries, functions or VALUES)",
                );
            }
        }
    }
    // Inner joins only: on the nullable side of an outer join, a source row's absence makes
    // rows in no bucket at all.
    let mut joins = Vec::new();
    query.get("jointree").find_all("JOINEXPR", &mut joins);
    if joins.iter().any(|j| j.number("jointype") != Some(0)) {
        return refuse("only inner joins are allowed (the source table must not be outer-joined)");
    }
    // Aggregates by id.
    let mut aggregates = Vec::new();
    query.find_all("AGGREF", &mut aggregates);
    for aggregate in aggregates {
        let id = aggregate
            .number("aggfnoid")
            .and_then(|id| u32::try_from(id).ok());
        if !id.is_some_and(|id| ids.aggregates.contains(&id)) {
            return refuse("only count, sum, min, max and avg can be recomputed per bucket");
        }
    }
    // The bucket column.
    let entry = query
        .list("targetList")
        .iter()
        .find(|t| {
            !t.flag("resjunk")
                && t.atom("resname").map(tree::unescape).as_deref()
                    == Some(spec.bucket_column.as_str())
        })
        .ok_or_else(|| {
            Refused(format!(
                "the query has no output column named {:?} (bucket_column)",
                spec.bucket_column
            ))
        })?;
    let group_ref = entry.number("ressortgroupref").unwrap_or(0);
    let grouped = query
        .list("groupClause")
        .iter()
        .any(|g| group_ref != 0 && g.number("tleSortGroupRef") == Some(group_ref));
    if !grouped {
        return refuse(format!(
            "the bucket column {:?} must be in GROUP BY",
            spec.bucket_column
        ));
    }
    let expr = entry.get("expr");
    let not_bucket = || {
        Refused(format!(
            "the bucket column {:?} must be date_trunc('<unit>', <timestamp column>) or date_bin(<interval>, <timestamp column>, <origin>) of a column of one table, with constant arguments",
            spec.bucket_column
        ))
    };
    if expr.label() != Some("FUNCEXPR") || expr.flag("funcretset") {
        return Err(not_bucket());
    }
    let funcid = expr
        .number("funcid")
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(not_bucket)?;
    let args = expr.list("args");
    let constant = |n: &Node| -> Result<Vec<u8>, Refused> {
        if n.label() != Some("CONST") || n.flag("constisnull") {
            return Err(not_bucket());
        }
        match n.get("constvalue") {
            Node::Datum(bytes) => Ok(bytes.clone()),
            _ => Err(not_bucket()),
        }
    };
    let (var, bucket) = if funcid == ids.trunc || funcid == ids.trunc_tz {
        let [unit, var] = args else {
            return Err(not_bucket());
        };
        (var, date_trunc(&constant(unit)?, None)?)
    } else if funcid == ids.trunc_zone {
        let [unit, var, zone] = args else {
            return Err(not_bucket());
        };
        let zone = text_datum(&constant(zone)?).ok_or_else(not_bucket)?;
        (var, date_trunc(&constant(unit)?, Some(zone))?)
    } else if funcid == ids.bin || funcid == ids.bin_tz {
        let [stride, var, origin] = args else {
            return Err(not_bucket());
        };
        (var, date_bin(&constant(stride)?, &constant(origin)?)?)
    } else {
        return Err(not_bucket());
    };
    if var.label() != Some("VAR") || var.number("varlevelsup") != Some(0) {
        return Err(not_bucket());
    }
    let varno = var
        .number("varno")
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(not_bucket)?;
    let source = entries
        .iter()
        .find(|(i, _)| *i == varno)
        .map(|(_, e)| *e)
        .filter(|e| e.number("rtekind") == Some(0))
        .ok_or_else(not_bucket)?;
    let relid = source
        .number("relid")
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(not_bucket)?;
    // The source table once: a self-join mixes rows of other buckets into a bucket.
    let times = entries
        .iter()
        .filter(|(_, e)| e.number("relid") == Some(i64::from(relid)))
        .count();
    if times != 1 {
        return refuse("the source table may be read only once (no self-joins)");
    }
    let attno = var.number("varattno").ok_or_else(not_bucket)?;
    // The name the source table goes by in FROM (its alias, else its own name): the recompute
    // range is written on that and the catalog's column name, never on the tenant's text.
    let alias = source
        .get("eref")
        .atom("aliasname")
        .map(tree::unescape)
        .ok_or_else(not_bucket)?;
    Ok(Checked {
        relid,
        attno,
        bucket,
        source_var: var.canonical(),
        alias,
    })
}

/// What [`check`] resolved the bucket's source to.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The source table's id.
    pub relid: u32,
    /// The source column's number.
    pub attno: i64,
    /// The bucket function.
    pub bucket: Bucket,
    /// The source column's `Var`, canonical text.
    pub source_var: String,
    /// The name the source table goes by in the top-level `FROM`.
    pub alias: String,
}

/// Every table the query reads (range-table entries of tables), by id.
pub fn read_tables(query: &Node, view_relid: u32) -> Vec<u32> {
    own_entries(query, view_relid)
        .iter()
        .filter(|(_, e)| e.number("rtekind") == Some(0))
        .filter_map(|(_, e)| e.number("relid").and_then(|v| u32::try_from(v).ok()))
        .collect()
}

/// Text of a `text` constant: a 4-byte varlena header (length << 2, little-endian) or a 1-byte
/// one, then the bytes.
fn text_datum(bytes: &[u8]) -> Option<String> {
    let first = *bytes.first()?;
    let body = if first & 1 == 1 {
        let len = usize::from(first >> 1);
        bytes.get(1..len)?
    } else {
        let header = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?);
        let len = usize::try_from(header >> 2).ok()?;
        bytes.get(4..len)?
    };
    String::from_utf8(body.to_vec()).ok()
}

fn date_trunc(unit: &[u8], zone: Option<String>) -> Result<Bucket, Refused> {
    let unit = text_datum(unit)
        .map(|u| u.trim().to_ascii_lowercase())
        .ok_or_else(|| Refused("the date_trunc unit is not readable".to_owned()))?;
    if !UNITS.iter().any(|(u, _)| *u == unit) {
        return refuse(format!(
            "date_trunc unit {unit:?} is not one of {}",
            UNITS.iter().map(|(u, _)| *u).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(Bucket::DateTrunc { unit, zone })
}

fn date_bin(stride: &[u8], origin: &[u8]) -> Result<Bucket, Refused> {
    let (Some(us), Some(days), Some(months), Some(origin)) = (
        stride
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_le_bytes),
        stride
            .get(8..12)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes),
        stride
            .get(12..16)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_le_bytes),
        origin
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_le_bytes),
    ) else {
        return refuse("the date_bin arguments are not readable");
    };
    if days != 0 || months != 0 || us <= 0 {
        return refuse(
            "a date_bin stride must be a positive time in hours, minutes or seconds (days and months have no fixed length)",
        );
    }
    Ok(Bucket::DateBin {
        stride_us: us,
        origin_us: origin,
    })
}

#[cfg(test)]
mod tests;
