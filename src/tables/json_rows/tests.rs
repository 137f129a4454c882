//! Unit tests of the JSON rows decoder (kept apart so the stage reads on one screen).

use super::*;

fn table() -> Vec<(String, PgType)> {
    [
        ("id", PgType::Int8),
        ("small", PgType::Int2),
        ("ok", PgType::Bool),
        ("day", PgType::Date),
        ("at", PgType::Timestamptz),
        ("price", PgType::Numeric(Some((6, 2)))),
        ("score", PgType::Float8),
    ]
    .into_iter()
    .map(|(name, pg)| (name.to_owned(), pg))
    .collect()
}

fn refusal(body: &str, ndjson: bool) -> IngestError {
    json_rows(body.as_bytes(), ndjson, &table())
        .err()
        .unwrap_or_else(|| panic!("{body} was accepted"))
}

#[test]
fn a_refused_value_names_its_row_column_value_and_type_in_plain_words() {
    let cases = [
        (
            r#"[{"id": 1}, {"id": 2}, {"id": 3, "day": "not a date"}]"#,
            r#"row 3, column "day": "not a date" is not a valid date; expected a date such as "2026-01-31""#,
            (3, "day", r#""not a date""#, "date"),
        ),
        (
            r#"[{"id": 1}, {"small": 3000000000}]"#,
            r#"row 2, column "small": 3000000000 is out of range for smallint (-32768 to 32767)"#,
            (2, "small", "3000000000", "smallint"),
        ),
        (
            r#"[{"id": 1}, {"id": 2, "ok": "maybe"}]"#,
            r#"row 2, column "ok": "maybe" is not a valid boolean; expected true or false"#,
            (2, "ok", r#""maybe""#, "boolean"),
        ),
        (
            r#"[{"at": "yesterday"}]"#,
            r#"row 1, column "at": "yesterday" is not a valid timestamptz; expected a date and time such as "2026-01-31T10:00:00Z""#,
            (1, "at", r#""yesterday""#, "timestamptz"),
        ),
        (
            r#"[{"id": 1}, {"price": 123456789}]"#,
            r#"row 2, column "price": 123456789 does not fit numeric(6,2): at most 4 digits before the decimal point"#,
            (2, "price", "123456789", "numeric(6,2)"),
        ),
        (
            r#"[{"id": 1}, {"score": [1, 2]}]"#,
            r#"row 2, column "score": [1,2] is an array; a double precision column takes a single value"#,
            (2, "score", "[1,2]", "double precision"),
        ),
        (
            r#"[{"id": 1}, {"score": "many"}]"#,
            r#"row 2, column "score": "many" is not a valid double precision; expected a number"#,
            (2, "score", r#""many""#, "double precision"),
        ),
    ];
    for (body, message, (row, column, value, expected_type)) in cases {
        let error = refusal(body, false);
        assert_eq!(error.to_string(), message, "{body}");
        match error {
            IngestError::InvalidValue {
                row: r,
                column: c,
                value: v,
                expected_type: t,
                ..
            } => assert_eq!(
                (r, c.as_str(), v.as_deref(), t.as_str()),
                (row, column, Some(value), expected_type),
                "{body}"
            ),
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn the_row_of_a_refused_value_counts_rows_not_columns_or_lines() {
    // Past the first batch: the decoder finds the bad date only when it flushes.
    let mut rows: Vec<serde_json::Value> = (0..BATCH_ROWS + 10)
        .map(|i| serde_json::json!({"id": i, "small": 1, "ok": true, "day": "2026-01-01"}))
        .collect();
    rows[BATCH_ROWS + 4]["day"] = serde_json::json!("2026-13-45");
    let error = refusal(&serde_json::Value::Array(rows).to_string(), false);
    assert!(
        error.to_string().starts_with(&format!(
            "row {}, column \"day\": \"2026-13-45\"",
            BATCH_ROWS + 5
        )),
        "{error}"
    );
    // NDJSON: blank lines are not rows.
    let error = refusal("{\"id\": 1}\n\n{\"id\": 2}\n{\"small\": 40000}\n", true);
    assert!(
        error
            .to_string()
            .starts_with("row 3, column \"small\": 40000"),
        "{error}"
    );
}

#[test]
fn the_decoders_own_words_never_reach_the_client() {
    for body in [
        r#"[{"day": "x"}]"#,
        r#"[{"ok": 3}]"#,
        r#"[{"id": {"a": 1}}]"#,
        r#"[{"price": "abc"}]"#,
    ] {
        let text = refusal(body, false).to_string();
        for jargon in [
            "whilst",
            "Json error",
            "Parser error",
            "Date32",
            "Int64",
            "Decimal128",
        ] {
            assert!(!text.contains(jargon), "{body}: {text}");
        }
    }
}

#[test]
fn a_refused_value_of_megabytes_is_quoted_by_its_start_only() {
    let huge = "\u{1}".repeat(1 << 18);
    for (body, column) in [
        (format!(r#"[{{"day": "{huge}"}}]"#), "day"),
        (format!(r#"[{{"id": "1.{}"}}]"#, "5".repeat(1 << 18)), "id"),
        (format!(r#"[{{"ok": ["{huge}"]}}]"#), "ok"),
        (
            format!(r#"[{{"price": "{}"}}]"#, "9".repeat(1 << 18)),
            "price",
        ),
    ] {
        let body = body.replace('\u{1}', "\\u0001");
        match refusal(&body, false) {
            error @ IngestError::InvalidValue { .. } => {
                let text = error.to_string();
                let IngestError::InvalidValue {
                    column: got, value, ..
                } = error
                else {
                    unreachable!()
                };
                assert_eq!(got, column);
                let value = value.expect("a value");
                assert!(value.ends_with("..."), "{column}: {value}");
                assert!(
                    value.chars().count() <= MAX_SHOWN_VALUE_CHARS + 3,
                    "{column}: {value}"
                );
                assert!(text.len() < 400, "{column}: {} bytes", text.len());
            }
            other => panic!("{column}: {other:?}"),
        }
    }
}
