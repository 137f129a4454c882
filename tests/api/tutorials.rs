//! The tutorials under `docs/tutorials/`, executed: their SQL blocks are read from the Markdown
//! and run as written, so the pages cannot rot.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use chrono::{TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, TestUser, parquet_bytes, spawn_app};

/// The fenced `sql` blocks of a tutorial, in order.
fn sql_blocks(page: &str) -> Vec<String> {
    let text = std::fs::read_to_string(format!(
        "{}/docs/tutorials/{page}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("tutorial");
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sql") => current = Some(String::new()),
            (Some(block), "```") => {
                blocks.push(block.trim().to_owned());
                current = None;
            }
            (Some(block), line) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    blocks
}

async fn create_view(
    app: &TestApp,
    user: &TestUser,
    name: &str,
    sql: &str,
    unique_key: Option<&str>,
) {
    let mut body = json!({"view_name": name, "sql_query": sql});
    if let Some(key) = unique_key {
        body["unique_key"] = json!([key]);
    }
    let res = app
        .client
        .post(app.url("/views/create/"))
        .header("Authorization", format!("JWT {}", user.access))
        .json(&body)
        .send()
        .await
        .expect("request");
    let status = res.status();
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{name}: {:?}",
        res.text().await
    );
}

fn call_records(calls: &[(i64, &str, &str)]) -> Vec<u8> {
    let parse = |s: &str| {
        let t = chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("timestamp");
        Utc.from_utc_datetime(&t).timestamp_micros()
    };
    let mut ids = Vec::new();
    let mut kinds = Vec::new();
    let mut times = Vec::new();
    let mut call_ids = Vec::new();
    for (i, (call, start, end)) in calls.iter().enumerate() {
        let i = i64::try_from(i).expect("small");
        ids.extend([2 * i + 1, 2 * i + 2]);
        kinds.extend(["start", "end"]);
        times.extend([parse(start), parse(end)]);
        call_ids.extend([*call, *call]);
    }
    let n = ids.len();
    let batch = RecordBatch::try_from_iter(vec![
        ("record_id", Arc::new(Int64Array::from(ids)) as _),
        ("record_type", Arc::new(StringArray::from(kinds)) as _),
        (
            "record_timestamp",
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")) as _,
        ),
        ("call_id", Arc::new(Int64Array::from(call_ids)) as _),
        (
            "source",
            Arc::new(StringArray::from(vec!["99988526423"; n])) as _,
        ),
        (
            "destination",
            Arc::new(StringArray::from(vec!["9993468278"; n])) as _,
        ),
    ])
    .expect("batch");
    parquet_bytes(&batch, None)
}

async fn build_bills(app: &TestApp, user: &TestUser, file: Vec<u8>) {
    let blocks = sql_blocks("phone-billing.md");
    assert_eq!(blocks.len(), 3, "calls_paired, bills, monthly_totals");
    assert_eq!(
        app.create_table(&user.access, file, "calls", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    create_view(app, user, "calls_paired", &blocks[0], Some("call_id")).await;
    create_view(app, user, "bills", &blocks[1], Some("call_id")).await;
    create_view(app, user, "monthly_totals", &blocks[2], None).await;
}

#[tokio::test]
async fn tutorial_phone_billing() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let calls = [
        (1, "2016-02-29 21:57:13", "2016-02-29 22:17:53"),
        (2, "2016-02-29 23:00:00", "2016-02-29 23:30:00"),
        (3, "2016-02-29 05:58:00", "2016-02-29 06:03:30"),
        (4, "2016-02-29 21:00:00", "2016-03-01 06:01:05"),
        (5, "2016-02-29 10:00:00", "2016-02-29 10:00:59"),
    ];
    build_bills(&app, &user, call_records(&calls)).await;

    let worked: Value = app
        .get_as(&user.access, "/views/bills/rows/?call_id=eq.1")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        worked["rows"][0],
        json!({"subscriber": "99988526423", "period": "2016-02", "call_id": 1, "destination": "9993468278",
               "started_at": "2016-02-29T21:57:13+00:00", "ended_at": "2016-02-29T22:17:53+00:00",
               "duration": "00:20:40", "price": "0.54"})
    );
    let all: Value = app
        .get_as(
            &user.access,
            "/views/bills/rows/?order=call_id&select=call_id,period,price",
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        all["rows"],
        json!([
            {"call_id": 1, "period": "2016-02", "price": "0.54"},
            {"call_id": 2, "period": "2016-02", "price": "0.36"},
            {"call_id": 3, "period": "2016-02", "price": "0.63"},
            {"call_id": 4, "period": "2016-03", "price": "5.85"},
            {"call_id": 5, "period": "2016-02", "price": "0.36"}
        ])
    );
    let bill: Value = app
        .get_as(
            &user.access,
            "/views/bills/rows/?subscriber=eq.99988526423&period=eq.2016-02&order=started_at",
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(bill["rows"].as_array().expect("rows").len(), 4);
    let totals: Value = app
        .get_as(&user.access, "/views/monthly_totals/rows/?order=period")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(totals["rows"][0]["total"], "1.89");
    assert_eq!(totals["rows"][1]["total"], "5.85");
}

#[tokio::test]
async fn tutorial_phone_billing_over_sample_parquet_bills_every_call() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let sample =
        std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/sample.parquet")).expect("sample");

    build_bills(&app, &user, sample).await;

    let described: Value = app
        .get_as(&user.access, "/views/bills/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(described["row_count"], 3000);
    let free: Value = app
        .get_as(&user.access, "/views/bills/rows/?price=lt.0.36")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        free["rows"],
        json!([]),
        "no call costs less than the standing charge"
    );
}

/// The tutorial's data, as shipped under `docs/tutorials/data/` (`tinydevcrm sample` writes it).
fn tutorial_data(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/docs/tutorials/data/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("tutorial data")
}

#[tokio::test]
async fn tutorial_sim_usage() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let blocks = sql_blocks("sim-usage.md");
    assert_eq!(
        blocks.len(),
        4,
        "sim hourly, sim daily, org hourly, org daily"
    );

    assert_eq!(
        app.create_table(
            &user.access,
            tutorial_data("inventory.parquet"),
            "inventory",
            None
        )
        .await
        .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.create_table(&user.access, tutorial_data("usage.parquet"), "usage", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    let feed = concat!(
        "{\"date\": \"2020-02-01T10:15:00Z\", \"bytes_used\": 1200, \"sim_card_id\": \"89440001\"}\n",
        "{\"date\": \"2020-02-01T10:45:00Z\", \"bytes_used\": 800, \"sim_card_id\": \"89440001\"}\n",
    );
    let res = app
        .client
        .post(app.url("/tables/usage/rows/"))
        .header("Authorization", format!("JWT {}", user.access))
        .header("Content-Type", "application/x-ndjson")
        .body(feed)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);

    let views = [
        ("sim_usage_hourly", "hour"),
        ("sim_usage_daily", "day"),
        ("org_usage_hourly", "hour"),
        ("org_usage_daily", "day"),
    ];
    for ((name, _), sql) in views.iter().zip(&blocks) {
        let key_owner = if name.starts_with("sim") {
            "sim_card_id"
        } else {
            "org_id"
        };
        let time = if name.ends_with("hourly") {
            "hour"
        } else {
            "day"
        };
        let body = json!({"view_name": name, "sql_query": sql, "unique_key": [key_owner, time]});
        let res = app
            .client
            .post(app.url("/views/create/"))
            .header("Authorization", format!("JWT {}", user.access))
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::CREATED, "{name}");
    }
    let hour_of_sim_1 = "/views/sim_usage_hourly/rows/?sim_card_id=eq.89440001&hour=gte.2020-02-01T10:00:00Z&hour=lt.2020-02-01T11:00:00Z";
    let before: Value = app
        .get_as(&user.access, hour_of_sim_1)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        before["rows"][0]["bytes_used"], "2400",
        "4 x 100 + 1200 + 800"
    );
    // One more reading, so that the refresh (CONCURRENTLY: the view has a unique key) has
    // something to change, and the change is read back.
    let res = app
        .client
        .post(app.url("/tables/usage/rows/"))
        .header("Authorization", format!("JWT {}", user.access))
        .header("Content-Type", "application/x-ndjson")
        .body("{\"date\": \"2020-02-01T10:30:00Z\", \"bytes_used\": 500, \"sim_card_id\": \"89440001\"}\n")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .client
        .post(app.url("/views/sim_usage_hourly/refresh/"))
        .header("Authorization", format!("JWT {}", user.access))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    let refresh: Value = res.json().await.expect("json");
    assert_eq!(refresh["status"], "refreshed");
    let after: Value = app
        .get_as(&user.access, hour_of_sim_1)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(after["rows"].as_array().map(Vec::len), Some(1));
    assert_eq!(after["rows"][0]["bytes_used"], "2900");

    let daily: Value = app
        .get_as(
            &user.access,
            "/views/sim_usage_daily/rows/?sim_card_id=eq.89440001&day=gte.2020-02-01&day=lt.2020-02-02&order=day&page=1&size=15",
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        daily,
        json!({"rows": [{"sim_card_id": "89440001", "day": "2020-02-01T00:00:00+00:00", "bytes_used": "11600"}],
               "next_cursor": null, "page": 1, "size": 15, "has_more": false})
    );
    let page = |n: u32| {
        format!(
            "/views/org_usage_hourly/rows/?org_id=eq.x00g8&hour=gte.2020-02-01&hour=lt.2020-02-02&order=hour&page={n}&size=15"
        )
    };
    let first: Value = app
        .get_as(&user.access, &page(1))
        .await
        .json()
        .await
        .expect("json");
    let rows = first["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 15);
    assert_eq!(first["has_more"], true);
    assert_eq!(rows[0]["bytes_used"], "800");
    assert_eq!(rows[10]["hour"], "2020-02-01T10:00:00+00:00");
    assert_eq!(rows[10]["bytes_used"], "2800");
    let second: Value = app
        .get_as(&user.access, &page(2))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(second["rows"].as_array().expect("rows").len(), 9);
    assert_eq!(second["has_more"], false);
    let org_daily: Value = app
        .get_as(
            &user.access,
            "/views/org_usage_daily/rows/?org_id=eq.y11h9&order=day",
        )
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(org_daily["rows"].as_array().expect("rows").len(), 2);
    assert_eq!(org_daily["rows"][0]["bytes_used"], "9600");
}
