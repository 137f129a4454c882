//! Scoped API keys: each scope allows exactly its routes and nothing else (a table of every
//! scope against every key-capable route and a set of session-only routes, generated from
//! what each route needs); one tenant's key never reaches another's resources; a revoked key
//! is refused at once on every process and its streams end; expired keys are 401; the key is
//! shown once and only its hash is stored; per-key rate limits; `?access_token=tdc_...` for
//! listening, never logged.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::helpers::{TestApp, TestUser, assert_problem, spawn_app, spawn_app_on, temp_dir};
use crate::sse::{Next, SseStream};

/// Creates a key of `user` with `body`'s fields; the answer.
async fn create_key(app: &TestApp, user: &TestUser, body: Value) -> Value {
    app.created(&user.access, "/auth/keys/", body).await
}

/// A key of `user` with these scopes; the key.
async fn key_with(app: &TestApp, user: &TestUser, scopes: &[&str]) -> String {
    let key = create_key(app, user, json!({"name": "test", "scopes": scopes})).await;
    key["key"].as_str().expect("key").to_owned()
}

/// Sends `method path` with `Authorization: Bearer <token>` (a JSON body for POST).
async fn send(app: &TestApp, token: &str, method: Method, path: &str) -> reqwest::Response {
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .header("Authorization", format!("Bearer {token}"));
    if method == Method::POST {
        req = req.json(&rows_or_empty(path));
    }
    req.send().await.expect("request")
}

/// The JSON body the matrix sends to a POST route: a row for row appends, `{}` elsewhere.
fn rows_or_empty(path: &str) -> Value {
    if path.contains("/rows/") {
        json!([{"SomeNumber": 7, "SomeString": "from a key"}])
    } else {
        json!({})
    }
}

/// Reads `stream` until the server ends it within `limit`; the names of the events it sent.
async fn events_until_end(stream: &mut SseStream, limit: Duration) -> Vec<Option<String>> {
    let since = Instant::now();
    let mut seen = Vec::new();
    loop {
        match stream.next(limit.saturating_sub(since.elapsed())).await {
            Next::Event(event) => seen.push(event.event),
            Next::End => return seen,
            Next::Broken(why) => panic!("the connection broke ({why}) after {seen:?}"),
            Next::Timeout => panic!("the stream was still open after {limit:?}; it sent {seen:?}"),
        }
    }
}

/// One route of the matrix: what a key needs to use it.
struct Route {
    method: Method,
    path: String,
    /// The one scope that allows it, or `None` for the routes only a login session may use.
    scope: Option<String>,
    /// Whether `*:read` allows it too.
    read: bool,
}

fn route(method: Method, path: &str, scope: Option<&str>, read: bool) -> Route {
    Route {
        method,
        path: path.to_owned(),
        scope: scope.map(str::to_owned),
        read,
    }
}

#[tokio::test]
async fn each_scope_allows_exactly_its_routes_and_everything_else_is_403() {
    // Arrange: a tenant with sometable, someview and a channel; another tenant with the same
    // names and a channel of its own.
    let app = spawn_app().await;
    let (owner, cid) = app.user_with_channel().await;
    let (_, other_cid) = app.user_with_channel().await;
    let listen = format!("/channels/{cid}/listen/");
    let (get, post, delete) = (Method::GET, Method::POST, Method::DELETE);
    let view_read = "views:read:someview".to_owned();
    let table_read = "tables:read:sometable".to_owned();
    let append = "tables:append:sometable".to_owned();
    let refresh = "views:refresh:someview".to_owned();
    let channel = format!("channels:listen:{cid}");
    let routes = [
        route(get.clone(), "/tables/", Some("*:read"), true),
        route(get.clone(), "/views/", Some("*:read"), true),
        route(get.clone(), "/channels/", Some("*:read"), true),
        route(get.clone(), "/views/someview/", Some(&view_read), true),
        route(get.clone(), "/views/someview/rows/", Some(&view_read), true),
        route(
            get.clone(),
            "/views/someview/rows/?format=csv",
            Some(&view_read),
            true,
        ),
        route(
            post.clone(),
            "/views/someview/refresh/",
            Some(&refresh),
            false,
        ),
        route(get.clone(), "/tables/sometable/", Some(&table_read), true),
        route(
            get.clone(),
            "/tables/sometable/rows/",
            Some(&table_read),
            true,
        ),
        route(
            get.clone(),
            "/tables/sometable/rows/?format=parquet",
            Some(&table_read),
            true,
        ),
        route(
            post.clone(),
            "/tables/sometable/rows/",
            Some(&append),
            false,
        ),
        route(get.clone(), &listen, Some(&channel), true),
        route(
            get.clone(),
            &format!("/channels/{cid}/"),
            Some(&channel),
            true,
        ),
        // Replacing rows is never a key's to do, whatever it holds.
        route(
            post.clone(),
            "/tables/sometable/rows/?mode=replace",
            Some("tables:replace:sometable"),
            false,
        ),
        // Session-only routes: the account, keys, creating and dropping, jobs.
        route(get.clone(), "/auth/users/me/", None, false),
        route(get.clone(), "/auth/keys/", None, false),
        route(post.clone(), "/auth/keys/", None, false),
        route(
            delete.clone(),
            &format!("/auth/keys/{}/", uuid::Uuid::now_v7()),
            None,
            false,
        ),
        route(post.clone(), "/views/create/", None, false),
        route(post.clone(), "/channels/create/", None, false),
        route(delete.clone(), &format!("/channels/{cid}/"), None, false),
        route(delete.clone(), "/views/someview/", None, false),
        route(delete.clone(), "/tables/sometable/", None, false),
        route(get.clone(), "/tables/sometable/indexes/", None, false),
        route(get.clone(), "/jobs/", None, false),
    ];
    let scopes = [
        view_read.clone(),
        table_read.clone(),
        append.clone(),
        refresh.clone(),
        channel.clone(),
        "*:read".to_owned(),
        // The other tenant's channel, and names this tenant does not use: they open nothing.
        format!("channels:listen:{other_cid}"),
        "views:read:otherview".to_owned(),
        "tables:append:othertable".to_owned(),
    ];

    for scope in &scopes {
        let key = key_with(&app, &owner, &[scope]).await;
        for route in &routes {
            // Act
            let res = send(&app, &key, route.method.clone(), &route.path).await;

            // Assert: exactly the allowed cells succeed; the others are 403 naming why.
            let allowed = route.scope.as_ref() == Some(scope) || (scope == "*:read" && route.read);
            let cell = format!("{scope} x {} {}", route.method, route.path);
            if allowed {
                assert!(res.status().is_success(), "{cell}: {}", res.status());
                continue;
            }
            let code = if route.scope.is_some() {
                "missing_scope"
            } else {
                "key_not_allowed"
            };
            let body = assert_problem(res, StatusCode::FORBIDDEN, code).await;
            if let Some(needed) = &route.scope {
                assert_eq!(body["scope"].as_str(), Some(needed.as_str()), "{cell}");
                assert!(
                    body["detail"].as_str().unwrap_or_default().contains(needed),
                    "{cell}: {body}"
                );
            }
        }
    }

    // Another tenant's channel is not found, for a key naming it as for a session.
    for key in [
        key_with(&app, &owner, &[&format!("channels:listen:{other_cid}")]).await,
        key_with(&app, &owner, &["*:read"]).await,
        owner.access.clone(),
    ] {
        let res = send(
            &app,
            &key,
            Method::GET,
            &format!("/channels/{other_cid}/listen/"),
        )
        .await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    // Nothing a refused key asked for happened: the owner's resources are all still there.
    for path in [
        "/tables/sometable/",
        "/views/someview/",
        &format!("/channels/{cid}/"),
    ] {
        assert_eq!(
            app.get_as(&owner.access, path).await.status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_tenants_key_reads_and_writes_its_own_resource_of_a_name_never_the_other_tenants() {
    // Arrange: two tenants with a table of the same name, each with a row of its own.
    let app = spawn_app().await;
    let (mine, theirs) = (app.user_with_view().await, app.user_with_view().await);
    app.add_some_rows(
        &mine.access,
        None,
        json!([{"SomeNumber": 1, "SomeString": "mine-marker"}]),
    )
    .await;
    app.add_some_rows(
        &theirs.access,
        None,
        json!([{"SomeNumber": 2, "SomeString": "theirs-marker"}]),
    )
    .await;
    let key = key_with(&app, &mine, &["*:read", "tables:append:sometable"]).await;

    // Act: read through the key, and append through it.
    let read = send(
        &app,
        &key,
        Method::GET,
        "/tables/sometable/rows/?format=csv",
    )
    .await;
    assert_eq!(read.status(), StatusCode::OK);
    let text = read.text().await.expect("csv");
    let appended = send(&app, &key, Method::POST, "/tables/sometable/rows/").await;
    assert_eq!(appended.status(), StatusCode::OK);

    // Assert: the key's tenant's rows, and its append landed there only.
    assert!(
        text.contains("mine-marker") && !text.contains("theirs-marker"),
        "{text}"
    );
    let count = |user: &TestUser| {
        let app = &app;
        let access = user.access.clone();
        async move {
            let res = app
                .get_as(
                    &access,
                    "/tables/sometable/rows/?SomeString=eq.from%20a%20key",
                )
                .await;
            let body: Value = res.json().await.expect("json");
            body["rows"].as_array().expect("rows").len()
        }
    };
    assert_eq!((count(&mine).await, count(&theirs).await), (1, 0));
}

#[tokio::test]
async fn a_key_is_shown_once_only_its_hash_is_stored_and_its_use_is_recorded() {
    // Arrange
    let app = spawn_app().await;
    let user = app.user_with_view().await;

    // Act
    let created = create_key(
        &app,
        &user,
        json!({"name": "wall dashboard", "scopes": ["views:read:SomeView", "*:read", "*:read"],
               "rate_limit_per_minute": 30}),
    )
    .await;
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id").to_owned();
    let used = send(&app, &key, Method::GET, "/views/someview/rows/").await;
    assert_eq!(used.status(), StatusCode::OK);
    // last_used_at is written in the background after the first request of a minute.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let listing = app.get_as(&user.access, "/auth/keys/").await;
    let listing_text = listing.text().await.expect("text");

    // The database holds the SHA-256 of the key and nothing the key could be read from.
    let (hash, row): (Vec<u8>, String) = sqlx::query_as(
        "SELECT key_hash, k::text FROM tinydevcrm.api_keys k WHERE key_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.pool)
    .await
    .expect("the key's row");
    assert_eq!(hash, sha2::Sha256::digest(key.as_bytes()).to_vec());
    assert!(!row.contains(&key[12..]), "{row}");
    // Assert: a long random key, answered once, listed without it.
    assert!(key.starts_with("tdc_") && key.len() >= 4 + 22, "{key}");
    assert_eq!(created["prefix"].as_str(), Some(&key[..12]));
    assert_eq!(created["scopes"], json!(["views:read:someview", "*:read"]));
    assert_eq!(created["rate_limit_per_minute"], 30);
    assert!(!listing_text.contains(&key[12..]), "{listing_text}");
    let listing: Value = serde_json::from_str(&listing_text).expect("json");
    let listed = &listing.as_array().expect("array")[0];
    assert_eq!(listed["id"].as_str(), Some(id.as_str()));
    assert_eq!(listed["name"], "wall dashboard");
    assert!(listed.get("key").is_none(), "{listed}");
    assert!(listed["last_used_at"].is_string(), "{listed}");
}

#[tokio::test]
async fn scopes_names_expiry_and_limits_are_checked_when_a_key_is_created() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let refused = [
        (
            json!({"name": "k", "scopes": ["views:write:sales"]}),
            "invalid_scope",
            "views:write:sales",
        ),
        (
            json!({"name": "k", "scopes": ["keys:read:all"]}),
            "invalid_scope",
            "keys:read:all",
        ),
        (
            json!({"name": "k", "scopes": ["*:read", "views:read:1bad"]}),
            "invalid_scope",
            "views:read:1bad",
        ),
        (
            json!({"name": "k", "scopes": ["views:read:select"]}),
            "invalid_scope",
            "views:read:select",
        ),
        (
            json!({"name": "k", "scopes": ["tables:replace:t"]}),
            "invalid_scope",
            "tables:replace:t",
        ),
        (
            json!({"name": "k", "scopes": ["channels:listen:nope"]}),
            "invalid_scope",
            "channels:listen:nope",
        ),
        (
            json!({"name": "k", "scopes": ["*:write"]}),
            "invalid_scope",
            "*:write",
        ),
        (
            json!({"name": "k", "scopes": []}),
            "invalid_scope",
            "at least one",
        ),
        (
            json!({"name": " ", "scopes": ["*:read"]}),
            "invalid_key_name",
            "name",
        ),
        (
            json!({"name": "k", "scopes": ["*:read"], "expires_at": "2001-01-01T00:00:00Z"}),
            "invalid_expiry",
            "future",
        ),
        (
            json!({"name": "k", "scopes": ["*:read"], "rate_limit_per_minute": 0}),
            "invalid_rate_limit",
            "rate_limit_per_minute",
        ),
    ];
    for (body, code, named) in refused {
        let res = app.post_as(&user.access, "/auth/keys/", &body).await;
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, code).await;
        assert!(
            problem["detail"]
                .as_str()
                .unwrap_or_default()
                .contains(named),
            "{problem}"
        );
    }
    // A key cannot make keys, even one holding every scope there is.
    let key = key_with(&app, &user, &["*:read"]).await;
    let res = app
        .post_as(
            &key,
            "/auth/keys/",
            &json!({"name": "k", "scopes": ["*:read"]}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "key_not_allowed").await;
}

#[tokio::test]
async fn revoking_a_key_ends_its_stream_and_every_process_refuses_it_at_once() {
    // Arrange: a second process on the same database holds the key's stream and has just
    // accepted the key (so it remembers it).
    let first = spawn_app().await;
    let (user, cid) = first.user_with_channel().await;
    let mut settings = first.settings.clone();
    settings.scheduler = false;
    let second = spawn_app_on(first.db.clone(), settings).await;
    let created = create_key(
        &first,
        &user,
        json!({"name": "wall", "scopes": [format!("channels:listen:{cid}"), "views:read:someview"]}),
    )
    .await;
    let key = created["key"].as_str().expect("key").to_owned();
    let id = created["id"].as_str().expect("id");
    let mut stream = second.listen(&key, &cid).await;
    for app in [&first, &second] {
        let res = send(app, &key, Method::GET, "/views/someview/rows/").await;
        assert_eq!(res.status(), StatusCode::OK);
    }

    // Act
    let res = first
        .delete_as(&user.access, &format!("/auth/keys/{id}/"))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // Assert: the stream ends with `revoked` within a second; both processes refuse the key
    // (the second as soon as the notice arrived, which the stream's end shows).
    assert_eq!(
        events_until_end(&mut stream, Duration::from_secs(1)).await,
        [Some("revoked".to_owned())]
    );
    for app in [&first, &second] {
        let res = send(app, &key, Method::GET, "/views/someview/rows/").await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "token_invalid").await;
    }
    let listing: Value = first
        .get_as(&user.access, "/auth/keys/")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(listing, json!([]));
    let again = first
        .delete_as(&user.access, &format!("/auth/keys/{id}/"))
        .await;
    assert_problem(again, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn an_expired_key_is_401_and_its_stream_ends_when_it_expires() {
    // Arrange: a key that expires in three seconds, listening.
    let app = spawn_app().await;
    let (user, cid) = app.user_with_channel().await;
    let expires = chrono::Utc::now() + chrono::Duration::seconds(3);
    let created = create_key(
        &app,
        &user,
        json!({"name": "brief", "scopes": ["*:read"], "expires_at": expires}),
    )
    .await;
    let key = created["key"].as_str().expect("key").to_owned();
    let mut stream = app.listen(&key, &cid).await;
    let res = send(&app, &key, Method::GET, "/views/").await;
    assert_eq!(res.status(), StatusCode::OK);

    // Act: wait past the expiry.
    let events = events_until_end(&mut stream, Duration::from_secs(6)).await;

    // Assert: the stream ended at the expiry, and the key is refused from then on.
    assert_eq!(events, [Some("token_expired".to_owned())]);
    assert!(
        chrono::Utc::now() >= expires,
        "the stream ended before the key expired"
    );
    let res = send(&app, &key, Method::GET, "/views/").await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "key_expired").await;
}

#[tokio::test]
async fn a_key_gets_its_rate_limit_with_headers_on_every_answer_then_429() {
    // Arrange: a key allowed three requests a minute.
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let created = create_key(
        &app,
        &user,
        json!({"name": "slow", "scopes": ["views:read:someview"], "rate_limit_per_minute": 3}),
    )
    .await;
    let key = created["key"].as_str().expect("key").to_owned();
    let header = |res: &reqwest::Response, name: &str| -> Option<u64> {
        res.headers().get(name)?.to_str().ok()?.parse().ok()
    };

    // Act and assert: two allowed reads and a refused one (403 still counts and still says
    // where the key stands), then 429 with Retry-After.
    let mut remaining = Vec::new();
    for path in ["/views/someview/rows/", "/views/someview/", "/tables/"] {
        let res = send(&app, &key, Method::GET, path).await;
        assert_eq!(header(&res, "ratelimit-limit"), Some(3), "{path}");
        let reset = header(&res, "ratelimit-reset").expect("RateLimit-Reset");
        assert!((1..=60).contains(&reset), "{reset}");
        remaining.push(header(&res, "ratelimit-remaining").expect("RateLimit-Remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    let res = send(&app, &key, Method::GET, "/views/someview/rows/").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&res, "ratelimit-remaining"), Some(0));
    let retry = header(&res, "retry-after").expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    // A login session is not metered per key.
    let res = app.get_as(&user.access, "/views/someview/rows/").await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.headers().get("ratelimit-limit").is_none());
}

#[tokio::test]
async fn a_key_in_the_query_string_listens_and_never_reaches_the_log() {
    use crate::processes::{serve, wait_until_up};
    // Arrange: a real serve process, whose log is the one operators read.
    let api = spawn_app().await;
    let (user, cid) = api.user_with_channel().await;
    let key = key_with(&api, &user, &[&format!("channels:listen:{cid}")]).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let logs = temp_dir("tdc-key-logs");
    let log = logs.join("serve.log");
    let process = serve(
        &crate::helpers::database_url(&api.db),
        &log,
        &[
            ("TDC_BIND", format!("127.0.0.1:{port}")),
            ("TDC_SCHEDULER", "false".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ],
    );
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    wait_until_up(&client, &base).await;

    // Act: listen with the key in the query as EventSource does, see a refresh; then a refused
    // request with the key in the query too.
    let url = format!("{base}/channels/{cid}/listen/?access_token={key}&probe=visible");
    let mut stream = SseStream::open_url(&client, &url, &[]).await;
    api.refresh_view(&user.access, "someview").await;
    let event = stream.expect_event(Duration::from_secs(5)).await;
    drop(stream);
    let other = client
        .get(format!(
            "{base}/channels/{}/listen/?access_token={key}&probe=refused",
            uuid::Uuid::now_v7()
        ))
        .send()
        .await
        .expect("request");
    assert_eq!(other.status(), StatusCode::FORBIDDEN);
    drop(process);

    // Assert
    assert_eq!(event.event.as_deref(), Some("refresh"));
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("probe=visible") && text.contains("probe=refused"),
        "{text}"
    );
    assert!(!text.contains(&key[4..]), "{text}");
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test]
async fn a_listen_key_holds_at_most_its_own_share_of_its_tenants_streams() {
    // Arrange: two streams per key, ten per tenant; a leaked key opens as many as it can.
    let app = crate::helpers::spawn_app_with(|s| {
        s.key_max_streams = 2;
        s.tenant_max_streams = 10;
    })
    .await;
    let (user, cid) = app.user_with_channel().await;
    let key = key_with(&app, &user, &[&format!("channels:listen:{cid}")]).await;
    let other_key = key_with(&app, &user, &[&format!("channels:listen:{cid}")]).await;
    let _first = app.listen(&key, &cid).await;
    let _second = app.listen(&key, &cid).await;

    // Act
    let third = send(&app, &key, Method::GET, &format!("/channels/{cid}/listen/")).await;

    // Assert: the key's third stream is refused; another key and the owner still listen.
    assert_problem(third, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    let _other = app.listen(&other_key, &cid).await;
    let _owner = app.listen(&user.access, &cid).await;
}

#[tokio::test]
async fn key_names_that_hide_or_reorder_text_are_refused() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    for name in [
        "\u{202e}yek-gnillib",
        "\u{200b}",
        "a\u{2066}b",
        " \u{3000} ",
    ] {
        let res = app
            .post_as(
                &user.access,
                "/auth/keys/",
                &json!({"name": name, "scopes": ["*:read"]}),
            )
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "invalid_key_name").await;
    }
}
