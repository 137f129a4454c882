//! What the sandbox allows and refuses, with the reason it gives.

use super::*;

fn own() -> HashSet<String> {
    ["calls", "sometable"]
        .into_iter()
        .map(str::to_owned)
        .collect()
}

fn ok(sql: &str) -> CheckedQuery {
    check(sql, "t_abc", &own()).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn refused(sql: &str) -> String {
    check(sql, "t_abc", &own()).expect_err(sql).0
}

#[test]
fn the_walkthrough_view_is_allowed_and_volatile() {
    let q = ok(
        r#"SELECT * FROM sometable WHERE "SomeNumber" = CAST( EXTRACT( SECOND FROM NOW()) * 1000000 AS INTEGER) % 10"#,
    );
    assert!(q.volatile);
    assert_eq!(q.relations.into_iter().collect::<Vec<_>>(), ["sometable"]);
}

#[test]
fn real_analysis_is_allowed() {
    let q = ok("WITH c AS (SELECT call_id, min(record_timestamp) AS s FROM Calls GROUP BY call_id)
         SELECT date_trunc('month', s) AS m, count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY call_id),
                row_number() OVER (ORDER BY s), $$dollar$$ AS d, regexp_replace('a', 'a', 'b'),
                jsonb_build_object('k', 1), coalesce(null, 1)::numeric(10,2), t.x
         FROM c, generate_series(1, 3) AS t(x) GROUP BY 1, s, t.x");
    assert!(!q.volatile);
    assert!(q.relations.contains("calls"));
}

#[test]
fn everything_that_reaches_outside_is_refused_with_a_reason() {
    let cases = [
        ("SELECT * FROM t_other.secret", "not one of your"),
        (
            "SELECT set_config('role', 't_other', false)",
            "function set_config is not allowed",
        ),
        (
            "SELECT pg_read_file('/etc/passwd')",
            "function pg_read_file is not allowed",
        ),
        ("SELECT 1; SELECT 2", "exactly one statement"),
        ("SELECT * INTO newtable FROM calls", "INTO"),
        (
            "WITH d AS (DELETE FROM calls RETURNING *) SELECT * FROM d",
            "only SELECT",
        ),
        ("SELECT * FROM calls FOR UPDATE", "locking"),
        ("SELECT * FROM pg_class", "not one of your"),
        ("SELECT * FROM information_schema.tables", "not one of your"),
        ("SELECT 'pg_authid'::regclass", "type regclass"),
        ("SELECT pg_catalog.now()", "not allowed"),
        ("DELETE FROM calls", "only a SELECT"),
        ("SELECT dblink('x', 'y')", "function dblink"),
        ("SELECT pg_sleep(1000000)", "function pg_sleep"),
        ("SELECT lo_import('/etc/passwd')", "function lo_import"),
        ("SELEC 1", "does not parse"),
    ];
    for (sql, why) in cases {
        let message = refused(sql);
        assert!(message.contains(why), "{sql}: {message}");
    }
}

#[test]
fn a_nul_anywhere_is_refused_before_postgresql_sees_the_text() {
    // The protocol ends the statement at a NUL: PostgreSQL would run a prefix of the checked
    // text, and read the rest as the message's parameter types.
    for sql in [
        "SELECT 1 AS x --\0\0\u{4}abcd",
        "SELECT 'a\0b' AS x",
        "SELECT 1 AS x /* \0 */",
        "\0SELECT 1 AS x",
    ] {
        let why = refused(sql);
        assert!(why.contains("NUL character"), "{sql:?}: {why}");
    }
}
