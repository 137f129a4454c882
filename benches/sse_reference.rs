//! The same-run reference of the SSE fan-out benchmark: a minimal broadcaster on tokio + hyper
//! that the bench client (`benches/realtime.rs sse`) loads exactly as it loads `serve`.
//!
//! ```text
//! sse_reference --bind 127.0.0.1:PORT [--threads 2] [--heartbeat-secs 15]
//! ```
//!
//! One `tokio::sync::broadcast` of pre-encoded `Bytes` frames; every `text/event-stream`
//! response is a body that forwards the frames of its receiver. It answers just what the client
//! calls, for any channel id or view name (one channel):
//! - `GET /channels/<id>/`: `{"last_event_id": N}`;
//! - `GET /channels/<id>/listen/`: the stream (HTTP/1.1, chunked);
//! - `POST /views/<name>/refresh/`: encodes `event: refresh`, `id: N+1` and
//!   `data: {"refreshed_at": "<now>"}` once, broadcasts it, then answers `{}`;
//! - `GET /health`.
//!
//! A shared heartbeat task broadcasts `: keep-alive` every `--heartbeat-secs` (no timer per
//! stream). No authentication, no database, no per-stream state beyond the receiver: the cost of
//! hyper and tokio alone.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::sync::broadcast;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;
type Body = BoxBody<Bytes, Infallible>;

struct Broadcaster {
    sender: broadcast::Sender<Bytes>,
    seq: AtomicI64,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Res<()> {
    let bind: SocketAddr = arg("--bind")
        .ok_or("missing --bind 127.0.0.1:PORT")?
        .parse()?;
    let threads: usize = arg("--threads").map_or(Ok(2), |v| v.parse())?;
    let heartbeat = Duration::from_secs(arg("--heartbeat-secs").map_or(Ok(15), |v| v.parse())?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()?;
    runtime.block_on(serve(bind, heartbeat))
}

async fn serve(bind: SocketAddr, heartbeat: Duration) -> Res<()> {
    let listener = tokio::net::TcpListener::bind(bind).await?;
    // The same queue length as `serve`'s default per-channel queue (TDC_SSE_QUEUE).
    let (sender, _) = broadcast::channel(256);
    let hub = Arc::new(Broadcaster {
        sender,
        seq: AtomicI64::new(0),
    });
    let beat = Arc::clone(&hub);
    tokio::spawn(async move {
        let frame = Bytes::from_static(b": keep-alive\n\n");
        let mut tick = tokio::time::interval(heartbeat);
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = beat.sender.send(frame.clone());
        }
    });
    eprintln!("sse_reference listening on {bind}");
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let hub = Arc::clone(&hub);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&hub), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(socket), service)
                .await;
        });
    }
}

fn full(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *res.status_mut() = status;
    res
}

async fn handle(
    hub: Arc<Broadcaster>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_owned();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    Ok(match (req.method(), parts.as_slice()) {
        (&Method::GET, ["health"]) => full(StatusCode::OK, "ok"),
        (&Method::GET, ["channels", _]) => {
            let body = format!("{{\"last_event_id\":{}}}", hub.seq.load(Ordering::SeqCst));
            let mut res = Response::new(Full::new(Bytes::from(body)).boxed());
            res.headers_mut()
                .insert(CONTENT_TYPE, "application/json".parse().expect("constant"));
            res
        }
        (&Method::GET, ["channels", _, "listen"]) => {
            let receiver = hub.sender.subscribe();
            let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
                loop {
                    match receiver.recv().await {
                        Ok(frame) => return Some((Ok(Frame::data(frame)), receiver)),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            });
            let mut res = Response::new(BodyExt::boxed(StreamBody::new(frames)));
            res.headers_mut()
                .insert(CONTENT_TYPE, "text/event-stream".parse().expect("constant"));
            res.headers_mut()
                .insert(CACHE_CONTROL, "no-cache".parse().expect("constant"));
            res
        }
        (&Method::POST, ["views", _, "refresh"]) => {
            // Read (and drop) the request body before answering.
            let _ = req.into_body().collect().await;
            let seq = hub.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
            let frame = Bytes::from(format!(
                "event: refresh\nid: {seq}\ndata: {{\"refreshed_at\": \"{at}\"}}\n\n"
            ));
            let _ = hub.sender.send(frame);
            full(StatusCode::OK, "{}")
        }
        _ => full(StatusCode::NOT_FOUND, "{}"),
    })
}
