//! Stage 4 of an upload: converted record batches encoded into PostgreSQL's binary COPY format
//! (pgpq, on a blocking thread, memory bounded by one batch) and pumped into
//! `COPY ... FROM STDIN` as the tenant, in segments between which the storage quota is measured.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema};
use bytes::{Bytes, BytesMut};
use pgpq::ArrowToPostgresBinaryEncoder;
use pgpq::encoders::{EncoderBuilder, StringEncoderBuilder};
use pgpq::pg_schema::PostgresType;
use tokio::sync::mpsc;

use super::plan::{IngestError, Plan, RangeTracker};
use super::store;
use super::types::{PgType, value_type};
use crate::db::ident::Ident;
use crate::db::quota;
use crate::db::tenant;
use crate::error::ApiError;

/// Encodes converted batches (columns in the plan's order, see
/// [`convert::converted`](super::convert::converted)) into binary COPY chunks sent to `sink`:
/// header, one chunk per batch, trailer. Stops at the first error, which it returns. `tracker`
/// sees every batch before it is sent.
pub fn encode_batches(
    batches: impl Iterator<Item = Result<RecordBatch, IngestError>>,
    plan: &Plan,
    sink: &mpsc::Sender<Result<Bytes, IngestError>>,
    tracker: &RangeTracker,
) -> Result<(), IngestError> {
    let mut encoder: Option<ArrowToPostgresBinaryEncoder> = None;
    for converted in batches {
        let converted = converted?;
        tracker.observe(&converted);
        let mut buf = BytesMut::new();
        let encoder = match &mut encoder {
            Some(encoder) => encoder,
            None => {
                let mut fresh = new_encoder(&converted.schema(), plan)?;
                fresh
                    .write_header(&mut buf)
                    .map_err(|e| IngestError::UnsupportedType(format!("{e:?}")))?;
                encoder.insert(fresh)
            }
        };
        encoder
            .write_batch(&converted, &mut buf)
            .map_err(|e| IngestError::UnsupportedType(format!("encoding failed: {e:?}")))?;
        if sink.blocking_send(Ok(buf.freeze())).is_err() {
            return Ok(()); // the receiver gave up; it reports its own error
        }
    }
    let mut buf = BytesMut::new();
    let mut encoder = match encoder {
        Some(encoder) => encoder,
        None => {
            // No rows at all: a header for the right columns, then the trailer.
            let schema = Schema::new(
                plan.columns
                    .iter()
                    .map(|c| Field::new(&c.name, c.pg.arrow_target(value_type(&c.source)), true))
                    .collect::<Vec<_>>(),
            );
            let mut fresh = new_encoder(&schema, plan)?;
            fresh
                .write_header(&mut buf)
                .map_err(|e| IngestError::UnsupportedType(format!("{e:?}")))?;
            fresh
        }
    };
    encoder
        .write_footer(&mut buf)
        .map_err(|e| IngestError::UnsupportedType(format!("{e:?}")))?;
    let _ = sink.blocking_send(Ok(buf.freeze()));
    Ok(())
}

/// The encoder for `schema`'s columns; `jsonb` columns are sent as JSON text, which pgpq
/// would otherwise encode as `text`.
fn new_encoder(schema: &Schema, plan: &Plan) -> Result<ArrowToPostgresBinaryEncoder, IngestError> {
    let unsupported = |e: pgpq::error::ErrorKind| IngestError::UnsupportedType(format!("{e:?}"));
    let mut encoders: HashMap<String, EncoderBuilder> = pgpq::build_encoders(schema.fields())
        .map_err(unsupported)?
        .into_iter()
        .collect();
    for (field, column) in schema.fields().iter().zip(&plan.columns) {
        if column.pg == PgType::Jsonb {
            let builder = StringEncoderBuilder::new_with_output(field.clone(), PostgresType::Jsonb)
                .map_err(unsupported)?;
            encoders.insert(field.name().clone(), EncoderBuilder::String(builder));
        }
    }
    ArrowToPostgresBinaryEncoder::try_new_with_encoders(schema, &encoders).map_err(unsupported)
}

/// Binary COPY's fixed header (signature, no flags, no extension) and trailer, as pgpq writes
/// them: a long stream is cut into several COPY statements at batch boundaries, each framed so.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

const COPY_TRAILER: &[u8] = b"\xff\xff";

/// COPY data between two storage measurements: an eighth of the quota, within 1 to 64 MiB, so
/// a file that inflates far beyond its size is stopped soon after it crosses the quota.
fn measure_every(storage_quota: u64) -> usize {
    usize::try_from((storage_quota / 8).clamp(1 << 20, 64 << 20)).unwrap_or(64 << 20)
}

/// Runs `COPY schema.name (the plan's columns) FROM STDIN (FORMAT binary)` as the tenant, fed
/// by `produce`, which runs on a blocking thread (in this span) and sends binary COPY chunks, or
/// the error that stopped it, through a bounded channel. The tenant's storage is measured every
/// [`measure_every`] bytes and at the end; above `storage_quota` the copy stops with 409
/// `storage_quota_exceeded` (the caller's transaction then rolls everything back). Returns the
/// rows written.
#[tracing::instrument(
    name = "ingest",
    skip_all,
    fields(table = %name.as_str(), columns = plan.columns.len())
)]
pub(super) async fn copy_into(
    conn: &mut tenant::TenantTx,
    schema: &Ident,
    name: &Ident,
    plan: Plan,
    storage_quota: u64,
    produce: impl FnOnce(Plan, mpsc::Sender<Result<Bytes, IngestError>>) + Send + 'static,
) -> Result<u64, ApiError> {
    let statement = store::copy_statement(schema, name, &plan)?;
    let (sender, mut receiver) = mpsc::channel(4);
    // The producer logs in this span too, so one upload can be followed across threads.
    let span = tracing::Span::current();
    let producer = tokio::task::spawn_blocking(move || span.in_scope(|| produce(plan, sender)));
    let result = copy_segments(conn, schema, storage_quota, &statement, &mut receiver).await;
    drop(receiver);
    let _ = producer.await;
    let (rows, bytes) = result?;
    tracing::info!(rows, bytes, "copied the rows");
    #[expect(clippy::cast_precision_loss, reason = "metrics are approximate")]
    {
        metrics::histogram!("tdc_ingest_rows").record(rows as f64);
        metrics::histogram!("tdc_ingest_bytes").record(bytes as f64);
    }
    Ok(rows)
}

/// Pumps the chunks into one COPY statement after another, each framed by [`COPY_HEADER`] and
/// [`COPY_TRAILER`], measuring the tenant's storage between them and at the end. Returns the
/// rows written and the COPY bytes sent.
async fn copy_segments(
    conn: &mut tenant::TenantTx,
    schema: &Ident,
    storage_quota: u64,
    statement: &str,
    receiver: &mut mpsc::Receiver<Result<Bytes, IngestError>>,
) -> Result<(u64, u64), ApiError> {
    let every = measure_every(storage_quota);
    let mut written = 0;
    let mut sent = 0u64;
    let mut since_measured = 0;
    let mut copy = conn.copy_in_raw(statement).await?;
    while let Some(chunk) = receiver.recv().await {
        let bytes = match chunk {
            Ok(bytes) => bytes,
            Err(e) => {
                let _ = copy.abort("upload refused").await;
                return Err(ApiError::from(e));
            }
        };
        if since_measured >= every {
            if let Err(e) = copy.send(COPY_TRAILER).await {
                let _ = copy.abort("upload refused").await;
                return Err(copy_error(e));
            }
            written += copy.finish().await.map_err(copy_error)?;
            since_measured = 0;
            let used = conn.storage_bytes(schema).await?;
            quota::check_storage(used, storage_quota)?;
            copy = conn.copy_in_raw(statement).await?;
            if let Err(e) = copy.send(COPY_HEADER).await {
                let _ = copy.abort("upload refused").await;
                return Err(copy_error(e));
            }
        }
        since_measured += bytes.len();
        sent += bytes.len() as u64;
        if let Err(e) = copy.send(bytes).await {
            let _ = copy.abort("upload refused").await;
            return Err(copy_error(e));
        }
    }
    written += copy.finish().await.map_err(copy_error)?;
    let used = conn.storage_bytes(schema).await?;
    quota::check_storage(used, storage_quota)?;
    Ok((written, sent))
}

/// A COPY rejected by PostgreSQL is about the data: a value out of range for its type (400
/// `invalid_value`), a row without a value for a unique key's column (the same), or a row that
/// repeats a unique key (409 `duplicate_key`, naming the index and the value).
fn copy_error(e: sqlx::Error) -> ApiError {
    if let sqlx::Error::Database(db) = &e
        && matches!(db.code().as_deref(), Some("23505" | "23502"))
    {
        let detail = db
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .and_then(sqlx::postgres::PgDatabaseError::detail)
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        let detail = format!("PostgreSQL: {}{detail}; no row was written", db.message());
        return if db.code().as_deref() == Some("23505") {
            ApiError::Conflict {
                code: "duplicate_key",
                detail,
            }
        } else {
            ApiError::bad_request("invalid_value", detail)
        };
    }
    tenant::classify_error(e, "invalid_value").unwrap_or_else(ApiError::from)
}
