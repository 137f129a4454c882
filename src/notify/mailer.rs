//! Sending e-mail: the SMTP transport the operator configured (lettre over tokio and rustls),
//! the messages (subject and body from the embedded minijinja templates), and how an SMTP
//! failure is judged.

use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use minijinja::Environment;
use secrecy::ExposeSecret;
use serde::Serialize;

use crate::config::Settings;

/// Why e-mail cannot be sent with the operator's settings.
#[derive(Debug, thiserror::Error)]
pub enum MailerError {
    /// `TDC_SMTP_URL` does not parse.
    #[error(
        "TDC_SMTP_URL is not an SMTP URL lettre accepts (smtp://host:port, smtp://host:587?tls=required, smtps://host): {0}"
    )]
    Url(String),
    /// Only one of `TDC_SMTP_USERNAME` and `TDC_SMTP_PASSWORD` is set.
    #[error(
        "TDC_SMTP_USERNAME and TDC_SMTP_PASSWORD go together: set both, or neither (and put the credentials in TDC_SMTP_URL)"
    )]
    HalfCredentials,
    /// `TDC_SMTP_FROM` is missing or is not a mailbox.
    #[error(
        "TDC_SMTP_FROM must be set to the sender's address (noreply@example.com or \"Name <noreply@example.com>\") when TDC_SMTP_URL is: {0}"
    )]
    From(String),
}

/// How one message attempt ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendFailure {
    /// Worth another attempt: a 4xx reply, a refused or lost connection, a timeout, TLS.
    Transient {
        /// The SMTP reply code, if the server answered.
        code: Option<u16>,
        /// What happened, with the server's reply.
        error: String,
    },
    /// The server rejected the message for good (5xx): retrying cannot help.
    Permanent {
        /// The SMTP reply code.
        code: Option<u16>,
        /// The server's reply.
        error: String,
    },
}

/// The configured SMTP server and sender.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The whole conversation's deadline (`TDC_SMTP_TIMEOUT_SECS`). lettre's own timeout
    /// bounds the connect and each socket read, but a server that never greets, or drips a
    /// byte at a time, can keep its future pending far longer; an attempt that outlived the
    /// lease would be taken over by another process while still holding a slot here.
    timeout: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    /// The mailer the settings describe; `None` without `TDC_SMTP_URL` (e-mail is off).
    pub fn from_settings(settings: &Settings) -> Result<Option<Self>, MailerError> {
        let Some(url) = &settings.smtp_url else {
            return Ok(None);
        };
        let from: Mailbox = settings
            .smtp_from
            .as_deref()
            .ok_or_else(|| MailerError::From("it is not set".to_owned()))?
            .parse()
            .map_err(|e: lettre::address::AddressError| MailerError::From(e.to_string()))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
            // The error may quote the URL, password included: say what, not where.
            .map_err(|e| MailerError::Url(without_secrets(&e.to_string())))?
            .timeout(Some(settings.smtp_timeout));
        match (&settings.smtp_username, &settings.smtp_password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(
                    user.clone(),
                    password.expose_secret().to_owned(),
                ));
            }
            (None, None) => {}
            _ => return Err(MailerError::HalfCredentials),
        }
        Ok(Some(Self {
            transport: builder.build(),
            from,
            timeout: settings.smtp_timeout,
        }))
    }

    /// The sender.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// The deadline of one attempt: no attempt outlives it (the drainer's lease is longer).
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends one message, within [`Self::timeout`] from the connect to the server's last
    /// reply; how it failed, if it did. Past the deadline the connection is dropped and the
    /// attempt is transient (retried on the schedule).
    pub async fn send(&self, message: Message) -> Result<(), SendFailure> {
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(judge(&e)),
            Err(_) => Err(SendFailure::Transient {
                code: None,
                error: format!(
                    "the SMTP conversation took longer than TDC_SMTP_TIMEOUT_SECS ({} ms); \
                     the connection was dropped",
                    self.timeout.as_millis()
                ),
            }),
        }
    }
}

fn without_secrets(text: &str) -> String {
    text.split_whitespace()
        .map(|word| {
            if word.contains('@') && word.contains(':') {
                "<url>"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A 5xx reply fails the message at once; anything else (a 4xx, no connection, a timeout, a
/// TLS failure) is tried again on the retry schedule.
fn judge(e: &lettre::transport::smtp::Error) -> SendFailure {
    let code = e.status().and_then(|c| c.to_string().parse::<u16>().ok());
    let error = format!("{e}");
    if e.is_permanent() {
        SendFailure::Permanent { code, error }
    } else {
        SendFailure::Transient { code, error }
    }
}

/// One event as the templates show it.
#[derive(Debug, Clone, Serialize)]
pub struct EventLine {
    /// The event's number on the channel.
    pub seq: Option<i64>,
    /// The refreshed view.
    pub view_name: Option<String>,
    /// When it refreshed.
    pub refreshed_at: Option<String>,
    /// Rows afterwards.
    pub row_count: Option<i64>,
    /// How long the refresh took.
    pub duration_ms: Option<i64>,
}

impl EventLine {
    /// The line of a delivery's payload (the SSE event's JSON).
    pub fn from_payload(seq: Option<i64>, payload: &serde_json::Value) -> Self {
        let text = |key: &str| payload.get(key).and_then(|v| v.as_str()).map(str::to_owned);
        Self {
            seq,
            view_name: text("view_name"),
            refreshed_at: text("refreshed_at"),
            row_count: payload.get("row_count").and_then(serde_json::Value::as_i64),
            duration_ms: payload
                .get("duration_ms")
                .and_then(serde_json::Value::as_i64),
        }
    }
}

/// The `List-Unsubscribe` header (RFC 2369): the one-click link in angle brackets.
#[derive(Debug, Clone)]
struct ListUnsubscribe(String);

impl Header for ListUnsubscribe {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self(s.to_owned()))
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), format!("<{}>", self.0))
    }
}

/// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058): the link may be `POST`ed
/// by the mail client without the recipient visiting it.
#[derive(Debug, Clone)]
struct ListUnsubscribePost;

impl Header for ListUnsubscribePost {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("List-Unsubscribe-Post")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "List-Unsubscribe=One-Click".to_owned())
    }
}

/// The embedded templates. Names ending in `.html` are HTML-escaped, the others are plain text.
fn templates() -> &'static Environment<'static> {
    static ENV: std::sync::LazyLock<Environment<'static>> = std::sync::LazyLock::new(|| {
        let mut env = Environment::new();
        for (name, source) in [
            (
                "confirm.subject.txt",
                include_str!("templates/confirm.subject.txt"),
            ),
            (
                "confirm.body.txt",
                include_str!("templates/confirm.body.txt"),
            ),
            (
                "events.subject.txt",
                include_str!("templates/events.subject.txt"),
            ),
            ("events.body.txt", include_str!("templates/events.body.txt")),
            ("page.html", include_str!("templates/page.html")),
        ] {
            env.add_template(name, source)
                .expect("BUG: an embedded template does not parse");
        }
        env
    });
    &ENV
}

/// Renders an embedded template.
pub fn render(name: &str, context: impl Serialize) -> Result<String, minijinja::Error> {
    templates().get_template(name)?.render(context)
}

/// What a message says, before it is addressed.
#[derive(Debug, Clone, Serialize)]
pub struct Content {
    /// Subject (one line).
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

/// The confirmation message's content.
pub fn confirmation(
    to: &str,
    channel_id: uuid::Uuid,
    view_name: Option<&str>,
    confirm_url: &str,
    unsubscribe_url: &str,
    ttl: Duration,
) -> Result<Content, minijinja::Error> {
    let context = minijinja::context! {
        to, channel_id => channel_id.to_string(), view_name, confirm_url, unsubscribe_url,
        ttl_hours => ttl.as_secs().div_ceil(3600),
    };
    Ok(Content {
        subject: one_line(&render("confirm.subject.txt", &context)?),
        body: render("confirm.body.txt", &context)?,
    })
}

/// The content of a message listing `events`.
pub fn events(
    to: &str,
    channel_id: uuid::Uuid,
    events: &[EventLine],
    unsubscribe_url: &str,
) -> Result<Content, minijinja::Error> {
    let context = minijinja::context! {
        to, channel_id => channel_id.to_string(), events, unsubscribe_url,
    };
    Ok(Content {
        subject: one_line(&render("events.subject.txt", &context)?),
        body: render("events.body.txt", &context)?,
    })
}

/// A subject is one line: every run of whitespace (a view name cannot hold a line break, but
/// the template might) becomes one space.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The message to `to`, with the unsubscribe headers of RFC 2369 and RFC 8058 and a
/// `Message-ID` of its own (`<random uuid@the sender's domain>`: unique, and naming no host of
/// ours; mail without one scores as spam and cannot be referred to in a complaint).
pub fn message(
    from: &Mailbox,
    to: &Address,
    content: Content,
    unsubscribe_url: &str,
) -> Result<Message, lettre::error::Error> {
    Message::builder()
        .message_id(Some(format!(
            "<{}@{}>",
            uuid::Uuid::new_v4().simple(),
            from.email.domain()
        )))
        .from(from.clone())
        .to(Mailbox::new(None, to.clone()))
        .subject(content.subject)
        .header(ListUnsubscribe(unsubscribe_url.to_owned()))
        .header(ListUnsubscribePost)
        .header(ContentType::TEXT_PLAIN)
        .body(content.body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_of_several_events_lists_each_and_carries_the_unsubscribe_headers() {
        let lines: Vec<EventLine> = (1..=3)
            .map(|seq| {
                EventLine::from_payload(
                    Some(seq),
                    &serde_json::json!({"view_name": "bills", "row_count": seq * 10, "refreshed_at": "2026-12-01T10:00:00Z"}),
                )
            })
            .collect();
        let content =
            events("a@example.com", uuid::Uuid::nil(), &lines, "https://x/u/t").expect("renders");
        assert_eq!(content.subject, "3 refreshes of bills");
        for seq in 1..=3 {
            assert!(
                content.body.contains(&format!("event {seq}: bills")),
                "{}",
                content.body
            );
        }
        let from: Mailbox = "n <n@example.com>".parse().expect("from");
        let to: Address = "a@example.com".parse().expect("to");
        let text = String::from_utf8(
            message(&from, &to, content, "https://x/u/t")
                .expect("builds")
                .formatted(),
        )
        .expect("utf-8");
        assert!(
            text.contains("List-Unsubscribe: <https://x/u/t>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            "{text}"
        );
    }

    #[test]
    fn a_confirmation_subject_holds_no_tenant_text_and_every_message_has_a_message_id() {
        let view = "URGENT your account is suspended call 555";
        let content = confirmation(
            "a@example.com",
            uuid::Uuid::nil(),
            Some(view),
            "https://x/c/t",
            "https://x/u/t",
            Duration::from_secs(3600),
        )
        .expect("renders");
        assert_eq!(
            content.subject,
            "Confirm e-mail notifications from tinydevcrm"
        );
        assert!(!content.subject.contains("URGENT"));
        assert!(
            content
                .body
                .contains(&format!("their words and not ours:\n\n  {view}\n")),
            "{}",
            content.body
        );
        let from: Mailbox = "n <n@example.com>".parse().expect("from");
        let to: Address = "a@example.com".parse().expect("to");
        let ids: Vec<String> = (0..2)
            .map(|_| {
                let text = String::from_utf8(
                    message(&from, &to, content.clone(), "https://x/u/t")
                        .expect("builds")
                        .formatted(),
                )
                .expect("utf-8");
                text.lines()
                    .find_map(|l| l.strip_prefix("Message-ID: "))
                    .unwrap_or_else(|| panic!("no Message-ID in {text}"))
                    .to_owned()
            })
            .collect();
        for id in &ids {
            assert!(id.starts_with('<') && id.ends_with("@example.com>"), "{id}");
        }
        assert_ne!(ids[0], ids[1], "each message has its own id");
    }

    #[tokio::test]
    async fn the_settings_must_name_a_sender_and_both_credentials_or_neither() {
        let mut settings = Settings::defaults();
        assert!(Mailer::from_settings(&settings).expect("off").is_none());
        settings.smtp_url = Some("smtp://127.0.0.1:2525".into());
        assert!(matches!(
            Mailer::from_settings(&settings),
            Err(MailerError::From(_))
        ));
        settings.smtp_from = Some("Alerts <noreply@example.com>".to_owned());
        assert!(Mailer::from_settings(&settings).expect("on").is_some());
        settings.smtp_username = Some("user".to_owned());
        assert!(matches!(
            Mailer::from_settings(&settings),
            Err(MailerError::HalfCredentials)
        ));
        settings.smtp_password = Some("secret".into());
        assert!(Mailer::from_settings(&settings).expect("on").is_some());
        settings.smtp_url = Some("http://127.0.0.1".into());
        assert!(matches!(
            Mailer::from_settings(&settings),
            Err(MailerError::Url(_))
        ));
    }

    #[test]
    fn pages_escape_what_they_show() {
        let page = render(
            "page.html",
            minijinja::context! {title => "<b>", text => "\"x\"", action => "/a?b=<c>", button => "Go"},
        )
        .expect("renders");
        assert!(!page.contains("<b>"), "{page}");
        assert!(page.contains("&lt;b&gt;"), "{page}");
    }
}
