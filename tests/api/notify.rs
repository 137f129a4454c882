//! The webhook delivery client against a real HTTP receiver on loopback: the destination policy
//! refuses it unless the operator allows its range, through every path a URL can take to an
//! address (IP literal, other spellings of it, a host name the resolver looks up), and a
//! redirect is answered, never followed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use reqwest::header::{HeaderMap, HeaderValue};
use tinydevcrm::notify::client::{DeliveryClient, DeliveryError};
use tinydevcrm::notify::destination::{AddressClass, DestinationPolicy, Refused};
use tinydevcrm::notify::signature::{self, WebhookSecret};

/// What the receiver was sent.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// A receiver on 127.0.0.1: `/hook` answers 200, `/moved` a 302 to `/hook`, `/slow` answers
/// after 5 s. It records every request.
struct Receiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let log = Arc::clone(&log);
                tokio::spawn(async move {
                    let service = service_fn(move |req| answer(addr, Arc::clone(&log), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        Self { addr, received }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().expect("not poisoned").clone()
    }
}

async fn answer(
    addr: SocketAddr,
    log: Arc<Mutex<Vec<Received>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let headers = req.headers().clone();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    log.lock().expect("not poisoned").push(Received {
        path: path.clone(),
        headers,
        body,
    });
    let mut response = Response::new(Full::new(Bytes::from_static(b"received")));
    match path.as_str() {
        "/moved" => {
            *response.status_mut() = StatusCode::FOUND;
            let location = format!("http://{addr}/hook");
            response.headers_mut().insert(
                hyper::header::LOCATION,
                location.parse().expect("a header value"),
            );
        }
        "/slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        _ => {}
    }
    Ok(response)
}

fn client(allow: &[&str]) -> DeliveryClient {
    let policy = DestinationPolicy {
        allow_http: true,
        allow: allow.iter().map(|c| c.parse().expect("a CIDR")).collect(),
    };
    DeliveryClient::new(policy, Duration::from_secs(1)).expect("a client")
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    i64::try_from(secs).expect("fits")
}

fn signed_headers(secret: &WebhookSecret, id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let header = signature::signature_header([secret], id, timestamp, body);
    for (name, value) in [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp.to_string()),
        ("webhook-signature", header),
        ("content-type", "application/json".to_owned()),
    ] {
        headers.insert(name, HeaderValue::from_str(&value).expect("a header value"));
    }
    headers
}

#[tokio::test]
async fn without_an_allow_list_a_loopback_receiver_is_refused_however_its_address_is_spelled() {
    // Arrange
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    let client = client(&[]);

    // Act + Assert: IP literals are refused by the URL check, before any connection.
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://0x7f.1:{port}/hook"),
        format!("http://017700000001:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
    ] {
        let outcome = client.post(&url, HeaderMap::new(), b"{}".to_vec()).await;
        assert!(
            matches!(
                outcome,
                Err(DeliveryError::Refused(Refused::Address {
                    class: AddressClass::Loopback,
                    ..
                }))
            ),
            "{url}: {outcome:?}"
        );
    }
    // A host name is refused by the resolver: every address it has is loopback.
    let url = format!("http://localhost:{port}/hook");
    let outcome = client.post(&url, HeaderMap::new(), b"{}".to_vec()).await;
    match outcome {
        Err(DeliveryError::Refused(refused @ Refused::EveryAddress { .. })) => {
            let message = refused.to_string();
            assert!(
                message.starts_with("localhost resolves to no address a webhook may reach")
                    && message.contains("loopback")
                    && message.contains("TDC_WEBHOOK_ALLOW_CIDRS"),
                "{message}"
            );
        }
        other => panic!("{url}: {other:?}"),
    }
    assert!(
        receiver.received().is_empty(),
        "nothing reached the receiver: {:?}",
        receiver.received()
    );
}

#[tokio::test]
async fn with_loopback_allowed_a_signed_delivery_arrives_by_address_and_by_name() {
    // Arrange
    let receiver = Receiver::start().await;
    let port = receiver.addr.port();
    let client = client(&["127.0.0.0/8"]);
    let secret = WebhookSecret::generate();
    let body = br#"{"channel_id":1,"event_id":2}"#;

    // Act
    for (i, url) in [
        format!("http://127.0.0.1:{port}/hook"),
        // `localhost` may resolve to ::1 as well, which is not allowed: the resolver drops it
        // and connects to 127.0.0.1.
        format!("http://localhost:{port}/hook"),
    ]
    .iter()
    .enumerate()
    {
        let id = format!("msg_{i}");
        let headers = signed_headers(&secret, &id, now(), body);
        let response = client
            .post(url, headers, body.to_vec())
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(response.status(), StatusCode::OK, "{url}");
    }

    // Assert: the receiver verifies what it got with the subscription's secret.
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    for request in &received {
        let header = |name: &str| {
            request.headers[name]
                .to_str()
                .expect("an ASCII header")
                .to_owned()
        };
        let timestamp: i64 = header("webhook-timestamp").parse().expect("a number");
        assert_eq!(request.path, "/hook");
        assert_eq!(&request.body[..], body);
        assert_eq!(
            signature::verify(
                &header("webhook-signature"),
                std::slice::from_ref(&secret),
                &header("webhook-id"),
                timestamp,
                &request.body,
                Duration::from_secs(300),
            ),
            Ok(())
        );
        assert!(header("user-agent").starts_with("tinydevcrm-webhooks/"));
    }
}

#[tokio::test]
async fn a_redirect_is_answered_to_the_caller_and_not_followed() {
    // Arrange
    let receiver = Receiver::start().await;
    let client = client(&["127.0.0.0/8"]);
    let url = format!("http://{}/moved", receiver.addr);

    // Act
    let response = client
        .post(&url, HeaderMap::new(), b"{}".to_vec())
        .await
        .expect("an answer");

    // Assert
    assert_eq!(response.status(), StatusCode::FOUND);
    let paths: Vec<String> = receiver.received().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/moved"], "the Location was not requested");
}

#[tokio::test]
async fn an_attempt_that_outlasts_the_timeout_ends_as_a_timeout() {
    // Arrange
    let receiver = Receiver::start().await;
    let client = client(&["127.0.0.0/8"]);
    let url = format!("http://{}/slow", receiver.addr);

    // Act
    let started = std::time::Instant::now();
    let outcome = client.post(&url, HeaderMap::new(), b"{}".to_vec()).await;

    // Assert
    match outcome {
        Err(error) => assert!(error.is_timeout(), "{error:?}"),
        Ok(response) => panic!("answered {}", response.status()),
    }
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
