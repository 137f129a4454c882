//! `tinydevcrm health`: asks a running `serve` for `/health` and succeeds only on 200 with
//! `status` `UP`. The container's `HEALTHCHECK` runs it, so the image needs no curl: one
//! HTTP/1.0 GET over a plain socket (the server then closes the connection after its answer, no
//! chunked body to decode), all of it within [`TIMEOUT`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::HealthArgs;

/// The whole check (connect, request, answer) must end within this.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The largest answer read: `/health` is a few dozen bytes.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024;

/// Runs the check of `args`; the error says why the service is not up.
pub async fn run(args: &HealthArgs) -> anyhow::Result<()> {
    let base = match &args.url {
        Some(url) => url.clone(),
        None => default_url(args.bind),
    };
    check(&base, TIMEOUT).await?;
    println!("{base}/health: UP");
    Ok(())
}

/// The URL a `serve` bound to `bind` answers on from the same machine: an unspecified address
/// (`0.0.0.0`, `[::]`, as in a container) is reached on loopback.
pub fn default_url(bind: SocketAddr) -> String {
    let ip = match bind.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, bind.port()))
}

/// GETs `<base>/health` and fails unless it answers 200 with `{"status": "UP"}` within
/// `timeout`.
pub async fn check(base: &str, timeout: Duration) -> anyhow::Result<()> {
    let target = Target::parse(base)?;
    let response = tokio::time::timeout(timeout, fetch(&target))
        .await
        .map_err(|_| anyhow::anyhow!("{base}/health did not answer within {timeout:?}"))?
        .with_context(|| format!("{base}/health"))?;
    judge(&response).with_context(|| format!("{base}/health"))
}

/// Where to connect and what to ask for.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    /// `host:port`, as `TcpStream::connect` takes it (a name is resolved).
    authority: String,
    /// The `Host` header.
    host: String,
    /// `/health` under the URL's path.
    path: String,
}

impl Target {
    fn parse(base: &str) -> anyhow::Result<Self> {
        let Some(rest) = base.strip_prefix("http://") else {
            bail!("{base:?}: the URL must start with http:// (the check asks the replica itself)");
        };
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
            bail!("{base:?}: expected http://host[:port][/path]");
        }
        if path.contains(['?', '#', ' ', '\r', '\n']) {
            bail!("{base:?}: the path may not hold a query, a fragment or blanks");
        }
        // The port follows the last colon, unless that colon is inside an IPv6 address's
        // brackets.
        let has_port = host
            .rfind(':')
            .is_some_and(|colon| host.rfind(']').is_none_or(|bracket| colon > bracket));
        let authority = if has_port {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        Ok(Self {
            authority,
            host: host.to_owned(),
            path: format!("{}/health", path.trim_end_matches('/')),
        })
    }
}

/// Sends the request and reads the answer until the server closes the connection.
async fn fetch(target: &Target) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(&target.authority)
        .await
        .with_context(|| format!("connecting to {}", target.authority))?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: tinydevcrm-health\r\n\r\n",
        target.path, target.host
    );
    stream
        .write_all(request.as_bytes())
        .await
        .context("sending the request")?;
    let mut response = Vec::new();
    stream
        .take(MAX_RESPONSE_BYTES)
        .read_to_end(&mut response)
        .await
        .context("reading the answer")?;
    Ok(response)
}

/// Up means status 200 and a JSON body whose `status` is `UP`; anything else is an error that
/// quotes what came back.
fn judge(response: &[u8]) -> anyhow::Result<()> {
    let text = String::from_utf8_lossy(response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!("not an HTTP answer: {:?}", excerpt(&text));
    };
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .filter(|code| code.bytes().all(|b| b.is_ascii_digit()));
    let Some(status) = status else {
        bail!("not an HTTP status line: {:?}", excerpt(status_line));
    };
    if status != "200" {
        bail!("answered {status}: {}", excerpt(body));
    }
    let reported = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|json| json.get("status")?.as_str().map(str::to_owned));
    match reported.as_deref() {
        Some("UP") => Ok(()),
        _ => bail!("answered 200 without status UP: {}", excerpt(body)),
    }
}

/// The first 200 characters of `text`, trimmed, for an error message.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_read_with_their_port_and_path() {
        let target = Target::parse("http://127.0.0.1:8000").expect("valid");
        assert_eq!(
            target,
            Target {
                authority: "127.0.0.1:8000".into(),
                host: "127.0.0.1:8000".into(),
                path: "/health".into()
            }
        );
        let target = Target::parse("http://app1/api/").expect("valid");
        assert_eq!(
            (target.authority.as_str(), target.path.as_str()),
            ("app1:80", "/api/health")
        );
        let target = Target::parse("http://[::1]:9000").expect("valid");
        assert_eq!(target.authority, "[::1]:9000");
        assert_eq!(
            Target::parse("http://[::1]").expect("valid").authority,
            "[::1]:80"
        );
        for bad in [
            "https://127.0.0.1",
            "127.0.0.1:8000",
            "http://",
            "http://user@host",
            "http://host/a?b",
            "http://host/a\r\nX: y",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn an_unspecified_bind_address_is_checked_on_loopback() {
        let url = |bind: &str| default_url(bind.parse().expect("an address"));
        assert_eq!(url("0.0.0.0:8000"), "http://127.0.0.1:8000");
        assert_eq!(url("[::]:8000"), "http://[::1]:8000");
        assert_eq!(url("10.0.0.5:9000"), "http://10.0.0.5:9000");
    }

    #[test]
    fn only_200_with_status_up_is_up() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{\"status\":\"UP\"}";
        assert!(judge(ok.as_bytes()).is_ok());

        let down = "HTTP/1.1 503 Service Unavailable\r\n\r\n{\"code\":\"database_unavailable\"}";
        let error = judge(down.as_bytes()).expect_err("503 is down").to_string();
        assert!(
            error.contains("503") && error.contains("database_unavailable"),
            "{error}"
        );

        for body in ["{\"status\":\"DOWN\"}", "UP", ""] {
            let response = format!("HTTP/1.1 200 OK\r\n\r\n{body}");
            let error = judge(response.as_bytes()).expect_err(body).to_string();
            assert!(error.contains("without status UP"), "{error}");
        }
        for garbage in ["", "SSH-2.0-OpenSSH_9.2\r\n", "HTTP/1.1 2x0 OK\r\n\r\n{}"] {
            assert!(judge(garbage.as_bytes()).is_err(), "{garbage:?} was up");
        }
    }
}
