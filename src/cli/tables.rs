//! `tinydevcrm tables ...`, and the rows reader views share. Uploads stream the file from disk
//! (never whole in memory) through a progress bar over the bytes handed to the connection;
//! exports stream the answer to the file the same way. The bars draw only when standard error
//! is a terminal: in a pipe or a log there is nothing but the final sentence.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use futures_util::{StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::multipart::{Form, Part};
use serde::Deserialize;
use serde_json::{Value, json};

use super::args::{
    ExportArgs, ExportFormat, RowsArgs, RowsFormat, TablesArgs, TablesCommand, UploadArgs,
    UploadMode,
};
use super::client::{Session, parse};
use super::error::{CliError, unreachable};
use super::output::{
    OrderedRow, escape, print_json, print_json_text, print_list, print_record, print_rows_table,
};

/// Rows per page when an export pages through JSON (the server's largest JSON page).
const JSON_EXPORT_PAGE: u32 = 10_000;

/// Runs a `tables` subcommand.
pub async fn run(args: TablesArgs) -> Result<(), CliError> {
    let json = args.opts.json;
    let mut session = Session::open(&args.opts)?;
    match args.command {
        TablesCommand::Upload(upload_args) => upload(&mut session, upload_args, json).await,
        TablesCommand::Ls => {
            let text = get(&mut session, "/tables/").await?;
            list(text, json, &["table_name", "created_at", "updated_at"])
        }
        TablesCommand::Show { name } => {
            let path = format!("/tables/{}/", segment(&name));
            let text = get(&mut session, &path).await?;
            show(&text, json)
        }
        TablesCommand::Rows(rows_args) => rows(&mut session, "tables", rows_args, json).await,
        TablesCommand::Export(export_args) => export(&mut session, export_args, json).await,
        TablesCommand::Drop { name, cascade } => {
            let path = format!("/tables/{}/", segment(&name));
            delete(&mut session, &path, cascade).await?;
            done(
                json,
                json!({"dropped": name}),
                &format!("dropped table {}", escape(&name)),
            );
            Ok(())
        }
    }
}

/// GETs `path` with the session's token; the body as sent.
pub async fn get(session: &mut Session, path: &str) -> Result<String, CliError> {
    let url = session.url(path);
    session
        .text(|http, auth| Ok(http.get(&url).header("Authorization", auth)))
        .await
}

/// Sends `body` as JSON to `path` with `method`; the body of the answer as sent.
pub async fn send_json(
    session: &mut Session,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> Result<String, CliError> {
    let url = session.url(path);
    session
        .text(|http, auth| {
            Ok(http
                .request(method.clone(), &url)
                .header("Authorization", auth)
                .json(body))
        })
        .await
}

/// DELETEs `path` (`?cascade=true` when asked).
pub async fn delete(session: &mut Session, path: &str, cascade: bool) -> Result<(), CliError> {
    let url = session.url(path);
    session
        .send(|http, auth| {
            let request = http.delete(&url).header("Authorization", auth);
            Ok(if cascade {
                request.query(&[("cascade", "true")])
            } else {
                request
            })
        })
        .await?;
    Ok(())
}

/// Prints a JSON list answer: as sent with `--json`, else a table of `fields`.
pub fn list(text: String, json: bool, fields: &[&str]) -> Result<(), CliError> {
    if json {
        print_json_text(&text);
        return Ok(());
    }
    let value = parse(&text)?;
    let items = value.as_array().cloned().unwrap_or_default();
    print_list(&items, fields);
    Ok(())
}

/// Prints a JSON object answer: as sent with `--json`, else a table of its fields.
pub fn show(text: &str, json: bool) -> Result<(), CliError> {
    if json {
        print_json_text(text);
    } else {
        print_record(&parse(text)?);
    }
    Ok(())
}

/// Prints `value` with `--json`, else `sentence`.
pub fn done(json: bool, value: Value, sentence: &str) {
    if json {
        print_json(&value);
    } else {
        println!("{sentence}");
    }
}

/// A path segment: a name percent-encoded byte by byte beyond the unreserved characters (the
/// server refuses odd names; the URL must still mean what was typed).
pub fn segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A progress bar over `len` bytes on standard error, hidden when that is not a terminal.
fn bar(len: Option<u64>, message: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => {
            let bar = ProgressBar::new(len);
            if let Ok(style) = ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        }
        None => {
            let bar = ProgressBar::new_spinner();
            if let Ok(style) =
                ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
            {
                bar.set_style(style);
            }
            bar
        }
    };
    bar.set_message(escape(message).into_owned());
    bar
}

/// What `POST /tables/{name}/rows/` answers.
#[derive(Debug, Deserialize)]
struct RowsWritten {
    rows_written: i64,
    row_count: i64,
}

/// What `POST /tables/create/` answers, as far as the sentence needs.
#[derive(Debug, Deserialize)]
struct Created {
    table_name: String,
    row_count: i64,
}

async fn upload(session: &mut Session, args: UploadArgs, json: bool) -> Result<(), CliError> {
    let path = args.file.clone();
    let len = std::fs::metadata(&path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?
        .len();
    let file_name = path.file_name().map_or_else(
        || "upload.parquet".to_owned(),
        |n| n.to_string_lossy().into_owned(),
    );
    let progress = bar(Some(len), &format!("uploading {file_name}"));
    let url = match args.mode {
        None => session.url("/tables/create/"),
        Some(_) => session.url(&format!("/tables/{}/rows/", segment(&args.name))),
    };
    let build = |http: &reqwest::Client, auth: &str| {
        progress.reset();
        let part = file_part(&path, len, &file_name, &progress)?;
        let form = match args.mode {
            None => {
                let form = Form::new().text("table_name", args.name.clone());
                let form = match &args.columns {
                    Some(columns) => form.text("columns", columns.clone()),
                    None => form,
                };
                form.part("file", part)
            }
            Some(mode) => Form::new().text("mode", mode_name(mode)).part("file", part),
        };
        Ok(http
            .post(&url)
            .header("Authorization", auth)
            .multipart(form))
    };
    let result = session.text(build).await;
    progress.finish_and_clear();
    let text = result?;
    if json {
        print_json_text(&text);
        return Ok(());
    }
    match args.mode {
        None => {
            let created: Created = serde_json::from_str(&text).map_err(|e| invalid(&e))?;
            println!(
                "created table {} from {} ({len} bytes): {} rows",
                escape(&created.table_name),
                escape(&file_name),
                created.row_count
            );
        }
        Some(mode) => {
            let written: RowsWritten = serde_json::from_str(&text).map_err(|e| invalid(&e))?;
            println!(
                "{} {} rows to table {} ({len} bytes): {} rows in the table",
                if mode == UploadMode::Replace {
                    "replaced with"
                } else {
                    "appended"
                },
                written.rows_written,
                escape(&args.name),
                written.row_count
            );
        }
    }
    Ok(())
}

fn mode_name(mode: UploadMode) -> &'static str {
    match mode {
        UploadMode::Append => "append",
        UploadMode::Replace => "replace",
    }
}

fn invalid(e: &serde_json::Error) -> CliError {
    CliError::Server {
        status: 200,
        code: "invalid_response".to_owned(),
        detail: format!("unexpected answer from the server: {e}"),
    }
}

/// The file as a streamed multipart part whose chunks advance `progress` as the connection
/// takes them.
fn file_part(path: &Path, len: u64, name: &str, progress: &ProgressBar) -> Result<Part, CliError> {
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
    let progress = progress.clone();
    let stream =
        tokio_util::io::ReaderStream::with_capacity(tokio::fs::File::from_std(file), 64 * 1024)
            .inspect_ok(move |chunk| progress.inc(chunk.len() as u64));
    Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
        .file_name(name.to_owned())
        .mime_str("application/octet-stream")
        .map_err(|e| CliError::usage(format!("the upload's media type: {e}")))
}

/// The query of a rows read: filters (`col=op.value`), order, select, limit.
fn rows_query(
    filters: &[String],
    order: Option<&str>,
    select: Option<&str>,
    limit: Option<u32>,
) -> Result<Vec<(String, String)>, CliError> {
    let mut query = Vec::new();
    for filter in filters {
        let Some((column, condition)) = filter.split_once('=') else {
            return Err(CliError::usage(format!(
                "--filter takes column=op.value (e.g. source=eq.a): {filter}"
            )));
        };
        query.push((column.to_owned(), condition.to_owned()));
    }
    if let Some(order) = order {
        query.push(("order".to_owned(), order.to_owned()));
    }
    if let Some(select) = select {
        query.push(("select".to_owned(), select.to_owned()));
    }
    if let Some(limit) = limit {
        query.push(("limit".to_owned(), limit.to_string()));
    }
    Ok(query)
}

/// A JSON page of rows.
#[derive(Debug, Deserialize)]
struct Page {
    rows: Vec<OrderedRow>,
    next_cursor: Option<String>,
}

/// `tables rows` and `views rows`: `kind` is `tables` or `views`.
pub async fn rows(
    session: &mut Session,
    kind: &str,
    args: RowsArgs,
    json: bool,
) -> Result<(), CliError> {
    let format = args
        .format
        .unwrap_or(if json || !std::io::stdout().is_terminal() {
            RowsFormat::Json
        } else {
            RowsFormat::Table
        });
    let mut query = rows_query(
        &args.filters,
        args.order.as_deref(),
        args.select.as_deref(),
        args.limit,
    )?;
    if format == RowsFormat::Csv {
        query.push(("format".to_owned(), "csv".to_owned()));
    }
    let url = session.url(&format!("/{kind}/{}/rows/", segment(&args.name)));
    let text = session
        .text(|http, auth| Ok(http.get(&url).header("Authorization", auth).query(&query)))
        .await?;
    match format {
        RowsFormat::Csv => {
            let mut out = std::io::stdout().lock();
            let terminal = std::io::stdout().is_terminal();
            for line in text.lines() {
                let line = if terminal { escape(line) } else { line.into() };
                let _ = writeln!(out, "{line}");
            }
        }
        RowsFormat::Json | RowsFormat::Table => {
            let page: Page = serde_json::from_str(&text).map_err(|e| invalid(&e))?;
            if format == RowsFormat::Json {
                print_json(&page.rows);
            } else {
                print_rows_table(&page.rows);
                if page.next_cursor.is_some() {
                    eprintln!("(more rows: raise --limit or narrow with --filter)");
                }
            }
        }
    }
    Ok(())
}

async fn export(session: &mut Session, args: ExportArgs, json: bool) -> Result<(), CliError> {
    let mut out = Output::open(&args.output)?;
    let result = match args.format {
        ExportFormat::Parquet | ExportFormat::Csv => export_file(session, &args, &mut out).await,
        ExportFormat::Json => export_json(session, &args, &mut out).await,
    };
    // On failure a temporary file goes with `out` (half a file must not pass for the export)
    // and the destination is left as it was.
    let bytes = result?;
    let to_stdout = matches!(out, Output::Stdout(_));
    out.finish(&args.output)?;
    let value =
        json!({"table_name": args.name, "file": args.output.display().to_string(), "bytes": bytes});
    let sentence = format!(
        "exported table {} to {} ({bytes} bytes)",
        escape(&args.name),
        escape(&args.output.display().to_string())
    );
    if to_stdout {
        // Standard output is the export: the summary goes to standard error.
        eprintln!("{sentence}");
    } else {
        done(json, value, &sentence);
    }
    Ok(())
}

/// Where an export goes. A regular file (or a new one) is written through a temporary file in
/// the same directory, renamed over it only once the export is complete; anything else (`-`,
/// `/dev/stdout`, a FIFO, a device) is written to directly, since it cannot be replaced and
/// must never be removed.
enum Output {
    /// A new file beside the destination (resolved through links), removed when dropped
    /// unless persisted there.
    Temp(tempfile::NamedTempFile, PathBuf, u64),
    /// A FIFO, a device or another non-regular file, opened for writing.
    Direct(std::fs::File, u64),
    /// `-`.
    Stdout(u64),
}

impl Output {
    fn open(path: &Path) -> Result<Self, CliError> {
        let fail = |e: std::io::Error| CliError::usage(format!("{}: {e}", path.display()));
        if path.as_os_str() == "-" {
            return Ok(Self::Stdout(0));
        }
        // `/dev/stdout` and `/proc/self/fd/N` name an open descriptor (a pipe, a terminal, or
        // the file a shell redirected to): it cannot be replaced by a rename.
        let descriptor = path.starts_with("/dev") || path.starts_with("/proc");
        let meta = std::fs::metadata(path);
        match meta {
            Ok(meta) if descriptor || (!meta.is_file() && !meta.is_dir()) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(fail)?;
                return Ok(Self::Direct(file, 0));
            }
            Ok(meta) if meta.is_dir() => {
                return Err(CliError::usage(format!(
                    "{}: is a directory",
                    path.display()
                )));
            }
            _ => {}
        }
        // A link to a file: the file is replaced, not the link.
        let resolved = match std::fs::symlink_metadata(path) {
            Ok(link) if link.file_type().is_symlink() => {
                std::fs::canonicalize(path).map_err(fail)?
            }
            _ => path.to_path_buf(),
        };
        let path = resolved.as_path();
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        // Created with O_EXCL (never an existing file or a planted link) and mode 0666 less
        // the umask, as a plain `create` would.
        let temp = tempfile::Builder::new()
            .prefix(".tdc-export-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .tempfile_in(dir)
            .map_err(fail)?;
        Ok(Self::Temp(temp, path.to_path_buf(), 0))
    }

    /// Bytes written so far.
    fn written(&self) -> u64 {
        match self {
            Self::Temp(_, _, n) | Self::Direct(_, n) | Self::Stdout(n) => *n,
        }
    }

    /// Makes the export durable and, for a regular file, puts it in place of `path`.
    fn finish(&mut self, path: &Path) -> Result<(), CliError> {
        let fail = |e: std::io::Error| CliError::usage(format!("{}: {e}", path.display()));
        match self {
            Self::Temp(temp, _, _) => {
                temp.as_file().sync_all().map_err(fail)?;
                // `persist` takes the file by value; put a placeholder in its place.
                let Self::Temp(temp, target, _) = std::mem::replace(self, Self::Stdout(0)) else {
                    return Ok(());
                };
                temp.persist(&target).map_err(|e| fail(e.error))?;
                Ok(())
            }
            Self::Direct(file, _) => file.flush().map_err(fail),
            Self::Stdout(_) => std::io::stdout().flush().map_err(fail),
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (n, count) = match self {
            Self::Temp(temp, _, count) => (temp.write(buf)?, count),
            Self::Direct(file, count) => (file.write(buf)?, count),
            Self::Stdout(count) => (std::io::stdout().write(buf)?, count),
        };
        *count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Temp(temp, _, _) => temp.flush(),
            Self::Direct(file, _) => file.flush(),
            Self::Stdout(_) => std::io::stdout().flush(),
        }
    }
}

/// A Parquet or CSV export: the server sends the whole result; streamed to `out`.
async fn export_file(
    session: &mut Session,
    args: &ExportArgs,
    out: &mut Output,
) -> Result<u64, CliError> {
    let mut query = rows_query(&args.filters, args.order.as_deref(), None, args.limit)?;
    let format = if args.format == ExportFormat::Csv {
        "csv"
    } else {
        "parquet"
    };
    query.push(("format".to_owned(), format.to_owned()));
    let url = session.url(&format!("/tables/{}/rows/", segment(&args.name)));
    let response = session
        .send_streaming(|http, auth| Ok(http.get(&url).header("Authorization", auth).query(&query)))
        .await?;
    let progress = bar(
        response.content_length(),
        &format!("exporting {}", args.name),
    );
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| unreachable(session.base(), &e))?;
        out.write_all(&chunk)
            .map_err(|e| CliError::usage(format!("{}: {e}", args.output.display())))?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(out.written())
}

/// A JSON export: the JSON pages one after the other (keyset cursors), written as one array.
async fn export_json(
    session: &mut Session,
    args: &ExportArgs,
    out: &mut Output,
) -> Result<u64, CliError> {
    let url = session.url(&format!("/tables/{}/rows/", segment(&args.name)));
    let progress = bar(None, &format!("exporting {}", args.name));
    let mut out = std::io::BufWriter::new(out);
    let fail = |e: std::io::Error| CliError::usage(format!("{}: {e}", args.output.display()));
    let mut left = args.limit;
    let mut cursor: Option<String> = None;
    let mut first = true;
    out.write_all(b"[").map_err(fail)?;
    loop {
        let page_size = left.map_or(JSON_EXPORT_PAGE, |l| l.min(JSON_EXPORT_PAGE));
        let mut query = rows_query(&args.filters, args.order.as_deref(), None, Some(page_size))?;
        if let Some(cursor) = &cursor {
            query.push(("cursor".to_owned(), cursor.clone()));
        }
        let text = session
            .text(|http, auth| Ok(http.get(&url).header("Authorization", auth).query(&query)))
            .await?;
        let page: Page = serde_json::from_str(&text).map_err(|e| invalid(&e))?;
        for row in &page.rows {
            let line = serde_json::to_string(row).map_err(|e| invalid(&e))?;
            if !first {
                out.write_all(b",\n").map_err(fail)?;
            }
            first = false;
            out.write_all(line.as_bytes()).map_err(fail)?;
        }
        progress.set_position(out.get_ref().written() + out.buffer().len() as u64);
        let got = u32::try_from(page.rows.len()).unwrap_or(u32::MAX);
        left = left.map(|l| l.saturating_sub(got));
        match page.next_cursor {
            Some(next) if left != Some(0) && got > 0 => cursor = Some(next),
            _ => break,
        }
    }
    out.write_all(b"]\n").map_err(fail)?;
    out.flush().map_err(fail)?;
    progress.finish_and_clear();
    Ok(out.get_ref().written())
}
