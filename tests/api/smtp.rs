//! A real SMTP server for the e-mail tests: Debian's `python3-aiosmtpd` as a child process on a
//! free loopback port, storing what it accepts in a Maildir the test reads (or, with the
//! handler in `tests/api/smtp/reject_all.py`, refusing everything with a 550).
//!
//! Without aiosmtpd the tests that need it print why and pass, unless `TDC_REQUIRE_SMTP=1`
//! (`.ci/run` sets it and installs the package), where its absence fails them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mail_parser::MessageParser;

/// The interpreter that has aiosmtpd: `python3` on PATH may be a pyenv shim without Debian's
/// packages, so `/usr/bin/python3` is tried too.
pub fn python_with_aiosmtpd() -> Option<PathBuf> {
    ["python3", "/usr/bin/python3"]
        .into_iter()
        .find_map(|python| {
            let ok = Command::new(python)
                .args(["-c", "import aiosmtpd"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            ok.then(|| PathBuf::from(python))
        })
}

/// The interpreter, or `None` after saying why the test is skipped; panics instead under
/// `TDC_REQUIRE_SMTP=1`.
pub fn python_or_skip(test: &str) -> Option<PathBuf> {
    let found = python_with_aiosmtpd();
    if found.is_none() {
        assert!(
            std::env::var("TDC_REQUIRE_SMTP").as_deref() != Ok("1"),
            "TDC_REQUIRE_SMTP=1 but neither python3 nor /usr/bin/python3 has aiosmtpd \
             (apt-get install python3-aiosmtpd)"
        );
        eprintln!("skipping {test}: aiosmtpd is not installed (apt-get install python3-aiosmtpd)");
    }
    found
}

/// A free loopback port (bound and released: nothing listens on it afterwards).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// A received message, parsed.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub body: String,
    pub list_unsubscribe: Option<String>,
    pub list_unsubscribe_post: Option<String>,
}

impl Mail {
    /// The first link in the body that starts with `prefix` (`http://.../emails/confirm/`).
    pub fn link(&self, part: &str) -> String {
        self.body
            .split_whitespace()
            .find(|w| w.starts_with("http") && w.contains(part))
            .unwrap_or_else(|| panic!("no {part} link in {}", self.body))
            .to_owned()
    }
}

/// An aiosmtpd process.
pub struct SmtpServer {
    pub port: u16,
    python: PathBuf,
    maildir: PathBuf,
    handler: Handler,
    child: Option<Child>,
}

/// What the server does with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// Accept and store in the Maildir.
    Maildir,
    /// Refuse with 550.
    RejectAll,
}

impl SmtpServer {
    /// Starts a server on a free port; `None` (the test skips) without aiosmtpd.
    pub async fn start(test: &str, handler: Handler) -> Option<Self> {
        let python = python_or_skip(test)?;
        let maildir = crate::helpers::temp_dir("tdc-maildir");
        // Python's Maildir makes its folders only when it makes the directory itself.
        for sub in ["tmp", "new", "cur"] {
            std::fs::create_dir_all(maildir.join(sub)).expect("maildir");
        }
        let mut server = Self {
            port: free_port(),
            python,
            maildir,
            handler,
            child: None,
        };
        server.up().await;
        Some(server)
    }

    /// Where accepted messages are kept.
    pub fn maildir(&self) -> &Path {
        &self.maildir
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Starts the process again (same port, same Maildir) and waits until it accepts
    /// connections.
    pub async fn up(&mut self) {
        assert!(self.child.is_none(), "already up");
        let mut command = Command::new(&self.python);
        command.args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{}", self.port),
        ]);
        match self.handler {
            Handler::Maildir => {
                command
                    .args(["-c", "aiosmtpd.handlers.Mailbox"])
                    .arg(&self.maildir);
            }
            Handler::RejectAll => {
                let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/smtp");
                command
                    .env("PYTHONPATH", here)
                    .args(["-c", "reject_all.RejectAll"]);
            }
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "aiosmtpd did not listen on {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Kills the process (the port then refuses connections).
    pub fn down(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let Ok(entries) = std::fs::read_dir(self.maildir.join("new")) else {
            return Vec::new();
        };
        let mut files: Vec<(std::time::SystemTime, String, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let modified = e.metadata().ok()?.modified().ok()?;
                Some((
                    modified,
                    e.file_name().to_string_lossy().into_owned(),
                    e.path(),
                ))
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, _, path)| std::fs::read(path).ok())
            .map(|bytes| parse(&bytes))
            .collect()
    }

    /// Waits until at least `n` messages have arrived (at most `within`); all of them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + within;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "{} messages within {within:?}, expected {n}: {messages:#?}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.down();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}

fn parse(bytes: &[u8]) -> Mail {
    let message = MessageParser::default().parse(bytes).expect("a message");
    let raw = String::from_utf8_lossy(bytes).into_owned();
    // The header as sent (unfolded), not as a parser reinterprets it.
    let header = |name: &str| {
        let unix = raw.replace("\r\n", "\n");
        let head = unix
            .split("\n\n")
            .next()
            .unwrap_or_default()
            .replace("\n ", " ")
            .replace("\n\t", " ");
        head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    let to = message
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or_default()
        .to_owned();
    Mail {
        to,
        subject: message.subject().unwrap_or_default().to_owned(),
        body: message.body_text(0).unwrap_or_default().into_owned(),
        list_unsubscribe: header("List-Unsubscribe"),
        list_unsubscribe_post: header("List-Unsubscribe-Post"),
    }
}

/// What [`Gate`] does with a connection it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// Holds the socket open and never says a word (no SMTP greeting).
    Silent,
    /// Sends a greeting that never ends, one byte every 200 ms.
    Drip,
    /// Relays the connection to the SMTP server on this port.
    Forward(u16),
    /// Waits this many milliseconds, then relays to the SMTP server on the port (a slow relay
    /// that still answers within the timeout).
    Slow(u16, u64),
}

/// A TCP server started by the test in front of the real SMTP server: a relay that stalls
/// (silent or dripping) until the test switches it to forwarding. It counts the connections
/// it accepted and keeps the stalled ones open until it is dropped.
pub struct Gate {
    pub port: u16,
    mode: std::sync::Arc<std::sync::Mutex<GateMode>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Gate {
    /// Listens on a free loopback port.
    pub async fn start(mode: GateMode) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("gate binds");
        let port = listener.local_addr().expect("addr").port();
        let mode = std::sync::Arc::new(std::sync::Mutex::new(mode));
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (m, a) = (mode.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let now = *m.lock().expect("mode");
                held.push(tokio::spawn(async move {
                    match now {
                        GateMode::Silent => std::future::pending::<()>().await,
                        GateMode::Drip => {
                            let greeting = b"220-";
                            for byte in greeting.iter().chain(std::iter::repeat(&b'x')) {
                                if socket.write_all(&[*byte]).await.is_err() {
                                    return;
                                }
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                        }
                        GateMode::Forward(to) | GateMode::Slow(to, _) => {
                            if let GateMode::Slow(_, ms) = now {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                            }
                            if let Ok(mut upstream) =
                                tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                            {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
                            }
                        }
                    }
                }));
            }
        });
        Self {
            port,
            mode,
            accepted,
            task,
        }
    }

    /// `smtp://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// What connections accepted from now on get (those held stay held).
    pub fn set(&self, mode: GateMode) {
        *self.mode.lock().expect("mode") = mode;
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        // The held connections' tasks are detached; the listener's end closes them with the
        // runtime at the test's end.
        self.task.abort();
    }
}
