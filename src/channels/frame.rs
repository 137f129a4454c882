//! Server-sent event frames, encoded once into `Bytes` that every stream shares: a refresh
//! event is encoded by the hub when it broadcasts it, not by each of its listeners.
//!
//! The wire format is the one `actix-web-lab`'s `Sse` wrote before: `id: ...`, `event: ...`,
//! one `data: ...` line per line of the data (CRLF and CR become line breaks), a blank line;
//! comments are `: text`.

use bytes::{BufMut as _, Bytes, BytesMut};

/// The first frame of every stream: how long a browser waits before it reconnects.
pub const RETRY: Bytes = Bytes::from_static(b"retry: 3000\n\n");

/// The heartbeat comment.
pub const KEEP_ALIVE: Bytes = Bytes::from_static(b": keep-alive\n\n");

/// One event. `name` and `id` come from us (an event name, a number): no line breaks.
pub fn event(name: &str, id: Option<i64>, data: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + name.len() + 40);
    if let Some(id) = id {
        out.put_slice(b"id: ");
        out.put_slice(id.to_string().as_bytes());
        out.put_u8(b'\n');
    }
    out.put_slice(b"event: ");
    out.put_slice(name.as_bytes());
    out.put_u8(b'\n');
    for line in lines(data) {
        out.put_slice(b"data: ");
        out.put_slice(line.as_bytes());
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// The lines of `text` split at LF, CRLF and CR (an empty text is one empty line).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.find(['\r', '\n']) {
            Some(i) => {
                let skip = if text[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[i + skip..]);
                Some(&text[..i])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
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
