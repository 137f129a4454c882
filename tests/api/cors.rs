//! CORS for configured browser origins, and resuming a stream from the query string, through
//! the real HTTP API (the browser itself is in tests/api/browser.rs).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::json;

use crate::helpers::{assert_problem, spawn_app, spawn_app_with};
use crate::sse::SseStream;

const DASHBOARD: &str = "http://dash.example.com:8080";
const SECOND: Duration = Duration::from_secs(1);

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The comma-separated list of a header, lower-cased and sorted.
fn list(headers: &HeaderMap, name: &str) -> Vec<String> {
    let mut items: Vec<String> = header(headers, name)
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect();
    items.sort();
    items
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_headers_with_the_headers_clients_need_exposed() {
    let app = spawn_app_with(|s| s.cors_origins = vec![DASHBOARD.to_owned()]).await;
    let user = app.signed_up_user().await;

    let res = app
        .client
        .get(app.url("/auth/users/me/"))
        .header("Origin", DASHBOARD)
        .bearer_auth(&user.access)
        .send()
        .await
        .expect("request");

    assert_eq!(res.status(), StatusCode::OK);
    let h = res.headers();
    assert_eq!(header(h, "access-control-allow-origin"), Some(DASHBOARD));
    assert_eq!(
        list(h, "access-control-expose-headers"),
        [
            "content-disposition",
            "location",
            "retry-after",
            "www-authenticate",
            "x-request-id"
        ]
    );
    assert!(
        list(h, "vary").contains(&"origin".to_owned()),
        "caches must keep answers per origin: {h:?}"
    );
    // Bearer tokens, not cookies.
    assert_eq!(header(h, "access-control-allow-credentials"), None);

    // Errors carry them too, or the page could not read the problem JSON.
    let res = app
        .client
        .get(app.url("/auth/users/me/"))
        .header("Origin", DASHBOARD)
        .send()
        .await
        .expect("request");
    assert_eq!(
        header(res.headers(), "access-control-allow-origin"),
        Some(DASHBOARD)
    );
    assert_problem(res, StatusCode::UNAUTHORIZED, "token_missing").await;
}

#[tokio::test]
async fn another_origin_gets_no_cors_headers_and_no_origin_is_allowed_by_default() {
    let configured = spawn_app_with(|s| s.cors_origins = vec![DASHBOARD.to_owned()]).await;
    let unconfigured = spawn_app().await;

    for (app, origin, cors_on) in [
        (&configured, "http://evil.example.com", true),
        (&configured, "http://dash.example.com:8081", true),
        (&configured, "https://dash.example.com:8080", true),
        (&unconfigured, DASHBOARD, false),
    ] {
        let res = app
            .client
            .get(app.url("/health"))
            .header("Origin", origin)
            .send()
            .await
            .expect("request");
        // Served as usual (a non-browser client is not hindered by its Origin)...
        assert_eq!(res.status(), StatusCode::OK, "{origin}");
        // ...but nothing that lets a browser show the answer to that page. (With CORS on,
        // actix-cors lists the exposed headers on every answer: inert without Allow-Origin.)
        let cors: Vec<_> = res
            .headers()
            .keys()
            .filter(|k| k.as_str().starts_with("access-control-"))
            .filter(|k| !(cors_on && k.as_str() == "access-control-expose-headers"))
            .collect();
        assert!(cors.is_empty(), "{origin} got {cors:?}");

        let res = app
            .client
            .request(reqwest::Method::OPTIONS, app.url("/auth/tokens/refresh/"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "content-type")
            .send()
            .await
            .expect("preflight");
        assert_eq!(
            header(res.headers(), "access-control-allow-origin"),
            None,
            "{origin}"
        );
        // Refused (with CORS on) or not a method of the route (without): problem JSON either way.
        let status = if cors_on {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::METHOD_NOT_ALLOWED
        };
        let code = if cors_on {
            "bad_request"
        } else {
            "method_not_allowed"
        };
        assert_problem(res, status, code).await;
    }
}

#[tokio::test]
async fn a_preflight_on_a_post_route_is_answered_and_may_be_cached() {
    let app = spawn_app_with(|s| {
        s.cors_origins = vec![DASHBOARD.to_owned()];
        s.cors_max_age = Duration::from_secs(600);
    })
    .await;

    let res = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/auth/tokens/refresh/"))
        .header("Origin", DASHBOARD)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, authorization",
        )
        .send()
        .await
        .expect("preflight");

    assert!(res.status().is_success(), "{}", res.status());
    let h = res.headers();
    assert_eq!(header(h, "access-control-allow-origin"), Some(DASHBOARD));
    assert_eq!(header(h, "access-control-max-age"), Some("600"));
    assert_eq!(
        list(h, "access-control-allow-methods"),
        ["delete", "get", "patch", "post"]
    );
    assert_eq!(
        list(h, "access-control-allow-headers"),
        ["accept", "authorization", "content-type", "last-event-id"]
    );
}

#[tokio::test]
async fn an_allowed_origin_listens_with_the_token_and_the_resume_point_in_the_query() {
    let app = spawn_app_with(|s| s.cors_origins = vec![DASHBOARD.to_owned()]).await;
    let user = app.user_with_view().await;
    let a = &user.access;
    let channel = app
        .created(a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let cid = channel["channel_id"].as_str().expect("id").to_owned();
    for _ in 0..3 {
        app.refresh_view(a, "someview").await;
    }
    let origin = [("Origin", DASHBOARD.to_owned())];

    let mut stream = SseStream::open(
        &app,
        &format!("/channels/{cid}/listen/?access_token={a}&last_event_id=1"),
        &origin,
    )
    .await;

    assert_eq!(
        header(stream.headers(), "access-control-allow-origin"),
        Some(DASHBOARD)
    );
    assert_eq!(stream.expect_event(5 * SECOND).await.seq(), 2);
    assert_eq!(stream.expect_event(5 * SECOND).await.seq(), 3);

    // EventSource's own reconnect sends the header with the newest id it saw, and keeps the
    // URL it was opened with: the header wins.
    let mut stream = SseStream::open(
        &app,
        &format!("/channels/{cid}/listen/?access_token={a}&last_event_id=1"),
        &[
            ("Origin", DASHBOARD.to_owned()),
            ("Last-Event-ID", "2".to_owned()),
        ],
    )
    .await;
    assert_eq!(stream.expect_event(5 * SECOND).await.seq(), 3);

    for bad in ["-1", "x", "1.5", ""] {
        let res = SseStream::request(
            &app,
            &format!("/channels/{cid}/listen/?access_token={a}&last_event_id={bad}"),
            &origin,
        )
        .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "invalid_last_event_id").await;
    }
}
