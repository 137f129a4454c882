//! The HTTP side of the client: which server, the profile's tokens, and [`Session::send`],
//! which signs a request, and when the access token has expired (401 `token_expired`) refreshes
//! the session once, saves the new pair and sends the request again.

use std::time::Duration;

use reqwest::{Client, Method, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::args::ClientOpts;
use super::credential::{self, ApiKey};
use super::error::{CliError, unreachable};
use super::profile::{Profile, Store};

/// The server when neither `--url`, `TDC_URL` nor the profile says.
pub const DEFAULT_URL: &str = "http://localhost:8000";

/// How long a connection attempt may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a non-streaming request may go without receiving a byte before the server counts
/// as unreachable (a stalled server or proxy must not hang a script forever). Generous, since
/// creating a view or reading an upload runs on the server before it answers;
/// `TDC_READ_TIMEOUT` (seconds) overrides it.
const READ_TIMEOUT: Duration = Duration::from_secs(300);

/// The most of an error answer read: the client shows 200 characters of it at most, and an
/// endless error body must not fill the memory.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The most of a JSON answer read. The largest legitimate answer is a 10,000-row page; past
/// this the answer is refused rather than buffered without end.
pub const MAX_JSON_BODY: usize = 32 * 1024 * 1024;

/// The idle timeout of `TDC_READ_TIMEOUT`, or [`READ_TIMEOUT`].
fn read_timeout() -> Duration {
    std::env::var("TDC_READ_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(READ_TIMEOUT)
}

/// A problem document, as far as the client reads it.
#[derive(Debug, Deserialize)]
struct Problem {
    code: Option<String>,
    detail: Option<String>,
    title: Option<String>,
}

/// A token pair from obtain or refresh.
#[derive(Debug, Deserialize)]
struct Pair {
    access: String,
    refresh: String,
}

/// One client command's connection to the server.
#[derive(Debug)]
pub struct Session {
    http: Client,
    /// The same without the idle timeout, for exports and `listen`, which bound their own waits.
    streaming: Client,
    base: String,
    store: Store,
    profile: Profile,
    /// The API key every request carries instead of the profile's token, when one was given.
    key: Option<ApiKey>,
}

impl Session {
    /// The connection a resource command uses: with the API key of `TDC_KEY` or `--key-file`
    /// when one is given (then the config file is not read at all, its tokens least of all,
    /// and the server is `--url`/`TDC_URL` or the default), else the profile's session.
    pub fn open(opts: &ClientOpts) -> Result<Self, CliError> {
        let key = credential::from_opts(opts)?;
        Self::open_with(opts, key)
    }

    /// The profile's session, whatever key the environment holds: for `login`, `logout`,
    /// `register` and `keys`, which are about the session itself.
    pub fn open_session(opts: &ClientOpts) -> Result<Self, CliError> {
        Self::open_with(opts, None)
    }

    fn open_with(opts: &ClientOpts, key: Option<ApiKey>) -> Result<Self, CliError> {
        let (store, profile) = if key.is_some() {
            // Never read nor written with a key: a store with no directory keeps the type.
            (
                Store::new(Some(std::path::Path::new("")), &opts.profile)?,
                Profile::default(),
            )
        } else {
            let store = Store::new(opts.config_dir.as_deref(), &opts.profile)?;
            let profile = store.load()?;
            (store, profile)
        };
        let base = opts
            .url
            .clone()
            .or_else(|| profile.url.clone())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        check_url(&base)?;
        let build = |idle: Option<Duration>| {
            let builder = Client::builder().connect_timeout(CONNECT_TIMEOUT);
            let builder = match idle {
                Some(idle) => builder.read_timeout(idle),
                None => builder,
            };
            builder
                .build()
                .map_err(|e| CliError::usage(format!("cannot build the HTTP client: {e}")))
        };
        let http = build(Some(read_timeout()))?;
        let streaming = build(None)?;
        Ok(Self {
            http,
            streaming,
            base,
            store,
            profile,
            key,
        })
    }

    /// Whether requests carry an API key rather than the session's token.
    pub fn uses_key(&self) -> bool {
        self.key.is_some()
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client.
    pub fn http(&self) -> &Client {
        &self.http
    }

    /// The HTTP client without the idle timeout (for streams that bound their own waits).
    pub fn streaming_http(&self) -> &Client {
        &self.streaming
    }

    /// The config store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The access token, or a usage error telling how to log in.
    fn access(&self) -> Result<String, CliError> {
        self.profile.access.clone().ok_or_else(|| {
            CliError::usage(format!(
                "not logged in (profile {:?}): run `tinydevcrm login`",
                self.store.name()
            ))
        })
    }

    /// Sends a request without a token; an error status is a [`CliError::Server`].
    pub async fn send_anonymous(&self, request: RequestBuilder) -> Result<Response, CliError> {
        let response = request
            .send()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(problem(response).await)
        }
    }

    /// Sends the request `build` makes (given the client and the `Authorization` value),
    /// refreshing the session and sending it again once when the access token has expired
    /// (never with an API key: there is nothing to refresh). A GET answered 429 with a
    /// `Retry-After` of at most [`MAX_RETRY_AFTER`] is sent again after that wait, up to
    /// [`MAX_TRIES`] times in all; any other 429 is the command's error (a POST may have had
    /// effects the client cannot see, so it is never repeated behind the user's back).
    pub async fn send(
        &mut self,
        build: impl Fn(&Client, &str) -> Result<RequestBuilder, CliError>,
    ) -> Result<Response, CliError> {
        let mut refreshed = false;
        let mut tries = 0;
        loop {
            let auth = self.authorization()?;
            let (client, request) = build(&self.http, &auth)?.build_split();
            let request =
                request.map_err(|e| CliError::usage(format!("cannot build the request: {e}")))?;
            let idempotent = matches!(*request.method(), Method::GET | Method::HEAD);
            let response = client
                .execute(request)
                .await
                .map_err(|e| unreachable(&self.base, &e))?;
            if response.status().is_success() {
                return Ok(response);
            }
            tries += 1;
            let wait = retry_after(&response);
            let error = problem(response).await;
            if let CliError::Server { status: 429, .. } = error {
                match wait {
                    Some(wait) if idempotent && wait <= MAX_RETRY_AFTER && tries < MAX_TRIES => {
                        eprintln!("(rate limited; trying again in {} s)", wait.as_secs());
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    _ => return Err(with_wait(error, wait)),
                }
            }
            if self.key.is_none() && !refreshed && is_expired_access(&error) {
                self.refresh().await?;
                refreshed = true;
                continue;
            }
            return Err(self.explain(error));
        }
    }

    /// The server's refusal, with what to do about it when the request carried an API key:
    /// a key on a route for sessions, an expired key.
    pub fn explain(&self, error: CliError) -> CliError {
        if self.key.is_none() {
            return error;
        }
        match error {
            CliError::Server {
                status,
                code,
                detail,
            } => {
                let hint = match code.as_str() {
                    "key_not_allowed" => {
                        "; this command needs a login session: unset TDC_KEY (or drop --key-file) and run `tinydevcrm login`"
                    }
                    "key_expired" => {
                        "; the key is not refreshed: create a new one with `tinydevcrm keys create`"
                    }
                    "token_invalid" => "; check TDC_KEY or --key-file, or create a new key",
                    _ => "",
                };
                CliError::Server {
                    status,
                    code,
                    detail: format!("{detail}{hint}"),
                }
            }
            other => other,
        }
    }

    /// [`Session::send`] on the client without the idle timeout, for an export's stream.
    pub async fn send_streaming(
        &mut self,
        build: impl Fn(&Client, &str) -> Result<RequestBuilder, CliError>,
    ) -> Result<Response, CliError> {
        let streaming = self.streaming.clone();
        self.send(|_, auth| build(&streaming, auth)).await
    }

    /// [`Session::send`] and the answer's body as text (the server's JSON, as sent).
    pub async fn text(
        &mut self,
        build: impl Fn(&Client, &str) -> Result<RequestBuilder, CliError>,
    ) -> Result<String, CliError> {
        let response = self.send(build).await?;
        let (body, complete) = read_capped(response, MAX_JSON_BODY)
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
        if !complete {
            return Err(CliError::Server {
                status: 200,
                code: "invalid_response".to_owned(),
                detail: format!(
                    "the server's answer is larger than {} MiB",
                    MAX_JSON_BODY / 1024 / 1024
                ),
            });
        }
        String::from_utf8(body).map_err(|e| CliError::Server {
            status: 200,
            code: "invalid_response".to_owned(),
            detail: format!("the server's answer is not UTF-8: {e}"),
        })
    }

    /// A fresh token pair for the profile's session, saved. Under the config lock: when
    /// another process already refreshed (the saved access token is not ours), its pair is
    /// taken instead, since presenting the old refresh token again would revoke the session.
    pub async fn refresh(&mut self) -> Result<(), CliError> {
        if self.key.is_some() {
            return Err(CliError::usage(
                "an API key is not refreshed: create a new one with `tinydevcrm keys create`",
            ));
        }
        let _lock = self.store.lock()?;
        let saved = self.store.load()?;
        if saved.access.is_some() && saved.access != self.profile.access {
            self.profile = saved;
            return Ok(());
        }
        let refresh = self.profile.refresh.clone().ok_or_else(|| {
            CliError::usage("no refresh token in the profile: run `tinydevcrm login`")
        })?;
        let request = self
            .http
            .post(self.url("/auth/tokens/refresh/"))
            .json(&json!({ "refresh": refresh }));
        let pair: Pair = match self.send_anonymous(request).await {
            Ok(response) => json_capped(response, &self.base).await?,
            Err(CliError::Server {
                status,
                code,
                detail,
            }) if status == 401 => {
                return Err(CliError::Server {
                    status,
                    code,
                    detail: format!("{detail}; run `tinydevcrm login` again"),
                });
            }
            Err(e) => return Err(e),
        };
        self.profile.access = Some(pair.access);
        self.profile.refresh = Some(pair.refresh);
        self.store.save(&self.profile)
    }

    /// Logs in with `email` and `password`, saving the pair and the server in the profile.
    pub async fn login(&mut self, email: &str, password: &str) -> Result<(), CliError> {
        let request = self
            .http
            .post(self.url("/auth/tokens/obtain/"))
            .json(&json!({ "primary_email": email, "password": password }));
        let response = self.send_anonymous(request).await?;
        let pair: Pair = json_capped(response, &self.base).await?;
        let _lock = self.store.lock()?;
        self.profile = Profile {
            url: Some(self.base.clone()),
            email: Some(email.to_owned()),
            access: Some(pair.access),
            refresh: Some(pair.refresh),
        };
        self.store.save(&self.profile)
    }

    /// Revokes the session on the server and removes its tokens from the profile. A session
    /// the server no longer knows (401) is gone already: its tokens are removed all the same.
    pub async fn logout(&mut self) -> Result<bool, CliError> {
        let _lock = self.store.lock()?;
        self.profile = self.store.load()?;
        let Some(refresh) = self.profile.refresh.clone() else {
            return Ok(false);
        };
        let request = self
            .http
            .post(self.url("/auth/tokens/blacklist/"))
            .json(&json!({ "refresh": refresh }));
        match self.send_anonymous(request).await {
            Ok(_) => {}
            Err(CliError::Server { status: 401, .. }) => {}
            Err(e) => return Err(e),
        }
        self.profile.access = None;
        self.profile.refresh = None;
        self.store.save(&self.profile)?;
        Ok(true)
    }

    /// The current `Authorization` value: the API key's, else the session's access token.
    pub fn authorization(&self) -> Result<String, CliError> {
        match &self.key {
            Some(key) => Ok(key.authorization()),
            None => Ok(format!("JWT {}", self.access()?)),
        }
    }
}

/// The longest `Retry-After` a GET waits out before trying again; a longer one is the
/// command's error (a script should not hang for minutes without saying so).
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// The most times a GET is sent when the server keeps answering 429.
const MAX_TRIES: u32 = 3;

/// The `Retry-After` of an answer, in delta-seconds (the form this server sends).
fn retry_after(response: &Response) -> Option<Duration> {
    parse_retry_after(response.headers().get("retry-after")?.to_str().ok()?)
}

fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A 429 the client did not wait out, saying how long the server asked to wait.
fn with_wait(error: CliError, wait: Option<Duration>) -> CliError {
    match (error, wait) {
        (
            CliError::Server {
                status,
                code,
                detail,
            },
            Some(wait),
        ) => CliError::Server {
            status,
            code,
            detail: format!("{detail}; the server asks to wait {} s", wait.as_secs()),
        },
        (error, _) => error,
    }
}

/// Whether the server refused an expired access token (and a refresh may help).
pub fn is_expired_access(error: &CliError) -> bool {
    matches!(error, CliError::Server { status: 401, code, .. } if code == "token_expired")
}

/// The server's error answer as a [`CliError::Server`]: its problem's `detail` and `code`, or
/// the status and the start of the body when it is not a problem document (a proxy's page).
pub async fn problem(response: Response) -> CliError {
    let status = response.status();
    let body = read_capped(response, MAX_ERROR_BODY)
        .await
        .map_or_else(|_| Vec::new(), |(body, _)| body);
    let text = String::from_utf8_lossy(&body);
    match serde_json::from_str::<Problem>(&text) {
        Ok(p) if p.code.is_some() || p.detail.is_some() => CliError::Server {
            status: status.as_u16(),
            code: p.code.unwrap_or_else(|| "unknown".to_owned()),
            detail: p.detail.or(p.title).unwrap_or_else(|| status_text(status)),
        },
        _ => CliError::Server {
            status: status.as_u16(),
            code: "unknown".to_owned(),
            detail: if text.trim().is_empty() {
                status_text(status)
            } else {
                format!(
                    "{}: {}",
                    status_text(status),
                    text.chars().take(200).collect::<String>()
                )
            },
        },
    }
}

/// Reads at most `cap` bytes of `response`'s body; whether that was all of it. The rest is
/// never read (the connection is dropped with the response).
pub async fn read_capped(
    mut response: Response,
    cap: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = cap - body.len();
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            return Ok((body, false));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body, true))
}

/// A small JSON answer (a token pair) read under [`MAX_ERROR_BODY`].
async fn json_capped<T: serde::de::DeserializeOwned>(
    response: Response,
    base: &str,
) -> Result<T, CliError> {
    let (body, _) = read_capped(response, MAX_ERROR_BODY)
        .await
        .map_err(|e| unreachable(base, &e))?;
    serde_json::from_slice(&body).map_err(|e| CliError::Server {
        status: 200,
        code: "invalid_response".to_owned(),
        detail: format!("unexpected answer from the server: {e}"),
    })
}

/// Refuses a server URL that is not http(s) or that carries credentials (`user:pass@`): they
/// would be printed in messages, saved in the profile and sent on every request.
fn check_url(base: &str) -> Result<(), CliError> {
    if !base.starts_with("http://") && !base.starts_with("https://") {
        return Err(CliError::usage(format!(
            "the server URL must start with http:// or https://: {base}"
        )));
    }
    let url = reqwest::Url::parse(base)
        .map_err(|e| CliError::usage(format!("the server URL is not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CliError::usage(
            "the server URL must not carry a user name or password (user:pass@host): log in with `tinydevcrm login`",
        ));
    }
    Ok(())
}

fn status_text(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("unexpected status")
        .to_owned()
}

/// Parses the server's JSON answer.
pub fn parse(text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| CliError::Server {
        status: 200,
        code: "invalid_response".to_owned(),
        detail: format!("the server's answer is not JSON: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_whole_seconds_only() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }
}
