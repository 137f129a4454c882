//! The deciding layer of the tenant SQL sandbox: what PostgreSQL itself resolved a view to.
//!
//! A view is created `WITH NO DATA` (parsed and resolved, nothing executed), then, as the service
//! role and before anything of it runs, its stored query tree (`pg_rewrite.ev_action`) and its
//! recorded dependencies (`pg_depend`) are read back. Every relation must be the tenant's own,
//! every function and operator must be on the allow-list, and no type may reach the catalogs
//! (`reg*`) or XML. The decision is on object ids, so no spelling of a name (quoting, casts,
//! CTE scopes, set operations) can differ between what was checked and what runs.
//!
//! `pg_depend` alone is not enough: dependencies on objects created by `initdb` (every
//! built-in function and catalog) are "pinned" and never recorded. The query tree names them
//! all, in PostgreSQL's node text format, which this module reads with the tokenising rules of
//! PostgreSQL's own reader (`pg_strtok`): user-given strings (aliases, column names) are written
//! with their spaces and brackets backslash-escaped and never as a bare number, so they cannot
//! forge or hide a field.

use std::collections::BTreeSet;

use sqlx::PgConnection;

use crate::db::ident::Ident;

/// The kinds of object a query tree field refers to by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Relation,
    Function,
    Operator,
    Type,
}

/// Fields that hold object ids, by kind. Field names are matched case-insensitively; every
/// field whose name contains `type` (but not `typmod`) holds type ids (or a small enum, which
/// names no type and is ignored by the check).
fn field_kind(field: &str) -> Option<Kind> {
    let field = field.to_ascii_lowercase();
    match field.as_str() {
        "relid" | "resorigtbl" => Some(Kind::Relation),
        "funcid" | "aggfnoid" | "winfnoid" | "opfuncid" | "hashfuncid" | "negfuncid"
        | "tsmhandler" | "startinrangefunc" | "endinrangefunc" => Some(Kind::Function),
        "opno" | "opnos" | "eqop" | "sortop" => Some(Kind::Operator),
        _ if field.contains("type") && !field.contains("typmod") => Some(Kind::Type),
        _ => None,
    }
}

/// Node types refused outright: XML (`XMLTABLE`, `xmlelement`, ...) and table functions parse
/// documents, `nextval` moves sequences, and none of them is needed for a report.
const REFUSED_NODES: &[(&str, &str)] = &[
    ("TABLEFUNC", "XMLTABLE and JSON_TABLE are not allowed"),
    ("XMLEXPR", "XML functions are not allowed"),
    ("NEXTVALUEEXPR", "sequences are not allowed"),
    ("CURRENTOFEXPR", "cursors are not allowed"),
];

/// Object ids a stored query tree refers to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct References {
    /// Relations (`pg_class` ids).
    pub relations: BTreeSet<u32>,
    /// Functions (`pg_proc` ids).
    pub functions: BTreeSet<u32>,
    /// Operators (`pg_operator` ids).
    pub operators: BTreeSet<u32>,
    /// Types (`pg_type` ids), plus small enum values that name no type.
    pub types: BTreeSet<u32>,
    /// Uses `CURRENT_TIMESTAMP`-like keywords (time-dependent).
    pub reads_clock: bool,
    /// Types that text is converted to at run time through their input function
    /// (`CoerceViaIO`): a date/time input reads the clock for `'now'` or `'today'`.
    pub io_inputs: BTreeSet<u32>,
}

/// Why a tree cannot be accepted before looking anything up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unverifiable(pub String);

/// Splits PostgreSQL node text into tokens the way `pg_strtok` does: whitespace separates,
/// brackets and braces are tokens of their own, a backslash protects the next character.
pub(crate) fn tokens(text: &str) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\n' | b'\t' | b'\r' => i += 1,
            b'(' | b')' | b'{' | b'}' => {
                out.push(&text[i..=i]);
                i += 1;
            }
            _ => {
                let start = i;
                while i < bytes.len()
                    && !matches!(
                        bytes[i],
                        b' ' | b'\n' | b'\t' | b'\r' | b'(' | b')' | b'{' | b'}'
                    )
                {
                    i += if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        2
                    } else {
                        1
                    };
                }
                // A backslash before a multi-byte character splits no character: every byte
                // that ends a token is ASCII.
                out.push(text.get(start..i.min(bytes.len())).unwrap_or(""));
            }
        }
    }
    out
}

/// Reads every object id out of `ev_action` (the node text of a stored rule's query).
pub fn scan(node_text: &str) -> Result<References, Unverifiable> {
    let tokens = tokens(node_text);
    let mut refs = References::default();
    // The labels of the nodes the scan is inside, innermost last.
    let mut nodes: Vec<&str> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i];
        i += 1;
        if token == "}" {
            nodes.pop();
            continue;
        }
        if token == "{" {
            nodes.push(tokens.get(i).copied().unwrap_or(""));
            if let Some(label) = tokens.get(i) {
                if let Some((_, why)) = REFUSED_NODES.iter().find(|(node, _)| node == label) {
                    return Err(Unverifiable((*why).to_owned()));
                }
                if *label == "SQLVALUEFUNCTION" {
                    refs.reads_clock = true;
                }
            }
            continue;
        }
        let Some(field) = token.strip_prefix(':') else {
            continue;
        };
        let Some(kind) = field_kind(field) else {
            continue;
        };
        let mut ids = Vec::new();
        match tokens.get(i).copied() {
            Some("<>") => i += 1,
            Some("(") => {
                // An id list: `(o 1 2 3)`.
                let mut j = i + 1;
                if tokens.get(j).is_some_and(|t| *t == "o" || *t == "i") {
                    j += 1;
                }
                while let Some(id) = tokens.get(j).and_then(|t| t.parse::<u32>().ok()) {
                    ids.push(id);
                    j += 1;
                }
                if tokens.get(j) == Some(&")") {
                    i = j + 1;
                } else if kind != Kind::Type {
                    return Err(Unverifiable(format!(
                        "the stored form of the field {field} is not a list of ids"
                    )));
                }
            }
            Some(value) => match value.parse::<u32>() {
                Ok(id) => {
                    ids.push(id);
                    i += 1;
                }
                // A field holding a node or an enum word; only id fields must be ids.
                Err(_) if kind == Kind::Type => {}
                Err(_) => {
                    return Err(Unverifiable(format!(
                        "a name in the query looks like the internal field {field}; rename it"
                    )));
                }
            },
            None => {}
        }
        if kind == Kind::Type
            && field.eq_ignore_ascii_case("resulttype")
            && nodes.last() == Some(&"COERCEVIAIO")
        {
            refs.io_inputs
                .extend(ids.iter().copied().filter(|id| *id != 0));
        }
        let set = match kind {
            Kind::Relation => &mut refs.relations,
            Kind::Function => &mut refs.functions,
            Kind::Operator => &mut refs.operators,
            Kind::Type => &mut refs.types,
        };
        set.extend(ids.into_iter().filter(|id| *id != 0));
    }
    Ok(refs)
}

/// What the check found the view to be, when it is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The tenant relations it reads, by name.
    pub relations: Vec<String>,
    /// Calls a volatile function or reads the clock.
    pub volatile: bool,
}

/// A refusal with the reason, for the 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Functions PostgreSQL marks stable whose result depends only on settings the service fixes
/// for every refresh (time zone, date style, text search configuration), never on the clock
/// or the transaction, in every stable overload of the name. Any other stable function
/// (`age(timestamp)` reads the current date; a `time` to `timetz` cast and `timezone(text,
/// timetz)`, `AT TIME ZONE` on a `timetz`, today's offset) makes a view time-dependent, so a
/// function PostgreSQL adds later counts as time-dependent until it is vetted here. Functions that implement a
/// `pg_catalog` operator are zone-aware comparisons and arithmetic, and count as settings-only.
pub const SETTINGS_ONLY_STABLE: &[&str] = &[
    "array_to_json",
    "array_to_string",
    "concat",
    "concat_ws",
    "date",
    "date_part",
    "date_trunc",
    "extract",
    "format",
    "generate_series",
    "in_range",
    "json_agg",
    "json_build_array",
    "json_build_object",
    "json_object_agg",
    "jsonb_agg",
    "jsonb_build_array",
    "jsonb_build_object",
    "length",
    "make_timestamptz",
    "money",
    "numeric",
    "overlaps",
    "quote_literal",
    "quote_nullable",
    "row_to_json",
    "time",
    "timestamp",
    "timestamptz",
    "to_char",
    "to_date",
    "to_json",
    "to_jsonb",
    "to_number",
    "to_timestamp",
];

/// Functions whose result changes between calls; a view using one refreshes every time.
pub const CLOCK_FUNCTIONS: &[&str] = &[
    "now",
    "clock_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "timeofday",
    "random",
    "gen_random_uuid",
];

/// Checks the just-created, unpopulated materialized view `schema.name` by what PostgreSQL
/// resolved it to. Runs as the service role, inside the creating transaction, so a refusal
/// rolls the view back with everything else.
pub async fn check(
    conn: &mut PgConnection,
    schema: &Ident,
    name: &Ident,
    allowed_functions: &[&str],
) -> Result<Result<Resolved, Refused>, sqlx::Error> {
    let (rule, node_text, populated): (i64, String, bool) = sqlx::query_as(
        "SELECT r.oid::int8, r.ev_action::text, c.relispopulated
         FROM pg_catalog.pg_class c
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         JOIN pg_catalog.pg_rewrite r ON r.ev_class = c.oid AND r.rulename = '_RETURN'
         WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'm'",
    )
    .bind(schema.as_str())
    .bind(name.as_str())
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| sqlx::Error::RowNotFound)?;
    if populated {
        return Ok(Err(Refused(
            "the query must be a single SELECT; it may not change how the view is created"
                .to_owned(),
        )));
    }
    let refs = match scan(&node_text) {
        Ok(refs) => refs,
        Err(Unverifiable(why)) => return Ok(Err(Refused(why))),
    };
    let as_oids = |set: &BTreeSet<u32>| set.iter().map(|id| i64::from(*id)).collect::<Vec<_>>();
    let refusals: Vec<(String, String)> = sqlx::query_as(include_str!("resolved.sql"))
        .bind(rule)
        .bind(as_oids(&refs.relations))
        .bind(as_oids(&refs.functions))
        .bind(as_oids(&refs.operators))
        .bind(as_oids(&refs.types))
        .bind(schema.as_str())
        .bind(allowed_functions)
        .bind(name.as_str())
        .fetch_all(&mut *conn)
        .await?;
    if let Some((kind, what)) = refusals.into_iter().next() {
        return Ok(Err(Refused(match kind.as_str() {
            "relation" => format!("relation {what} is not one of your tables or views"),
            "function" => format!("function {what} is not allowed"),
            "operator" => format!("operator {what} is not allowed"),
            "type" => format!("the type {what} is not allowed"),
            _ => format!("the query depends on {what}, which is not allowed"),
        })));
    }
    // Time-dependent: a volatile or clock function, a stable one not vetted as settings-only,
    // or text read at run time by an input function PostgreSQL does not mark immutable
    // (`'now'::text::date` is today's date, and so is a column holding 'today'). Arrays,
    // ranges, rows and domains are followed to the types of their parts; of the stable input
    // functions, only those containers' own, `interval_in` and `cash_in` (no clock: styles
    // and the monetary locale) are settings-only.
    let (relations, volatile): (Vec<String>, bool) = sqlx::query_as(
        "WITH RECURSIVE io(oid) AS (
             SELECT unnest($5::int8[])::oid
             UNION
             SELECT x.oid FROM io JOIN pg_catalog.pg_type t ON t.oid = io.oid,
             LATERAL (SELECT t.typelem WHERE t.typelem <> 0
                      UNION ALL SELECT t.typbasetype WHERE t.typbasetype <> 0
                      UNION ALL SELECT r.rngsubtype FROM pg_catalog.pg_range r WHERE r.rngtypid = t.oid
                      UNION ALL SELECT r.rngtypid FROM pg_catalog.pg_range r WHERE r.rngmultitypid = t.oid
                      UNION ALL SELECT a.atttypid FROM pg_catalog.pg_attribute a
                                WHERE t.typrelid <> 0 AND a.attrelid = t.typrelid AND a.attnum > 0
                      ) AS x(oid)
         )
         SELECT (SELECT COALESCE(array_agg(relname::text ORDER BY relname), '{}')
                 FROM pg_catalog.pg_class WHERE oid = ANY($1::int8[]::oid[]) AND relname <> $4),
                (SELECT COALESCE(bool_or(p.proname = ANY($3) OR p.provolatile = 'v'
                     OR (p.provolatile = 's' AND NOT p.proname = ANY($6)
                         AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_operator o
                                         WHERE o.oprcode = p.oid
                                           AND o.oprnamespace = 'pg_catalog'::regnamespace))), false)
                 FROM pg_catalog.pg_proc p WHERE p.oid = ANY($2::int8[]::oid[]))
                OR EXISTS (SELECT 1 FROM io JOIN pg_catalog.pg_type t ON t.oid = io.oid
                           JOIN pg_catalog.pg_proc i ON i.oid = t.typinput
                           WHERE i.provolatile <> 'i'
                             AND i.proname NOT IN ('array_in', 'record_in', 'range_in',
                                 'multirange_in', 'domain_in', 'interval_in', 'cash_in'))",
    )
    .bind(as_oids(&refs.relations))
    .bind(as_oids(&refs.functions))
    .bind(CLOCK_FUNCTIONS)
    .bind(name.as_str())
    .bind(as_oids(&refs.io_inputs))
    .bind(SETTINGS_ONLY_STABLE)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Ok(Resolved {
        relations,
        volatile: volatile || refs.reads_clock,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_postgres_escaping() {
        assert_eq!(
            tokens(r#"{ALIAS :aliasname a\ :relid\ 1259 :colnames ("x\(y" "z")}"#),
            [
                "{",
                "ALIAS",
                ":aliasname",
                r"a\ :relid\ 1259",
                ":colnames",
                "(",
                r#""x\(y""#,
                r#""z""#,
                ")",
                "}"
            ]
        );
    }

    #[test]
    fn ids_of_every_kind_are_read_wherever_they_are_nested() {
        let text = r#"({QUERY :commandType 1 :rtable ({RANGETBLENTRY :alias <> :rtekind 0 :relid 16400 :relkind m}
            {RANGETBLENTRY :rtekind 1 :subquery {QUERY :rtable ({RANGETBLENTRY :relid 1259})}})
            :targetList ({TARGETENTRY :expr {FUNCEXPR :funcid 1299 :funcresulttype 1184 :args ({OPEXPR :opno 96 :opfuncid 0 :opresulttype 16})}
            :resname now :resorigtbl 0} {TARGETENTRY :expr {ROWCOMPAREEXPR :opnos (o 97 98) :inputcollids (o 0 0)}})
            :sortClause ({SORTGROUPCLAUSE :eqop 410 :sortop 412}) :ctecoltypes (o 2205) :jointype 0})"#;

        let refs = scan(text).expect("scans");

        assert_eq!(
            refs.relations.into_iter().collect::<Vec<_>>(),
            [1259, 16400]
        );
        assert_eq!(refs.functions.into_iter().collect::<Vec<_>>(), [1299]);
        assert_eq!(
            refs.operators.into_iter().collect::<Vec<_>>(),
            [96, 97, 98, 410, 412]
        );
        assert!(refs.types.contains(&2205) && refs.types.contains(&1184));
    }

    #[test]
    fn a_name_cannot_forge_or_hide_a_field() {
        // An alias spelled like a field, followed by what PostgreSQL always writes next.
        let forged = r#"{ALIAS :aliasname :relid :colnames <>}"#;
        assert!(scan(forged).is_err());
        // Escaped spaces keep a name and a number in one token: nothing is read from it.
        let hidden = r#"{TARGETENTRY :resname x\ :relid\ 1259 :resorigtbl 0}"#;
        assert!(scan(hidden).expect("scans").relations.is_empty());
    }

    #[test]
    fn xml_and_table_functions_are_refused() {
        assert!(
            scan("{QUERY :rtable ({RANGETBLENTRY :tablefunc {TABLEFUNC :ns_uris <>}})}").is_err()
        );
        assert!(scan("{QUERY :targetList ({TARGETENTRY :expr {XMLEXPR :op 0}})}").is_err());
    }

    #[test]
    fn only_the_result_types_of_run_time_text_conversions_are_io_inputs() {
        let text = r#"{QUERY :targetList ({TARGETENTRY :expr {COERCEVIAIO :arg {FUNCEXPR :funcid 1 :funcresulttype 25 :args ({VAR :vartype 1184})} :resulttype 1082 :resultcollid 0} :resname x\ :resulttype\ 7}
            {TARGETENTRY :expr {RELABELTYPE :arg {COERCEVIAIO :arg {CONST :consttype 25} :resulttype 1114} :resulttype 25}})}"#;

        let refs = scan(text).expect("scans");

        assert_eq!(refs.io_inputs.into_iter().collect::<Vec<_>>(), [1082, 1114]);
    }

    #[test]
    fn clock_keywords_make_a_view_volatile() {
        assert!(
            scan("{SQLVALUEFUNCTION :op 3 :type 1184 :typmod -1}")
                .expect("scans")
                .reads_clock
        );
    }
}
