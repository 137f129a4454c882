//! The managed local PostgreSQL and the `tinydevcrm` binary itself: `serve` from nothing, stop,
//! start again with the data kept, refuse a second process on the same data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::StatusCode;
use serde_json::json;
use tinydevcrm::db::local_cluster::{ClusterError, ClusterOptions, LocalCluster};

use crate::helpers::temp_dir;

#[tokio::test]
async fn a_second_cluster_on_the_same_data_dir_gets_a_clear_error() {
    let dir = temp_dir("tdc-busy");
    let mut options = ClusterOptions::new(&dir);
    options.durable = false;
    let opts = options.clone();
    let first = tokio::task::spawn_blocking(move || LocalCluster::start(&opts))
        .await
        .expect("join")
        .expect("first start");

    let second = tokio::task::spawn_blocking(move || LocalCluster::start(&options))
        .await
        .expect("join");

    let err = second.expect_err("the data directory is in use");
    assert!(matches!(err, ClusterError::Busy { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("in use by another tinydevcrm process")
    );
    tokio::task::spawn_blocking(move || first.stop())
        .await
        .expect("stop");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn missing_server_binaries_name_the_debian_package() {
    let dir = temp_dir("tdc-nobin");
    let mut options = ClusterOptions::new(&dir);
    options.bin_dir = Some(PathBuf::from("/nonexistent/bin"));

    let err = LocalCluster::start(&options).expect_err("no binaries there");

    assert!(
        err.to_string()
            .contains("install the Debian package `postgresql`"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn serve(data_dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tinydevcrm"))
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env_remove("JWT_SECRET")
        .env("TDC_DATA_DIR", data_dir)
        .env("TDC_BIND", format!("127.0.0.1:{port}"))
        .env("TDC_STREAM_BIND", "")
        .env("TDC_WORKERS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tinydevcrm serve")
}

async fn wait_healthy(client: &reqwest::Client, base: &str, child: &mut Child) {
    let started = Instant::now();
    loop {
        if let Ok(res) = client.get(format!("{base}/health")).send().await
            && res.status() == StatusCode::OK
        {
            return;
        }
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "serve exited early"
        );
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not become healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn stop(mut child: Child, signal: Signal) {
    kill(
        Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        signal,
    )
    .expect("signal");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            assert!(status.success(), "serve exited with {status}");
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "serve did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn serve_starts_its_own_postgres_keeps_data_across_restarts_and_stops_it() {
    let dir = temp_dir("tdc-serve");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let credentials = json!({"primary_email": "me@yingw787.com", "password": "test1234"});

    // First run: creates the cluster, registers a user, stops on SIGINT.
    let mut first = serve(&dir, port);
    wait_healthy(&client, &base, &mut first).await;
    let res = client
        .post(format!("{base}/auth/users/register/"))
        .json(&credentials)
        .send()
        .await
        .expect("register");
    assert_eq!(res.status(), StatusCode::CREATED);
    // A second serve on the same data directory refuses to start.
    let output = Command::new(env!("CARGO_BIN_EXE_tinydevcrm"))
        .arg("serve")
        .env_remove("DATABASE_URL")
        .env("TDC_DATA_DIR", &dir)
        .env("TDC_BIND", format!("127.0.0.1:{}", free_port()))
        .env("TDC_STREAM_BIND", "")
        .output()
        .expect("run a second serve");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another tinydevcrm process"),
        "{stderr}"
    );
    stop(first, Signal::SIGINT).await;
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "PostgreSQL was not stopped"
    );

    // Second run: same cluster, same JWT secret, the user is still there; stops on SIGTERM.
    let mut second = serve(&dir, port);
    wait_healthy(&client, &base, &mut second).await;
    let res = client
        .post(format!("{base}/auth/tokens/obtain/"))
        .json(&credentials)
        .send()
        .await
        .expect("obtain");
    assert_eq!(res.status(), StatusCode::OK);
    stop(second, Signal::SIGTERM).await;
    assert!(
        !dir.join("pgdata/postmaster.pid").exists(),
        "PostgreSQL was not stopped"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn serve_with_database_url_refuses_to_start_without_a_long_enough_jwt_secret() {
    let run = |secret: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_tinydevcrm"));
        command
            .arg("serve")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
            .env_remove("JWT_SECRET");
        if let Some(secret) = secret {
            command.env("JWT_SECRET", secret);
        }
        command.output().expect("run serve")
    };

    let missing = run(None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("JWT_SECRET must be set"));
    let short = run(Some("too short"));
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 32"));
}
