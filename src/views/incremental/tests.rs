use super::*;

fn inc(bucket: &str) -> Incremental {
    Incremental {
        bucket_column: bucket.to_owned(),
        source_table: "calls".to_owned(),
        source_column: "record_timestamp".to_owned(),
        with_time_zone: false,
        bucket: Bucket::DateTrunc {
            unit: "hour".to_owned(),
            zone: None,
        },
    }
}

#[test]
fn the_range_is_added_to_the_top_level_where_on_the_quoted_alias_and_catalog_column() {
    let sql = r#"SELECT date_trunc('hour', "C".record_timestamp) AS "Hour", count(*) FROM calls "C" WHERE a = 1 OR b = 2 GROUP BY 1"#;
    let out = rewrite(sql, &inc("Hour"), "C").expect("rewritten");
    assert!(out.contains(r#"WHERE (a = 1 OR b = 2) AND ("C"."record_timestamp") >= CAST(pg_catalog.current_setting('tinydevcrm.incremental_from') AS pg_catalog.timestamp)"#), "{out}");
    assert!(out.contains(r#"AND ("C"."record_timestamp") < CAST(pg_catalog.current_setting('tinydevcrm.incremental_to')"#), "{out}");
}

#[test]
fn shapes_the_rewrite_cannot_bound_are_refused() {
    // A CTE, a set operation (a bucket without a name is refused by `check`: the rewrite no
    // longer reads the select list).
    for sql in [
        "WITH x AS (SELECT * FROM calls) SELECT date_trunc('hour', record_timestamp) AS hour FROM x GROUP BY 1",
        "SELECT date_trunc('hour', record_timestamp) AS hour FROM calls GROUP BY 1 UNION SELECT now()",
    ] {
        assert!(rewrite(sql, &inc("hour"), "calls").is_err(), "{sql}");
    }
}

#[test]
fn text_datums_with_long_and_short_headers_are_read() {
    assert_eq!(
        text_datum(&[32, 0, 0, 0, b'h', b'o', b'u', b'r']).as_deref(),
        Some("hour")
    );
    assert_eq!(
        text_datum(&[(5 << 1) | 1, b'h', b'o', b'u', b'r']).as_deref(),
        Some("hour")
    );
    assert_eq!(text_datum(&[200, 0, 0, 0, b'x']), None);
}
