//! Accounts and JWT sessions, through the HTTP API.

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tinydevcrm::auth::jwt::{Claims, JwtKeys, TokenType};
use uuid::Uuid;

use crate::helpers::{
    TestApp, assert_problem, spawn_app, spawn_app_on, spawn_app_with, superuser, test_settings,
};

fn claims_of(app: &TestApp, token: &str, typ: TokenType) -> Claims {
    JwtKeys::new(app.settings.jwt_secret.expose_secret().as_bytes())
        .verify(token, typ)
        .expect("a valid token")
}

fn segments(token: &str) -> Vec<Value> {
    token
        .split('.')
        .take(2)
        .map(|s| {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).expect("base64url")).expect("json")
        })
        .collect()
}

fn encode_segment(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"))
}

#[tokio::test]
async fn register_answers_201_with_the_user_and_never_the_hash() {
    let app = spawn_app().await;

    let res = app.register("me@yingw787.com", "test1234").await;

    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["primary_email"], "me@yingw787.com");
    assert!(Uuid::parse_str(body["id"].as_str().expect("id")).is_ok());
    assert!(body.get("password").is_none() && body.get("password_hash").is_none());
    assert!(!body.to_string().contains("argon2"));
}

#[tokio::test]
async fn sign_ups_sent_eight_at_a_time_all_succeed_and_each_gets_its_own_tenant() {
    // Arrange: 64 different accounts.
    let app = spawn_app().await;
    let emails: Vec<String> = (0..64).map(|i| format!("crowd{i}@example.com")).collect();

    // Act: register them eight at a time (registrations used to grant on the database object,
    // which concurrent grants updated at once: `tuple concurrently updated`, a 500).
    let statuses: Vec<(String, StatusCode)> =
        futures_util::stream::iter(emails.iter().map(|email| async {
            (
                email.clone(),
                app.register(email, "test1234").await.status(),
            )
        }))
        .buffer_unordered(8)
        .collect()
        .await;

    // Assert: every sign-up answered 201 and has its own tenant role, which may create the
    // temporary tables a concurrent refresh needs.
    let failed: Vec<_> = statuses
        .iter()
        .filter(|(_, status)| *status != StatusCode::CREATED)
        .collect();
    assert!(failed.is_empty(), "sign-ups that failed: {failed:?}");
    let mut admin = superuser(&app.db).await;
    let (tenants, with_temp): (i64, i64) = sqlx::query_as(
        "SELECT count(DISTINCT r.rolname),
                count(*) FILTER (WHERE has_database_privilege(r.rolname, current_database(), 'TEMPORARY'))
         FROM tinydevcrm.users u JOIN pg_roles r ON r.rolname = u.tenant_role",
    )
    .fetch_one(&mut admin)
    .await
    .expect("count tenant roles");
    assert_eq!((tenants, with_temp), (64, 64));
}

#[tokio::test]
async fn register_provisions_an_opaque_tenant_role_and_schema_in_the_same_transaction() {
    let app = spawn_app().await;

    let body: Value = app
        .register("tenant@example.com", "test1234")
        .await
        .json()
        .await
        .expect("json");

    let id = Uuid::parse_str(body["id"].as_str().expect("id")).expect("uuid");
    let name = format!("t_{}", id.simple());
    let mut admin = superuser(&app.db).await;
    let (can_login, inherits, superuser_, create_role): (bool, bool, bool, bool) = sqlx::query_as(
        "SELECT rolcanlogin, rolinherit, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = $1",
    )
    .bind(&name)
    .fetch_one(&mut admin)
    .await
    .expect("the tenant role exists");
    assert!(!can_login && !inherits && !superuser_ && !create_role);
    let owner: String =
        sqlx::query_scalar("SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .expect("the tenant schema exists");
    assert_eq!(owner, name);
    let public_can_use: bool =
        sqlx::query_scalar("SELECT has_schema_privilege('public', $1, 'USAGE')")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .expect("privilege check");
    assert!(
        !public_can_use,
        "the tenant schema must not be usable by PUBLIC"
    );
    let service_is_member: bool =
        sqlx::query_scalar("SELECT pg_has_role('tinydevcrm', $1, 'MEMBER')")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .expect("membership check");
    assert!(service_is_member);
    assert!(
        !name.contains("tenant") && !name.contains("example"),
        "names are opaque"
    );
}

#[tokio::test]
async fn a_duplicate_registration_leaves_no_second_user_or_schema_behind() {
    let app = spawn_app().await;
    let mut admin = superuser(&app.db).await;
    let count_schemas = r"SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\_%'";
    assert_eq!(
        app.register("dup@example.com", "test1234").await.status(),
        StatusCode::CREATED
    );

    let res = app.register("DUP@example.com", "test1234").await;

    assert_problem(res, StatusCode::CONFLICT, "email_taken").await;
    let schemas: i64 = sqlx::query_scalar(count_schemas)
        .fetch_one(&mut admin)
        .await
        .expect("count");
    assert_eq!(schemas, 1);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM tinydevcrm.users")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(users, 1);
}

#[tokio::test]
async fn tenant_provisioning_rolls_back_with_its_transaction() {
    let app = spawn_app().await;
    let user_id = Uuid::new_v4();
    let name = tinydevcrm::db::tenant::tenant_name(user_id);

    let mut tx = app.pool.begin().await.expect("begin");
    tinydevcrm::db::tenant::provision(&mut tx, user_id)
        .await
        .expect("provision");
    tx.rollback().await.expect("rollback");

    let mut admin = superuser(&app.db).await;
    let role: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(name.as_str())
        .fetch_optional(&mut admin)
        .await
        .expect("query");
    let schema: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_namespace WHERE nspname = $1")
        .bind(name.as_str())
        .fetch_optional(&mut admin)
        .await
        .expect("query");
    assert!(
        role.is_none() && schema.is_none(),
        "a rolled-back registration left its tenant behind"
    );
}

#[tokio::test]
async fn plus_addressing_makes_a_distinct_user() {
    let app = spawn_app().await;

    let first = app.register("me@yingw787.com", "test1234").await;
    let second = app.register("me+specialapp@yingw787.com", "test1234").await;

    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(second.status(), StatusCode::CREATED);
    let a: Value = first.json().await.expect("json");
    let b: Value = second.json().await.expect("json");
    assert_ne!(a["id"], b["id"]);
}

#[tokio::test]
async fn a_duplicate_email_in_another_case_is_409() {
    let app = spawn_app().await;
    assert_eq!(
        app.register("me@yingw787.com", "test1234").await.status(),
        StatusCode::CREATED
    );

    for duplicate in ["ME@YINGW787.COM", "Me@YingW787.com", " me@yingw787.com "] {
        let res = app.register(duplicate, "test1234").await;
        assert_problem(res, StatusCode::CONFLICT, "email_taken").await;
    }
}

#[tokio::test]
async fn the_domain_is_lower_cased_and_login_ignores_case() {
    let app = spawn_app().await;

    let body: Value = app
        .register("Someone@Example.COM", "test1234")
        .await
        .json()
        .await
        .expect("json");

    assert_eq!(body["primary_email"], "Someone@example.com");
    assert_eq!(
        app.obtain("someone@EXAMPLE.com", "test1234").await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn malformed_emails_are_400_invalid_email() {
    let app = spawn_app().await;

    for bad in [
        "",
        "plainaddress",
        "@example.com",
        "me@",
        "me@@example.com",
        "Me <me@example.com>",
        "a b@example.com",
    ] {
        let res = app.register(bad, "test1234").await;
        let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_email").await;
        assert!(body["detail"].as_str().expect("detail").contains("e-mail"));
    }
}

#[tokio::test]
async fn passwords_must_be_8_to_1024_bytes() {
    let app = spawn_app().await;

    assert_problem(
        app.register("a@example.com", "1234567").await,
        StatusCode::BAD_REQUEST,
        "password_too_short",
    )
    .await;
    assert_problem(
        app.register("b@example.com", &"x".repeat(1025)).await,
        StatusCode::BAD_REQUEST,
        "password_too_long",
    )
    .await;
    assert_eq!(
        app.register("c@example.com", &"x".repeat(1024))
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.register("d@example.com", "12345678").await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_one_megabyte_password_is_refused_before_hashing_with_413() {
    let app = spawn_app().await;

    let res = app
        .register("big@example.com", &"x".repeat(1024 * 1024))
        .await;

    assert_problem(res, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

#[tokio::test]
async fn missing_fields_are_400_naming_the_field() {
    let app = spawn_app().await;

    let res = app
        .post_json(
            "/auth/users/register/",
            &json!({"primary_email": "x@example.com"}),
        )
        .await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("password"),
        "{body}"
    );

    let res = app
        .post_json("/auth/tokens/obtain/", &json!({"password": "test1234"}))
        .await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("primary_email"),
        "{body}"
    );

    let res = app.post_json("/auth/tokens/refresh/", &json!({})).await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
    assert!(
        body["detail"].as_str().expect("detail").contains("refresh"),
        "{body}"
    );
}

#[tokio::test]
async fn wrong_types_and_unknown_fields_are_400() {
    let app = spawn_app().await;

    let res = app
        .post_json(
            "/auth/users/register/",
            &json!({"primary_email": 5, "password": "test1234"}),
        )
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
    let res = app
        .post_json(
            "/auth/users/register/",
            &json!({"primary_email": "a@b.co", "password": "test1234", "admin": true}),
        )
        .await;
    let body = assert_problem(res, StatusCode::BAD_REQUEST, "invalid_body").await;
    assert!(body["detail"].as_str().expect("detail").contains("admin"));
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let app = spawn_app().await;

    let res = app
        .client
        .post(app.url("/auth/users/register/"))
        .header("Content-Type", "application/json")
        .body(r#"{"primary_email": "me@yingw787.com", "password": "#)
        .send()
        .await
        .expect("request");

    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_json").await;
}

#[tokio::test]
async fn the_wrong_content_type_is_415() {
    let app = spawn_app().await;

    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let mut req = app
            .client
            .post(app.url("/auth/tokens/obtain/"))
            .body(r#"{"primary_email": "me@yingw787.com", "password": "test1234"}"#);
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        let res = req.send().await.expect("request");
        assert_problem(
            res,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        )
        .await;
    }
}

#[tokio::test]
async fn obtain_returns_a_pinned_hs256_pair_bound_to_one_session() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let access = claims_of(&app, &user.access, TokenType::Access);
    let refresh = claims_of(&app, &user.refresh, TokenType::Refresh);

    assert_eq!(access.sub, refresh.sub);
    assert_eq!(access.sid, refresh.sid);
    assert_ne!(access.jti, refresh.jti);
    assert_eq!(
        access.exp - access.iat,
        300,
        "access tokens live 5 minutes by default"
    );
    let [header, payload] = segments(&user.access).try_into().expect("two segments");
    assert_eq!(header["alg"], "HS256");
    assert_eq!(payload["typ"], "access");
    for claim in ["sub", "sid", "jti", "iat", "exp"] {
        assert!(payload.get(claim).is_some(), "missing claim {claim}");
    }
}

#[tokio::test]
async fn the_access_token_lifetime_is_configurable() {
    let app = spawn_app_with(|s| s.access_token_ttl = Duration::from_secs(42)).await;
    let user = app.signed_up_user().await;

    let access = claims_of(&app, &user.access, TokenType::Access);

    assert_eq!(access.exp - access.iat, 42);
}

#[tokio::test]
async fn an_unknown_email_and_a_wrong_password_get_the_same_answer() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    let mut bodies = Vec::new();
    // Five of each, compared by their fastest: load slows some samples, never speeds one up.
    for i in 0..5 {
        let started = Instant::now();
        let res = app.obtain(&user.email, "not the password").await;
        wrong.push(started.elapsed());
        bodies.push(assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await);

        let started = Instant::now();
        let res = app
            .obtain(&format!("nobody-{i}@example.com"), "not the password")
            .await;
        unknown.push(started.elapsed());
        bodies.push(assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await);
    }

    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "bodies differ: {bodies:?}"
    );
    // Both paths run one argon2 verification; without the dummy hash the unknown e-mail would
    // answer in a fraction of the time.
    let wrong_min = wrong.iter().min().expect("samples");
    let unknown_min = unknown.iter().min().expect("samples");
    assert!(
        unknown_min.as_secs_f64() * 3.0 > wrong_min.as_secs_f64(),
        "unknown e-mail answered in {unknown_min:?}, wrong password in {wrong_min:?}"
    );
}

#[tokio::test]
async fn both_authorization_schemes_work_for_the_caller() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    for scheme in ["JWT", "Bearer", "bearer", "jwt"] {
        let res = app
            .get_with("/auth/users/me/", &format!("{scheme} {}", user.access))
            .await;
        assert_eq!(res.status(), StatusCode::OK, "scheme {scheme}");
        let body: Value = res.json().await.expect("json");
        assert_eq!(body["primary_email"], user.email.as_str());
    }
}

#[tokio::test]
async fn no_token_is_401_token_missing_and_a_bad_header_is_token_invalid() {
    let app = spawn_app().await;

    assert_problem(
        app.get("/auth/users/me/").await,
        StatusCode::UNAUTHORIZED,
        "token_missing",
    )
    .await;
    for header in [
        "Basic dXNlcjpwdw==",
        "JWT",
        "Bearer ",
        "Token abc",
        "Bearer not.a.jwt",
    ] {
        let res = app.get_with("/auth/users/me/", header).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "token_invalid").await;
    }
}

#[tokio::test]
async fn an_alg_none_token_is_rejected() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let [_, payload] = segments(&user.access).try_into().expect("two segments");

    for alg in ["none", "None", "NONE"] {
        let forged = format!(
            "{}.{}.",
            encode_segment(&json!({"alg": alg, "typ": "JWT"})),
            encode_segment(&payload)
        );
        assert_problem(
            app.me(&forged).await,
            StatusCode::UNAUTHORIZED,
            "token_invalid",
        )
        .await;
    }
}

#[tokio::test]
async fn a_token_signed_with_another_secret_is_rejected() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let claims = claims_of(&app, &user.access, TokenType::Access);

    let forged = JwtKeys::new(b"another secret that is long enough!!")
        .mint(
            TokenType::Access,
            claims.sub,
            claims.sid,
            Uuid::new_v4(),
            Duration::from_secs(60),
        )
        .expect("mint");

    assert_problem(
        app.me(&forged).await,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
    )
    .await;
}

#[tokio::test]
async fn a_tampered_payload_is_rejected() {
    let app = spawn_app().await;
    let alice = app.signed_up_user().await;
    let bob = app.signed_up_user().await;
    let bob_sub = claims_of(&app, &bob.access, TokenType::Access).sub;
    let parts: Vec<&str> = alice.access.split('.').collect();
    let [_, mut payload] = segments(&alice.access).try_into().expect("two segments");

    payload["sub"] = json!(bob_sub);
    let tampered = format!("{}.{}.{}", parts[0], encode_segment(&payload), parts[2]);

    assert_problem(
        app.me(&tampered).await,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
    )
    .await;
}

#[tokio::test]
async fn a_refresh_token_is_not_an_access_token_and_the_other_way_round() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let body = assert_problem(
        app.me(&user.refresh).await,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
    )
    .await;
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("refresh token")
    );
    assert_problem(
        app.refresh(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
    )
    .await;
    assert_problem(
        app.blacklist(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "token_invalid",
    )
    .await;
}

#[tokio::test]
async fn an_expired_access_token_is_401_token_expired_and_says_to_refresh_it() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let claims = claims_of(&app, &user.access, TokenType::Access);

    // Signed with the server's key, valid in every way but its expiry a minute ago.
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &Claims {
            jti: Uuid::new_v4(),
            iat: now - 360,
            exp: now - 60,
            ..claims
        },
        &jsonwebtoken::EncodingKey::from_secret(app.settings.jwt_secret.expose_secret().as_bytes()),
    )
    .expect("sign");

    let body = assert_problem(
        app.me(&expired).await,
        StatusCode::UNAUTHORIZED,
        "token_expired",
    )
    .await;
    // It says what to do: trade the refresh token for a new access token.
    let detail = body["detail"].as_str().expect("detail");
    assert!(
        detail.starts_with(
            "the access token has expired; get a new one with POST /auth/tokens/refresh/"
        ),
        "{detail}"
    );
    let res = app.refresh(&user.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn refresh_rotates_and_reusing_an_old_refresh_token_revokes_the_session() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let res = app.refresh(&user.refresh).await;
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.expect("json");
    let new_refresh = rotated["refresh"].as_str().expect("refresh").to_owned();
    let new_access = rotated["access"].as_str().expect("access").to_owned();
    assert_ne!(new_refresh, user.refresh);
    assert_eq!(app.me(&new_access).await.status(), StatusCode::OK);

    // A replay of the first refresh token: somebody else has it.
    assert_problem(
        app.refresh(&user.refresh).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;

    assert_problem(
        app.refresh(&new_refresh).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    assert_problem(
        app.me(&new_access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    assert_problem(
        app.me(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    let reason: String = sqlx::query_scalar("SELECT revoked_reason FROM tinydevcrm.sessions")
        .fetch_one(&app.pool)
        .await
        .expect("one session");
    assert_eq!(reason, "refresh_reuse");
}

#[tokio::test]
async fn two_racing_uses_of_one_refresh_token_revoke_the_session() {
    let app = spawn_app().await;

    for _ in 0..5 {
        let user = app.signed_up_user().await;
        let (a, b) = tokio::join!(app.refresh(&user.refresh), app.refresh(&user.refresh));

        let statuses = [a.status(), b.status()];
        let winners = statuses.iter().filter(|s| **s == StatusCode::OK).count();
        assert!(winners <= 1, "both racing refreshes succeeded");
        assert!(statuses.contains(&StatusCode::UNAUTHORIZED));
        let winner_access = if a.status() == StatusCode::OK {
            Some(a.json::<Value>().await.expect("json"))
        } else if b.status() == StatusCode::OK {
            Some(b.json::<Value>().await.expect("json"))
        } else {
            None
        };
        assert_problem(
            app.me(&user.access).await,
            StatusCode::UNAUTHORIZED,
            "token_revoked",
        )
        .await;
        if let Some(pair) = winner_access {
            let access = pair["access"].as_str().expect("access");
            assert_problem(
                app.me(access).await,
                StatusCode::UNAUTHORIZED,
                "token_revoked",
            )
            .await;
        }
    }
}

#[tokio::test]
async fn blacklist_revokes_the_refresh_token_and_every_access_token_of_the_session() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let res = app.refresh(&user.refresh).await;
    let pair: Value = res.json().await.expect("json");
    let refresh = pair["refresh"].as_str().expect("refresh");
    let access = pair["access"].as_str().expect("access");

    let res = app.blacklist(refresh).await;

    assert_eq!(res.status(), StatusCode::OK);
    assert_problem(
        app.me(access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    assert_problem(
        app.me(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    assert_problem(
        app.refresh(refresh).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
}

#[tokio::test]
async fn logging_out_one_session_leaves_the_others_alone() {
    let app = spawn_app().await;
    let laptop = app.signed_up_user().await;
    let phone = app.login(&laptop.email, &laptop.password).await;

    assert_eq!(
        app.blacklist(&laptop.refresh).await.status(),
        StatusCode::OK
    );

    assert_problem(
        app.me(&laptop.access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    assert_eq!(app.me(&phone.access).await.status(), StatusCode::OK);
    assert_eq!(app.refresh(&phone.refresh).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_revocation_is_seen_at_once_by_a_second_process_on_the_same_database() {
    let first = spawn_app().await;
    let second = spawn_app_on(first.db.clone(), first.settings.clone()).await;
    let user = first.signed_up_user().await;
    assert_eq!(second.me(&user.access).await.status(), StatusCode::OK);

    assert_eq!(
        first.blacklist(&user.refresh).await.status(),
        StatusCode::OK
    );

    assert_problem(
        second.me(&user.access).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
    assert_problem(
        second.refresh(&user.refresh).await,
        StatusCode::UNAUTHORIZED,
        "token_revoked",
    )
    .await;
}

#[tokio::test]
async fn garbage_refresh_tokens_are_401_token_invalid() {
    let app = spawn_app().await;

    for token in ["", "abc", "a.b.c", "$YOUR_JWT_REFRESH_TOKEN"] {
        assert_problem(
            app.refresh(token).await,
            StatusCode::UNAUTHORIZED,
            "token_invalid",
        )
        .await;
        assert_problem(
            app.blacklist(token).await,
            StatusCode::UNAUTHORIZED,
            "token_invalid",
        )
        .await;
    }
}

#[tokio::test]
async fn too_many_attempts_on_one_account_are_throttled_with_retry_after() {
    let app =
        spawn_app_with(|s| s.login_per_account_per_minute = 3.try_into().expect("non-zero")).await;
    let user = app.signed_up_user().await; // one attempt used

    for _ in 0..2 {
        assert_eq!(
            app.obtain(&user.email, "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let res = app.obtain(&user.email.to_uppercase(), &user.password).await;

    let retry_after: u64 = res
        .headers()
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    // Another account from the same address is not affected.
    let other = app.signed_up_user().await;
    assert_eq!(
        app.obtain(&other.email, &other.password).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn too_many_attempts_from_one_address_are_throttled() {
    let mut settings = test_settings();
    settings.login_per_ip_per_minute = 3.try_into().expect("non-zero");
    let app = spawn_app_on(crate::helpers::fresh_database().await, settings).await;

    for i in 0..3 {
        let res = app
            .obtain(&format!("guess-{i}@example.com"), "password1")
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app.obtain("guess-4@example.com", "password1").await;

    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
}

/// `POST /auth/tokens/obtain/` from the client address `ip` (behind a trusted proxy).
async fn obtain_from(app: &TestApp, ip: &str, email: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/auth/tokens/obtain/"))
        .header("X-Forwarded-For", ip)
        .json(&json!({"primary_email": email, "password": password}))
        .send()
        .await
        .expect("request")
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()
        .get("retry-after")
        .expect("Retry-After header")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds")
}

#[tokio::test]
async fn an_attacker_at_one_address_cannot_lock_the_owner_out_of_their_account() {
    // Arrange
    let app = spawn_app_with(|s| s.trust_forwarded_for = true).await;
    let (email, password) = ("victim@example.com", "the owner's password");
    assert_eq!(
        app.register(email, password).await.status(),
        StatusCode::CREATED
    );

    // Act: far more guesses than any per-account limit allowed before.
    let mut refused = 0;
    for i in 0..40 {
        let res = obtain_from(&app, "203.0.113.7", email, &format!("guess number {i}")).await;
        assert_ne!(res.status(), StatusCode::OK);
        if res.status() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    let owner = obtain_from(&app, "198.51.100.2", email, password).await;

    // Assert
    assert!(refused >= 30, "the attacker was slowed: {refused} refusals");
    assert_eq!(owner.status(), StatusCode::OK, "the owner logs in at once");
}

#[tokio::test]
async fn the_attackers_own_address_waits_longer_after_every_failure() {
    // Arrange
    let app = spawn_app_with(|s| {
        s.trust_forwarded_for = true;
        s.login_free_failures = 2;
    })
    .await;
    let user = app.signed_up_user().await;
    for _ in 0..2 {
        let res = obtain_from(&app, "203.0.113.7", &user.email, "a wrong guess").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    // Act: each wait, waited out, then one more wrong guess.
    let mut waits = Vec::new();
    for _ in 0..3 {
        let res = obtain_from(&app, "203.0.113.7", &user.email, "a wrong guess").await;
        let wait = retry_after(&res);
        assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
        waits.push(wait);
        tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
        let res = obtain_from(&app, "203.0.113.7", &user.email, "a wrong guess").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    // Assert
    assert_eq!(waits, [1, 2, 4], "Retry-After doubles");
    let elsewhere = obtain_from(&app, "198.51.100.2", &user.email, &user.password).await;
    assert_eq!(elsewhere.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_owner_logs_in_after_a_few_typos_once_the_backoff_has_passed() {
    // Arrange: the default five free failures, then one second.
    let app = spawn_app_with(|s| s.trust_forwarded_for = true).await;
    let user = app.signed_up_user().await;
    for _ in 0..5 {
        let res = obtain_from(&app, "192.0.2.10", &user.email, "a typo").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }

    // Act
    let too_soon = obtain_from(&app, "192.0.2.10", &user.email, &user.password).await;
    let wait = retry_after(&too_soon);
    tokio::time::sleep(Duration::from_millis(wait * 1000 + 100)).await;
    let after_the_wait = obtain_from(&app, "192.0.2.10", &user.email, &user.password).await;

    // Assert
    assert_problem(too_soon, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    assert_eq!(wait, 1);
    assert_eq!(after_the_wait.status(), StatusCode::OK);
    // The success cleared the failures: a new typo costs no wait.
    let typo = obtain_from(&app, "192.0.2.10", &user.email, "a typo").await;
    assert_eq!(typo.status(), StatusCode::UNAUTHORIZED);
    let res = obtain_from(&app, "192.0.2.10", &user.email, &user.password).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn parallel_guesses_from_one_address_do_not_all_pass_before_the_first_fails() {
    let app = spawn_app_with(|s| {
        s.trust_forwarded_for = true;
        s.login_free_failures = 2;
    })
    .await;
    let user = app.signed_up_user().await;

    let guesses = (0..10).map(|i| {
        let (app, email) = (&app, &user.email);
        async move { obtain_from(app, "203.0.113.7", email, &format!("guess {i}")).await }
    });
    let statuses: Vec<StatusCode> = futures_util::future::join_all(guesses)
        .await
        .iter()
        .map(|r| r.status())
        .collect();

    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(checked, 2, "{statuses:?}");
}

#[tokio::test]
async fn a_correctly_signed_token_with_another_hmac_algorithm_is_rejected() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let claims = claims_of(&app, &user.access, TokenType::Access);
    let key =
        jsonwebtoken::EncodingKey::from_secret(app.settings.jwt_secret.expose_secret().as_bytes());

    for alg in [
        jsonwebtoken::Algorithm::HS384,
        jsonwebtoken::Algorithm::HS512,
    ] {
        let forged =
            jsonwebtoken::encode(&jsonwebtoken::Header::new(alg), &claims, &key).expect("sign");
        assert_problem(
            app.me(&forged).await,
            StatusCode::UNAUTHORIZED,
            "token_invalid",
        )
        .await;
    }
    assert_eq!(
        app.me(&user.access).await.status(),
        StatusCode::OK,
        "the HS256 original still works"
    );
}

#[tokio::test]
async fn a_malformed_email_at_login_is_an_ordinary_failed_login() {
    let app = spawn_app().await;

    for email in [
        "nul\u{0}@example.com".to_owned(),
        "not an email".to_owned(),
        "x".repeat(100_000),
    ] {
        let res = app.obtain(&email, "whatever1").await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
}

#[tokio::test]
async fn a_tenant_role_can_reach_nothing_outside_its_schema() {
    let app = spawn_app().await;
    let body: Value = app
        .register("isolated@example.com", "test1234")
        .await
        .json()
        .await
        .expect("json");
    let role = format!(
        "t_{}",
        Uuid::parse_str(body["id"].as_str().expect("id"))
            .expect("uuid")
            .simple()
    );
    let mut admin = superuser(&app.db).await;

    let denied_functions = [
        "pg_catalog.set_config(text, text, boolean)",
        "pg_catalog.lo_create(oid)",
        "pg_catalog.lo_import(text)",
        "pg_catalog.pg_get_viewdef(oid)",
        "pg_catalog.query_to_xml(text, boolean, boolean, text)",
        "pg_catalog.pg_notify(text, text)",
        "pg_catalog.pg_advisory_lock(bigint)",
        "pg_catalog.pg_terminate_backend(integer, bigint)",
    ];
    for function in denied_functions {
        let allowed: bool = sqlx::query_scalar("SELECT has_function_privilege($1, $2, 'EXECUTE')")
            .bind(&role)
            .bind(function)
            .fetch_one(&mut admin)
            .await
            .expect("privilege check");
        assert!(!allowed, "the tenant may execute {function}");
    }
    let checks = [
        "SELECT has_database_privilege($1, current_database(), 'CONNECT')",
        "SELECT has_database_privilege($1, current_database(), 'CREATE')",
        "SELECT has_schema_privilege($1, 'public', 'CREATE')",
        "SELECT has_schema_privilege($1, 'tinydevcrm', 'USAGE')",
        "SELECT has_table_privilege($1, 'tinydevcrm.users', 'SELECT')",
        "SELECT has_table_privilege($1, 'tinydevcrm.sessions', 'SELECT')",
    ];
    for check in checks {
        let allowed: bool = sqlx::query_scalar(check)
            .bind(&role)
            .fetch_one(&mut admin)
            .await
            .expect("privilege check");
        assert!(!allowed, "{check} is true for the tenant");
    }
    let own_schema: bool = sqlx::query_scalar("SELECT has_schema_privilege($1, $1, 'CREATE')")
        .bind(&role)
        .fetch_one(&mut admin)
        .await
        .expect("privilege check");
    assert!(own_schema, "the tenant owns its schema");
}

#[tokio::test]
async fn a_spoofed_forwarded_for_never_escapes_the_per_address_limit() {
    // Arrange: three logins per address per minute, once without and once behind a trusted
    // proxy (which appends the address it saw as the right-most entry).
    for trusted in [false, true] {
        let app = spawn_app_with(|s| {
            s.login_per_ip_per_minute = 3.try_into().expect("non-zero");
            s.trust_forwarded_for = trusted;
        })
        .await;

        // Act: the client invents a new address for each attempt; the proxy's entry stays.
        let mut statuses = Vec::new();
        for i in 0..4 {
            let spoofed = format!("203.0.113.{i}, 198.51.100.7");
            let res = obtain_from(
                &app,
                &spoofed,
                &format!("guess-{i}@example.com"),
                "pw123456",
            )
            .await;
            statuses.push(res.status());
        }

        // Assert: the fourth attempt is throttled whatever the client wrote.
        assert_eq!(
            statuses,
            [
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::UNAUTHORIZED,
                StatusCode::TOO_MANY_REQUESTS
            ],
            "trusted proxy: {trusted}"
        );
        // Behind a trusted proxy another client (another right-most entry) is still served;
        // without one, the header means nothing and the peer address is throttled.
        let other = obtain_from(&app, "198.51.100.8", "someone@example.com", "pw123456").await;
        let expected = if trusted {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::TOO_MANY_REQUESTS
        };
        assert_eq!(other.status(), expected, "trusted proxy: {trusted}");
    }
}

#[tokio::test]
async fn logging_out_an_already_revoked_session_is_harmless_and_keeps_the_first_reason() {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;

    let first = app.blacklist(&user.refresh).await;
    let second = app.blacklist(&user.refresh).await;

    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(second.status(), StatusCode::OK, "logout is idempotent");
    let sid = claims_of(&app, &user.refresh, TokenType::Refresh).sid;
    let mut admin = superuser(&app.db).await;
    let (reason, revoked_at_is_first): (String, bool) = sqlx::query_as(
        "SELECT revoked_reason, revoked_at < now() FROM tinydevcrm.sessions WHERE session_id = $1",
    )
    .bind(sid)
    .fetch_one(&mut admin)
    .await
    .expect("the session row");
    assert_eq!((reason.as_str(), revoked_at_is_first), ("logout", true));
    app.assert_session_dead(&user.access, &user.refresh).await;
}

#[tokio::test]
async fn each_refresh_slides_the_session_and_a_session_left_to_expire_is_dead() {
    // Arrange: a session one second from its end (the clock moved in the database, not by
    // sleeping).
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let sid = claims_of(&app, &user.refresh, TokenType::Refresh).sid;
    let mut admin = superuser(&app.db).await;
    sqlx::query("UPDATE tinydevcrm.sessions SET expires_at = now() + interval '1 second' WHERE session_id = $1")
        .bind(sid)
        .execute(&mut admin)
        .await
        .expect("age the session");

    // Act: rotate.
    let res = app.refresh(&user.refresh).await;

    // Assert: the session now lives a whole refresh-token lifetime from now.
    assert_eq!(res.status(), StatusCode::OK);
    let rotated: Value = res.json().await.expect("json");
    let slid: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM tinydevcrm.sessions WHERE session_id = $1")
            .bind(sid)
            .fetch_one(&mut admin)
            .await
            .expect("expires_at");
    let lifetime = chrono::Duration::from_std(app.settings.refresh_token_ttl).expect("ttl");
    let left = slid - chrono::Utc::now();
    assert!(
        left > lifetime - chrono::Duration::seconds(30) && left <= lifetime,
        "the session has {left} left after a refresh, not about {lifetime}"
    );

    // Act: let it expire (in the database), then use it.
    sqlx::query("UPDATE tinydevcrm.sessions SET expires_at = now() - interval '1 second' WHERE session_id = $1")
        .bind(sid)
        .execute(&mut admin)
        .await
        .expect("expire the session");
    let refresh = rotated["refresh"].as_str().expect("refresh");
    let access = rotated["access"].as_str().expect("access");

    // Assert: neither its refresh token nor its (unexpired) access token works.
    app.assert_session_dead(access, refresh).await;
}
