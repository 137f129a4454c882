//! Server-sent event frames, encoded once into `Bytes` that every stream shares: a refresh
//! event is encoded by the hub when it broadcasts it, not by each of its listeners.
//!
//! The wire format is the one `actix-web-lab`'s `Sse` wrote before: `id: ...`, `event: ...`,
//! one `data: ...` line per line of the data (CRLF and CR become line breaks), a blank line;
//! comments are `: text`.

use bytes::Bytes;

/// The first frame of every stream: how long a browser waits before it reconnects.
pub const RETRY: Bytes = Bytes::from_static(b"retry: 3000\n\n");

/// The last frame of a stream the hub let go (this process is shutting down, or the channel
/// went): reconnect soon, to another process behind the load balancer, with `Last-Event-ID`.
pub const RECONNECT_SOON: Bytes = Bytes::from_static(b"retry: 500\n\n");

/// The heartbeat comment.
pub const KEEP_ALIVE: Bytes = Bytes::from_static(b": keep-alive\n\n");

/// One event, encoded by `russe` (as `actix-web-lab`'s `Sse` did per stream before). `name` and
/// `id` come from us (an event name, a number): they hold no line break, which is all `russe`
/// refuses; should one ever, the event goes out without its name rather than not at all.
pub fn event(name: &str, id: Option<i64>, data: &str) -> Bytes {
    let message = |event: Option<&str>| {
        russe::Event::Message(russe::Message {
            data: data.into(),
            event: event.map(Into::into),
            retry: None,
            id: id.map(|id| id.to_string().into()),
        })
    };
    message(Some(name))
        .into_bytestring()
        .or_else(|_| message(None).into_bytestring())
        .map(bytestring::ByteString::into_bytes)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_is_id_name_data_and_a_blank_line() {
        assert_eq!(
            event("refresh", Some(42), r#"{"n":1}"#),
            Bytes::from_static(b"id: 42\nevent: refresh\ndata: {\"n\":1}\n\n")
        );
        assert_eq!(
            event("revoked", None, "{}"),
            Bytes::from_static(b"event: revoked\ndata: {}\n\n")
        );
    }

    #[test]
    fn every_line_of_the_data_gets_its_own_data_field() {
        assert_eq!(
            event("x", None, "a\nb\r\nc\rd"),
            Bytes::from_static(b"event: x\ndata: a\ndata: b\ndata: c\ndata: d\n\n")
        );
        assert_eq!(
            event("x", None, ""),
            Bytes::from_static(b"event: x\ndata: \n\n")
        );
        assert_eq!(
            event("x", None, "a\n"),
            Bytes::from_static(b"event: x\ndata: a\ndata: \n\n")
        );
    }
}
