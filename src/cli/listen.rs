//! `tinydevcrm channels listen`: the channel's events as they arrive, one line each. The stream
//! is parsed by russe's SSE decoder. When it drops (a deploy, a restart, a network cut) the
//! client reconnects after the server's `retry` or a growing backoff, sending `Last-Event-ID`,
//! so the server replays what was missed; an event whose id is not past the last one printed
//! is never printed again. When the access token expires (`event: token_expired`, or a 401
//! `token_expired` on reconnect) the session is refreshed and the stream resumed. A revoked or
//! expired session ends the command (exit 2): logging in again is the user's decision. With an
//! API key (sent as a header: the CLI is no browser, and a header stays out of proxies' access
//! logs) there is nothing to refresh: the key's expiry or revocation ends the command (exit 2).

use std::time::Duration;

use futures_util::StreamExt;
use russe::Event;
use russe::reqwest_0_13::ReqwestExt;

use super::client::{Session, is_expired_access, problem};
use super::error::{CliError, unreachable};
use super::output::{escape, terminal_safe_json};
use super::tables::segment;

/// The first wait before reconnecting, doubled after each failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The shortest and longest reconnection wait a server's `retry:` may ask for: a hostile or
/// broken server must neither make the client hammer it nor park it for hours.
const MIN_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// How long a connected stream may stay silent before it counts as dropped. The server sends
/// a heartbeat every 15 s by default (`sse_heartbeat`); a cut that no FIN reports (a NAT
/// timeout, a stalled proxy) would otherwise leave the client waiting for ever.
const IDLE: Duration = Duration::from_secs(45);

/// The server's `retry:` within [`MIN_RETRY`] ..= [`MAX_RETRY`].
fn clamp_retry(retry: Duration) -> Duration {
    retry.clamp(MIN_RETRY, MAX_RETRY)
}

/// Why a stream ended.
enum End {
    /// The connection closed or broke: reconnect after a wait.
    Dropped,
    /// The access token expired: refresh, then reconnect at once.
    TokenExpired,
}

/// Listens to `channel` until interrupted, starting after event `start` when given.
pub async fn listen(
    session: &mut Session,
    channel: &str,
    start: Option<u64>,
    json: bool,
) -> Result<(), CliError> {
    let url = session.url(&format!("/channels/{}/listen/", segment(channel)));
    let mut last = start;
    let mut backoff = FIRST_BACKOFF;
    let mut server_retry: Option<Duration> = None;
    let mut connected_once = false;
    loop {
        let mut request = session
            .streaming_http()
            .get(&url)
            .header("Authorization", session.authorization()?)
            .header("Accept", "text/event-stream");
        if let Some(id) = last {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) if !connected_once => return Err(unreachable(session.base(), &e)),
            Err(e) => {
                eprintln!(
                    "(disconnected: {}; reconnecting in {:.1} s)",
                    escape(&unreachable(session.base(), &e).to_string()),
                    backoff.as_secs_f64()
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !response.status().is_success() {
            let status = response.status();
            let error = problem(response).await;
            if is_expired_access(&error) && !session.uses_key() {
                session.refresh().await?;
                continue;
            }
            // A server starting or stopping (503) or a proxy without a backend (502, 504):
            // wait like after a drop.
            if connected_once && status.is_server_error() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            return Err(session.explain(error));
        }
        if !connected_once {
            eprintln!("(listening to channel {}; Ctrl-C stops)", escape(channel));
        }
        connected_once = true;
        backoff = FIRST_BACKOFF;
        let mut events = response.sse_stream();
        let mut end = End::Dropped;
        while let Ok(Some(item)) = tokio::time::timeout(IDLE, events.next()).await {
            let message = match item {
                Ok(Event::Message(message)) => message,
                Ok(Event::Retry(retry)) => {
                    server_retry = Some(clamp_retry(retry));
                    continue;
                }
                Ok(Event::Comment(_)) => continue,
                Err(_) => break,
            };
            let name = message.event.as_deref().unwrap_or("message");
            match name {
                "token_expired" if session.uses_key() => {
                    // A key is never refreshed: its expiry ends the command.
                    return Err(session.explain(CliError::Server {
                        status: 401,
                        code: "key_expired".to_owned(),
                        detail: "the API key has expired (the stream ended)".to_owned(),
                    }));
                }
                "token_expired" => {
                    end = End::TokenExpired;
                    break;
                }
                "revoked" | "session_expired" => {
                    let data: serde_json::Value =
                        serde_json::from_str(&message.data).unwrap_or_default();
                    return Err(CliError::Server {
                        status: 401,
                        code: data["code"].as_str().unwrap_or(name).to_owned(),
                        detail: if session.uses_key() {
                            format!(
                                "{}; the API key no longer works",
                                data["detail"].as_str().unwrap_or("the API key was revoked")
                            )
                        } else {
                            format!(
                                "{}; run `tinydevcrm login` again",
                                data["detail"].as_str().unwrap_or("the session ended")
                            )
                        },
                    });
                }
                _ => {}
            }
            let id = message.id.as_deref().and_then(|id| id.parse::<u64>().ok());
            // A reset moves the position (even backwards); any other event at or before the
            // last one printed was printed already.
            if name != "reset"
                && let (Some(id), Some(last)) = (id, last)
                && id <= last
            {
                continue;
            }
            print_event(message.id.as_deref(), name, &message.data, json);
            if id.is_some() {
                last = id;
            }
        }
        match end {
            End::TokenExpired => session.refresh().await?,
            End::Dropped => {
                let wait = server_retry.unwrap_or(backoff);
                eprintln!(
                    "(stream ended; reconnecting in {:.1} s)",
                    wait.as_secs_f64()
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One event: a JSON line `{"id", "event", "data"}` (the data as the server sent it when it
/// is JSON), or `#id event data` for people.
fn print_event(id: Option<&str>, name: &str, data: &str, json: bool) {
    let data = data.trim_end_matches('\n');
    if json {
        let id = match id.map(|i| (i, i.parse::<u64>())) {
            Some((_, Ok(n))) => n.to_string(),
            Some((raw, Err(_))) => serde_json::Value::from(raw).to_string(),
            None => "null".to_owned(),
        };
        // The server's JSON as sent (its member order) when it is one line of JSON.
        let data = match serde_json::from_str::<serde_json::Value>(data) {
            Ok(_) if !data.contains(['\n', '\r']) => data.to_owned(),
            Ok(value) => value.to_string(),
            Err(_) => serde_json::Value::from(data).to_string(),
        };
        let line = format!(
            "{{\"id\":{id},\"event\":{},\"data\":{data}}}",
            serde_json::Value::from(name)
        );
        println!("{}", terminal_safe_json(&line));
    } else {
        println!(
            "#{} {} {}",
            escape(id.unwrap_or("-")),
            escape(name),
            escape(data)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_servers_retry_is_clamped_to_half_a_second_through_a_minute() {
        assert_eq!(clamp_retry(Duration::ZERO), Duration::from_millis(500));
        assert_eq!(
            clamp_retry(Duration::from_millis(1)),
            Duration::from_millis(500)
        );
        assert_eq!(clamp_retry(Duration::from_secs(3)), Duration::from_secs(3));
        assert_eq!(
            clamp_retry(Duration::from_secs(86_400)),
            Duration::from_secs(60)
        );
        assert_eq!(clamp_retry(Duration::MAX), Duration::from_secs(60));
    }
}
