//! Table names: `^[A-Za-z_][A-Za-z0-9_]{0,62}$`, folded to lower case as PostgreSQL folds
//! unquoted names (so `SELECT * FROM MyTable` finds them), never a reserved word or `pg_*`.

use crate::db::ident::Ident;
use crate::error::ApiError;

/// PostgreSQL's reserved key words: as unquoted names in a view's SQL they would not parse.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
];

/// Validates and folds a table name.
pub fn table_name(raw: &str) -> Result<Ident, ApiError> {
    let bad = |why: &str| {
        ApiError::bad_request("invalid_table_name", format!("table name {raw:?} {why}"))
    };
    let mut chars = raw.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(bad(
            "must start with a letter or _ and hold only letters, digits and _",
        ));
    }
    if raw.len() > 63 {
        return Err(bad("is longer than 63 characters"));
    }
    let folded = raw.to_ascii_lowercase();
    if RESERVED.contains(&folded.as_str()) {
        return Err(bad("is a reserved SQL word"));
    }
    if folded.starts_with("pg_") {
        return Err(bad("starts with pg_, which PostgreSQL reserves"));
    }
    Ident::new(folded).map_err(|_| bad("is not a valid name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fold_to_lower_case() {
        assert_eq!(
            table_name("CallRecords").expect("valid").as_str(),
            "callrecords"
        );
        assert_eq!(table_name("_x1").expect("valid").as_str(), "_x1");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "",
            "1abc",
            "a-b",
            "a b",
            "select",
            "USER",
            "pg_catalog",
            "x\"y",
            &"a".repeat(64),
        ] {
            assert!(table_name(bad).is_err(), "{bad:?}");
        }
    }
}
