//! The query string of a rows request, parsed and validated against the relation's columns.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::ApiError;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"rows": [...], ...}`
    Json,
    /// RFC 4180 CSV with a header row.
    Csv,
    /// A Parquet file.
    Parquet,
}

/// A filter operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `eq.v`
    Eq(String),
    /// `neq.v`
    Neq(String),
    /// `gt.v`
    Gt(String),
    /// `gte.v`
    Gte(String),
    /// `lt.v`
    Lt(String),
    /// `lte.v`
    Lte(String),
    /// `like.pattern` (`*` may stand for `%`)
    Like(String),
    /// `ilike.pattern`
    Ilike(String),
    /// `in.(a,b)`
    In(Vec<String>),
    /// `is.null`
    IsNull,
    /// `is.notnull` (also `not.is.null`)
    IsNotNull,
}

/// One `column=op.value` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The column, case kept.
    pub column: String,
    /// The operator and its value(s).
    pub op: Op,
}

/// One `order` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderBy {
    /// The column.
    pub column: String,
    /// Descending?
    pub desc: bool,
    /// `nullsfirst`/`nullslast` when given.
    pub nulls_first: Option<bool>,
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    /// From the start, or after the row a cursor points at.
    Cursor(Option<Cursor>),
    /// 1-based page of `size` rows.
    Page {
        /// The page number.
        page: i64,
        /// Rows per page.
        size: i64,
    },
}

/// An opaque cursor: after a row position (default order), after the order values of a row
/// (custom order, keyset), or an offset (custom order, as issued before keyset cursors; still
/// accepted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// After this physical row (`ctid`), for the default order.
    After(String),
    /// After the row with these order values (as text, `None` for NULL) and, when the order
    /// is not unique by itself, this `ctid`; only for the order it was issued for.
    Keyset {
        /// The order it belongs to ([`order_key`]).
        order: serde_json::Value,
        /// The last row's values of the order's columns.
        values: Vec<Option<String>>,
        /// The last row's `ctid`, when it breaks ties.
        tid: Option<String>,
    },
    /// Skip this many rows, for a custom order.
    Offset(i64),
}

/// Most order values a keyset cursor carries.
const MAX_CURSOR_VALUES: usize = 64;

/// The form of an order a keyset cursor remembers, to refuse it under another order.
pub fn order_key(order: &[OrderBy]) -> serde_json::Value {
    order
        .iter()
        .map(|o| serde_json::json!([o.column, o.desc, o.nulls_first]))
        .collect()
}

/// A `ctid` as text, `(block,offset)`: the only form a cursor may carry.
fn is_tid(tid: &str) -> bool {
    tid.starts_with('(')
        && tid.ends_with(')')
        && tid[1..tid.len() - 1]
            .split(',')
            .all(|n| n.parse::<u32>().is_ok())
        && tid.matches(',').count() == 1
}

impl Cursor {
    /// The opaque text form.
    pub fn encode(&self) -> String {
        let json = match self {
            Self::After(tid) => serde_json::json!({ "after": tid }),
            Self::Keyset { order, values, tid } => {
                serde_json::json!({ "keyset": { "order": order, "values": values, "ctid": tid } })
            }
            Self::Offset(n) => serde_json::json!({ "offset": n }),
        };
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    fn decode(text: &str) -> Result<Self, ApiError> {
        let bad =
            || ApiError::bad_request("invalid_cursor", "the cursor is not one this API issued");
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad())?;
        let json: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
        if let Some(tid) = json.get("after").and_then(|v| v.as_str()) {
            return if is_tid(tid) {
                Ok(Self::After(tid.to_owned()))
            } else {
                Err(bad())
            };
        }
        if let Some(keyset) = json.get("keyset") {
            let values = keyset
                .get("values")
                .and_then(serde_json::Value::as_array)
                .filter(|v| !v.is_empty() && v.len() <= MAX_CURSOR_VALUES)
                .ok_or_else(bad)?
                .iter()
                .map(|v| match v {
                    serde_json::Value::Null => Ok(None),
                    serde_json::Value::String(s) => Ok(Some(s.clone())),
                    _ => Err(bad()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let tid = match keyset.get("ctid") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(tid)) if is_tid(tid) => Some(tid.clone()),
                Some(_) => return Err(bad()),
            };
            let order = keyset.get("order").cloned().ok_or_else(bad)?;
            return Ok(Self::Keyset { order, values, tid });
        }
        json.get("offset")
            .and_then(serde_json::Value::as_i64)
            .filter(|n| *n >= 0)
            .map(Self::Offset)
            .ok_or_else(bad)
    }
}

/// A parsed rows request.
#[derive(Debug, Clone)]
pub struct RowsQuery {
    /// Columns to return (all when `None`).
    pub select: Option<Vec<String>>,
    /// Filters, all of which must hold.
    pub filters: Vec<Filter>,
    /// Sort order (physical order when empty).
    pub order: Vec<OrderBy>,
    /// Rows per response.
    pub limit: i64,
    /// Where to start.
    pub position: Position,
    /// Output format.
    pub format: Format,
}

/// Default rows per response.
pub const DEFAULT_LIMIT: i64 = 100;
/// Most rows in one JSON response (CSV and Parquet exports are unlimited unless asked).
pub const MAX_LIMIT: i64 = 10_000;

/// Query keys the rows route takes for itself: a column with one of these names cannot be
/// filtered (the console refuses such a filter; docs/API.md says so).
pub(crate) const RESERVED_KEYS: &[&str] = &[
    "select", "order", "limit", "cursor", "page", "size", "format",
];

fn bad(code: &'static str, detail: String) -> ApiError {
    ApiError::bad_request(code, detail)
}

fn parse_op(column: &str, text: &str) -> Result<Op, ApiError> {
    let invalid = || {
        bad(
            "invalid_filter",
            format!(
                "filter {column}={text:?} must be op.value with op one of eq, neq, gt, gte, lt, lte, like, ilike, in.(a,b), is.null, is.notnull"
            ),
        )
    };
    let (op, value) = text.split_once('.').ok_or_else(invalid)?;
    let value = value.to_owned();
    Ok(match op {
        "eq" => Op::Eq(value),
        "neq" => Op::Neq(value),
        "gt" => Op::Gt(value),
        "gte" => Op::Gte(value),
        "lt" => Op::Lt(value),
        "lte" => Op::Lte(value),
        "like" => Op::Like(value.replace('*', "%")),
        "ilike" => Op::Ilike(value.replace('*', "%")),
        "in" => {
            let inner = value
                .strip_prefix('(')
                .and_then(|v| v.strip_suffix(')'))
                .ok_or_else(invalid)?;
            let items: Vec<String> = if inner.is_empty() {
                Vec::new()
            } else {
                inner
                    .split(',')
                    .map(|s| s.trim().trim_matches('"').to_owned())
                    .collect()
            };
            Op::In(items)
        }
        "is" if value == "null" => Op::IsNull,
        "is" if value == "notnull" => Op::IsNotNull,
        "not" if value == "is.null" => Op::IsNotNull,
        _ => return Err(invalid()),
    })
}

fn parse_order(text: &str) -> Result<Vec<OrderBy>, ApiError> {
    text.split(',')
        .map(|item| {
            let mut parts = item.split('.');
            let column = parts.next().unwrap_or_default().trim().to_owned();
            if column.is_empty() {
                return Err(bad(
                    "invalid_order",
                    format!("order item {item:?} names no column"),
                ));
            }
            let mut order = OrderBy {
                column,
                desc: false,
                nulls_first: None,
            };
            for modifier in parts {
                match modifier {
                    "asc" => order.desc = false,
                    "desc" => order.desc = true,
                    "nullsfirst" => order.nulls_first = Some(true),
                    "nullslast" => order.nulls_first = Some(false),
                    other => {
                        return Err(bad(
                            "invalid_order",
                            format!(
                                "order modifier {other:?} is not asc, desc, nullsfirst or nullslast"
                            ),
                        ));
                    }
                }
            }
            Ok(order)
        })
        .collect()
}

fn parse_int(key: &str, value: &str, min: i64, max: i64) -> Result<i64, ApiError> {
    value
        .parse::<i64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            bad(
                "invalid_parameter",
                format!("{key} must be an integer from {min} to {max}"),
            )
        })
}

impl RowsQuery {
    /// Parses the query string pairs (repeated keys allowed for filters).
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ApiError> {
        let mut query = RowsQuery {
            select: None,
            filters: Vec::new(),
            order: Vec::new(),
            limit: DEFAULT_LIMIT,
            position: Position::Cursor(None),
            format: Format::Json,
        };
        let (mut page, mut size, mut cursor, mut limit) = (None, None, None, None);
        for (key, value) in pairs {
            match key.as_str() {
                "select" => {
                    let columns: Vec<String> = value
                        .split(',')
                        .map(|c| c.trim().to_owned())
                        .filter(|c| !c.is_empty())
                        .collect();
                    if columns.is_empty() {
                        return Err(bad("invalid_select", "select names no column".to_owned()));
                    }
                    query.select = Some(columns);
                }
                "order" => query.order = parse_order(value)?,
                "limit" => limit = Some(parse_int("limit", value, 1, i64::MAX)?),
                "cursor" => cursor = Some(Cursor::decode(value)?),
                "page" => page = Some(parse_int("page", value, 1, i64::MAX / MAX_LIMIT)?),
                "size" => size = Some(parse_int("size", value, 1, MAX_LIMIT)?),
                "format" => {
                    query.format = match value.as_str() {
                        "json" => Format::Json,
                        "csv" => Format::Csv,
                        "parquet" => Format::Parquet,
                        other => {
                            return Err(bad(
                                "invalid_format",
                                format!("format {other:?} is not json, csv or parquet"),
                            ));
                        }
                    }
                }
                column => query.filters.push(Filter {
                    column: column.to_owned(),
                    op: parse_op(column, value)?,
                }),
            }
        }
        if let Some(limit) = limit {
            if query.format == Format::Json && limit > MAX_LIMIT {
                return Err(bad(
                    "invalid_parameter",
                    format!("limit must be from 1 to {MAX_LIMIT}"),
                ));
            }
            query.limit = limit;
        } else if query.format != Format::Json {
            query.limit = i64::MAX; // an export is the whole result unless limited
        }
        match (page, size, cursor) {
            (Some(_), _, Some(_)) | (None, Some(_), Some(_)) => {
                return Err(bad(
                    "invalid_parameter",
                    "use either cursor or page and size, not both".to_owned(),
                ));
            }
            (Some(page), size, None) => {
                let size = size.unwrap_or(query.limit.min(MAX_LIMIT));
                query.limit = size;
                query.position = Position::Page { page, size };
            }
            (None, Some(size), None) => {
                query.limit = size;
                query.position = Position::Page { page: 1, size };
            }
            (None, None, cursor) => query.position = Position::Cursor(cursor),
        }
        Ok(query)
    }

    /// Whether `key` is a parameter rather than a filter (for documentation and tests).
    pub fn is_reserved(key: &str) -> bool {
        RESERVED_KEYS.contains(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn filters_order_select_and_paging_parse() {
        let q = RowsQuery::parse(&pairs(&[
            ("select", "a,B"),
            ("a", "gte.5"),
            ("B", "in.(x,y)"),
            ("c", "is.null"),
            ("order", "a.desc.nullslast,B"),
            ("page", "2"),
            ("size", "15"),
        ]))
        .expect("parses");
        assert_eq!(q.select, Some(vec!["a".to_owned(), "B".to_owned()]));
        assert_eq!(q.filters[0].op, Op::Gte("5".to_owned()));
        assert_eq!(
            q.filters[1].op,
            Op::In(vec!["x".to_owned(), "y".to_owned()])
        );
        assert_eq!(q.filters[2].op, Op::IsNull);
        assert!(q.order[0].desc && q.order[0].nulls_first == Some(false) && !q.order[1].desc);
        assert_eq!(q.position, Position::Page { page: 2, size: 15 });
    }

    #[test]
    fn cursors_round_trip_and_forgeries_are_refused() {
        let cursor = Cursor::After("(3,7)".to_owned());
        assert_eq!(Cursor::decode(&cursor.encode()).expect("decodes"), cursor);
        let forged = URL_SAFE_NO_PAD.encode(r#"{"after":"(1,1)); DROP TABLE x; --"}"#);
        assert!(Cursor::decode(&forged).is_err());
        assert!(Cursor::decode("garbage!").is_err());
    }

    #[test]
    fn keyset_cursors_round_trip_and_malformed_ones_are_refused() {
        let order = parse_order("a.desc,b").expect("order");
        let cursor = Cursor::Keyset {
            order: order_key(&order),
            values: vec![Some("5".to_owned()), None],
            tid: Some("(0,3)".to_owned()),
        };
        assert_eq!(Cursor::decode(&cursor.encode()).expect("decodes"), cursor);
        for forged in [
            r#"{"keyset":{"order":[],"values":[]}}"#,
            r#"{"keyset":{"order":[],"values":[1]}}"#,
            r#"{"keyset":{"order":[],"values":["1"],"ctid":"(1,1) OR true"}}"#,
            r#"{"keyset":{"values":["1"]}}"#,
        ] {
            assert!(
                Cursor::decode(&URL_SAFE_NO_PAD.encode(forged)).is_err(),
                "{forged}"
            );
        }
    }

    #[test]
    fn malformed_parameters_are_refused() {
        for bad in [
            ("a", "between.1"),
            ("limit", "0"),
            ("limit", "x"),
            ("format", "xml"),
            ("order", "a.sideways"),
            ("size", "100000"),
        ] {
            assert!(RowsQuery::parse(&pairs(&[bad])).is_err(), "{bad:?}");
        }
    }
}
