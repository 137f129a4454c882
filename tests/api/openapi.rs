//! The OpenAPI document tells the truth: every error response is problem JSON, every operation
//! lists the statuses it can answer (and none it cannot), and the request schemas reject what
//! the validation rejects. `scripts/conformance.sh` fuzzes the running server against it.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_app_without_database};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

async fn document(app: &TestApp) -> Value {
    let res = app.get("/openapi.json").await;
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.expect("json")
}

/// (method, path, operation) of every operation.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(op) = item.get(method) {
                all.push((method.to_uppercase(), path.clone(), op.clone()));
            }
        }
    }
    assert!(
        all.len() > 25,
        "the document lists {} operations",
        all.len()
    );
    all
}

fn statuses(op: &Value) -> Vec<u16> {
    op["responses"]
        .as_object()
        .expect("responses")
        .keys()
        .map(|s| s.parse().expect("a numeric status"))
        .collect()
}

fn is_authenticated(op: &Value) -> bool {
    op["security"].as_array().is_some_and(|s| !s.is_empty())
}

/// Whether an operation takes API keys (and so their rate limit's 429).
fn takes_keys(op: &Value) -> bool {
    op["security"]
        .as_array()
        .is_some_and(|s| s.iter().any(|r| r.get("api_key").is_some()))
}

/// A component schema by name.
fn component<'a>(doc: &'a Value, name: &str) -> &'a Value {
    let schema = &doc["components"]["schemas"][name];
    assert!(schema.is_object(), "no schema {name}");
    schema
}

/// The schema a `$ref` points to (or the schema itself).
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => component(doc, r.trim_start_matches("#/components/schemas/")),
        None => schema,
    }
}

fn json_body_schema<'a>(doc: &'a Value, path: &str) -> &'a Value {
    resolve(
        doc,
        &doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"],
    )
}

#[tokio::test]
async fn every_error_response_in_the_document_is_problem_json() {
    let app = spawn_app_without_database();
    let doc = document(&app).await;

    for (method, path, op) in operations(&doc) {
        for (status, response) in op["responses"].as_object().expect("responses") {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let content = response["content"].as_object().expect("error content");
            assert_eq!(
                content.keys().collect::<Vec<_>>(),
                ["application/problem+json"],
                "{method} {path} {status}"
            );
            assert_eq!(
                content["application/problem+json"]["schema"]["$ref"],
                "#/components/schemas/Problem",
                "{method} {path} {status}"
            );
        }
    }
}

#[tokio::test]
async fn every_operation_lists_the_statuses_it_can_answer() {
    let app = spawn_app_without_database();
    let doc = document(&app).await;

    for (method, path, op) in operations(&doc) {
        let listed = statuses(&op);
        let mut expected = Vec::new();
        if is_authenticated(&op) {
            expected.push(401);
        }
        if op.get("requestBody").is_some() {
            expected.extend([400, 413, 415]);
        }
        if path.contains('{') {
            expected.push(404);
        }
        if !["/", "/health", "/metrics"].contains(&path.as_str()) {
            expected.extend([500, 503]);
        }
        for status in expected {
            assert!(
                listed.contains(&status),
                "{method} {path} can answer {status} but lists {listed:?}"
            );
        }
    }
    // Statuses of single routes.
    for (method, path, status) in [
        ("post", "/auth/tokens/obtain/", 429),
        ("post", "/views/create/", 429),
        ("post", "/views/{name}/refresh/", 429),
        ("post", "/views/{name}/refresh/", 409),
        ("get", "/tables/{name}/rows/", 429),
        ("get", "/views/{name}/rows/", 429),
        ("post", "/tables/{name}/rows/", 409),
        ("post", "/jobs/create/", 409),
        ("post", "/channels/create/", 409),
        ("post", "/channels/{id}/webhooks/", 409),
        ("get", "/channels/{id}/webhooks/{wid}/deliveries/", 400),
        (
            "post",
            "/channels/{id}/webhooks/{wid}/deliveries/{did}/retry/",
            409,
        ),
        ("post", "/auth/users/register/", 409),
        ("get", "/channels/{id}/listen/", 400),
        ("get", "/channels/{id}/listen/", 429),
        ("post", "/tables/create/", 429),
        ("post", "/tables/{name}/rows/", 429),
        ("get", "/tables/{name}/rows/", 409),
        ("get", "/views/{name}/rows/", 409),
        ("post", "/tables/{name}/indexes/", 409),
        ("post", "/tables/{name}/indexes/", 429),
        ("delete", "/tables/{name}/indexes/{index}/", 409),
        ("delete", "/tables/{name}/indexes/{index}/", 429),
    ] {
        let op = &doc["paths"][path][method];
        assert!(
            statuses(op).contains(&status),
            "{method} {path} can answer {status}"
        );
    }
}

#[tokio::test]
async fn no_operation_lists_a_status_it_cannot_answer() {
    let app = spawn_app_without_database();
    let doc = document(&app).await;

    // The routes that can throttle: the login throttle, a tenant's heavy-work and read slots.
    let throttled = [
        "POST /auth/tokens/obtain/",
        "POST /views/create/",
        "POST /views/{name}/refresh/",
        "GET /tables/{name}/rows/",
        "GET /views/{name}/rows/",
        "POST /tables/create/",
        "POST /tables/{name}/rows/",
        "GET /channels/{id}/listen/",
        "POST /tables/{name}/indexes/",
        "DELETE /tables/{name}/indexes/{index}/",
        // At most one confirmation per address per interval; the tenant's hourly budget.
        "POST /channels/{id}/emails/{eid}/resend-confirmation/",
        "POST /channels/{id}/emails/",
    ];
    // Unauthenticated routes that answer 401 on the credentials or the token in their body.
    let credential_checks = [
        "POST /auth/tokens/obtain/",
        "POST /auth/tokens/refresh/",
        "POST /auth/tokens/blacklist/",
    ];
    for (method, path, op) in operations(&doc) {
        let name = format!("{method} {path}");
        let listed = statuses(&op);
        // 403: an API key where only a login session may go, or outside its scopes.
        if listed.contains(&403) {
            assert!(is_authenticated(&op), "{name}: nothing answers 403");
        }
        if listed.contains(&429) {
            assert!(
                throttled.contains(&name.as_str()) || takes_keys(&op),
                "{name} never throttles"
            );
        }
        if listed.contains(&401) {
            assert!(
                is_authenticated(&op) || credential_checks.contains(&name.as_str()),
                "{name} takes no credentials, so it never answers 401"
            );
        }
        if op.get("requestBody").is_none() {
            assert!(
                !listed.contains(&413) && !listed.contains(&415),
                "{name} reads no body"
            );
        }
    }
    for path in ["/health", "/metrics", "/"] {
        let listed = statuses(&doc["paths"][path]["get"]);
        assert!(!listed.contains(&500), "{path} never answers 500");
    }
}

#[tokio::test]
async fn request_schemas_reject_what_the_validation_rejects() {
    let app = spawn_app_without_database();
    let doc = document(&app).await;

    let credentials = json_body_schema(&doc, "/auth/users/register/");
    let email = &credentials["properties"]["primary_email"];
    assert_eq!(email["format"], "email");
    assert!(email["minLength"].as_u64().expect("minLength") >= 3);
    assert_eq!(email["maxLength"], 254);
    let password = &credentials["properties"]["password"];
    assert_eq!(password["minLength"], 8);
    assert_eq!(password["maxLength"], 1024);
    assert_eq!(credentials["additionalProperties"], false);

    // `{}` and both fields at once match no branch: each requires its one field, alone.
    let channel = json_body_schema(&doc, "/channels/create/");
    let branches = channel["oneOf"].as_array().expect("oneOf");
    let mut fields = Vec::new();
    for branch in branches {
        let branch = resolve(&doc, branch);
        let required = branch["required"].as_array().expect("required");
        assert_eq!(required.len(), 1, "{branch}");
        assert_eq!(branch["additionalProperties"], false, "{branch}");
        fields.push(required[0].as_str().expect("name").to_owned());
    }
    fields.sort();
    assert_eq!(fields, ["job_id", "view_name"]);
    assert_eq!(
        resolve(&doc, &branches[0])["properties"]["job_id"]["format"],
        "uuid"
    );

    let job = json_body_schema(&doc, "/jobs/create/");
    let retries = &job["properties"]["retries"];
    let types = retries["type"].as_array().expect("type");
    assert!(
        types.contains(&json!("integer")) && !types.contains(&json!("number")),
        "{retries}"
    );
    assert_eq!(retries["minimum"], 0);
    assert_eq!(retries["maximum"], 10);
    let mut required: Vec<&str> = job["required"]
        .as_array()
        .expect("required")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["crontab_def", "view_name"]);
}

#[tokio::test]
async fn the_server_rejects_what_the_request_schemas_reject() {
    let app = spawn_app().await;
    let user = app.user_with_view().await;
    let access = &user.access;

    let empty_email = app
        .post_json(
            "/auth/users/register/",
            &json!({"primary_email": "", "password": "long enough"}),
        )
        .await;
    assert_eq!(empty_email.status(), StatusCode::BAD_REQUEST);
    let nothing = app.post_as(access, "/channels/create/", &json!({})).await;
    assert_eq!(nothing.status(), StatusCode::BAD_REQUEST);
    for retries in [json!(7.5), json!(-1), json!(11)] {
        let res = app
            .post_as(
                access,
                "/jobs/create/",
                &json!({"view_name": "someview", "crontab_def": "@daily", "retries": retries}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "retries {retries}");
    }
    // JSON Schema counts 7.0 as an integer, and so does the server.
    let whole = app
        .post_as(
            access,
            "/jobs/create/",
            &json!({"view_name": "someview", "crontab_def": "@daily", "retries": 7.0}),
        )
        .await;
    assert_eq!(whole.status(), StatusCode::CREATED);
    let body: Value = whole.json().await.expect("json");
    assert_eq!(body["retries"], 7);
}

#[tokio::test]
async fn the_root_lists_the_openapi_document_and_its_viewers() {
    let app = spawn_app_without_database();

    let res = app.get("/").await;

    assert_eq!(res.status(), StatusCode::OK);
    let index: Value = res.json().await.expect("json");
    assert_eq!(index["openapi"], "/openapi.json");
    for link in ["openapi", "docs", "redoc"] {
        let target = index[link].as_str().expect("link");
        let status = app.get(target).await.status();
        assert!(
            status.is_success() || status.is_redirection(),
            "{link} -> {target}: {status}"
        );
    }
    let doc = document(&app).await;
    assert!(doc["paths"]["/"]["get"].is_object(), "GET / is documented");
}

#[tokio::test]
async fn exactly_the_routes_keys_may_use_list_the_api_key_scheme() {
    let app = spawn_app_without_database();
    let doc = document(&app).await;
    let scheme = &doc["components"]["securitySchemes"]["api_key"];
    assert_eq!(scheme["scheme"], "bearer", "{scheme}");

    let mut with_keys: Vec<String> = operations(&doc)
        .into_iter()
        .filter(|(_, _, op)| takes_keys(op))
        .map(|(method, path, _)| format!("{method} {path}"))
        .collect();
    with_keys.sort();

    assert_eq!(
        with_keys,
        [
            "GET /channels/",
            "GET /channels/{id}/",
            "GET /channels/{id}/listen/",
            "GET /tables/",
            "GET /tables/{name}/",
            "GET /tables/{name}/rows/",
            "GET /views/",
            "GET /views/{name}/",
            "GET /views/{name}/rows/",
            "POST /tables/{name}/rows/",
            "POST /views/{name}/refresh/",
        ]
    );
}
