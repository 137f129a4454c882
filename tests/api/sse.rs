//! A small Server-Sent Events client over reqwest, for the channel tests.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::TestApp;

/// One event as received.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

impl SseEvent {
    pub fn seq(&self) -> i64 {
        self.id
            .as_deref()
            .and_then(|id| id.parse().ok())
            .expect("numeric event id")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("JSON data")
    }
}

/// An open stream.
pub struct SseStream {
    res: reqwest::Response,
    buf: String,
    pub comments: usize,
    pub retry: Option<String>,
}

/// What `next` saw.
#[derive(Debug)]
pub enum Next {
    Event(SseEvent),
    /// The server ended the stream (a clean end of the chunked body).
    End,
    /// The connection broke (reset, truncated body): not an end the server chose.
    Broken(String),
    /// Nothing within the timeout.
    Timeout,
}

impl SseStream {
    /// Opens `path` with the given extra headers; panics unless it is a 200 event stream.
    pub async fn open(app: &TestApp, path: &str, headers: &[(&str, String)]) -> Self {
        Self::open_url(&app.client, &app.url(path), headers).await
    }

    /// [`Self::open`] on any server.
    pub async fn open_url(client: &reqwest::Client, url: &str, headers: &[(&str, String)]) -> Self {
        let mut req = client.get(url);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let res = req.send().await.expect("listen request");
        assert_eq!(res.status(), StatusCode::OK, "listen failed");
        Self::from_response(res)
    }

    /// A stream of an answer already received, which must be a 200 event stream.
    pub fn from_response(res: reqwest::Response) -> Self {
        assert_eq!(res.status(), StatusCode::OK, "listen failed");
        let content_type = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Self {
            res,
            buf: String::new(),
            comments: 0,
            retry: None,
        }
    }

    /// The raw answer (for error cases).
    pub async fn request(
        app: &TestApp,
        path: &str,
        headers: &[(&str, String)],
    ) -> reqwest::Response {
        let mut req = app.client.get(app.url(path));
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        req.send().await.expect("listen request")
    }

    pub fn headers(&self) -> &reqwest::header::HeaderMap {
        self.res.headers()
    }

    /// The next event (comments and retry lines are counted, not returned).
    pub async fn next(&mut self, timeout: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut event = SseEvent::default();
                let mut has_data = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                        has_data = true;
                    } else if let Some(v) = line.strip_prefix("retry:") {
                        self.retry = Some(v.trim().to_owned());
                    }
                }
                if has_data {
                    return Next::Event(event);
                }
            }
            match tokio::time::timeout_at(deadline, self.res.chunk()).await {
                Err(_) => return Next::Timeout,
                Ok(Ok(Some(chunk))) => self.buf.push_str(&String::from_utf8_lossy(&chunk)),
                Ok(Ok(None)) => return Next::End,
                Ok(Err(e)) => return Next::Broken(e.to_string()),
            }
        }
    }

    /// The next event, which must come within `timeout`.
    pub async fn expect_event(&mut self, timeout: Duration) -> SseEvent {
        match self.next(timeout).await {
            Next::Event(e) => e,
            other => panic!("expected an event within {timeout:?}, got {other:?}"),
        }
    }
}

/// A one-connection HTTP server that sends an event stream's head and one event, then either
/// ends the chunked body properly or cuts the connection.
async fn one_event_server(cut: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = [0u8; 1024];
        let _ = socket.read(&mut request).await;
        let event = "id: 1\nevent: refresh\ndata: {}\n\n";
        let mut out = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{event}\r\n",
            event.len()
        );
        if !cut {
            out.push_str("0\r\n\r\n");
        }
        socket.write_all(out.as_bytes()).await.expect("write");
        // Dropping the socket closes it: after the last chunk that is an end, before it a cut.
    });
    url
}

#[tokio::test]
async fn the_test_client_tells_a_cut_connection_from_an_end_the_server_chose() {
    let client = reqwest::Client::new();
    for (cut, expected) in [(false, "End"), (true, "Broken")] {
        let url = one_event_server(cut).await;
        let mut stream = SseStream::open_url(&client, &url, &[]).await;
        assert_eq!(stream.expect_event(Duration::from_secs(5)).await.seq(), 1);
        let next = stream.next(Duration::from_secs(5)).await;
        let got = match next {
            Next::End => "End",
            Next::Broken(_) => "Broken",
            _ => "something else",
        };
        assert_eq!(got, expected, "cut {cut}: {next:?}");
    }
}
