//! The HTTP client webhook deliveries go out through, built so that a delivery reaches only an
//! address the [`DestinationPolicy`] accepts: the URL is checked before each request, host names
//! are resolved by [`CheckedResolver`], which hands the connector only the addresses it checked
//! (there is no second lookup a DNS rebinding could answer differently), and redirects and
//! proxies are off (a redirect would lead to an unchecked URL; a proxy would connect for us).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;

use crate::config::Settings;
use crate::notify::destination::{DestinationPolicy, Refused};

/// The `User-Agent` of deliveries.
const USER_AGENT: &str = concat!("tinydevcrm-webhooks/", env!("CARGO_PKG_VERSION"));

/// Sends webhook requests to destinations the policy accepts, one attempt per call.
#[derive(Debug, Clone)]
pub struct DeliveryClient {
    http: reqwest::Client,
    policy: Arc<DestinationPolicy>,
}

/// Why an attempt got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The URL, or every address its host resolves to, is refused: retrying cannot help until
    /// the subscription or the operator's policy changes.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// No answer: the name did not resolve, the connection failed, TLS failed, or the attempt
    /// timed out. Worth a retry.
    #[error("the webhook request failed: {0}")]
    Http(#[source] reqwest::Error),
}

impl DeliveryError {
    /// Whether the attempt ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Http(e) if e.is_timeout())
    }

    /// A refusal from the resolver reaches us wrapped in the connector's error; find it, so a
    /// refused destination reads as such and is not retried like a network error.
    fn from_reqwest(error: reqwest::Error) -> Self {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = cause {
            if let Some(refused) = current.downcast_ref::<Refused>() {
                return Self::Refused(refused.clone());
            }
            cause = current.source();
        }
        Self::Http(error)
    }
}

impl DeliveryClient {
    /// A client that enforces `policy` and gives each attempt `timeout` in all: connecting,
    /// sending, and receiving the answer, its body included when the caller reads it.
    pub fn new(policy: DestinationPolicy, timeout: Duration) -> Result<Self, reqwest::Error> {
        let policy = Arc::new(policy);
        let http = reqwest::Client::builder()
            .dns_resolver(CheckedResolver {
                policy: Arc::clone(&policy),
            })
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!policy.allow_http)
            // One call is one attempt: the outbox counts and schedules retries itself.
            .retry(reqwest::retry::never())
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(USER_AGENT)
            .build()?;
        Ok(Self { http, policy })
    }

    /// The client the operator's settings describe.
    pub fn from_settings(settings: &Settings) -> Result<Self, reqwest::Error> {
        Self::new(
            DestinationPolicy::from_settings(settings),
            settings.webhook_timeout,
        )
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &DestinationPolicy {
        &self.policy
    }

    /// POSTs `body` with `headers` to `url`, after checking the URL; any HTTP status is an
    /// answer (`Ok`), redirects included, which are not followed.
    pub async fn post(
        &self,
        url: &str,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, DeliveryError> {
        let url = self.policy.check_url(url)?;
        self.http
            .post(url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .map_err(DeliveryError::from_reqwest)
    }
}

/// Resolves with the system resolver (through tokio) and keeps only the addresses the policy
/// accepts; the connector then connects to one of exactly those.
#[derive(Debug)]
pub struct CheckedResolver {
    policy: Arc<DestinationPolicy>,
}

impl Resolve for CheckedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The connector sets the URL's port on each address; 0 is a placeholder.
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first_refusal = None;
            let accepted: Vec<SocketAddr> = resolved
                .into_iter()
                .filter(|addr| match policy.check_ip(addr.ip()) {
                    Ok(()) => true,
                    Err(refused) => {
                        first_refusal.get_or_insert(refused);
                        false
                    }
                })
                .collect();
            match first_refusal {
                Some(first) if accepted.is_empty() => Err(Box::new(Refused::EveryAddress {
                    host,
                    first: Box::new(first),
                })
                    as Box<dyn std::error::Error + Send + Sync>),
                _ => Ok(Box::new(accepted.into_iter()) as Addrs),
            }
        })
    }
}
