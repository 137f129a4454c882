//! The attack suite, continued: hostile *data* rather than hostile SQL. Tenant B sends JSON
//! rows, Parquet schemas, view `unique_key`s, rows-request parameters, cursors and listen
//! requests spelt to break the paths that take them. Every test asserts the clean 4xx (status
//! and problem `code`), that the victim is unharmed (its rows, the pool's roles, the server's
//! health) and that the server still serves.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Date32Array, Int16Array, Int64Array, StringArray};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::attacks::{GHOST_SCHEMA, Scene, scene};
use crate::helpers::parquet_of;

/// One text column `x` holding `value`.
fn text_file(value: &str) -> Vec<u8> {
    parquet_of(vec![("x", Arc::new(StringArray::from(vec![value])))])
}

/// The answer must be `status` with one of `codes`; returns the problem body.
async fn assert_refused(
    res: reqwest::Response,
    status: StatusCode,
    codes: &[&str],
    what: &str,
) -> Value {
    assert_eq!(res.status(), status, "{what}");
    let body: Value = res.json().await.expect("problem JSON");
    assert!(
        codes.contains(&body["code"].as_str().unwrap_or_default()),
        "{what}: {body}"
    );
    body
}

/// A file for the table `typed` (see [`Scene::typed_table`]) whose `numx` holds `numx`.
fn typed_file(numx: &str) -> Vec<u8> {
    parquet_of(vec![
        ("i2", Arc::new(Int16Array::from(vec![1]))),
        ("i8", Arc::new(Int64Array::from(vec![1]))),
        ("num", Arc::new(StringArray::from(vec!["1.5"]))),
        ("numx", Arc::new(StringArray::from(vec![numx]))),
        ("t", Arc::new(StringArray::from(vec!["a"]))),
        ("d", Arc::new(Date32Array::from(vec![0]))),
        ("j", Arc::new(StringArray::from(vec!["{}"]))),
    ])
}

impl Scene {
    /// Gives the attacker the table `typed` with one row: a column of each type the JSON
    /// decoder treats apart.
    async fn typed_table(&self) {
        let file = typed_file("1");
        let columns = json!([
            {"column_name": "i2", "column_type": "smallint"},
            {"column_name": "i8", "column_type": "bigint"},
            {"column_name": "num", "column_type": "numeric(10,2)"},
            {"column_name": "numx", "column_type": "numeric"},
            {"column_name": "t", "column_type": "text"},
            {"column_name": "d", "column_type": "date"},
            {"column_name": "j", "column_type": "jsonb"},
        ])
        .to_string();
        let res = self
            .app
            .create_table(&self.attacker.access, file, "typed", Some(&columns))
            .await;
        assert_eq!(
            res.status(),
            StatusCode::CREATED,
            "{}",
            res.text().await.unwrap_or_default()
        );
    }

    /// `POST /tables/{table}/rows/` as the attacker with a raw body.
    async fn post_rows(&self, table: &str, content_type: &str, body: Vec<u8>) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url(&format!("/tables/{table}/rows/")))
            .header("Authorization", format!("JWT {}", self.attacker.access))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("request")
    }

    /// `POST /tables/{table}/rows/` as the attacker with a Parquet file.
    async fn post_rows_file(&self, table: &str, file: Vec<u8>) -> reqwest::Response {
        let form = reqwest::multipart::Form::new().part(
            "file",
            reqwest::multipart::Part::bytes(file).file_name("rows.parquet"),
        );
        self.app
            .client
            .post(self.app.url(&format!("/tables/{table}/rows/")))
            .header("Authorization", format!("JWT {}", self.attacker.access))
            .multipart(form)
            .send()
            .await
            .expect("request")
    }

    /// The attacker's table still has `rows` rows: nothing of a refused upload was kept.
    async fn assert_attacker_rows(&self, table: &str, rows: i64) {
        let body: Value = self
            .app
            .get_as(&self.attacker.access, &format!("/tables/{table}/"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(
            body["row_count"], rows,
            "a refused upload left rows in {table}"
        );
    }

    /// `POST /views/create/` as the attacker.
    async fn create_view_keyed(&self, sql: &str, unique_key: &Value) -> reqwest::Response {
        self.app
            .post_as(
                &self.attacker.access,
                "/views/create/",
                &json!({"view_name": "attack", "sql_query": sql, "unique_key": unique_key}),
            )
            .await
    }
}

/// Arrow's decimal parsers recurse once per 38 digits and count digits and exponents in
/// `u8`/`i16`: a 200,000-digit string overflowed the stack of the blocking thread, which
/// aborted the whole process (every tenant's requests with it), and 300 digits or `1e99999`
/// overflowed a counter (a 500 in debug builds, a wrong value in release ones). Such text is
/// refused before any parser sees it, on both the JSON and the Parquet path.
#[tokio::test]
async fn numbers_too_long_for_the_decimal_parsers_are_refused_and_the_server_lives() {
    let scene = scene(Duration::from_secs(5)).await;
    scene.typed_table().await;
    let long = "9".repeat(200_000);
    let spellings = [
        "9".repeat(300),
        long.clone(),
        format!("0.{}", "9".repeat(300)),
        format!("-{}", "1".repeat(100_000)),
        "1e99999".to_owned(),
        "1e+32768".to_owned(),
        "-1E-40000".to_owned(),
        "1.5e0000000000000000005".to_owned(),
    ];

    for column in ["num", "numx"] {
        for spelling in &spellings {
            let what = format!("{column} = {}...", &spelling[..spelling.len().min(24)]);
            let body = json!([{ column: spelling }]).to_string().into_bytes();
            let res = scene.post_rows("typed", "application/json", body).await;
            assert_refused(res, StatusCode::BAD_REQUEST, &["invalid_value"], &what).await;
        }
        let ndjson = format!("{{\"t\":\"ok\"}}\n{}\n", json!({ column: long }));
        let res = scene
            .post_rows("typed", "application/x-ndjson", ndjson.into_bytes())
            .await;
        let body = assert_refused(res, StatusCode::BAD_REQUEST, &["invalid_value"], "ndjson").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("row 2"),
            "{body}"
        );
    }
    // The Parquet path: a text column declared numeric, at creation and when appending.
    for declared in ["numeric", "numeric(10,2)", "numeric(38,0)"] {
        let columns = json!([{"column_name": "x", "column_type": declared}]).to_string();
        let res = scene
            .app
            .create_table(
                &scene.attacker.access,
                text_file(&long),
                "wide",
                Some(&columns),
            )
            .await;
        assert_refused(res, StatusCode::BAD_REQUEST, &["invalid_value"], declared).await;
    }
    let res = scene.post_rows_file("typed", typed_file(&long)).await;
    assert_refused(
        res,
        StatusCode::BAD_REQUEST,
        &["invalid_value"],
        "parquet append",
    )
    .await;

    scene.assert_attacker_rows("typed", 1).await;
    // Ordinary numbers still go in.
    let res = scene
        .post_rows(
            "typed",
            "application/json",
            br#"[{"num":"12.5","numx":"42"},{"num":1e3}]"#.to_vec(),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    scene.assert_attacker_rows("typed", 3).await;
    scene.assert_unharmed().await;
}

/// JSON row bodies spelt to break the decoder: deep nesting (a stack overflow would abort the
/// process), invalid UTF-8 in keys and values, keys that look like SQL or name the victim's
/// objects, NUL bytes, numbers out of range, mixed types, and a bad value after 16,384 good
/// rows (the per-row re-decode of the flush error path).
#[tokio::test]
async fn hostile_json_row_bodies_get_clean_refusals() {
    let scene = scene(Duration::from_secs(5)).await;
    scene.typed_table().await;
    let v = &scene.victim_schema;
    let json_ct = "application/json";
    let ndjson_ct = "application/x-ndjson";
    let deep = |open: &str, n: usize| open.repeat(n).into_bytes();
    let mut cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (json_ct, deep("[", 100_000), &["invalid_json"]),
        (
            json_ct,
            [b"{\"j\":".to_vec(), deep("[", 100_000)].concat(),
            &["invalid_json"],
        ),
        (
            json_ct,
            [b"{\"t\":".to_vec(), deep("{\"a\":", 50_000)].concat(),
            &["invalid_json"],
        ),
        (
            ndjson_ct,
            [b"{\"t\":\"a\"}\n".to_vec(), deep("[", 100_000)].concat(),
            &["invalid_json"],
        ),
        (json_ct, b"{\"\xff\xfe\":1}".to_vec(), &["invalid_json"]),
        (json_ct, b"{\"t\":\"\xc3\x28\"}".to_vec(), &["invalid_json"]),
        (json_ct, b"{\"t\":\"\xc0\xaf\"}".to_vec(), &["invalid_json"]),
        (
            ndjson_ct,
            b"{\"t\":\"a\"}\n\xff\n".to_vec(),
            &["invalid_json"],
        ),
        (json_ct, br#"{"t":"\ud800"}"#.to_vec(), &["invalid_json"]),
        (
            json_ct,
            br#"{"t\"; DROP TABLE secret; --":1}"#.to_vec(),
            &["column_mismatch"],
        ),
        (json_ct, br#"{"\"t\"":1}"#.to_vec(), &["column_mismatch"]),
        (json_ct, br#"{"T":1}"#.to_vec(), &["column_mismatch"]),
        (json_ct, br#"{"t\u0000":1}"#.to_vec(), &["column_mismatch"]),
        (
            json_ct,
            br#"{"ctid":"(0,1)"}"#.to_vec(),
            &["column_mismatch"],
        ),
        (
            json_ct,
            format!(r#"{{"{v}.secret.n":1}}"#).into_bytes(),
            &["column_mismatch"],
        ),
        (json_ct, br#"{"n":1}"#.to_vec(), &["column_mismatch"]),
        (json_ct, br#"{"t":"a\u0000b"}"#.to_vec(), &["invalid_value"]),
        (
            json_ct,
            br#"{"j":{"\u0000":1}}"#.to_vec(),
            &["invalid_value"],
        ),
        (json_ct, br#"{"i2":40000}"#.to_vec(), &["invalid_value"]),
        (json_ct, br#"{"i2":-32769}"#.to_vec(), &["invalid_value"]),
        (
            json_ct,
            br#"{"i8":18446744073709551615}"#.to_vec(),
            &["invalid_value"],
        ),
        (
            json_ct,
            br#"{"i8":"99999999999999999999"}"#.to_vec(),
            &["invalid_value"],
        ),
        (json_ct, br#"{"i8":"1.5"}"#.to_vec(), &["invalid_value"]),
        (json_ct, br#"{"i8":1e400}"#.to_vec(), &["invalid_json"]),
        (json_ct, br#"{"i8":"NaN"}"#.to_vec(), &["invalid_value"]),
        (
            json_ct,
            br#"[{"i8":1},{"i8":"x"},{"i8":[1]},{"i8":{"a":1}}]"#.to_vec(),
            &["invalid_value"],
        ),
        (json_ct, br#"{"i8":true}"#.to_vec(), &["invalid_value"]),
        (json_ct, br#"{"d":{"a":1}}"#.to_vec(), &["invalid_value"]),
        (
            json_ct,
            br#"{"d":"2020-13-45"}"#.to_vec(),
            &["invalid_value"],
        ),
        (
            json_ct,
            br#"{"d":-2147483648}"#.to_vec(),
            &["invalid_value", "unsupported_type"],
        ),
        (json_ct, br#"[[1]]"#.to_vec(), &["invalid_value"]),
        (json_ct, br#"1"#.to_vec(), &["column_mismatch"]),
        (json_ct, b"\xef\xbb\xbf[]".to_vec(), &["invalid_json"]),
        (json_ct, br#"[{"t":"a"}] x"#.to_vec(), &["invalid_json"]),
        (json_ct, Vec::new(), &["invalid_json"]),
    ];
    // 16,384 good rows, then a bad date: found by the per-row re-decode of the flush error.
    let good = r#"{"t":"x","d":"2020-01-01"}"#;
    let many: Vec<&str> = std::iter::repeat_n(good, 16_384)
        .chain([r#"{"t":"x","d":"2020-13-45"}"#])
        .collect();
    let flushed = cases.len();
    cases.push((
        json_ct,
        format!("[{}]", many.join(",")).into_bytes(),
        &["invalid_value"],
    ));
    // As many bad rows as a flush holds: the first is named, the work stays linear.
    let bad = vec![r#"{"d":"no date"}"#; 8_192 * 3].join("\n");
    cases.push((ndjson_ct, bad.into_bytes(), &["invalid_value"]));

    for (i, (content_type, body, codes)) in cases.into_iter().enumerate() {
        let what = format!(
            "case {i}: {}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        let started = std::time::Instant::now();
        let res = scene.post_rows("typed", content_type, body).await;
        let problem = assert_refused(res, StatusCode::BAD_REQUEST, codes, &what).await;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{what} took {:?}",
            started.elapsed()
        );
        if i == flushed {
            assert!(
                problem["detail"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("row 16385"),
                "{problem}"
            );
        }
    }
    scene.assert_attacker_rows("typed", 1).await;
    scene.assert_unharmed().await;
}

/// `unique_key` spelt with quoting, expressions, casts, duplicates, system columns, the
/// victim's qualified column, NUL, over-long and look-alike names: each is a 400 naming the
/// key, no view is left, and naming the victim's column answers as naming a schema no one has.
#[tokio::test]
async fn hostile_unique_keys_are_refused_and_say_nothing_of_the_victim() {
    let scene = scene(Duration::from_secs(5)).await;
    let v = scene.victim_schema.clone();
    let sql = "SELECT n, n % 2 AS parity FROM mine";
    let spellings: Vec<Value> = vec![
        json!(["\"n\""]),
        json!(["n\"); DROP TABLE secret; --"]),
        json!(["n); DROP TABLE secret; --"]),
        json!(["(n)"]),
        json!(["n::text"]),
        json!(["lower(n::text)"]),
        json!(["n COLLATE \"C\""]),
        json!(["N"]),
        json!(["n "]),
        json!(["\u{0578}"]), // Armenian vo, a look-alike of n
        json!(["ctid"]),
        json!(["xmin"]),
        json!(["cmax"]),
        json!(["tableoid"]),
        json!(["oid"]),
        json!(["parity"]), // not unique: the first fill fails
        json!(["n", "n"]),
        json!(["n", "N"]),
        json!(vec!["n"; 33]),
        json!([format!("{v}.secret.n")]),
        json!(["secret.n"]),
        json!(["n\u{0}"]),
        json!(["x".repeat(64)]),
        json!(["é".repeat(32)]),
        json!([""]),
        json!([]),
    ];
    for key in &spellings {
        let res = scene.create_view_keyed(sql, key).await;
        assert_refused(
            res,
            StatusCode::BAD_REQUEST,
            &["invalid_unique_key", "duplicate_unique_key", "invalid_sql"],
            &key.to_string(),
        )
        .await;
    }
    // No existence oracle: the victim's column and a ghost schema's get the same answer.
    let victim: Value = scene
        .create_view_keyed(sql, &json!([format!("{v}.secret.n")]))
        .await
        .json()
        .await
        .expect("json");
    let ghost: Value = scene
        .create_view_keyed(sql, &json!([format!("{GHOST_SCHEMA}.secret.n")]))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        victim.to_string().replace(&v, "{v}"),
        ghost.to_string().replace(GHOST_SCHEMA, "{v}")
    );
    // A plain key still works (a column named twice is refused above).
    for key in [json!(["n"])] {
        let res = scene.create_view_keyed(sql, &key).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{key}");
        let deleted = scene
            .app
            .delete_as(&scene.attacker.access, "/views/attack/")
            .await;
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    }
    scene.assert_unharmed().await;
}

/// `select`, `order` and filters spelt with quoting, casts, comments, operators, system
/// columns, the victim's qualified names and look-alikes; forged keyset cursors (out-of-range
/// tids, injected SQL, offsets at the edge of `i64`); huge limits and pages; each in JSON, CSV
/// and Parquet. The victim's table by every path spelling is the 404 of a name no one has.
#[tokio::test]
async fn hostile_rows_parameters_and_forged_cursors_are_refused() {
    let scene = scene(Duration::from_secs(5)).await;
    let v = scene.victim_schema.clone();
    let enc = |s: &str| {
        s.replace('%', "%25")
            .replace('&', "%26")
            .replace('#', "%23")
            .replace('+', "%2B")
            .replace(' ', "%20")
    };
    let cursor = |c: Value| URL_SAFE_NO_PAD.encode(c.to_string());
    let names = [
        "\"n\"".to_owned(),
        "n::text".to_owned(),
        "n;".to_owned(),
        "n--".to_owned(),
        "n/**/".to_owned(),
        "(n)".to_owned(),
        "n)".to_owned(),
        "t.n".to_owned(),
        "x.n".to_owned(),
        "*".to_owned(),
        "N".to_owned(),
        "\u{0578}".to_owned(),
        "ctid".to_owned(),
        "xmin".to_owned(),
        "tableoid".to_owned(),
        "to_json(x)".to_owned(),
        format!("{v}.secret.n"),
        "secret.n".to_owned(),
    ];
    let mut queries: Vec<String> = Vec::new();
    for name in &names {
        let name = enc(name);
        queries.push(format!("select={name}"));
        queries.push(format!("order={name}.desc"));
        queries.push(format!("{name}=eq.1"));
    }
    for value in [
        "1)",
        "1' OR '1'='1",
        "1; DROP TABLE secret",
        "1::text",
        "$1",
        "(select 1)",
        "1 -- x",
        "infinity",
        "-9223372036854775809",
        "\u{0}",
    ] {
        let value = enc(value);
        for op in ["eq", "neq", "gt", "lte"] {
            queries.push(format!("n={op}.{value}"));
        }
        queries.push(format!("n=in.({value},2)"));
    }
    queries.extend(
        [
            "n=between.1",
            "n=is.true",
            "n=not.eq.1",
            "n=eq",
            "n=in.1,2",
            "n=in.(1",
            "order=n.sideways",
            "order=n..desc",
            "order=,",
            "order=n.desc;",
            "select=",
            "select=,",
            "limit=0",
            "limit=-1",
            "limit=10001",
            "limit=9223372036854775808",
            "limit=1e3",
            "size=0",
            "size=10001",
            "page=0",
            "page=922337203685478",
            "format=xml",
            "format=csv;",
            "format=json&format=sql",
            "cursor=garbage!",
            "cursor=e30",
            "cursor=",
            "page=1&cursor=e30",
        ]
        .map(str::to_owned),
    );
    for forged in [
        json!({"after": "(0,65536)"}),
        json!({"after": "(4294967296,1)"}),
        json!({"after": "(-1,1)"}),
        json!({"after": "(1,1)); DROP TABLE secret; --"}),
        json!({"after": "(1,1)::tid) OR (true"}),
        json!({"after": format!("(0,1)) UNION SELECT * FROM {v}.secret --")}),
        json!({"after": 5}),
        json!({"offset": -1}),
        json!({"offset": 1.5}),
        json!({"offset": "5"}),
        json!({"relation": format!("{v}.secret"), "offset": "x"}),
        json!({"keyset": {"order": [["n", false, null]], "values": ["1"], "ctid": "(1,1)) OR (true"}}),
        json!({"keyset": {"order": [["n", false, null]], "values": [1]}}),
        json!({"keyset": {"order": [["n", false, null]], "values": []}}),
        json!([]),
    ] {
        queries.push(format!("cursor={}", cursor(forged.clone())));
    }
    queries.push(format!(
        "order=n&cursor={}",
        cursor(json!({"after": "(0,1)"}))
    ));
    // A keyset cursor's values travel as binds: text that is no value of the column is a
    // 400, and a cursor of another order is refused.
    for values in [json!(["1) OR (true"]), json!(["1", "2"])] {
        queries.push(format!(
            "order=n&cursor={}",
            cursor(json!({"keyset": {"order": [["n", false, null]], "values": values, "ctid": "(0,1)"}}))
        ));
    }
    queries.push(format!(
        "order=n.desc&cursor={}",
        cursor(
            json!({"keyset": {"order": [["n", false, null]], "values": ["1"], "ctid": "(0,1)"}})
        )
    ));

    for query in &queries {
        for format in ["", "&format=csv", "&format=parquet"] {
            if (query.contains("format=") || query == "limit=10001") && !format.is_empty() {
                continue;
            }
            let path = format!("/tables/mine/rows/?{query}{format}");
            let res = scene.app.get_as(&scene.attacker.access, &path).await;
            assert_refused(
                res,
                StatusCode::BAD_REQUEST,
                &[
                    "unknown_column",
                    "invalid_filter",
                    "invalid_order",
                    "invalid_select",
                    "invalid_parameter",
                    "invalid_cursor",
                    "invalid_format",
                ],
                &path,
            )
            .await;
        }
    }
    // Edges that are fine: an offset at the end of i64, a far tid, an empty list.
    for query in [
        format!(
            "order=n&limit=10000&cursor={}",
            cursor(json!({"offset": i64::MAX - 5}))
        ),
        format!("cursor={}", cursor(json!({"after": "(4294967295,65535)"}))),
        "n=in.()".to_owned(),
        "page=922337203685477&size=10000".to_owned(),
    ] {
        let res = scene
            .app
            .get_as(
                &scene.attacker.access,
                &format!("/tables/mine/rows/?{query}"),
            )
            .await;
        assert_eq!(res.status(), StatusCode::OK, "{query}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["rows"], json!([]), "{query}");
    }
    // The victim's table by path: the same 404 as a name no one has.
    let ghost: Value = scene
        .app
        .get_as(&scene.attacker.access, "/tables/nosuchtable/rows/")
        .await
        .json()
        .await
        .expect("json");
    for path in [
        "secret".to_owned(),
        "SECRET".to_owned(),
        format!("{v}.secret"),
        format!("{v}%2Esecret"),
        "..%2Fsecret".to_owned(),
        "mine%2F..%2Fsecret".to_owned(),
        "secret%00".to_owned(),
        "%22secret%22".to_owned(),
    ] {
        for route in ["tables", "views"] {
            let res = scene
                .app
                .get_as(&scene.attacker.access, &format!("/{route}/{path}/rows/"))
                .await;
            let body = assert_refused(res, StatusCode::NOT_FOUND, &["not_found"], &path).await;
            assert_eq!(body["title"], ghost["title"]);
        }
    }
    scene.assert_unharmed().await;
}

/// Parquet schemas with system-column names in any case, empty, NUL, over-long and duplicate
/// names, and 1,001 columns are refused; names that look like SQL or like the statement's own
/// aliases are kept as plain names and read back through `select`, `order` and filters.
#[tokio::test]
async fn hostile_parquet_schemas_are_refused_or_kept_as_plain_names() {
    let scene = scene(Duration::from_secs(5)).await;
    let one = || -> ArrayRef { Arc::new(Int64Array::from(vec![1])) };
    let long = "x".repeat(64);
    for (name, code) in [
        ("ctid", "invalid_column_name"),
        ("CTID", "invalid_column_name"),
        ("xmin", "invalid_column_name"),
        ("tableoid", "invalid_column_name"),
        ("cmin", "invalid_column_name"),
        ("", "column_mismatch"),
        ("a\0b", "column_mismatch"),
        (long.as_str(), "column_mismatch"),
    ] {
        let res = scene
            .app
            .create_table(
                &scene.attacker.access,
                parquet_of(vec![(name, one())]),
                "hostile",
                None,
            )
            .await;
        assert_refused(res, StatusCode::BAD_REQUEST, &[code], name).await;
    }
    let twice = parquet_of(vec![("a", one()), ("a", one())]);
    let res = scene
        .app
        .create_table(&scene.attacker.access, twice, "hostile", None)
        .await;
    assert_refused(res, StatusCode::BAD_REQUEST, &["column_mismatch"], "a, a").await;
    let names: Vec<String> = (0..1001).map(|i| format!("c{i}")).collect();
    let wide = parquet_of(names.iter().map(|n| (n.as_str(), one())).collect());
    let res = scene
        .app
        .create_table(&scene.attacker.access, wide, "hostile", None)
        .await;
    assert_refused(
        res,
        StatusCode::BAD_REQUEST,
        &["too_many_columns"],
        "1001 columns",
    )
    .await;
    for table_name in [
        "pg_class",
        "1abc",
        "a-b",
        "a b",
        "secret\"; --",
        &"a".repeat(64),
    ] {
        let file = parquet_of(vec![("n", one())]);
        let res = scene
            .app
            .create_table(&scene.attacker.access, file, table_name, None)
            .await;
        assert_refused(
            res,
            StatusCode::BAD_REQUEST,
            &["invalid_table_name"],
            table_name,
        )
        .await;
    }

    let odd = [
        "a\"b",
        "\"",
        "t",
        "x",
        "a'; DROP TABLE secret; --",
        "to_json",
        ")",
        "1",
        "oid",
    ];
    let file = parquet_of(odd.iter().map(|n| (*n, one())).collect());
    let res = scene
        .app
        .create_table(&scene.attacker.access, file, "odd", None)
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    for name in odd {
        let q = name
            .replace('"', "%22")
            .replace('\'', "%27")
            .replace(' ', "%20")
            .replace(';', "%3B");
        for query in [
            format!("select={q}"),
            format!("order={q}.desc"),
            format!("{q}=eq.1"),
            format!("select={q}&format=csv"),
        ] {
            let res = scene
                .app
                .get_as(
                    &scene.attacker.access,
                    &format!("/tables/odd/rows/?{query}"),
                )
                .await;
            assert_eq!(res.status(), StatusCode::OK, "{query}");
        }
    }
    let rows: Value = scene
        .app
        .get_as(&scene.attacker.access, "/tables/odd/rows/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rows["rows"][0]["a'; DROP TABLE secret; --"], 1);
    scene.assert_unharmed().await;
}

/// `listen` with the token in every place and spelling (query and header, duplicated, the
/// victim's channel id upper-cased) never opens the victim's channel, and answers it as a
/// channel no one has; forged `Last-Event-ID`s (negative, past `i64`, not a number, the id of
/// another channel) are a 400.
#[tokio::test]
async fn forged_listen_tokens_and_event_ids_are_refused_and_reveal_no_channel() {
    let scene = scene(Duration::from_secs(5)).await;
    let app = &scene.app;
    let (v_access, a_access) = (&scene.victim.access, &scene.attacker.access);
    let view = |name: &str, table: &str| json!({"view_name": name, "sql_query": format!("SELECT count(*) AS c FROM {table}")});
    let _ = app
        .created(v_access, "/views/create/", view("victims", "secret"))
        .await;
    let victim_channel = app
        .created(
            v_access,
            "/channels/create/",
            json!({"view_name": "victims"}),
        )
        .await["channel_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let _ = app
        .created(a_access, "/views/create/", view("attack", "mine"))
        .await;
    let own_channel = app
        .created(
            a_access,
            "/channels/create/",
            json!({"view_name": "attack"}),
        )
        .await["channel_id"]
        .as_str()
        .expect("id")
        .to_owned();
    let listen = |channel: &str, query: String, headers: Vec<(&'static str, String)>| {
        let mut request = app
            .client
            .get(app.url(&format!("/channels/{channel}/listen/{query}")))
            .timeout(Duration::from_secs(10));
        for (k, v) in headers {
            request = request.header(k, v);
        }
        request.send()
    };
    let ghost = uuid::Uuid::new_v4().to_string();
    for channel in [
        victim_channel.clone(),
        victim_channel.to_uppercase(),
        ghost.clone(),
    ] {
        for (query, headers) in [
            (format!("?access_token={a_access}"), vec![]),
            (format!("?%61ccess_token={a_access}"), vec![]),
            (format!("?ACCESS_TOKEN={a_access}"), vec![]),
            (
                format!("?access_token={a_access}&access_token={v_access}"),
                vec![],
            ),
            (
                format!("?access_token={v_access}"),
                vec![("Authorization", format!("JWT {a_access}"))],
            ),
            (
                String::new(),
                vec![("Authorization", format!("Bearer {a_access}"))],
            ),
        ] {
            let res = listen(&channel, query.clone(), headers)
                .await
                .expect("request");
            let body = assert_refused(res, StatusCode::NOT_FOUND, &["not_found"], &query).await;
            assert_eq!(
                body["detail"]
                    .as_str()
                    .map(|d| d.to_lowercase().replace(&channel.to_lowercase(), "{c}")),
                Some("no channel {c}".to_owned()),
                "the answer differs for the victim's channel: {body}"
            );
        }
    }
    for (query, headers) in [
        ("?access_token=garbage".to_owned(), vec![]),
        (
            format!("?access_token=garbage&access_token={a_access}"),
            vec![],
        ),
        (
            format!("?access_token={a_access}"),
            vec![("Authorization", "JWT garbage".to_owned())],
        ),
        ("?access_token=".to_owned(), vec![]),
    ] {
        let res = listen(&own_channel, query.clone(), headers)
            .await
            .expect("request");
        assert_refused(
            res,
            StatusCode::UNAUTHORIZED,
            &["token_invalid", "token_missing"],
            &query,
        )
        .await;
    }
    for id in [
        "-1",
        "99999999999999999999999",
        "1e3",
        "1; DROP TABLE secret",
        victim_channel.as_str(),
        "0x10",
        "\u{e9}",
    ] {
        let res = listen(
            &own_channel,
            String::new(),
            vec![
                ("Authorization", format!("JWT {a_access}")),
                ("Last-Event-ID", id.to_owned()),
            ],
        )
        .await;
        let Ok(res) = res else { continue }; // a header reqwest will not send
        assert_refused(res, StatusCode::BAD_REQUEST, &["invalid_last_event_id"], id).await;
    }
    let deleted = app.delete_as(a_access, "/views/attack/").await;
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    scene.assert_unharmed().await;
}
