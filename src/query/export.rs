//! CSV and Parquet exports: the result is spooled to a size-limited temporary file as the
//! tenant, then streamed to the client by a task that gives up on a client that stops reading.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::HttpResponse;
use actix_web::http::header;
use bytes::Bytes;
use futures_util::StreamExt;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::limits::ReadLimits;
use super::params::Format;
use super::parquet_export::spool_parquet;
use super::spool::{Output, Spool, SpoolError, spool_error};
use super::statement::{Compared, OutputColumns, Relation, query_error};
use crate::db::tenant;
use crate::error::ApiError;

/// What an export reads and how it writes it.
pub(super) struct Export {
    pub(super) relation: Relation,
    pub(super) sql: QueryBuilder<Postgres>,
    pub(super) columns: OutputColumns,
    pub(super) compared: Compared,
    pub(super) format: Format,
}

/// Answers a CSV or Parquet export: the whole result is written to a temporary file first and
/// the transaction ends before the first byte goes out, so a client that reads slowly or not at
/// all holds a file and its tenant's read slot, never a pooled connection. Errors (a bad filter,
/// a timeout, an export beyond the spool limit) are therefore still problem JSON.
pub(super) async fn export(
    pool: &PgPool,
    limits: ReadLimits,
    export_of: Export,
    slot: OwnedSemaphorePermit,
) -> Result<HttpResponse, ApiError> {
    let Export {
        relation,
        sql,
        columns,
        compared,
        format,
    } = export_of;
    let spool = Spool::new(limits.spool_limit_bytes)?;
    let out = Output {
        columns: &columns,
        compared: &compared,
    };
    let result = match format {
        Format::Csv => spool_csv(pool, limits, &relation, sql, out, spool).await,
        _ => spool_parquet(pool, limits, &relation, sql, out, spool).await,
    };
    let file = result.map_err(|e| match e {
        SpoolError::TooLarge => ApiError::bad_request(
            "export_too_large",
            format!(
                "the export is larger than {} bytes (TDC_EXPORT_SPOOL_LIMIT_BYTES); narrow it with filters, select or limit",
                limits.spool_limit_bytes
            ),
        ),
        SpoolError::Api(e) => e,
    })?;
    let (content_type, extension) = match format {
        Format::Csv => ("text/csv; charset=utf-8", "csv"),
        _ => ("application/vnd.apache.parquet", "parquet"),
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!(
                "attachment; filename=\"{}.{extension}\"",
                relation.name.as_str()
            ),
        ))
        .streaming(send_file(file, slot, limits.write_stall)))
}

/// Streams a spooled export in chunks. A task reads the file ahead of the client; when the
/// client has taken nothing for `stall`, the task gives up, the file and the tenant's slot are
/// released, and the response ends with an error (the client sees a broken transfer, never a
/// short file that looks complete).
fn send_file(
    mut file: std::fs::File,
    slot: OwnedSemaphorePermit,
    stall: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, actix_web::Error>> {
    let (sender, receiver) = mpsc::channel::<Bytes>(1);
    let aborted = Arc::new(AtomicBool::new(false));
    let abort = Arc::clone(&aborted);
    tokio::spawn(async move {
        let _slot = slot;
        let mut at_start = true;
        loop {
            let read = tokio::task::spawn_blocking(move || {
                use std::io::{Read, Seek};
                if at_start {
                    file.seek(std::io::SeekFrom::Start(0))?;
                }
                let mut buf = vec![0u8; 256 * 1024];
                let n = file.read(&mut buf)?;
                buf.truncate(n);
                Ok::<_, std::io::Error>((buf, file))
            })
            .await;
            at_start = false;
            let chunk = match read {
                Ok(Ok((chunk, back))) => {
                    file = back;
                    chunk
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading a spooled export failed");
                    abort.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading a spooled export failed");
                    abort.store(true, Ordering::Relaxed);
                    return;
                }
            };
            if chunk.is_empty() {
                return;
            }
            match tokio::time::timeout(stall, sender.send(Bytes::from(chunk))).await {
                Ok(Ok(())) => {}
                // The client went away.
                Ok(Err(_)) => return,
                Err(_) => {
                    tracing::info!(
                        stall_secs = stall.as_secs(),
                        "an export client read nothing for too long; ending its export"
                    );
                    abort.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    });
    futures_util::stream::unfold(Some(receiver), move |receiver| {
        let aborted = Arc::clone(&aborted);
        async move {
            let mut receiver = receiver?;
            match receiver.recv().await {
                Some(bytes) => Some((Ok(bytes), Some(receiver))),
                None if aborted.load(Ordering::Relaxed) => Some((
                    Err(actix_web::error::ErrorInternalServerError(
                        "the export was ended",
                    )),
                    None,
                )),
                None => None,
            }
        }
    })
}

fn json_to_csv_field(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

async fn spool_csv(
    pool: &PgPool,
    limits: ReadLimits,
    relation: &Relation,
    mut sql: QueryBuilder<Postgres>,
    out: Output<'_>,
    spool: Spool,
) -> Result<std::fs::File, SpoolError> {
    let Output { columns, compared } = out;
    let full = Arc::clone(&spool.full);
    let mut writer = csv::Writer::from_writer(spool);
    writer
        .write_record(columns.iter().map(|(name, _)| name.as_str()))
        .map_err(|e| spool_error(&full, e))?;
    let mut tx = tenant::begin_as(pool, &relation.schema, limits.statement_timeout).await?;
    let mut rows = sql.build().fetch(&mut *tx);
    while let Some(row) = rows.next().await {
        let row = row.map_err(|e| query_error(e, compared))?;
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(row.try_get::<&str, _>(1)?).map_err(anyhow::Error::from)?;
        writer
            .write_record(columns.iter().map(|(name, _)| {
                json_to_csv_field(object.get(name).unwrap_or(&serde_json::Value::Null))
            }))
            .map_err(|e| spool_error(&full, e))?;
    }
    drop(rows);
    tx.commit().await?;
    let spool = writer
        .into_inner()
        .map_err(|e| spool_error(&full, anyhow::anyhow!("finishing the CSV: {e}")))?;
    Ok(spool.file)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use tokio::sync::Semaphore;

    use super::*;

    async fn drain(
        file: std::fs::File,
        stall: Duration,
    ) -> (Vec<Result<Bytes, actix_web::Error>>, Arc<Semaphore>) {
        let slots = Arc::new(Semaphore::new(1));
        let slot = Arc::clone(&slots).acquire_owned().await.expect("slot");
        let items = send_file(file, slot, stall).collect().await;
        (items, slots)
    }

    #[tokio::test]
    async fn a_whole_file_is_sent_in_order_and_ends_cleanly() {
        let mut file = tempfile::tempfile().expect("temp file");
        let content: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&content).expect("write");
        let (items, slots) = drain(file, Duration::from_secs(5)).await;
        let mut sent = Vec::new();
        for item in items {
            sent.extend_from_slice(&item.expect("no error"));
        }
        assert_eq!(
            sent, content,
            "read back from the start, whatever the file offset"
        );
        assert_eq!(slots.available_permits(), 1, "the slot is given back");
    }

    #[tokio::test]
    async fn a_file_that_fails_to_read_mid_way_ends_the_download_with_an_error() {
        // A directory opens as a file but every read fails (EISDIR): a spool read error.
        let unreadable = std::fs::File::open(std::env::temp_dir()).expect("open");
        let (items, slots) = drain(unreadable, Duration::from_secs(5)).await;
        assert!(
            items.last().is_some_and(Result::is_err),
            "the download ended like a complete one"
        );
        assert_eq!(slots.available_permits(), 1, "the slot is given back");
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_gets_an_error_and_frees_its_slot() {
        let mut file = tempfile::tempfile().expect("temp file");
        file.write_all(&vec![b'x'; 2 * 1024 * 1024]).expect("write");
        let slots = Arc::new(Semaphore::new(1));
        let slot = Arc::clone(&slots).acquire_owned().await.expect("slot");
        let mut stream = Box::pin(send_file(file, slot, Duration::from_millis(100)));
        let first = stream.next().await.expect("a first chunk");
        assert!(first.is_ok());
        // The client reads nothing for longer than the stall: the sender gives up.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(slots.available_permits(), 1, "the slot is given back");
        let rest: Vec<_> = stream.collect().await;
        assert!(
            rest.last().is_some_and(Result::is_err),
            "the download ended like a complete one"
        );
    }
}
