//! Parquet files written by other tools (`../shared/parquet-testing`, see its WHY.md): each
//! either loads or is refused with a clean 4xx, and the server stays healthy after every one.

use std::path::PathBuf;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

/// The corpus, or `None` (with a note) when this clone has no `../shared` beside it. CI sets
/// `TDC_REQUIRE_PARQUET_TESTING=1`, which makes its absence a failure.
fn corpus() -> Option<PathBuf> {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/parquet-testing"
    ));
    if dir.join("data").is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("TDC_REQUIRE_PARQUET_TESTING").is_err(),
        "TDC_REQUIRE_PARQUET_TESTING is set but {} is missing",
        dir.display()
    );
    eprintln!("skipping: {} is absent", dir.display());
    None
}

fn files(dir: PathBuf) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read corpus dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            name.ends_with(".parquet") || name.ends_with(".parquet.encrypted")
        })
        .collect();
    files.sort();
    files
}

/// Uploads every file; returns (file name, status, body).
async fn upload_all(files: Vec<PathBuf>) -> Vec<(String, StatusCode, Value)> {
    let app = spawn_app().await;
    let user = app.signed_up_user().await;
    let mut results = Vec::new();
    for (i, path) in files.into_iter().enumerate() {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned();
        let bytes = std::fs::read(&path).expect("read file");
        let res = app
            .create_table(&user.access, bytes, &format!("f{i}"), None)
            .await;
        let status = res.status();
        let body: Value = res.json().await.unwrap_or(Value::Null);
        assert_eq!(
            app.get("/health").await.status(),
            StatusCode::OK,
            "unhealthy after {name}"
        );
        results.push((name, status, body));
    }
    results
}

#[tokio::test]
async fn every_file_written_by_another_tool_loads_or_is_refused_cleanly() {
    let Some(dir) = corpus() else { return };

    let results = upload_all(files(dir.join("data"))).await;

    let mut loaded = 0;
    for (name, status, body) in &results {
        assert!(
            *status == StatusCode::CREATED
                || (status.is_client_error() && body["code"].is_string()),
            "{name}: {status} {body}"
        );
        if name.ends_with(".encrypted") {
            assert!(
                status.is_client_error(),
                "{name}: an encrypted file cannot load"
            );
        }
        if *status == StatusCode::CREATED {
            loaded += 1;
            // Where the corpus gives the expected values, the row count must match them.
            let expect = dir
                .join("data")
                .join(name.replace(".parquet", "_expect.csv"));
            if let Ok(csv) = std::fs::read_to_string(expect) {
                let rows = csv.lines().count() - 1;
                assert_eq!(body["row_count"], rows, "{name}");
            }
        }
    }
    for (name, status, body) in &results {
        if *status != StatusCode::CREATED {
            eprintln!("refused {name}: {}", body["detail"]);
        }
    }
    eprintln!(
        "{loaded} of {} files loaded; the rest were refused with a 4xx",
        results.len()
    );
    assert!(loaded * 2 > results.len(), "most of the corpus should load");
}

#[tokio::test]
async fn files_known_to_crash_readers_get_a_4xx_and_the_server_survives() {
    let Some(dir) = corpus() else { return };

    let results = upload_all(files(dir.join("bad_data"))).await;

    assert!(!results.is_empty());
    for (name, status, body) in &results {
        // ARROW-GH-43605 (a dictionary page with RLE bit width 0) crashed Arrow C++; the Rust
        // reader decodes it as the single dictionary value, and the footer's row count agrees.
        if name == "ARROW-GH-43605.parquet" && *status == StatusCode::CREATED {
            assert_eq!(body["row_count"], 21186, "{name}");
            continue;
        }
        assert!(
            status.is_client_error() && body["code"].is_string(),
            "{name}: {status} {body}"
        );
    }
}
