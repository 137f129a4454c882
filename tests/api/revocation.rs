//! Revocation is immediate: logout and refresh-token reuse end the revoked session's SSE streams
//! on every process within a second, and a revocation whose notice was missed ends them at the
//! hub's next session re-check. A process that remembers a live session (`auth::sessions`)
//! refuses it as soon as any revocation is announced.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_problem, spawn_app, spawn_app_on, spawn_app_with, superuser};
use crate::sse::{Next, SseStream};

/// How soon a revoked session's streams must end.
const WITHIN: Duration = Duration::from_secs(1);

/// A channel on the `someview` of `TestApp::user_with_view`; its id.
async fn channel_on_someview(app: &TestApp, access: &str) -> String {
    let channel = app
        .created(
            access,
            "/channels/create/",
            json!({"view_name": "someview"}),
        )
        .await;
    channel["channel_id"].as_str().expect("id").to_owned()
}

/// Reads `stream` until the server ends it, which must happen within `limit` of `since`; the
/// names of the events it sent meanwhile.
async fn events_until_end(
    stream: &mut SseStream,
    since: Instant,
    limit: Duration,
) -> Vec<Option<String>> {
    let mut seen = Vec::new();
    loop {
        match stream.next(limit.saturating_sub(since.elapsed())).await {
            Next::Event(event) => seen.push(event.event),
            Next::End => return seen,
            Next::Broken(why) => panic!("the connection broke ({why}) after {seen:?}"),
            Next::Timeout => {
                panic!("the stream was still open {limit:?} after the revocation; it sent {seen:?}")
            }
        }
    }
}

fn revoked() -> Vec<Option<String>> {
    vec![Some("revoked".to_owned())]
}

#[tokio::test]
async fn logout_ends_the_sessions_streams_within_a_second_and_spares_the_users_other_sessions() {
    // Arrange: two sessions of one user, each listening to the same channel.
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let other_session = app.login(&user.email, &user.password).await;
    let cid = channel_on_someview(&app, &user.access).await;
    let mut doomed = app.listen(&user.access, &cid).await;
    let mut kept = app.listen(&other_session.access, &cid).await;

    // Act: log the first session out, then refresh the view at once.
    let started = Instant::now();
    let res = app.blacklist(&user.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    app.refresh_view(&other_session.access, "someview").await;

    // Assert: the logged-out stream ends with `revoked` and nothing after the logout; the
    // other session's stream gets the refresh.
    assert_eq!(
        events_until_end(&mut doomed, started, WITHIN).await,
        revoked()
    );
    let event = kept.expect_event(5 * WITHIN).await;
    assert_eq!((event.event.as_deref(), event.seq()), (Some("refresh"), 1));
    app.refresh_view(&other_session.access, "someview").await;
    assert_eq!(kept.expect_event(5 * WITHIN).await.seq(), 2);
}

#[tokio::test]
async fn reusing_a_refresh_token_revokes_the_session_and_ends_every_stream_of_it() {
    // Arrange: two streams of one session, opened with its first and its rotated access token.
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let cid = channel_on_someview(&app, &user.access).await;
    let mut first = app.listen(&user.access, &cid).await;
    let res = app.refresh(&user.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.expect("json");
    let mut second = app
        .listen(rotated["access"].as_str().expect("access"), &cid)
        .await;

    // Act: present the already used refresh token again.
    let started = Instant::now();
    let res = app.refresh(&user.refresh).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "token_revoked").await;

    // Assert
    assert_eq!(
        events_until_end(&mut first, started, WITHIN).await,
        revoked()
    );
    assert_eq!(
        events_until_end(&mut second, started, WITHIN).await,
        revoked()
    );
}

#[tokio::test]
async fn logout_on_one_process_ends_the_stream_held_by_another_within_a_second() {
    // Arrange: a second process on the same database holds the stream.
    let first = spawn_app().await;
    let user = first.user_with_view().await;
    let mut settings = first.settings.clone();
    settings.scheduler = false;
    let second = spawn_app_on(first.db.clone(), settings).await;
    let cid = channel_on_someview(&first, &user.access).await;
    let mut held = second.listen(&user.access, &cid).await;

    // Act
    let started = Instant::now();
    let res = first.blacklist(&user.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);

    // Assert
    assert_eq!(
        events_until_end(&mut held, started, WITHIN).await,
        revoked()
    );
}

/// Revokes (or expires) sessions behind the service's back: no notice is sent, as when the
/// revocation committed while the hub's listener was reconnecting (triggers off, so the one
/// that announces revocations made in SQL stays silent too).
async fn change_sessions_silently(app: &TestApp, set: &str) {
    let mut admin = superuser(&app.db).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET session_replication_role = replica;
         UPDATE tinydevcrm.sessions SET {set} WHERE revoked_at IS NULL AND expires_at > now()"
    )))
    .execute(&mut admin)
    .await
    .expect("update sessions");
}

#[tokio::test]
async fn a_revocation_whose_notice_was_missed_ends_its_streams_at_the_next_session_recheck() {
    let app = spawn_app_with(|s| s.sse_session_recheck = Duration::from_secs(1)).await;
    let user = app.user_with_view().await;
    let cid = channel_on_someview(&app, &user.access).await;

    let mut stream = app.listen(&user.access, &cid).await;
    let started = Instant::now();
    change_sessions_silently(&app, "revoked_at = now(), revoked_reason = 'logout'").await;
    assert_eq!(
        events_until_end(&mut stream, started, 3 * WITHIN).await,
        revoked()
    );

    // A session past its expiry ends its streams the same way, with `session_expired`.
    let again = app.login(&user.email, &user.password).await;
    let mut stream = app.listen(&again.access, &cid).await;
    let started = Instant::now();
    change_sessions_silently(&app, "expires_at = now() - interval '1 second'").await;
    assert_eq!(
        events_until_end(&mut stream, started, 3 * WITHIN).await,
        vec![Some("session_expired".to_owned())]
    );
}

#[tokio::test]
async fn after_its_listener_reconnects_the_hub_ends_the_streams_of_sessions_revoked_meanwhile() {
    // A re-check interval far beyond the test: only the reconnect can find the revocation.
    let app = spawn_app_with(|s| s.sse_session_recheck = Duration::from_secs(3600)).await;
    let user = app.user_with_view().await;
    let cid = channel_on_someview(&app, &user.access).await;
    let mut stream = app.listen(&user.access, &cid).await;

    let started = Instant::now();
    change_sessions_silently(&app, "revoked_at = now(), revoked_reason = 'logout'").await;
    let mut admin = superuser(&app.db).await;
    loop {
        let killed: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND query LIKE 'LISTEN%tdc_events%'",
        )
        .fetch_all(&mut admin)
        .await
        .expect("terminate the hub's listener");
        if !killed.is_empty() {
            break;
        }
        assert!(started.elapsed() < WITHIN, "the hub is not listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    assert_eq!(
        events_until_end(&mut stream, started, 5 * WITHIN).await,
        revoked()
    );
}

/// Asks `app` for the caller's account with `access` until the answer is 401, for at most
/// `within`; how long that took, or `None`.
async fn refused_within(app: &TestApp, access: &str, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < within {
        if app.get_as(access, "/auth/users/me/").await.status() == StatusCode::UNAUTHORIZED {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Has `app` remember the session of `access` (its hub must be listening for that), shown by
/// a silent revocation it does not notice; the session is left revoked silently.
async fn remembered_then_revoked_silently(app: &TestApp, access: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(
            app.get_as(access, "/auth/users/me/").await.status(),
            StatusCode::OK
        );
        change_sessions_silently(app, "revoked_at = now()").await;
        if app.get_as(access, "/auth/users/me/").await.status() == StatusCode::OK {
            return;
        }
        // Not remembered yet (the hub was not listening): undo, and again.
        assert!(
            Instant::now() < deadline,
            "the session was never remembered"
        );
        let mut admin = superuser(&app.db).await;
        sqlx::query("UPDATE tinydevcrm.sessions SET revoked_at = NULL, revoked_reason = NULL")
            .execute(&mut admin)
            .await
            .expect("undo");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_session_a_process_remembers_is_refused_there_as_soon_as_it_revokes_any_session() {
    // Arrange: the process remembers the session (long enough that only a revocation ends
    // it), and the session is then revoked behind its back.
    let app = spawn_app_with(|s| s.session_cache = Duration::from_secs(600)).await;
    let user = app.signed_up_user().await;
    remembered_then_revoked_silently(&app, &user.access).await;
    let other = app.signed_up_user().await;

    // Act: someone else logs out here (this process forgets at once, before its notice).
    assert_eq!(app.blacklist(&other.refresh).await.status(), StatusCode::OK);

    // Assert: at once, not when the notice comes back.
    assert_problem(
        app.get_as(&user.access, "/auth/users/me/").await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
}

#[tokio::test]
async fn a_revocation_announced_by_another_process_ends_what_this_one_remembers_within_a_second() {
    // Arrange: the first process remembers a session that was then revoked behind its back;
    // a second process serves another user.
    let first = spawn_app_with(|s| s.session_cache = Duration::from_secs(600)).await;
    let user = first.signed_up_user().await;
    remembered_then_revoked_silently(&first, &user.access).await;
    let mut settings = first.settings.clone();
    settings.scheduler = false;
    let second = spawn_app_on(first.db.clone(), settings).await;
    let other = second.signed_up_user().await;

    // Act: the other user logs out on the second process; only its notice reaches the first.
    assert_eq!(
        second.blacklist(&other.refresh).await.status(),
        StatusCode::OK
    );

    // Assert
    assert!(
        refused_within(&first, &user.access, WITHIN).await.is_some(),
        "the first process still trusted what it remembered after a revocation was announced"
    );
}
