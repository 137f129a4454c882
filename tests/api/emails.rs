//! E-mail subscriptions end to end: the real HTTP API, the real outbox, and a real SMTP server
//! (aiosmtpd, see [`crate::smtp`]) whose received messages the tests read. Confirmation before
//! anything else, the link pages, the tokens that must not work, one message per interval, an
//! SMTP server that is down for a while or refuses for good, unsubscribing, pause and resume,
//! the per-address limit on confirmations, and the answer without SMTP.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tinydevcrm::config::Settings;

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_with};
use crate::smtp::{Gate, GateMode, Handler, Mail, SmtpServer};

/// Long enough for a message to arrive on a loaded machine.
const ARRIVES: Duration = Duration::from_secs(20);

/// Settings for fast e-mail tests against `smtp`.
fn with_smtp(s: &mut Settings, smtp: &SmtpServer) {
    s.smtp_url = Some(SecretString::from(smtp.url()));
    s.smtp_from = Some("tinydevcrm <noreply@example.com>".to_owned());
    s.outbox_poll = Duration::from_millis(50);
    s.email_interval = Duration::from_millis(300);
    s.email_confirm_resend = Duration::ZERO;
    s.webhook_retry_schedule = vec![Duration::from_millis(300); 30];
}

async fn json_of(res: reqwest::Response, status: StatusCode) -> Value {
    let actual = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(actual, status, "{body}");
    body
}

/// Creates an e-mail subscription to `to`; its body.
async fn subscribe(app: &TestApp, access: &str, channel: &str, to: &str) -> Value {
    app.created(
        access,
        &format!("/channels/{channel}/emails/"),
        json!({"to": to}),
    )
    .await
}

/// Creates a subscription, waits for its confirmation message (the `n`th message of the
/// server) and confirms through its link; the subscription's id and the message.
async fn confirmed(
    app: &TestApp,
    smtp: &SmtpServer,
    access: &str,
    channel: &str,
    to: &str,
    n: usize,
) -> (String, Mail) {
    let created = subscribe(app, access, channel, to).await;
    let mail = smtp.wait_for(n, ARRIVES).await.remove(n - 1);
    let link = mail.link("/emails/confirm/");
    let res = app.client.post(&link).send().await.expect("confirm");
    assert_eq!(res.status(), StatusCode::OK);
    (created["email_id"].as_str().expect("id").to_owned(), mail)
}

async fn describe(app: &TestApp, access: &str, channel: &str, email: &str) -> Value {
    json_of(
        app.get_as(access, &format!("/channels/{channel}/emails/{email}/"))
            .await,
        StatusCode::OK,
    )
    .await
}

async fn deliveries(app: &TestApp, access: &str, channel: &str, email: &str) -> Vec<Value> {
    json_of(
        app.get_as(
            access,
            &format!("/channels/{channel}/emails/{email}/deliveries/"),
        )
        .await,
        StatusCode::OK,
    )
    .await["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone()
}

/// Waits until every delivery of the subscription has finished; them.
async fn settled(app: &TestApp, access: &str, channel: &str, email: &str) -> Vec<Value> {
    let deadline = Instant::now() + ARRIVES;
    loop {
        let all = deliveries(app, access, channel, email).await;
        if all.iter().all(|d| d["status"] != "pending") {
            return all;
        }
        assert!(Instant::now() < deadline, "still pending: {all:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_address_receives_only_its_confirmation_until_it_confirms_and_then_the_events() {
    let Some(smtp) = SmtpServer::start("confirmation", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| with_smtp(s, &smtp)).await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;

    // Act: subscribe, and refresh before confirming.
    let created = subscribe(&app, a, &channel, "alice@example.com").await;
    let email = created["email_id"].as_str().expect("id").to_owned();
    assert_eq!(created["status"], "unconfirmed", "{created}");
    assert_eq!(created["confirmed"], false);
    assert!(created["confirmation_sent_at"].is_string(), "{created}");
    let confirmation = smtp.wait_for(1, ARRIVES).await.remove(0);
    app.refresh_view(a, "someview").await;
    app.refresh_view(a, "someview").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Assert: one message, the confirmation, with both links and the RFC 8058 headers.
    assert_eq!(smtp.messages().len(), 1, "{:#?}", smtp.messages());
    assert_eq!(confirmation.to, "alice@example.com");
    assert!(
        confirmation.subject.starts_with("Confirm"),
        "{}",
        confirmation.subject
    );
    let confirm_link = confirmation.link("/emails/confirm/");
    let unsubscribe_link = confirmation.link("/emails/unsubscribe/");
    assert!(confirm_link.starts_with(&app.address), "{confirm_link}");
    assert_eq!(
        confirmation.list_unsubscribe.as_deref(),
        Some(format!("<{unsubscribe_link}>").as_str())
    );
    assert_eq!(
        confirmation.list_unsubscribe_post.as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let log = deliveries(&app, a, &channel, &email).await;
    assert_eq!(log.len(), 1, "only the confirmation is queued: {log:#?}");
    assert!(log[0]["seq"].is_null());
    assert_eq!(log[0]["status"], "succeeded");

    // Act: confirm, then refresh.
    let res = app
        .client
        .post(&confirm_link)
        .send()
        .await
        .expect("confirm");
    assert_eq!(res.status(), StatusCode::OK);
    let described = describe(&app, a, &channel, &email).await;
    assert_eq!(described["status"], "active", "{described}");
    assert_eq!(described["confirmed"], true);
    app.refresh_view(a, "someview").await;

    // Assert: the event arrives, and only that one (the earlier ones were never queued).
    let mail = smtp.wait_for(2, ARRIVES).await.remove(1);
    assert_eq!(mail.to, "alice@example.com");
    assert_eq!(mail.subject, "someview refreshed");
    assert!(mail.body.contains("event 3: someview"), "{}", mail.body);
    assert!(!mail.body.contains("event 1:"), "{}", mail.body);
    assert!(mail.list_unsubscribe.is_some());
    let log = settled(&app, a, &channel, &email).await;
    assert_eq!(log.len(), 2, "{log:#?}");
    assert_eq!(log[0]["seq"], 3);
}

#[tokio::test]
async fn the_confirmation_link_page_confirms_nothing_and_its_button_confirms_once() {
    let Some(smtp) = SmtpServer::start("link page", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| with_smtp(s, &smtp)).await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let created = subscribe(&app, a, &channel, "bob@example.com").await;
    let email = created["email_id"].as_str().expect("id").to_owned();
    let link = smtp.wait_for(1, ARRIVES).await[0].link("/emails/confirm/");

    // Act: what a mail scanner does, twice.
    for _ in 0..2 {
        let res = app.client.get(&link).send().await.expect("page");
        assert_eq!(res.status(), StatusCode::OK);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .expect("type")
                .starts_with("text/html")
        );
        // minijinja escapes `/` in attributes as `&#x2f;`, which browsers read back.
        let page = res.text().await.expect("page").replace("&#x2f;", "/");
        let path = link.trim_start_matches(&app.address);
        assert!(
            page.contains(&format!("<form method=\"post\" action=\"{path}\">")),
            "{page}"
        );
    }

    // Assert: still unconfirmed.
    assert_eq!(
        describe(&app, a, &channel, &email).await["status"],
        "unconfirmed"
    );

    // Act: the button.
    let first = app.client.post(&link).send().await.expect("confirm");
    let again = app.client.post(&link).send().await.expect("again");

    // Assert: confirmed once; the used link is refused afterwards, POST and GET.
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        describe(&app, a, &channel, &email).await["status"],
        "active"
    );
    assert_problem(again, StatusCode::NOT_FOUND, "not_found").await;
    let res = app.client.get(&link).send().await.expect("page");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn forged_superseded_and_expired_confirmation_tokens_are_refused() {
    let Some(smtp) = SmtpServer::start("tokens", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| {
        with_smtp(s, &smtp);
        s.email_confirm_ttl = Duration::from_secs(2);
    })
    .await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let created = subscribe(&app, a, &channel, "carol@example.com").await;
    let email = created["email_id"].as_str().expect("id").to_owned();
    let first = smtp.wait_for(1, ARRIVES).await[0].link("/emails/confirm/");
    let (base, token) = first.rsplit_once('/').expect("token");

    // Forged: every character changed in turn somewhere, another subscription's id, garbage.
    let mut forged: Vec<String> = Vec::new();
    for at in [0, 10, 21, 40, 63] {
        let mut t: Vec<char> = token.chars().collect();
        t[at] = if t[at] == 'A' { 'B' } else { 'A' };
        forged.push(t.into_iter().collect());
    }
    forged.extend([
        String::new(),
        "x".repeat(64),
        format!("{token}A"),
        token[..63].to_owned(),
        token.to_uppercase(),
    ]);
    for bad in &forged {
        let res = app
            .client
            .post(format!("{base}/{bad}"))
            .send()
            .await
            .expect("post");
        assert!(
            res.status() == StatusCode::NOT_FOUND,
            "{bad:?}: {}",
            res.status()
        );
    }

    // Superseded: a resend replaces the link; the first one no longer works.
    let res = app
        .post_as(
            a,
            &format!("/channels/{channel}/emails/{email}/resend-confirmation/"),
            &json!({}),
        )
        .await;
    json_of(res, StatusCode::ACCEPTED).await;
    let second = smtp.wait_for(2, ARRIVES).await[1].link("/emails/confirm/");
    assert_ne!(first, second);
    let res = app.client.post(&first).send().await.expect("post");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);

    // Expired: past the TTL the newest link is refused too.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let res = app.client.post(&second).send().await.expect("post");
    assert_problem(res, StatusCode::CONFLICT, "link_expired").await;
    let res = app.client.get(&second).send().await.expect("get");
    assert_eq!(res.status(), StatusCode::CONFLICT);

    // Assert: none of it confirmed anything.
    let described = describe(&app, a, &channel, &email).await;
    assert_eq!(described["status"], "unconfirmed", "{described}");
}

#[tokio::test]
async fn events_within_the_interval_wait_and_arrive_listed_in_the_next_message() {
    let Some(smtp) = SmtpServer::start("interval", Handler::Maildir).await else {
        return;
    };
    let interval = Duration::from_secs(4);
    let app = spawn_app_with(|s| {
        with_smtp(s, &smtp);
        s.email_interval = interval;
    })
    .await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let (email, _) = confirmed(&app, &smtp, a, &channel, "dave@example.com", 1).await;

    // Act: one event, then three more at once.
    app.refresh_view(a, "someview").await;
    let first = smtp.wait_for(2, ARRIVES).await.remove(1);
    let first_at = Instant::now();
    for _ in 0..3 {
        app.refresh_view(a, "someview").await;
    }
    tokio::time::sleep(interval / 2).await;

    // Assert: the first went at once and alone; the others wait for the interval...
    assert!(first.body.contains("event 1: someview"), "{}", first.body);
    assert_eq!(smtp.messages().len(), 2, "nothing more within the interval");
    // ...and then come in one message listing each.
    let second = smtp.wait_for(3, ARRIVES).await.remove(2);
    assert!(
        first_at.elapsed() >= interval - Duration::from_millis(500),
        "{:?}",
        first_at.elapsed()
    );
    assert_eq!(second.subject, "3 refreshes of someview");
    for seq in 2..=4 {
        assert!(
            second.body.contains(&format!("event {seq}: someview")),
            "{}",
            second.body
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.messages().len(), 3);
    let log = settled(&app, a, &channel, &email).await;
    assert_eq!(
        log.iter().filter(|d| d["status"] == "succeeded").count(),
        5,
        "{log:#?}"
    );
}

#[tokio::test]
async fn mail_queued_while_the_smtp_server_is_down_is_all_delivered_when_it_is_back() {
    let Some(mut smtp) = SmtpServer::start("smtp down", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| with_smtp(s, &smtp)).await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let (email, _) = confirmed(&app, &smtp, a, &channel, "erin@example.com", 1).await;

    // Act: the server goes away; five events; it comes back after a few failed attempts.
    smtp.down();
    for _ in 0..5 {
        app.refresh_view(a, "someview").await;
    }
    let deadline = Instant::now() + ARRIVES;
    loop {
        let log = deliveries(&app, a, &channel, &email).await;
        let failed_attempts = log
            .iter()
            .filter(|d| d["seq"].is_i64() && d["attempts"].as_i64() >= Some(2))
            .count();
        if failed_attempts > 0 {
            let retried = &log[0];
            assert_eq!(retried["status"], "pending", "{retried}");
            assert!(retried["last_error"].is_string(), "{retried}");
            break;
        }
        assert!(Instant::now() < deadline, "no retries: {log:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    smtp.up().await;

    // Assert: every event arrives, each once.
    let log = settled(&app, a, &channel, &email).await;
    assert!(log.iter().all(|d| d["status"] == "succeeded"), "{log:#?}");
    let bodies: String = smtp
        .messages()
        .iter()
        .skip(1)
        .map(|m| m.body.clone())
        .collect();
    for seq in 1..=5 {
        assert_eq!(
            bodies.matches(&format!("event {seq}: ")).count(),
            1,
            "event {seq} in {bodies}"
        );
    }
}

#[tokio::test]
async fn a_permanent_smtp_rejection_fails_the_delivery_at_once_with_the_reply_in_the_log() {
    let Some(smtp) = SmtpServer::start("rejection", Handler::RejectAll).await else {
        return;
    };
    let app = spawn_app_with(|s| with_smtp(s, &smtp)).await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;

    // Act: the confirmation message is refused with 550.
    let created = subscribe(&app, a, &channel, "frank@example.com").await;
    let email = created["email_id"].as_str().expect("id").to_owned();

    // Assert: failed after one attempt, the reply kept.
    let log = settled(&app, a, &channel, &email).await;
    assert_eq!(log.len(), 1, "{log:#?}");
    let d = &log[0];
    assert_eq!(d["status"], "failed", "{d}");
    assert_eq!(d["attempts"], 1, "{d}");
    assert_eq!(d["last_status_code"], 550, "{d}");
    let reply = d["last_response"].as_str().expect("reply");
    assert!(reply.contains("refused by the test server"), "{reply}");
    assert!(d["next_attempt_at"].is_null());
}

#[tokio::test]
async fn the_unsubscribe_link_stops_mail_for_good() {
    let Some(smtp) = SmtpServer::start("unsubscribe", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| with_smtp(s, &smtp)).await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let (email, _) = confirmed(&app, &smtp, a, &channel, "grace@example.com", 1).await;
    app.refresh_view(a, "someview").await;
    let mail = smtp.wait_for(2, ARRIVES).await.remove(1);
    let header = mail.list_unsubscribe.clone().expect("List-Unsubscribe");
    let link = header
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_owned();
    assert_eq!(link, mail.link("/emails/unsubscribe/"));

    // Act: the page (changes nothing), then the mail client's one-click POST (RFC 8058).
    let res = app.client.get(&link).send().await.expect("page");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        describe(&app, a, &channel, &email).await["status"],
        "active"
    );
    let res = app
        .client
        .post(&link)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("one-click");
    assert_eq!(res.status(), StatusCode::OK);
    app.refresh_view(a, "someview").await;
    app.refresh_view(a, "someview").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Assert: nothing more; the owner sees why and cannot resume it.
    assert_eq!(smtp.messages().len(), 2);
    let described = describe(&app, a, &channel, &email).await;
    assert_eq!(described["status"], "disabled", "{described}");
    assert_eq!(described["disabled_reason"], "the recipient unsubscribed");
    assert!(described["unsubscribed_at"].is_string());
    let res = app
        .patch_as(
            a,
            &format!("/channels/{channel}/emails/{email}/"),
            &json!({"status": "active"}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "email_unsubscribed").await;
    // Repeating the one-click POST is harmless.
    let res = app.client.post(&link).send().await.expect("again");
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_paused_subscription_holds_its_events_and_resuming_sends_them_in_one_message() {
    let Some(smtp) = SmtpServer::start("pause", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| with_smtp(s, &smtp)).await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let (email, _) = confirmed(&app, &smtp, a, &channel, "heidi@example.com", 1).await;
    let path = format!("/channels/{channel}/emails/{email}/");

    // Act: pause, two events.
    let paused = json_of(
        app.patch_as(a, &path, &json!({"paused": true})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(paused["status"], "paused");
    app.refresh_view(a, "someview").await;
    app.refresh_view(a, "someview").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Assert: held.
    assert_eq!(smtp.messages().len(), 1);
    let log = deliveries(&app, a, &channel, &email).await;
    assert_eq!(
        log.iter().filter(|d| d["status"] == "pending").count(),
        2,
        "{log:#?}"
    );

    // Act: resume.
    let resumed = json_of(
        app.patch_as(a, &path, &json!({"status": "active"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(resumed["status"], "active");

    // Assert: both, in one message.
    let mail = smtp.wait_for(2, ARRIVES).await.remove(1);
    assert!(
        mail.body.contains("event 1: ") && mail.body.contains("event 2: "),
        "{}",
        mail.body
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(smtp.messages().len(), 2);
}

#[tokio::test]
async fn a_tenant_sends_one_confirmation_per_address_per_interval_in_any_spelling_even_after_deleting()
 {
    let Some(smtp) = SmtpServer::start("resend limit", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| {
        with_smtp(s, &smtp);
        s.email_confirm_resend = Duration::from_secs(3600);
    })
    .await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let first = subscribe(&app, a, &channel, "ivan.petrov@example.com").await;
    let first_id = first["email_id"].as_str().expect("id").to_owned();
    smtp.wait_for(1, ARRIVES).await;

    // Act: resend at once; delete it; subscribe the same mailbox in other spellings (case,
    // +tag, dots), as a create/delete loop would.
    let res = app
        .post_as(
            a,
            &format!("/channels/{channel}/emails/{first_id}/resend-confirmation/"),
            &json!({}),
        )
        .await;
    let retry_after = res.headers().get("retry-after").cloned();
    let problem = assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    let res = app
        .delete_as(a, &format!("/channels/{channel}/emails/{first_id}/"))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let mut later = Vec::new();
    for spelling in [
        "IVAN.PETROV@example.com",
        "ivan.petrov+1@example.com",
        "ivanpetrov+x@Example.com",
        "i.v.a.n.petrov+@example.com",
    ] {
        let body = subscribe(&app, a, &channel, spelling).await;
        let id = body["email_id"].as_str().expect("id").to_owned();
        later.push(body);
        let res = app
            .delete_as(a, &format!("/channels/{channel}/emails/{id}/"))
            .await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Assert: one message in all; the later subscriptions say when a confirmation can go.
    assert_eq!(smtp.messages().len(), 1, "{:#?}", smtp.messages());
    assert!(retry_after.is_some());
    assert!(problem["retry_at"].is_string(), "{problem}");
    for body in &later {
        assert!(body["confirmation_sent_at"].is_null(), "{body}");
        assert!(body["confirmation_retry_at"].is_string(), "{body}");
        assert_eq!(body["status"], "unconfirmed");
    }
}

#[tokio::test]
async fn another_tenants_create_delete_loop_on_an_address_does_not_hold_back_my_confirmation() {
    let Some(smtp) = SmtpServer::start("starving", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| {
        with_smtp(s, &smtp);
        s.email_confirm_resend = Duration::from_secs(3600);
        s.email_confirmations_per_address_per_hour = 3;
    })
    .await;
    let (attacker, ac) = app.user_with_channel().await;
    let (victim, vc) = app.user_with_channel().await;
    let (third, tc) = app.user_with_channel().await;

    // Act: the attacker loops create/delete on the address; then the victim subscribes it.
    for _ in 0..10 {
        let body = subscribe(&app, &attacker.access, &ac, "shared@example.com").await;
        let id = body["email_id"].as_str().expect("id");
        app.delete_as(&attacker.access, &format!("/channels/{ac}/emails/{id}/"))
            .await;
    }
    let mine = subscribe(&app, &victim.access, &vc, "shared@example.com").await;
    let theirs = subscribe(&app, &third.access, &tc, "shared@example.com").await;
    let fourth = {
        let (u, c) = app.user_with_channel().await;
        subscribe(&app, &u.access, &c, "shared@example.com").await
    };

    // Assert: the attacker's loop queued one confirmation (sent, or dropped with its deleted
    // subscription), the victim and a third tenant got theirs; the address's hourly cap (3)
    // holds back a fourth tenant's.
    assert!(mine["confirmation_sent_at"].is_string(), "{mine}");
    assert!(theirs["confirmation_sent_at"].is_string(), "{theirs}");
    assert!(fourth["confirmation_sent_at"].is_null(), "{fourth}");
    assert!(fourth["confirmation_retry_at"].is_string(), "{fourth}");
    smtp.wait_for(2, ARRIVES).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(smtp.messages().len() <= 3, "{:#?}", smtp.messages());
}

#[tokio::test]
async fn a_tenant_past_its_hourly_confirmation_budget_gets_429_naming_the_setting() {
    let Some(smtp) = SmtpServer::start("tenant budget", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| {
        with_smtp(s, &smtp);
        s.email_confirmations_per_tenant_per_hour = 3;
    })
    .await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let mut ids = Vec::new();
    for n in 0..3 {
        let body = subscribe(&app, a, &channel, &format!("budget{n}@example.com")).await;
        ids.push(body["email_id"].as_str().expect("id").to_owned());
    }
    smtp.wait_for(3, ARRIVES).await;

    // Act: a fourth address; a resend; and deleting every subscription first does not help.
    let fourth = app
        .post_as(
            a,
            &format!("/channels/{channel}/emails/"),
            &json!({"to": "budget3@example.com"}),
        )
        .await;
    let retry_after = fourth.headers().get("retry-after").cloned();
    let problem = assert_problem(
        fourth,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_confirmations",
    )
    .await;
    let resend = app
        .post_as(
            a,
            &format!("/channels/{channel}/emails/{}/resend-confirmation/", ids[0]),
            &json!({}),
        )
        .await;
    assert_problem(
        resend,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_confirmations",
    )
    .await;
    for id in &ids {
        app.delete_as(a, &format!("/channels/{channel}/emails/{id}/"))
            .await;
    }
    let again = app
        .post_as(
            a,
            &format!("/channels/{channel}/emails/"),
            &json!({"to": "budget4@example.com"}),
        )
        .await;
    assert_problem(
        again,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_confirmations",
    )
    .await;

    // Assert: three messages; the answer says when and which setting.
    let secs: u64 = retry_after
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((3000..=3600).contains(&secs), "{secs}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("TDC_EMAIL_CONFIRMATIONS_PER_TENANT_PER_HOUR")),
        "{problem}"
    );
    assert!(problem["retry_at"].is_string(), "{problem}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(smtp.messages().len(), 3);
    // Another tenant is not affected.
    let (other, oc) = app.user_with_channel().await;
    let body = subscribe(&app, &other.access, &oc, "budget3@example.com").await;
    assert!(body["confirmation_sent_at"].is_string(), "{body}");
}

#[tokio::test]
async fn an_address_that_unsubscribed_is_refused_for_good_by_every_tenant_in_any_spelling() {
    let Some(smtp) = SmtpServer::start("suppression", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| with_smtp(s, &smtp)).await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let created = subscribe(&app, a, &channel, "refuser@example.com").await;
    let id = created["email_id"].as_str().expect("id").to_owned();
    let mail = smtp.wait_for(1, ARRIVES).await.remove(0);
    let res = app
        .client
        .post(mail.link("/emails/unsubscribe/"))
        .send()
        .await
        .expect("unsubscribe");
    assert_eq!(res.status(), StatusCode::OK);

    // Act: the owner deletes and subscribes it again, in spellings; another tenant tries.
    let res = app
        .delete_as(a, &format!("/channels/{channel}/emails/{id}/"))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (other, oc) = app.user_with_channel().await;
    for (access, ch, to) in [
        (a, &channel, "refuser@example.com"),
        (a, &channel, "Re.Fuser+again@example.com"),
        (&other.access, &oc, "refuser@example.com"),
    ] {
        let res = app
            .post_as(
                access,
                &format!("/channels/{ch}/emails/"),
                &json!({"to": to}),
            )
            .await;
        assert_problem(res, StatusCode::CONFLICT, "email_suppressed").await;
        let listed = json_of(
            app.get_as(access, &format!("/channels/{ch}/emails/")).await,
            StatusCode::OK,
        )
        .await;
        assert_eq!(listed, json!([]), "{to}: nothing is created");
    }

    // Assert: no second message; the database keeps a hash, not the address.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(smtp.messages().len(), 1);
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT address_hash FROM tinydevcrm.email_suppressions")
            .fetch_all(&app.pool)
            .await
            .expect("suppressions");
    assert_eq!(stored.len(), 1);
    assert!(
        !String::from_utf8_lossy(&stored[0]).contains("refuser"),
        "{stored:?}"
    );
}

#[tokio::test]
async fn without_smtp_the_email_routes_that_send_answer_email_not_configured() {
    let app = spawn_app().await;
    let (user, channel) = app.user_with_channel().await;

    let res = app
        .post_as(
            &user.access,
            &format!("/channels/{channel}/emails/"),
            &json!({"to": "judy@example.com"}),
        )
        .await;

    let problem =
        assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "email_not_configured").await;
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("TDC_SMTP_URL"),
        "{problem}"
    );
    let listed = json_of(
        app.get_as(&user.access, &format!("/channels/{channel}/emails/"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed, json!([]));
}

#[tokio::test]
async fn email_subscriptions_count_toward_the_channel_and_tenant_limits() {
    let Some(smtp) = SmtpServer::start("limits", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| {
        with_smtp(s, &smtp);
        s.max_emails_per_channel = 2;
        s.max_subscriptions_per_tenant = 3;
    })
    .await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    subscribe(&app, a, &channel, "k1@example.com").await;
    subscribe(&app, a, &channel, "k2@example.com").await;

    let res = app
        .post_as(
            a,
            &format!("/channels/{channel}/emails/"),
            &json!({"to": "k3@example.com"}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "too_many_emails").await;
    app.created(
        a,
        &format!("/channels/{channel}/webhooks/"),
        json!({"url": "https://hooks.example.com/x"}),
    )
    .await;
    let second = app
        .created(a, "/channels/create/", json!({"view_name": "someview"}))
        .await;
    let res = app
        .post_as(
            a,
            &format!(
                "/channels/{}/emails/",
                second["channel_id"].as_str().expect("id")
            ),
            &json!({"to": "k4@example.com"}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "too_many_subscriptions").await;
}

/// What a `serve` process killed in the middle of a message leaves behind, written as its claim
/// statement would have: the subscription claimed under a lease, its deliveries' attempt
/// counted and pushed to the lease's end. Another process must leave them alone until then,
/// and send them after.
#[tokio::test]
async fn a_claim_left_by_a_killed_process_is_taken_over_once_its_lease_has_passed() {
    let Some(smtp) = SmtpServer::start("dead claim", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| with_smtp(s, &smtp)).await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let (email, _) = confirmed(&app, &smtp, a, &channel, "kim@example.com", 1).await;
    let path = format!("/channels/{channel}/emails/{email}/");
    json_of(
        app.patch_as(a, &path, &json!({"paused": true})).await,
        StatusCode::OK,
    )
    .await;
    app.refresh_view(a, "someview").await;
    app.refresh_view(a, "someview").await;
    let id: uuid::Uuid = email.parse().expect("uuid");
    let lease = Duration::from_secs(3);
    sqlx::query(
        "WITH s AS (
             UPDATE tinydevcrm.subscriptions
                SET email_claim = gen_random_uuid(),
                    email_claim_until = now() + $2 * interval '1 millisecond'
              WHERE subscription_id = $1)
         UPDATE tinydevcrm.deliveries
            SET attempts = attempts + 1, next_attempt_at = now() + $2 * interval '1 millisecond'
          WHERE subscription_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(i64::try_from(lease.as_millis()).expect("ms"))
    .execute(&app.pool)
    .await
    .expect("dead claim");
    let claimed_at = Instant::now();

    // Act: resume; the claim of the dead process still holds.
    json_of(
        app.patch_as(a, &path, &json!({"paused": false})).await,
        StatusCode::OK,
    )
    .await;
    tokio::time::sleep(lease / 2).await;

    // Assert: nothing during the lease; then both events, in one message, each attempt counted.
    assert_eq!(
        smtp.messages().len(),
        1,
        "sent within another process's lease"
    );
    let mail = smtp.wait_for(2, ARRIVES).await.remove(1);
    assert!(claimed_at.elapsed() >= lease - Duration::from_millis(200));
    assert!(
        mail.body.contains("event 1: ") && mail.body.contains("event 2: "),
        "{}",
        mail.body
    );
    let log = settled(&app, a, &channel, &email).await;
    for d in log.iter().filter(|d| d["seq"].is_i64()) {
        assert_eq!(d["status"], "succeeded", "{d}");
        assert_eq!(d["attempts"], 2, "{d}");
    }
}

#[tokio::test]
async fn two_processes_share_the_mail_and_send_each_event_to_each_address_exactly_once() {
    let Some(smtp) = SmtpServer::start("two processes", Handler::Maildir).await else {
        return;
    };
    let app = spawn_app_with(|s| with_smtp(s, &smtp)).await;
    let second_settings = app.settings.clone();
    let second = crate::helpers::spawn_app_on(app.db.clone(), second_settings).await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let addresses: Vec<String> = (0..8).map(|i| format!("s{i}@example.com")).collect();
    for (n, to) in addresses.iter().enumerate() {
        confirmed(&app, &smtp, a, &channel, to, n + 1).await;
    }

    // Act: three events; both processes drain.
    for _ in 0..3 {
        app.refresh_view(a, "someview").await;
    }

    // Assert: every address gets events 1, 2 and 3, each once, over both processes.
    let deadline = Instant::now() + ARRIVES;
    loop {
        let messages = smtp.messages();
        let complete = addresses.iter().all(|to| {
            let bodies: String = messages
                .iter()
                .filter(|m| &m.to == to && !m.subject.starts_with("Confirm"))
                .map(|m| m.body.clone())
                .collect();
            (1..=3).all(|seq| bodies.contains(&format!("event {seq}: ")))
        });
        if complete {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every event arrived: {messages:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let messages = smtp.messages();
    for to in &addresses {
        let bodies: String = messages
            .iter()
            .filter(|m| &m.to == to && !m.subject.starts_with("Confirm"))
            .map(|m| m.body.clone())
            .collect();
        for seq in 1..=3 {
            assert_eq!(
                bodies.matches(&format!("event {seq}: ")).count(),
                1,
                "{to}, event {seq}: {bodies}"
            );
        }
    }
    drop(second);
}

/// A relay that accepts the connection and then stalls (`mode`): the attempt must end at the
/// SMTP timeout, be retried on the schedule, and leave its slot to other mail. With one slot,
/// an attempt that never ended would keep every later message from going out.
async fn a_stalled_relay_costs_one_timeout_per_attempt(mode: GateMode) {
    let Some(smtp) = SmtpServer::start("stalled relay", Handler::Maildir).await else {
        return;
    };
    let gate = Gate::start(mode).await;
    let timeout = Duration::from_millis(1000);
    let app = spawn_app_with(|s| {
        with_smtp(s, &smtp);
        s.smtp_url = Some(SecretString::from(gate.url()));
        s.smtp_timeout = timeout;
        s.email_concurrency = 1;
    })
    .await;
    let (user, channel) = app.user_with_channel().await;
    let a = &user.access;
    let held = subscribe(&app, a, &channel, "held@example.com").await;
    let held = held["email_id"].as_str().expect("id").to_owned();

    // Act: the relay stalls every connection until a second one comes (the first attempt
    // ended and was retried).
    let started = Instant::now();
    while gate.accepted() < 2 {
        assert!(
            started.elapsed() < timeout * 5,
            "{mode:?}: the first attempt did not end within {:?}",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Assert: the first attempt's outcome is a timeout, recorded within about the deadline.
    let log = deliveries(&app, a, &channel, &held).await;
    let first = &log[0];
    assert!(
        first["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("TDC_SMTP_TIMEOUT_SECS")),
        "{mode:?}: {first}"
    );
    let latency = first["last_latency_ms"].as_i64().expect("latency");
    assert!(
        (900..2000).contains(&latency),
        "{mode:?}: an attempt took {latency} ms against a {timeout:?} deadline"
    );

    // Act: the relay works again; another subscription's confirmation is queued meanwhile.
    gate.set(GateMode::Forward(smtp.port));
    subscribe(&app, a, &channel, "other@example.com").await;

    // Assert: both confirmations go out through the single slot.
    let mut to: Vec<String> = smtp
        .wait_for(2, ARRIVES)
        .await
        .into_iter()
        .map(|m| m.to)
        .collect();
    to.sort();
    assert_eq!(to, ["held@example.com", "other@example.com"], "{mode:?}");
    let log = settled(&app, a, &channel, &held).await;
    assert_eq!(log[0]["status"], "succeeded", "{mode:?}: {log:#?}");
    assert!(log[0]["attempts"].as_i64() >= Some(2), "{mode:?}: {log:#?}");
}

#[tokio::test]
async fn a_relay_that_never_greets_times_out_each_attempt_and_other_mail_still_goes_out() {
    a_stalled_relay_costs_one_timeout_per_attempt(GateMode::Silent).await;
}

#[tokio::test]
async fn a_relay_that_drips_its_greeting_times_out_each_attempt_and_other_mail_still_goes_out() {
    a_stalled_relay_costs_one_timeout_per_attempt(GateMode::Drip).await;
}

#[tokio::test]
async fn one_tenants_backlog_of_confirmations_leaves_a_slot_to_another_tenant() {
    let Some(smtp) = SmtpServer::start("fairness", Handler::Maildir).await else {
        return;
    };
    // Every message takes about 600 ms; two slots, at most one per tenant.
    let gate = Gate::start(GateMode::Slow(smtp.port, 600)).await;
    let app = spawn_app_with(|s| {
        with_smtp(s, &smtp);
        s.smtp_url = Some(SecretString::from(gate.url()));
        s.email_concurrency = 2;
        s.email_concurrency_per_tenant = 1;
    })
    .await;
    let (busy, bc) = app.user_with_channel().await;
    let (quiet, qc) = app.user_with_channel().await;

    // Act: one tenant queues six confirmations, then the other one.
    for n in 0..6 {
        subscribe(&app, &busy.access, &bc, &format!("busy{n}@example.com")).await;
    }
    subscribe(&app, &quiet.access, &qc, "quiet@example.com").await;

    // Assert: the quiet tenant's message is among the first two out, not behind the backlog.
    let all = smtp.wait_for(7, ARRIVES).await;
    let position = all
        .iter()
        .position(|m| m.to == "quiet@example.com")
        .expect("the quiet tenant's message");
    assert!(
        position < 2,
        "the quiet tenant's message went out {}th: {:?}",
        position + 1,
        all.iter().map(|m| &m.to).collect::<Vec<_>>()
    );
}
