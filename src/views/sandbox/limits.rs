//! Edge cases of the sandbox: its size, token and nesting limits, trailing semicolons, an
//! operator run into a comment, and other spellings of catalog types.

use super::*;

fn own() -> HashSet<String> {
    std::iter::once("calls".to_owned()).collect()
}

async fn checked(sql: String) -> Result<CheckedQuery, Rejected> {
    check_on_own_stack(sql, "t_abc".to_owned(), own()).await
}

#[tokio::test]
async fn the_longest_flat_chain_allowed_is_walked_without_overflowing() {
    let terms = MAX_SQL_TOKENS / 2 - 4;
    let sql = format!("SELECT {} AS x FROM calls", vec!["1"; terms].join("+"));

    let result = checked(sql).await;

    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn longer_chains_deeper_nesting_and_bigger_texts_are_refused_before_parsing() {
    let chain = format!("SELECT {}", vec!["1"; MAX_SQL_TOKENS].join("+"));
    let nesting = format!("SELECT {}1{}", "(".repeat(100), ")".repeat(100));
    let huge = format!("SELECT '{}'", "a".repeat(MAX_SQL_BYTES));
    for (sql, why) in [(chain, "tokens"), (nesting, "nests"), (huge, "bytes long")] {
        let refused = checked(sql).await.expect_err("refused");
        assert!(refused.0.contains(why), "{refused}");
    }
}

#[test]
fn the_user_text_runs_without_its_trailing_semicolons() {
    let q = check("SELECT 1 FROM calls ; ;\n", "t_abc", &own()).expect("allowed");
    assert_eq!(q.sql, "SELECT 1 FROM calls");
}

#[test]
fn an_operator_run_into_a_comment_is_refused_as_postgresql_reads_it_differently() {
    for sql in [
        "SELECT 1 |-- $$\n0 AS z, 'x'::regclass AS b\n--$$ AS z FROM calls",
        "SELECT 1 <--x\n FROM calls",
        "SELECT 1 #/* x */ 1 FROM calls",
    ] {
        let refused = check(sql, "t_abc", &own()).expect_err(sql);
        assert!(refused.0.contains("comment"), "{sql}: {refused}");
    }
}

#[test]
fn quoted_and_qualified_spellings_of_catalog_types_are_refused() {
    for sql in [
        r#"SELECT 'pg_class'::"regclass""#,
        r#"SELECT CAST('x' AS "pg_catalog"."regtype")"#,
        "SELECT 'x'::pg_catalog.regnamespace",
        "SELECT '<a/>'::xml",
    ] {
        let refused = check(sql, "t_abc", &own()).expect_err(sql);
        assert!(refused.0.contains("type"), "{sql}: {refused}");
    }
}
