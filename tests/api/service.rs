//! Health, OpenAPI and its viewers, metrics, and problem JSON for everything.

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app, spawn_app_without_database};

#[tokio::test]
async fn health_is_up_when_the_database_answers() {
    let app = spawn_app().await;

    let res = app.get("/health").await;

    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.expect("json");
    assert_eq!(body["status"], "UP");
}

#[tokio::test]
async fn health_is_503_problem_json_when_the_database_does_not_answer() {
    let app = spawn_app_without_database();

    let res = app.get("/health").await;

    assert_problem(res, StatusCode::SERVICE_UNAVAILABLE, "database_unavailable").await;
}

#[tokio::test]
async fn the_openapi_document_describes_the_auth_routes() {
    let app = spawn_app().await;

    let res = app.get("/openapi.json").await;

    assert_eq!(res.status(), StatusCode::OK);
    let doc: Value = res.json().await.expect("json");
    assert!(doc["openapi"].as_str().expect("version").starts_with('3'));
    for path in [
        "/auth/users/register/",
        "/auth/users/me/",
        "/auth/tokens/obtain/",
        "/auth/tokens/refresh/",
        "/auth/tokens/blacklist/",
        "/health",
        "/jobs/create/",
        "/jobs/{id}/",
        "/jobs/{id}/runs/",
        "/channels/create/",
        "/channels/{id}/listen/",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["jwt"].is_object());
}

#[tokio::test]
async fn swagger_ui_and_redoc_are_served_from_the_binary() {
    let app = spawn_app().await;

    let res = app.get("/docs").await;
    assert_eq!(res.status(), StatusCode::FOUND);
    assert_eq!(res.headers()["location"], "/docs/index.html");
    let page = app.get("/docs/index.html").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.expect("text").contains("swagger-ui"));
    let init = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .expect("text");
    assert!(
        init.contains("/openapi.json"),
        "Swagger UI must load our document"
    );
    let css = app.get("/docs/swagger-ui.css").await;
    assert_eq!(css.status(), StatusCode::OK);

    let redoc = app.get("/redoc").await.text().await.expect("text");
    assert!(redoc.contains("/redoc/redoc.standalone.js") && redoc.contains("/openapi.json"));
    let script = app.get("/redoc/redoc.standalone.js").await;
    assert_eq!(script.status(), StatusCode::OK);
    assert!(
        script.bytes().await.expect("bytes").len() > 500_000,
        "the embedded bundle, not a CDN link"
    );
    assert!(
        !redoc.contains("cdn."),
        "no CDN: the viewer must work on a closed network"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern_and_status() {
    let app = spawn_app().await;
    app.get("/health").await;
    app.get("/no/such/route").await;

    let res = app.get("/metrics").await;

    assert_eq!(res.status(), StatusCode::OK);
    let text = res.text().await.expect("text");
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/health",status="200"}"#),
        "{text}"
    );
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(
        !text.contains("/no/such/route"),
        "raw paths must not become labels"
    );
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(text.contains("db_pool_connections"));
    assert!(text.contains("db_pool_idle_connections"));
}

#[tokio::test]
async fn an_unknown_route_is_404_problem_json() {
    let app = spawn_app().await;

    let body = assert_problem(app.get("/nope/").await, StatusCode::NOT_FOUND, "not_found").await;

    assert!(body["detail"].as_str().expect("detail").contains("/nope"));
}

#[tokio::test]
async fn a_wrong_method_is_405_problem_json() {
    let app = spawn_app().await;

    let res = app.get("/auth/users/register/").await;
    assert_eq!(res.headers()["allow"], "POST");
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    let res = app
        .client
        .delete(app.url("/health"))
        .send()
        .await
        .expect("request");
    assert_problem(res, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

#[tokio::test]
async fn trailing_slashes_are_optional() {
    let app = spawn_app().await;

    let with = app.register("slash@example.com", "test1234").await;
    let without = app
        .post_json(
            "/auth/users/register",
            &serde_json::json!({"primary_email": "noslash@example.com", "password": "test1234"}),
        )
        .await;

    assert_eq!(with.status(), StatusCode::CREATED);
    assert_eq!(without.status(), StatusCode::CREATED);
    assert_eq!(app.get("/health/").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;

    let ok = app.get("/health").await;
    let err = app.get("/missing").await;

    for res in [ok, err] {
        let id = res
            .headers()
            .get("x-request-id")
            .expect("x-request-id")
            .to_str()
            .expect("ascii");
        assert!(uuid::Uuid::parse_str(id).is_ok());
    }
}

/// `tinydevcrm health` with `args` and `env`: its exit code and what it printed.
async fn health_command(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tinydevcrm"))
            .arg("health")
            .args(&args)
            .env_remove("TDC_BIND")
            .envs(env)
            .env("RUST_LOG", "off")
            .output()
            .expect("run tinydevcrm health");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (output.status.code(), text)
    })
    .await
    .expect("the command ran")
}

#[tokio::test]
async fn the_health_command_exits_0_when_the_service_is_up() {
    let app = spawn_app().await;
    let port = app.address.rsplit(':').next().expect("a port").to_owned();

    let (by_url, url_output) = health_command(&["--url", &app.address], &[]).await;
    // In a container serve listens on 0.0.0.0 and the check asks loopback.
    let bind = format!("0.0.0.0:{port}");
    let (by_bind, bind_output) = health_command(&[], &[("TDC_BIND", &bind)]).await;

    assert_eq!(by_url, Some(0), "{url_output}");
    assert!(url_output.contains("UP"), "{url_output}");
    assert_eq!(by_bind, Some(0), "{bind_output}");
}

#[tokio::test]
async fn the_health_command_exits_1_saying_why_when_the_service_is_not_up() {
    // A closed port.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let closed_url = format!("http://{}", closed.local_addr().expect("address"));
    drop(closed);
    let (code, output) = health_command(&["--url", &closed_url], &[]).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("Connection refused"), "{output}");

    // A service whose database does not answer: 503.
    let app = spawn_app_without_database();
    let (code, output) = health_command(&["--url", &app.address], &[]).await;
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("503"), "{output}");

    // A port that accepts the connection and never answers: the 3 s timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let silent_url = format!("http://{}", silent.local_addr().expect("address"));
    let began = std::time::Instant::now();
    let (code, output) = health_command(&["--url", &silent_url], &[]).await;
    let took = began.elapsed();
    assert_eq!(code, Some(1), "{output}");
    assert!(output.contains("did not answer within 3s"), "{output}");
    assert!(
        took >= std::time::Duration::from_secs(3) && took < std::time::Duration::from_secs(10),
        "took {took:?}"
    );
    drop(silent);
}
