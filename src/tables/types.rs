//! Column types: the PostgreSQL names users declare, the mapping from Parquet/Arrow types when
//! they declare nothing, and the Arrow type each PostgreSQL type is encoded from in binary COPY.
//! The mapping table is documented in `docs/TYPES.md`.

use std::fmt;

use arrow::compute::can_cast_types;
use arrow::datatypes::{DataType, TimeUnit};

/// A column type of a tenant table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgType {
    /// `smallint`
    Int2,
    /// `integer`
    Int4,
    /// `bigint`
    Int8,
    /// `real`
    Float4,
    /// `double precision`
    Float8,
    /// `numeric`, optionally `numeric(precision, scale)`.
    Numeric(Option<(u8, i8)>),
    /// `text`
    Text,
    /// `varchar`, optionally with a length limit in characters.
    Varchar(Option<u32>),
    /// `char(n)`
    Char(u32),
    /// `boolean`
    Bool,
    /// `date`
    Date,
    /// `time` (without time zone)
    Time,
    /// `timestamp` (without time zone)
    Timestamp,
    /// `timestamptz`
    Timestamptz,
    /// `interval`
    Interval,
    /// `uuid`
    Uuid,
    /// `bytea`
    Bytea,
    /// `jsonb`
    Jsonb,
}

impl fmt::Display for PgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int2 => f.write_str("smallint"),
            Self::Int4 => f.write_str("integer"),
            Self::Int8 => f.write_str("bigint"),
            Self::Float4 => f.write_str("real"),
            Self::Float8 => f.write_str("double precision"),
            Self::Numeric(None) => f.write_str("numeric"),
            Self::Numeric(Some((p, s))) => write!(f, "numeric({p},{s})"),
            Self::Text => f.write_str("text"),
            Self::Varchar(None) => f.write_str("varchar"),
            Self::Varchar(Some(n)) => write!(f, "varchar({n})"),
            Self::Char(n) => write!(f, "char({n})"),
            Self::Bool => f.write_str("boolean"),
            Self::Date => f.write_str("date"),
            Self::Time => f.write_str("time"),
            Self::Timestamp => f.write_str("timestamp"),
            Self::Timestamptz => f.write_str("timestamptz"),
            Self::Interval => f.write_str("interval"),
            Self::Uuid => f.write_str("uuid"),
            Self::Bytea => f.write_str("bytea"),
            Self::Jsonb => f.write_str("jsonb"),
        }
    }
}

/// Lists, structs and maps: stored as `jsonb`.
pub fn is_nested(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::List(_)
            | DataType::LargeList(_)
            | DataType::ListView(_)
            | DataType::LargeListView(_)
            | DataType::FixedSizeList(_, _)
            | DataType::Struct(_)
            | DataType::Map(_, _)
    )
}

/// Largest `varchar(n)`/`char(n)` length PostgreSQL accepts.
const MAX_CHAR_LENGTH: u32 = 10_485_760;

fn parse_args(rest: &str) -> Result<Option<Vec<i64>>, String> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(None);
    }
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised modifier, found {rest:?}"))?;
    inner
        .split(',')
        .map(|n| {
            n.trim()
                .parse::<i64>()
                .map_err(|_| format!("{:?} is not a number", n.trim()))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

impl PgType {
    /// Parses a type as users write it in PostgreSQL (`int`, `varchar(256)`, `numeric(10,2)`,
    /// `double precision`, ...), case-insensitively.
    pub fn parse(declared: &str) -> Result<Self, String> {
        let lowered = declared.trim().to_ascii_lowercase();
        let squashed = lowered.split_whitespace().collect::<Vec<_>>().join(" ");
        let (name, rest) = match squashed.find('(') {
            Some(i) => (squashed[..i].trim(), &squashed[i..]),
            None => (squashed.as_str(), ""),
        };
        let args = parse_args(rest)?;
        let no_args = |t: PgType| match &args {
            None => Ok(t),
            Some(_) => Err(format!("type {name} takes no modifier")),
        };
        let length = |args: &Option<Vec<i64>>| -> Result<Option<u32>, String> {
            match args.as_deref() {
                None => Ok(None),
                Some([n]) if (1..=i64::from(MAX_CHAR_LENGTH)).contains(n) => {
                    Ok(Some(u32::try_from(*n).map_err(|e| e.to_string())?))
                }
                Some(_) => Err(format!(
                    "{name} takes one length from 1 to {MAX_CHAR_LENGTH}"
                )),
            }
        };
        match name {
            "smallint" | "int2" => no_args(Self::Int2),
            "int" | "integer" | "int4" => no_args(Self::Int4),
            "bigint" | "int8" => no_args(Self::Int8),
            "real" | "float4" => no_args(Self::Float4),
            "double precision" | "float8" | "float" => no_args(Self::Float8),
            "numeric" | "decimal" => match args.as_deref() {
                None => Ok(Self::Numeric(None)),
                Some([p]) | Some([p, 0]) if (1..=38).contains(p) => Ok(Self::Numeric(Some((
                    u8::try_from(*p).map_err(|e| e.to_string())?,
                    0,
                )))),
                Some([p, s]) if (1..=38).contains(p) && (0..=*p).contains(s) => {
                    Ok(Self::Numeric(Some((
                        u8::try_from(*p).map_err(|e| e.to_string())?,
                        i8::try_from(*s).map_err(|e| e.to_string())?,
                    ))))
                }
                Some(_) => Err(
                    "numeric takes a precision from 1 to 38 and a scale from 0 to the precision"
                        .to_owned(),
                ),
            },
            "text" => no_args(Self::Text),
            "varchar" | "character varying" => Ok(Self::Varchar(length(&args)?)),
            "char" | "character" => Ok(Self::Char(length(&args)?.unwrap_or(1))),
            "boolean" | "bool" => no_args(Self::Bool),
            "date" => no_args(Self::Date),
            "time" | "time without time zone" => no_args(Self::Time),
            "timestamp" | "timestamp without time zone" => no_args(Self::Timestamp),
            "timestamptz" | "timestamp with time zone" => no_args(Self::Timestamptz),
            "interval" => no_args(Self::Interval),
            "uuid" => no_args(Self::Uuid),
            "bytea" => no_args(Self::Bytea),
            "jsonb" | "json" => no_args(Self::Jsonb),
            _ => Err(format!(
                "unknown column type {declared:?}; use one of int, smallint, bigint, real, double precision, numeric(p,s), text, varchar(n), char(n), boolean, date, time, timestamp, timestamptz, interval, uuid, bytea, jsonb"
            )),
        }
    }

    /// The type a column of Arrow type `data_type` gets when the user declares none.
    /// `is_uuid` says the Parquet schema annotates the column as UUID.
    pub fn infer(data_type: &DataType, is_uuid: bool) -> Result<Self, String> {
        Ok(match data_type {
            DataType::Int8 | DataType::Int16 | DataType::UInt8 => Self::Int2,
            DataType::Int32 | DataType::UInt16 => Self::Int4,
            DataType::Int64 | DataType::UInt32 => Self::Int8,
            DataType::UInt64 => Self::Numeric(Some((20, 0))),
            DataType::Float16 | DataType::Float32 => Self::Float4,
            DataType::Float64 => Self::Float8,
            DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
                Self::Numeric(Some((*p, *s)))
            }
            DataType::Decimal256(p, s) if *p <= 38 => Self::Numeric(Some((*p, *s))),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
                Self::Text
            }
            DataType::Dictionary(_, value) => return Self::infer(value, is_uuid),
            DataType::Boolean => Self::Bool,
            DataType::Date32 | DataType::Date64 => Self::Date,
            DataType::Time32(_) | DataType::Time64(_) => Self::Time,
            DataType::Timestamp(_, None) => Self::Timestamp,
            DataType::Timestamp(_, Some(_)) => Self::Timestamptz,
            DataType::Duration(_) => Self::Interval,
            DataType::FixedSizeBinary(16) if is_uuid => Self::Uuid,
            DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_) => Self::Bytea,
            nested if is_nested(nested) => Self::Jsonb,
            other => return Err(format!("the Parquet/Arrow type {other} is not supported")),
        })
    }

    /// The Arrow type whose binary COPY encoding this column receives; `None` for types that
    /// are encoded from text (`jsonb`) or raw bytes (`uuid`, `bytea`).
    pub fn arrow_target(self, source: &DataType) -> DataType {
        match self {
            Self::Int2 => DataType::Int16,
            Self::Int4 => DataType::Int32,
            Self::Int8 => DataType::Int64,
            Self::Float4 => DataType::Float32,
            Self::Float8 => DataType::Float64,
            Self::Numeric(Some((p, s))) => DataType::Decimal128(p, s),
            Self::Numeric(None) => match source {
                DataType::Decimal32(p, s)
                | DataType::Decimal64(p, s)
                | DataType::Decimal128(p, s) => DataType::Decimal128(*p, *s),
                DataType::Decimal256(p, s) => DataType::Decimal128((*p).min(38), *s),
                DataType::UInt64 => DataType::UInt64,
                DataType::Float16 | DataType::Float32 | DataType::Float64 => {
                    DataType::Decimal128(38, 10)
                }
                _ => DataType::Decimal128(38, 0),
            },
            Self::Text | Self::Varchar(_) | Self::Char(_) | Self::Jsonb => DataType::Utf8,
            Self::Bool => DataType::Boolean,
            Self::Date => DataType::Date32,
            Self::Time => DataType::Time64(TimeUnit::Microsecond),
            Self::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            Self::Timestamptz => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Self::Interval => DataType::Duration(TimeUnit::Microsecond),
            Self::Uuid | Self::Bytea => DataType::Binary,
        }
    }
}

/// The type of the values: a dictionary's value type, any other type itself.
pub fn value_type(data_type: &DataType) -> &DataType {
    match data_type {
        DataType::Dictionary(_, value) => value_type(value),
        other => other,
    }
}

/// Any of Arrow's string types.
pub fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// Any of Arrow's binary types.
fn is_binary(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    )
}

/// Whether values of `source` can become `pg` values: only the conversions PostgreSQL itself
/// would make, and of those only the ones Arrow can make.
pub fn check_castable(source: &DataType, pg: PgType) -> Result<(), String> {
    let source = value_type(source);
    let ok = match pg {
        PgType::Jsonb => {
            is_nested(source)
                || is_string(source)
                || source.is_numeric()
                || *source == DataType::Boolean
        }
        PgType::Uuid => matches!(source, DataType::FixedSizeBinary(16)) || is_string(source),
        PgType::Bytea => is_binary(source) || is_string(source),
        PgType::Text | PgType::Varchar(_) | PgType::Char(_) => {
            is_nested(source) || can_cast_types(source, &DataType::Utf8)
        }
        // Only the conversions PostgreSQL itself would make (no integer to date, say), then
        // only those Arrow can make.
        other => {
            let family_ok = match other {
                PgType::Int2
                | PgType::Int4
                | PgType::Int8
                | PgType::Float4
                | PgType::Float8
                | PgType::Numeric(_) => source.is_numeric() || is_string(source),
                PgType::Bool => {
                    *source == DataType::Boolean || source.is_integer() || is_string(source)
                }
                PgType::Date | PgType::Timestamp | PgType::Timestamptz => {
                    source.is_temporal()
                        && !matches!(
                            source,
                            DataType::Time32(_)
                                | DataType::Time64(_)
                                | DataType::Duration(_)
                                | DataType::Interval(_)
                        )
                        || is_string(source)
                }
                PgType::Time => {
                    matches!(source, DataType::Time32(_) | DataType::Time64(_)) || is_string(source)
                }
                PgType::Interval => matches!(source, DataType::Duration(_)),
                _ => false,
            };
            family_ok && can_cast_types(source, &other.arrow_target(source))
        }
    };
    if ok {
        Ok(())
    } else {
        Err("no conversion exists".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_names_users_write_parse() {
        let cases = [
            ("int", PgType::Int4),
            ("INTEGER", PgType::Int4),
            ("int8", PgType::Int8),
            ("double  precision", PgType::Float8),
            ("numeric(10, 2)", PgType::Numeric(Some((10, 2)))),
            ("decimal", PgType::Numeric(None)),
            ("varchar(256)", PgType::Varchar(Some(256))),
            ("char(3)", PgType::Char(3)),
            ("bool", PgType::Bool),
            ("timestamptz", PgType::Timestamptz),
            ("timestamp with time zone", PgType::Timestamptz),
            ("uuid", PgType::Uuid),
            ("jsonb", PgType::Jsonb),
        ];
        for (text, expected) in cases {
            assert_eq!(PgType::parse(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn nonsense_types_are_refused_with_a_reason() {
        for bad in [
            "integer(3)",
            "varchar(0)",
            "varchar(x)",
            "numeric(50)",
            "numeric(5,6)",
            "money",
            "int; drop",
        ] {
            assert!(PgType::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn arrow_types_map_to_the_documented_postgres_types() {
        assert_eq!(
            PgType::infer(&DataType::UInt64, false),
            Ok(PgType::Numeric(Some((20, 0))))
        );
        assert_eq!(
            PgType::infer(
                &DataType::Timestamp(TimeUnit::Nanosecond, Some("+00:00".into())),
                false
            ),
            Ok(PgType::Timestamptz)
        );
        assert_eq!(
            PgType::infer(&DataType::FixedSizeBinary(16), true),
            Ok(PgType::Uuid)
        );
        assert_eq!(
            PgType::infer(&DataType::FixedSizeBinary(16), false),
            Ok(PgType::Bytea)
        );
        assert_eq!(
            PgType::infer(
                &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                false
            ),
            Ok(PgType::Text)
        );
        assert!(PgType::infer(&DataType::Decimal256(60, 2), false).is_err());
    }
}
