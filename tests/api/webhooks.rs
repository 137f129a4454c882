//! Webhook subscriptions through the real HTTP API: the secret shown once, the URL guard, pause,
//! resume and re-enabling, rotation, test deliveries and manual retries (read back from the
//! outbox table), the delivery log's pages, the limits under parallel creations, and another
//! tenant's channels and webhooks answering 404.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::helpers::{TestApp, TestUser, assert_problem, spawn_app, spawn_app_with};

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().expect("timestamp"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

fn id(v: &Value, key: &str) -> Uuid {
    v[key].as_str().expect(key).parse().expect("uuid")
}

/// A user with a view and a channel on it; the channel's id.
async fn user_with_channel(app: &TestApp) -> (TestUser, Uuid) {
    let (user, channel_id) = app.user_with_channel().await;
    (user, channel_id.parse().expect("uuid"))
}

async fn create_webhook(app: &TestApp, access: &str, channel: Uuid, url: &str) -> Value {
    app.created(
        access,
        &format!("/channels/{channel}/webhooks/"),
        json!({"url": url}),
    )
    .await
}

async fn json_of(res: reqwest::Response, status: StatusCode) -> Value {
    let actual = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(actual, status, "{body}");
    body
}

/// Pauses a webhook, so that a delivery worker (when one runs) holds its deliveries and the
/// test reads them as the API left them.
async fn pause(app: &TestApp, access: &str, channel: Uuid, webhook: Uuid) {
    let res = app
        .patch_as(
            access,
            &format!("/channels/{channel}/webhooks/{webhook}/"),
            &json!({"status": "paused"}),
        )
        .await;
    json_of(res, StatusCode::OK).await;
}

#[tokio::test]
async fn a_new_webhook_answers_its_secret_once_and_is_listed_and_described_without_it() {
    let app = spawn_app().await;
    let (user, channel) = user_with_channel(&app).await;
    let a = &user.access;

    // Act
    let created = app
        .created(
            a,
            &format!("/channels/{channel}/webhooks/"),
            json!({"url": "https://hooks.example.com/tdc", "description": "billing"}),
        )
        .await;

    // Assert: the secret, once.
    let secret = created["secret"].as_str().expect("secret");
    assert!(secret.starts_with("whsec_"), "{secret}");
    assert!(secret.len() > "whsec_".len() + 30, "{secret}");
    let webhook = id(&created, "webhook_id");
    assert_eq!(id(&created, "channel_id"), channel);
    assert_eq!(created["url"], "https://hooks.example.com/tdc");
    assert_eq!(created["description"], "billing");
    assert_eq!(created["status"], "active");
    assert!(created["disabled_reason"].is_null());
    assert!(created["failing_since"].is_null());
    assert!(created["previous_secret_until"].is_null());
    assert!(
        (Utc::now() - time(&created["created_at"]))
            .num_seconds()
            .abs()
            < 60
    );
    let stored: String = sqlx::query_scalar(
        "SELECT secret FROM tinydevcrm.subscriptions WHERE subscription_id = $1",
    )
    .bind(webhook)
    .fetch_one(&app.pool)
    .await
    .expect("stored secret");
    assert_eq!(stored, secret);

    let listed = json_of(
        app.get_as(a, &format!("/channels/{channel}/webhooks/"))
            .await,
        StatusCode::OK,
    )
    .await;
    let described = json_of(
        app.get_as(a, &format!("/channels/{channel}/webhooks/{webhook}/"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed.as_array().expect("list").len(), 1);
    for body in [&listed[0], &described] {
        assert_eq!(id(body, "webhook_id"), webhook);
        assert_eq!(body["status"], "active");
        assert!(body.get("secret").is_none(), "{body}");
        assert!(!body.to_string().contains(secret), "{body}");
    }
    // Without a trailing slash too, like every route.
    let res = app
        .get_as(a, &format!("/channels/{channel}/webhooks/{webhook}"))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn urls_that_reach_internal_addresses_or_carry_credentials_are_refused_naming_the_setting() {
    // Plain http allowed, so that each address form is judged on its address.
    let app = spawn_app_with(|s| s.webhook_allow_http = true).await;
    let (user, channel) = user_with_channel(&app).await;
    let path = format!("/channels/{channel}/webhooks/");

    for (url, says) in [
        ("http://127.0.0.1/hook", "TDC_WEBHOOK_ALLOW_CIDRS"),
        ("https://10.1.2.3/hook", "TDC_WEBHOOK_ALLOW_CIDRS"),
        ("http://2130706433/", "127.0.0.1"),
        ("http://0x7f.1/", "127.0.0.1"),
        ("https://[::ffff:127.0.0.1]/", "127.0.0.1"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://100.64.0.1/", "TDC_WEBHOOK_ALLOW_CIDRS"),
        (
            "https://user:secret@hooks.example.com/",
            "user name or password",
        ),
        ("ftp://hooks.example.com/", "https://"),
        ("hooks.example.com/hook", "absolute URL"),
        ("", "absolute URL"),
    ] {
        let res = app.post_as(&user.access, &path, &json!({"url": url})).await;
        let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_webhook_url").await;
        let detail = problem["detail"].as_str().expect("detail");
        assert!(detail.contains(says), "{url}: {detail}");
    }
    let long = format!("https://hooks.example.com/{}", "a".repeat(2100));
    let res = app
        .post_as(&user.access, &path, &json!({"url": long}))
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_webhook_url").await;
    let res = app
        .post_as(
            &user.access,
            &path,
            &json!({"url": "https://hooks.example.com/", "secret": "whsec_mine"}),
        )
        .await;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );
    let res = app
        .post_as(
            &user.access,
            &path,
            &json!({"url": "https://hooks.example.com/", "description": "d".repeat(1001)}),
        )
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_description").await;

    // Nothing was stored; a public http URL is taken, as the operator allows.
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tinydevcrm.subscriptions")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 0);
    let created = create_webhook(&app, &user.access, channel, "http://hooks.example.com/").await;
    assert_eq!(created["url"], "http://hooks.example.com/");

    // A PATCH is checked the same way.
    let webhook = id(&created, "webhook_id");
    let res = app
        .patch_as(
            &user.access,
            &format!("{path}{webhook}/"),
            &json!({"url": "http://2130706433/"}),
        )
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_webhook_url").await;
}

#[tokio::test]
async fn plain_http_is_refused_by_default_and_an_allowed_range_is_accepted() {
    let app = spawn_app_with(|s| {
        s.webhook_allow_cidrs = vec!["127.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    let (user, channel) = user_with_channel(&app).await;
    let path = format!("/channels/{channel}/webhooks/");

    let res = app
        .post_as(
            &user.access,
            &path,
            &json!({"url": "http://hooks.example.com/"}),
        )
        .await;
    let problem = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_webhook_url").await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("TDC_WEBHOOK_ALLOW_HTTP=true"),
        "{problem}"
    );
    let res = app
        .post_as(&user.access, &path, &json!({"url": "https://10.0.0.1/"}))
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_webhook_url").await;

    // The operator's range: the URL is stored as the parser normalised it.
    let created = create_webhook(&app, &user.access, channel, "https://2130706433:8443/h").await;
    assert_eq!(created["url"], "https://127.0.0.1:8443/h");
}

#[tokio::test]
async fn pausing_resuming_and_re_enabling_a_disabled_webhook_clear_what_the_service_recorded() {
    let app = spawn_app().await;
    let (user, channel) = user_with_channel(&app).await;
    let a = &user.access;
    let created = create_webhook(&app, a, channel, "https://hooks.example.com/").await;
    let webhook = id(&created, "webhook_id");
    let path = format!("/channels/{channel}/webhooks/{webhook}/");

    // Pause and resume, in both spellings.
    let paused = json_of(
        app.patch_as(a, &path, &json!({"status": "paused"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(paused["status"], "paused");
    assert!(paused.get("secret").is_none());
    let resumed = json_of(
        app.patch_as(a, &path, &json!({"paused": false})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(resumed["status"], "active");
    let paused = json_of(
        app.patch_as(a, &path, &json!({"paused": true, "status": "paused"}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(paused["status"], "paused");
    let res = app
        .patch_as(a, &path, &json!({"paused": true, "status": "active"}))
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_webhook").await;
    let res = app.patch_as(a, &path, &json!({"status": "disabled"})).await;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "only the service disables"
    );
    let res = app.patch_as(a, &path, &json!({"secret": "whsec_x"})).await;
    assert_eq!(
        res.status(),
        StatusCode::BAD_REQUEST,
        "unknown fields are refused"
    );

    // The service disabled it (as the delivery worker does after a 410).
    sqlx::query(
        "UPDATE tinydevcrm.subscriptions
            SET status = 'disabled', disabled_reason = 'the receiver answered 410 Gone',
                failing_since = now() - interval '1 hour'
          WHERE subscription_id = $1",
    )
    .bind(webhook)
    .execute(&app.pool)
    .await
    .expect("disable");
    let disabled = json_of(app.get_as(a, &path).await, StatusCode::OK).await;
    assert_eq!(disabled["status"], "disabled");
    assert_eq!(
        disabled["disabled_reason"],
        "the receiver answered 410 Gone"
    );
    assert!(time(&disabled["failing_since"]) < Utc::now());

    // A description change leaves that alone...
    let described = json_of(
        app.patch_as(a, &path, &json!({"description": "billing"}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(described["status"], "disabled");
    assert_eq!(described["description"], "billing");
    assert!(described["failing_since"].is_string());

    // ...re-enabling clears it.
    let enabled = json_of(
        app.patch_as(a, &path, &json!({"status": "active"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(enabled["status"], "active");
    assert!(enabled["disabled_reason"].is_null(), "{enabled}");
    assert!(enabled["failing_since"].is_null(), "{enabled}");
    assert_eq!(enabled["description"], "billing");
    let cleared = json_of(
        app.patch_as(a, &path, &json!({"description": null})).await,
        StatusCode::OK,
    )
    .await;
    assert!(cleared["description"].is_null());

    // Delete.
    let res = app.delete_as(a, &path).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.get_as(a, &path).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.delete_as(a, &path).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn rotating_the_secret_keeps_the_previous_one_signing_until_the_overlap_ends() {
    let app = spawn_app_with(|s| s.webhook_rotation_overlap = Duration::from_secs(3600)).await;
    let (user, channel) = user_with_channel(&app).await;
    let a = &user.access;
    let created = create_webhook(&app, a, channel, "https://hooks.example.com/").await;
    let webhook = id(&created, "webhook_id");
    let first = created["secret"].as_str().expect("secret").to_owned();

    // Act
    let before = Utc::now();
    let rotated = json_of(
        app.post_as(
            a,
            &format!("/channels/{channel}/webhooks/{webhook}/rotate-secret/"),
            &json!({}),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    // Assert
    let second = rotated["secret"].as_str().expect("secret");
    assert!(second.starts_with("whsec_"));
    assert_ne!(second, first);
    let until = time(&rotated["previous_secret_until"]);
    let overlap = until - before;
    assert!(
        overlap > chrono::Duration::seconds(3590) && overlap < chrono::Duration::seconds(3610),
        "{overlap}"
    );
    let (secret, previous, stored_until): (String, Option<String>, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "SELECT secret, previous_secret, previous_secret_until
               FROM tinydevcrm.subscriptions WHERE subscription_id = $1",
        )
        .bind(webhook)
        .fetch_one(&app.pool)
        .await
        .expect("secrets");
    assert_eq!(secret, second);
    assert_eq!(previous.as_deref(), Some(first.as_str()));
    assert_eq!(stored_until, Some(until));
    let described = json_of(
        app.get_as(a, &format!("/channels/{channel}/webhooks/{webhook}/"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(described.get("secret").is_none());
    assert_eq!(time(&described["previous_secret_until"]), until);
}

/// Receives the next notification on `tdc_events` (within 5 s).
async fn next_notice(listener: &mut PgListener) -> String {
    tokio::time::timeout(Duration::from_secs(5), listener.recv())
        .await
        .expect("a notification in time")
        .expect("notification")
        .payload()
        .to_owned()
}

#[tokio::test]
async fn a_test_and_a_retry_queue_pending_deliveries_and_wake_the_delivery_workers() {
    let app = spawn_app().await;
    let (user, channel) = user_with_channel(&app).await;
    let a = &user.access;
    let created = create_webhook(&app, a, channel, "https://hooks.example.com/").await;
    let webhook = id(&created, "webhook_id");
    pause(&app, a, channel, webhook).await;
    let mut listener = PgListener::connect_with(&app.pool).await.expect("listener");
    listener.listen("tdc_events").await.expect("listen");
    let base = format!("/channels/{channel}/webhooks/{webhook}");

    // Act: a test delivery.
    let queued = json_of(
        app.post_as(a, &format!("{base}/test/"), &json!({})).await,
        StatusCode::ACCEPTED,
    )
    .await;

    // Assert: a pending delivery of no event, and the workers woken.
    let delivery = id(&queued, "delivery_id");
    assert_eq!(next_notice(&mut listener).await, "deliveries");
    let (seq, status, payload, sub, ch): (Option<i64>, String, Value, Uuid, Uuid) = sqlx::query_as(
        "SELECT seq, status, payload, subscription_id, channel_id
               FROM tinydevcrm.deliveries WHERE delivery_id = $1",
    )
    .bind(delivery)
    .fetch_one(&app.pool)
    .await
    .expect("delivery");
    assert_eq!(
        (seq, status.as_str(), sub, ch),
        (None, "pending", webhook, channel)
    );
    assert_eq!(payload["type"], "test");
    assert_eq!(payload["channel_id"], channel.to_string());
    assert!((Utc::now() - time(&payload["sent_at"])).num_seconds().abs() < 60);

    // A pending delivery is not retried.
    let retry = format!("{base}/deliveries/{delivery}/retry/");
    let res = app.post_as(a, &retry, &json!({})).await;
    assert_problem(res, StatusCode::CONFLICT, "delivery_pending").await;

    // A failed one is: due now, its attempts and last answer kept.
    sqlx::query(
        "UPDATE tinydevcrm.deliveries
            SET status = 'failed', attempts = 7, last_status_code = 500,
                next_attempt_at = now() + interval '1 day', finished_at = now()
          WHERE delivery_id = $1",
    )
    .bind(delivery)
    .execute(&app.pool)
    .await
    .expect("fail it");
    let queued = json_of(
        app.post_as(a, &retry, &json!({})).await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(id(&queued, "delivery_id"), delivery);
    assert_eq!(next_notice(&mut listener).await, "deliveries");
    let (status, attempts, code, due, finished): (
        String,
        i32,
        Option<i32>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
    ) = sqlx::query_as(
        "SELECT status, attempts, last_status_code, next_attempt_at, finished_at
           FROM tinydevcrm.deliveries WHERE delivery_id = $1",
    )
    .bind(delivery)
    .fetch_one(&app.pool)
    .await
    .expect("delivery");
    assert_eq!((status.as_str(), attempts, code), ("pending", 7, Some(500)));
    assert!(due <= Utc::now(), "due now, not in a day");
    assert!(finished.is_none());

    // A delivery of another webhook (even the same user's) is not this webhook's.
    let other = create_webhook(&app, a, channel, "https://other.example.com/").await;
    let other = id(&other, "webhook_id");
    let res = app
        .post_as(
            a,
            &format!("/channels/{channel}/webhooks/{other}/deliveries/{delivery}/retry/"),
            &json!({}),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .post_as(
            a,
            &format!("{base}/deliveries/{}/retry/", Uuid::new_v4()),
            &json!({}),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn the_delivery_log_pages_newest_first_without_gaps_or_repeats() {
    let app = spawn_app().await;
    let (user, channel) = user_with_channel(&app).await;
    let a = &user.access;
    let created = create_webhook(&app, a, channel, "https://hooks.example.com/").await;
    let webhook = id(&created, "webhook_id");
    pause(&app, a, channel, webhook).await;
    // Seven deliveries: three share one time (ties), one is pending with a long answer.
    let mut expected = Vec::new();
    for (minutes_ago, status) in [
        (10, "succeeded"),
        (9, "failed"),
        (8, "succeeded"),
        (8, "succeeded"),
        (8, "failed"),
        (5, "succeeded"),
        (1, "pending"),
    ] {
        let delivery = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO tinydevcrm.deliveries
                    (delivery_id, subscription_id, channel_id, seq, payload, status, attempts,
                     last_status_code, last_latency_ms, last_response, created_at, finished_at,
                     next_attempt_at)
             VALUES ($1, $2, $3, 1, '{}', $4, 1, 200, 12, repeat('x', 5000),
                     date_trunc('second', now()) - make_interval(mins => $5),
                     CASE WHEN $4 <> 'pending' THEN now() END,
                     now() + interval '1 minute')",
        )
        .bind(delivery)
        .bind(webhook)
        .bind(channel)
        .bind(status)
        .bind(minutes_ago)
        .execute(&app.pool)
        .await
        .expect("delivery");
        expected.push((minutes_ago, delivery));
    }
    // Newest first, ties by id.
    expected.sort_by_key(|(minutes_ago, delivery)| (*minutes_ago, *delivery));
    let expected: Vec<Uuid> = expected.into_iter().map(|(_, d)| d).collect();

    // Act: pages of three.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut url = format!("/channels/{channel}/webhooks/{webhook}/deliveries/?limit=3");
    loop {
        let page = json_of(app.get_as(a, &url).await, StatusCode::OK).await;
        pages += 1;
        for d in page["deliveries"].as_array().expect("deliveries") {
            assert_eq!(d["last_response"].as_str().expect("response").len(), 1024);
            assert_eq!(d["last_status_code"], 200);
            assert_eq!(d["last_latency_ms"], 12);
            assert_eq!(d["attempts"], 1);
            if d["status"] == "pending" {
                assert!(d["next_attempt_at"].is_string() && d["finished_at"].is_null());
            } else {
                assert!(
                    d["next_attempt_at"].is_null() && d["finished_at"].is_string(),
                    "{d}"
                );
            }
            seen.push(id(d, "delivery_id"));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => {
                url = format!(
                    "/channels/{channel}/webhooks/{webhook}/deliveries/?limit=3&cursor={cursor}"
                );
            }
            None => break,
        }
    }

    // Assert
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
    let all = json_of(
        app.get_as(
            a,
            &format!("/channels/{channel}/webhooks/{webhook}/deliveries/"),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(all["deliveries"].as_array().expect("all").len(), 7);
    assert!(all["next_cursor"].is_null());
    for query in ["limit=0", "limit=201"] {
        let res = app
            .get_as(
                a,
                &format!("/channels/{channel}/webhooks/{webhook}/deliveries/?{query}"),
            )
            .await;
        assert_problem(res, StatusCode::BAD_REQUEST, "invalid_limit").await;
    }
    let res = app
        .get_as(
            a,
            &format!("/channels/{channel}/webhooks/{webhook}/deliveries/?cursor=nope"),
        )
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_cursor").await;
}

#[tokio::test]
async fn a_cursor_of_another_webhooks_log_is_refused_even_on_the_same_channel() {
    let app = spawn_app().await;
    let (user, channel) = user_with_channel(&app).await;
    let a = &user.access;
    let mut webhooks = Vec::new();
    for host in ["one", "two"] {
        let url = format!("https://{host}.example.com/");
        let webhook = id(&create_webhook(&app, a, channel, &url).await, "webhook_id");
        pause(&app, a, channel, webhook).await;
        // Two test deliveries each (held: paused), so that a page of one has a next page.
        for _ in 0..2 {
            let test = format!("/channels/{channel}/webhooks/{webhook}/test/");
            json_of(
                app.post_as(a, &test, &json!({})).await,
                StatusCode::ACCEPTED,
            )
            .await;
        }
        webhooks.push(webhook);
    }
    let page_of = |webhook: Uuid, cursor: &str| {
        format!("/channels/{channel}/webhooks/{webhook}/deliveries/?limit=1&cursor={cursor}")
    };
    let first = json_of(
        app.get_as(
            a,
            &format!(
                "/channels/{channel}/webhooks/{}/deliveries/?limit=1",
                webhooks[0]
            ),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let cursor = first["next_cursor"].as_str().expect("a next page");

    // Act
    let other = app.get_as(a, &page_of(webhooks[1], cursor)).await;

    // Assert: refused there, read on its own log.
    assert_problem(other, StatusCode::BAD_REQUEST, "invalid_cursor").await;
    let next = json_of(
        app.get_as(a, &page_of(webhooks[0], cursor)).await,
        StatusCode::OK,
    )
    .await;
    let next = next["deliveries"].as_array().expect("deliveries");
    assert_eq!(next.len(), 1);
    assert_ne!(
        next[0]["delivery_id"],
        first["deliveries"][0]["delivery_id"]
    );
}

#[tokio::test]
async fn the_limits_per_channel_and_per_tenant_hold_for_parallel_creations() {
    let app = spawn_app_with(|s| {
        s.max_webhooks_per_channel = 2;
        s.max_subscriptions_per_tenant = 3;
    })
    .await;
    let (user, first) = user_with_channel(&app).await;
    let a = &user.access;
    let second = id(
        &app.created(a, "/channels/create/", json!({"view_name": "someview"}))
            .await,
        "channel_id",
    );

    // Act: eight creations at once on one channel.
    let path = format!("/channels/{first}/webhooks/");
    let body = json!({"url": "https://hooks.example.com/"});
    let answers =
        futures_util::future::join_all((0..8).map(|_| app.post_as(a, &path, &body))).await;

    // Assert
    let mut created = 0;
    for res in answers {
        if res.status() == StatusCode::CREATED {
            created += 1;
        } else {
            let problem = assert_problem(res, StatusCode::CONFLICT, "too_many_webhooks").await;
            let detail = problem["detail"].as_str().expect("detail");
            assert!(
                detail.contains("at most 2 webhooks")
                    && detail.contains("TDC_MAX_WEBHOOKS_PER_CHANNEL"),
                "{detail}"
            );
        }
    }
    assert_eq!(created, 2);

    // The tenant's third is taken on the other channel, then no more, on any channel.
    let path = format!("/channels/{second}/webhooks/");
    let answers =
        futures_util::future::join_all((0..4).map(|_| app.post_as(a, &path, &body))).await;
    let mut created = 0;
    for res in answers {
        if res.status() == StatusCode::CREATED {
            created += 1;
        } else {
            let problem = assert_problem(res, StatusCode::CONFLICT, "too_many_subscriptions").await;
            let detail = problem["detail"].as_str().expect("detail");
            assert!(
                detail.contains("at most 3") && detail.contains("TDC_MAX_SUBSCRIPTIONS_PER_TENANT"),
                "{detail}"
            );
        }
    }
    assert_eq!(created, 1);
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tinydevcrm.subscriptions")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(count, 3);

    // Another tenant has limits of its own.
    let (other, channel) = user_with_channel(&app).await;
    create_webhook(&app, &other.access, channel, "https://hooks.example.com/").await;
}

#[tokio::test]
async fn another_tenants_channels_webhooks_and_deliveries_are_not_found_on_every_route() {
    let app = spawn_app().await;
    let (owner, channel) = user_with_channel(&app).await;
    let created = create_webhook(&app, &owner.access, channel, "https://hooks.example.com/").await;
    let webhook = id(&created, "webhook_id");
    pause(&app, &owner.access, channel, webhook).await;
    let queued = json_of(
        app.post_as(
            &owner.access,
            &format!("/channels/{channel}/webhooks/{webhook}/test/"),
            &json!({}),
        )
        .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let delivery = id(&queued, "delivery_id");
    sqlx::query("UPDATE tinydevcrm.deliveries SET status = 'failed' WHERE delivery_id = $1")
        .bind(delivery)
        .execute(&app.pool)
        .await
        .expect("fail it");
    // The intruder has a channel and a webhook of their own, to mix into the paths.
    let (intruder, own_channel) = user_with_channel(&app).await;
    let own = create_webhook(
        &app,
        &intruder.access,
        own_channel,
        "https://x.example.com/",
    )
    .await;
    let own = id(&own, "webhook_id");
    let i = &intruder.access;
    let body = json!({"url": "https://evil.example.com/"});

    // Act and assert: the owner's paths, and the owner's webhook under the intruder's channel.
    for (c, w) in [(channel, webhook), (own_channel, webhook), (channel, own)] {
        let base = format!("/channels/{c}/webhooks/{w}");
        for res in [
            app.get_as(i, &format!("{base}/")).await,
            app.patch_as(i, &format!("{base}/"), &json!({"status": "paused"}))
                .await,
            app.post_as(i, &format!("{base}/rotate-secret/"), &json!({}))
                .await,
            app.post_as(i, &format!("{base}/test/"), &json!({})).await,
            app.get_as(i, &format!("{base}/deliveries/")).await,
            app.post_as(
                i,
                &format!("{base}/deliveries/{delivery}/retry/"),
                &json!({}),
            )
            .await,
            app.delete_as(i, &format!("{base}/")).await,
        ] {
            assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
        }
    }
    let path = format!("/channels/{channel}/webhooks/");
    assert_problem(
        app.get_as(i, &path).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_problem(
        app.post_as(i, &path, &body).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for bad in ["not-a-uuid", "%20"] {
        let res = app.get_as(i, &format!("/channels/{bad}/webhooks/")).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{bad}");
        let res = app
            .get_as(
                &owner.access,
                &format!("/channels/{channel}/webhooks/{bad}/"),
            )
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{bad}");
    }

    // Nothing of the owner's changed.
    let (secret, status, url, deliveries): (String, String, String, i64) = sqlx::query_as(
        "SELECT s.secret, s.status, s.url,
                (SELECT count(*) FROM tinydevcrm.deliveries d WHERE d.subscription_id = s.subscription_id)
           FROM tinydevcrm.subscriptions s WHERE s.subscription_id = $1",
    )
    .bind(webhook)
    .fetch_one(&app.pool)
    .await
    .expect("owner's webhook");
    assert_eq!(secret, created["secret"].as_str().expect("secret"));
    assert_eq!(
        (status.as_str(), url.as_str()),
        ("paused", "https://hooks.example.com/")
    );
    assert_eq!(deliveries, 1);
    let failed: String =
        sqlx::query_scalar("SELECT status FROM tinydevcrm.deliveries WHERE delivery_id = $1")
            .bind(delivery)
            .fetch_one(&app.pool)
            .await
            .expect("delivery");
    assert_eq!(failed, "failed", "not retried by the intruder");
    let subscriptions_on_channel: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tinydevcrm.subscriptions WHERE channel_id = $1")
            .bind(channel)
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(
        subscriptions_on_channel, 1,
        "the intruder created none there"
    );
}

#[tokio::test]
async fn deleting_a_channel_deletes_its_webhooks_and_their_deliveries() {
    let app = spawn_app().await;
    let (user, channel) = user_with_channel(&app).await;
    let a = &user.access;
    let created = create_webhook(&app, a, channel, "https://hooks.example.com/").await;
    let webhook = id(&created, "webhook_id");
    pause(&app, a, channel, webhook).await;
    let res = app
        .post_as(
            a,
            &format!("/channels/{channel}/webhooks/{webhook}/test/"),
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);

    // Act
    let res = app.delete_as(a, &format!("/channels/{channel}/")).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // Assert
    let (subscriptions, deliveries): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tinydevcrm.subscriptions),
                (SELECT count(*) FROM tinydevcrm.deliveries)",
    )
    .fetch_one(&app.pool)
    .await
    .expect("counts");
    assert_eq!((subscriptions, deliveries), (0, 0));
    let res = app
        .get_as(a, &format!("/channels/{channel}/webhooks/{webhook}/"))
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}
