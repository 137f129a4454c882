//! The HTTP side of the client: which server, the profile's tokens, and [`Session::send`],
//! which signs a request, and when the access token has expired (401 `token_expired`) refreshes
//! the session once, saves the new pair and sends the request again.

use std::time::Duration;

use reqwest::{Client, RequestBuilder, Response, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::args::ClientOpts;
use super::error::{CliError, unreachable};
use super::profile::{Profile, Store};

/// The server when neither `--url`, `TDC_URL` nor the profile says.
pub const DEFAULT_URL: &str = "http://localhost:8000";

/// How long a connection attempt may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    base: String,
    store: Store,
    profile: Profile,
}

impl Session {
    /// The session of `opts`' profile, at `--url` or the profile's server.
    pub fn open(opts: &ClientOpts) -> Result<Self, CliError> {
        let store = Store::new(opts.config_dir.as_deref(), &opts.profile)?;
        let profile = store.load()?;
        let base = opts
            .url
            .clone()
            .or_else(|| profile.url.clone())
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        let base = base.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(CliError::usage(format!(
                "the server URL must start with http:// or https://: {base}"
            )));
        }
        let http = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| CliError::usage(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            store,
            profile,
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The HTTP client.
    pub fn http(&self) -> &Client {
        &self.http
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
    /// refreshing the session and sending it again once when the access token has expired.
    pub async fn send(
        &mut self,
        build: impl Fn(&Client, &str) -> Result<RequestBuilder, CliError>,
    ) -> Result<Response, CliError> {
        let mut refreshed = false;
        loop {
            let auth = format!("JWT {}", self.access()?);
            let response = build(&self.http, &auth)?
                .send()
                .await
                .map_err(|e| unreachable(&self.base, &e))?;
            if response.status().is_success() {
                return Ok(response);
            }
            let error = problem(response).await;
            if !refreshed && is_expired_access(&error) {
                self.refresh().await?;
                refreshed = true;
                continue;
            }
            return Err(error);
        }
    }

    /// [`Session::send`] and the answer's body as text (the server's JSON, as sent).
    pub async fn text(
        &mut self,
        build: impl Fn(&Client, &str) -> Result<RequestBuilder, CliError>,
    ) -> Result<String, CliError> {
        let response = self.send(build).await?;
        response
            .text()
            .await
            .map_err(|e| unreachable(&self.base, &e))
    }

    /// A fresh token pair for the profile's session, saved. Under the config lock: when
    /// another process already refreshed (the saved access token is not ours), its pair is
    /// taken instead, since presenting the old refresh token again would revoke the session.
    pub async fn refresh(&mut self) -> Result<(), CliError> {
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
            Ok(response) => response
                .json()
                .await
                .map_err(|e| unreachable(&self.base, &e))?,
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
        let pair: Pair = response
            .json()
            .await
            .map_err(|e| unreachable(&self.base, &e))?;
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

    /// The current `Authorization` value (for requests [`Session::send`] cannot rebuild).
    pub fn authorization(&self) -> Result<String, CliError> {
        Ok(format!("JWT {}", self.access()?))
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
    let text = response.text().await.unwrap_or_default();
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
