//! The README walkthrough and the tutorials, run from their own text: every fenced `bash` block, in
//! order, in one fresh `bash -euo pipefail` against a server of the test's own, from a copy of
//! the repository's files. A fenced `text` block right after a command block is the output that
//! command must print (`...` stands for what varies); a block under the comment
//! `<!-- not run by the docs test: ... -->` is skipped (it starts the service or runs the
//! tests). A fenced `sql` block under `<!-- file: path -->` must be that file, byte for byte.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tinydevcrm::config::Settings;

use crate::helpers::{TestApp, spawn_app_with, temp_dir};

/// The comment that keeps the next fenced `bash` block out of the run.
const SKIP: &str = "<!-- not run by the docs test";
/// Printed after each block, to cut the output into the blocks'.
const MARKER: &str = "@@docs-run-block-end@@";
/// How long a whole page may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(180);

/// One fenced `bash` block and the output shown after it, if any.
#[derive(Debug)]
struct Block {
    line: usize,
    code: String,
    expected: Option<String>,
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(page: &str) -> String {
    std::fs::read_to_string(repo().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"))
}

/// The part of `text` from the heading `heading` to the next heading of the same level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("no heading {heading:?}"));
    let level = heading.split(' ').next().unwrap_or("##");
    let rest = &text[start + 1..];
    let end = rest[heading.len()..]
        .find(&format!("\n{level} "))
        .map_or(rest.len(), |i| i + heading.len());
    &rest[..end]
}

/// The runnable fenced `bash` blocks of `text`, each with the `text` block that follows it.
fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<Block> = Vec::new();
    let mut skip_next = false;
    // Whether only blank lines separate the current line from the last bash block.
    let mut after_block = false;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        if let Some(lang) = line.strip_prefix("```") {
            let start = i + 1;
            let mut end = start;
            while end < lines.len() && lines[end].trim_end() != "```" {
                end += 1;
            }
            assert!(end < lines.len(), "unclosed code block at line {i}");
            let body = lines[start..end].join("\n");
            match lang {
                "bash" if skip_next => skip_next = false,
                "bash" => {
                    out.push(Block {
                        line: i + 1,
                        code: body,
                        expected: None,
                    });
                    after_block = true;
                    i = end + 1;
                    continue;
                }
                "text" if after_block => {
                    if let Some(last) = out.last_mut() {
                        last.expected = Some(body);
                    }
                }
                _ => {}
            }
            after_block = false;
            i = end + 1;
            continue;
        }
        if line.contains(SKIP) {
            skip_next = true;
        }
        if !line.is_empty() {
            after_block = false;
        }
        i += 1;
    }
    out
}

/// `<!-- file: path -->` followed by a fenced `sql` block: the block must be the file.
fn check_shown_files(text: &str, page: &str) -> usize {
    let mut checked = 0;
    let mut rest = text;
    while let Some(at) = rest.find("<!-- file: ") {
        rest = &rest[at + "<!-- file: ".len()..];
        let path = rest[..rest.find(" -->").expect("closed comment")].trim();
        let fence = rest
            .find("```sql\n")
            .expect("a sql block after <!-- file -->")
            + 7;
        let end = rest[fence..].find("```").expect("closed sql block") + fence;
        let shown = &rest[fence..end];
        let file = read(path);
        assert_eq!(
            shown, file,
            "{page}: the SQL shown for {path} is not the file's content"
        );
        checked += 1;
        rest = &rest[end..];
    }
    checked
}

/// Whether `actual` is `expected` with each `...` standing for any text.
fn matches(expected: &str, actual: &str) -> bool {
    let parts: Vec<&str> = expected.split("...").collect();
    if parts.len() == 1 {
        return expected == actual;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !actual.starts_with(first) || !actual[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &actual[first.len()..actual.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Lines without trailing blanks, without leading or trailing empty lines.
fn normalize(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines.join("\n").trim_matches('\n').to_owned()
}

/// A problem document (`"status":4xx` or `5xx`) in an output nobody said to expect.
fn problem_in(output: &str) -> Option<&str> {
    let mut rest = output;
    while let Some(at) = rest.find("\"status\":") {
        let after = &rest[at + 9..];
        let code: String = after.chars().take(3).collect();
        if code.len() == 3
            && code.chars().all(|c| c.is_ascii_digit())
            && (code.starts_with('4') || code.starts_with('5'))
        {
            return Some(&rest[at.saturating_sub(80)..(at + 120).min(rest.len())]);
        }
        rest = after;
    }
    None
}

/// Whether `curl` and `jq` are there; without them the test fails in CI
/// (`TDC_REQUIRE_DOCS_TOOLS=1`) and is skipped, loudly, elsewhere.
fn tools_present() -> bool {
    let missing: Vec<&str> = ["curl", "jq", "bash"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_err()
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("TDC_REQUIRE_DOCS_TOOLS").as_deref() != Ok("1"),
        "the docs test needs {missing:?} (Debian packages curl, jq); .ci/run installs them"
    );
    eprintln!("SKIPPED: the docs test needs {missing:?} (Debian packages curl, jq)");
    false
}

/// A fresh directory holding what the docs read, at the paths they give (as from the
/// repository root).
fn workdir() -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        if from.is_dir() {
            std::fs::create_dir_all(to).expect("mkdir");
            for entry in std::fs::read_dir(from).expect("read dir") {
                let entry = entry.expect("entry");
                copy(&entry.path(), &to.join(entry.file_name()));
            }
        } else {
            std::fs::copy(from, to).expect("copy");
        }
    }
    let dir = temp_dir("tdc-docs-run");
    copy(&repo().join("sample.parquet"), &dir.join("sample.parquet"));
    copy(&repo().join("docs"), &dir.join("docs"));
    dir
}

/// Runs `page`'s blocks (from `text`) in one bash against a fresh server, checks the outputs.
async fn run_page(page: &str, text: &str) {
    run_page_with(page, text, |_| {}).await;
}

/// [`run_page`] against a server with `adjust`ed settings.
async fn run_page_with(page: &str, text: &str, adjust: impl FnOnce(&mut Settings)) {
    if !tools_present() {
        return;
    }
    run_page_on(page, text, &spawn_app_with(adjust).await, &[]).await;
}

/// [`run_page`] against `app`, with `env` added to (or replacing) the shell's environment.
async fn run_page_on(page: &str, text: &str, app: &TestApp, env: &[(&str, String)]) {
    let blocks = blocks(text);
    assert!(!blocks.is_empty(), "{page}: no bash blocks");
    let dir = workdir();
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home");
    let mut script = String::new();
    for block in &blocks {
        script.push_str(&block.code);
        script.push_str(&format!("\nprintf '\\n%s\\n' '{MARKER}'\n"));
    }
    std::fs::write(dir.join("docs-run.sh"), &script).expect("script");
    let (stdout_path, stderr_path) = (dir.join("stdout"), dir.join("stderr"));
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "docs-run.sh"])
        .current_dir(&dir)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &home)
        .env("TDC_URL", &app.address)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).expect("stdout"))
        .stderr(std::fs::File::create(&stderr_path).expect("stderr"))
        .spawn()
        .expect("start bash");
    // Wait without blocking the runtime the server runs on.
    let began = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if began.elapsed() > PAGE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let stdout = std::fs::read_to_string(&stdout_path).expect("read stdout");
    let stderr = std::fs::read_to_string(&stderr_path).expect("read stderr");
    let outputs: Vec<&str> = stdout.split(&format!("\n{MARKER}\n")).collect();
    let done = outputs.len() - 1;
    if status.is_none_or(|s| !s.success()) {
        let failed = blocks
            .get(done)
            .map_or("(after the last block)".to_owned(), |b| {
                format!("line {}:\n{}", b.line, b.code)
            });
        panic!(
            "{page}: the block at {failed}\nended the run ({}).\nIts output:\n{}\nstderr:\n{stderr}",
            status.map_or("timed out".to_owned(), |s| s.to_string()),
            outputs[done],
        );
    }
    assert_eq!(done, blocks.len(), "{page}: every block ran");
    for (block, output) in blocks.iter().zip(&outputs) {
        let output = normalize(output);
        match &block.expected {
            Some(expected) => assert!(
                matches(&normalize(expected), &output),
                "{page}, block at line {}:\n{}\nprinted:\n{output}\nand the page shows:\n{expected}",
                block.line,
                block.code,
            ),
            None => {
                if let Some(problem) = problem_in(&output) {
                    panic!(
                        "{page}, block at line {}:\n{}\nanswered an error the page does not show: ...{problem}...",
                        block.line, block.code
                    );
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The README's webhook receiver listens on loopback over plain http: the on-premise settings
/// the README tells the reader to start the service with.
fn loopback_webhooks(s: &mut Settings) {
    s.webhook_allow_http = true;
    s.webhook_allow_cidrs = vec!["127.0.0.0/8".parse().expect("a CIDR")];
}

#[tokio::test]
async fn the_readme_walkthrough_runs_as_printed() {
    let readme = read("README.md");
    run_page_with(
        "README.md",
        section(&readme, "## Walkthrough (curl)"),
        loopback_webhooks,
    )
    .await;
}

/// The e-mail section continues the walkthrough's shell, so both run, against a server that
/// sends to an aiosmtpd of the test's own (the section reads the confirmation link from its
/// Maildir, `$TDC_MAILDIR`).
#[tokio::test]
async fn the_readme_email_subscription_runs_as_printed() {
    if !tools_present() {
        return;
    }
    let Some(smtp) =
        crate::smtp::SmtpServer::start("the README e-mail section", crate::smtp::Handler::Maildir)
            .await
    else {
        return;
    };
    let app = spawn_app_with(|s| {
        loopback_webhooks(s);
        s.smtp_url = Some(secrecy::SecretString::from(smtp.url()));
        s.smtp_from = Some("noreply@example.com".to_owned());
        s.outbox_poll = Duration::from_millis(100);
    })
    .await;
    let readme = read("README.md");
    let text = format!(
        "{}\n{}",
        section(&readme, "## Walkthrough (curl)"),
        section(&readme, "## E-mail subscription (curl)")
    );
    // The section's python3 needs only the standard library; the system one is always there,
    // where python3 on PATH may be a shim that needs a home of its own.
    let path = format!("/usr/bin:{}", std::env::var("PATH").unwrap_or_default());
    let maildir = smtp.maildir().display().to_string();
    run_page_on(
        "README.md",
        &text,
        &app,
        &[("PATH", path), ("TDC_MAILDIR", maildir)],
    )
    .await;
}

/// The API keys section continues the walkthrough's shell (its token, view and channel), so
/// both run (on the walkthrough's server settings).
#[tokio::test]
async fn the_readme_api_keys_section_runs_as_printed() {
    let readme = read("README.md");
    let text = format!(
        "{}\n{}",
        section(&readme, "## Walkthrough (curl)"),
        section(&readme, "## API keys (curl)")
    );
    run_page_with("README.md", &text, loopback_webhooks).await;
}

/// The command-line client's section, with the test's own build of the binary on `PATH` and its
/// config in a directory of the test's own. No scheduler: an hourly job must not fire an
/// event the section does not show.
#[tokio::test]
async fn the_readme_command_line_section_runs_as_printed() {
    if !tools_present() {
        return;
    }
    let app = spawn_app_with(|s| s.scheduler = false).await;
    let readme = read("README.md");
    let bin = Path::new(env!("CARGO_BIN_EXE_tinydevcrm"))
        .parent()
        .expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = temp_dir("tdc-docs-cli");
    run_page_on(
        "README.md",
        section(&readme, "## Command line"),
        &app,
        &[
            ("PATH", path),
            (
                "TDC_CONFIG_DIR",
                config.join("config").display().to_string(),
            ),
        ],
    )
    .await;
    let _ = std::fs::remove_dir_all(&config);
}

#[tokio::test]
async fn the_phone_billing_tutorial_runs_as_printed() {
    let page = "docs/tutorials/phone-billing.md";
    let text = read(page);
    assert_eq!(check_shown_files(&text, page), 3);
    run_page(page, &text).await;
}

#[tokio::test]
async fn the_sim_usage_tutorial_runs_as_printed() {
    let page = "docs/tutorials/sim-usage.md";
    let text = read(page);
    assert_eq!(check_shown_files(&text, page), 4);
    run_page(page, &text).await;
}

#[test]
fn the_docs_runner_reads_blocks_outputs_and_skips() {
    let text = "intro\n\n<!-- not run by the docs test: starts the service -->\n\n```bash\nserve\n```\n\n```bash\necho a\n```\n\n```text\na\n```\n\nprose\n\n```text\nnot an output\n```\n\n```bash\necho b\n```\n";
    let found = blocks(text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].code, "echo a");
    assert_eq!(found[0].expected.as_deref(), Some("a"));
    assert_eq!(found[1].code, "echo b");
    assert_eq!(found[1].expected, None);
    assert!(matches(
        "{\"id\":\"...\",\"n\":1}",
        "{\"id\":\"42\",\"n\":1}"
    ));
    assert!(!matches(
        "{\"id\":\"...\",\"n\":1}",
        "{\"id\":\"42\",\"n\":2}"
    ));
    assert!(matches("a...", "abc"));
    assert!(!matches("a", "ab"));
    assert!(problem_in("{\"title\":\"Not Found\",\"status\":404}").is_some());
    assert!(problem_in("{\"status\":\"refreshed\",\"n\":404}").is_none());
    let readme = "x\n## A\none\n### B\ntwo\n## C\nthree\n";
    assert_eq!(section(readme, "## A"), "## A\none\n### B\ntwo");
}
