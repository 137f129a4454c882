//! Stage 4: record batches encoded into PostgreSQL's binary COPY format (pgpq, on a blocking
//! thread, memory bounded by one batch) and pumped into `COPY ... FROM STDIN` as the tenant, in
//! segments between which the storage quota is measured.

use std::collections::HashMap;
use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::{Field, Schema};
use bytes::{Bytes, BytesMut};
use pgpq::ArrowToPostgresBinaryEncoder;
use pgpq::encoders::{EncoderBuilder, StringEncoderBuilder};
use pgpq::pg_schema::PostgresType;
use tokio::sync::mpsc;

use super::convert::convert_batch;
use super::plan::{BATCH_ROWS, IngestError, Plan, guarded, open, value_type};
use super::store;
use super::types::PgType;
use crate::db::ident::Ident;
use crate::db::quota;
use crate::db::tenant;
use crate::error::ApiError;

/// Streams the file's rows as binary COPY data into `sink`: the header, one chunk per batch,
/// the trailer. Stops at the first error, which is also sent.
pub fn encode_file(path: PathBuf, plan: Plan, sink: mpsc::Sender<Result<Bytes, IngestError>>) {
    let result = guarded("decoding the data", || {
        let projection: Vec<usize> = plan.columns.iter().map(|c| c.file_index).collect();
        let builder = open(&path)?;
        let mask =
            parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), projection.clone());
        let reader = builder
            .with_batch_size(BATCH_ROWS)
            .with_projection(mask)
            .build()
            .map_err(|e| IngestError::InvalidParquet(e.to_string()))?;
        // The projection keeps file order; find each table column in the projected batch.
        let mut sorted = projection.clone();
        sorted.sort_unstable();
        let positions: Vec<usize> = projection
            .iter()
            .map(|i| sorted.binary_search(i).unwrap_or_default())
            .collect();
        let batches = reader.map(|b| b.map_err(|e| IngestError::InvalidParquet(e.to_string())));
        encode_batches(batches, &plan, &positions, &sink)
    });
    if let Err(e) = result {
        let _ = sink.blocking_send(Err(e));
    }
}

/// Converts and encodes batches (whose columns sit at `positions` for the plan's columns) into
/// binary COPY chunks sent to `sink`: header, one chunk per batch, trailer.
pub fn encode_batches(
    batches: impl Iterator<Item = Result<RecordBatch, IngestError>>,
    plan: &Plan,
    positions: &[usize],
    sink: &mpsc::Sender<Result<Bytes, IngestError>>,
) -> Result<(), IngestError> {
    let mut encoder: Option<ArrowToPostgresBinaryEncoder> = None;
    let mut row_offset = 0usize;
    for batch in batches {
        let batch = batch?;
        let converted = convert_batch(&batch, plan, positions, row_offset)?;
        row_offset += batch.num_rows();
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

pub(super) fn new_encoder(
    schema: &Schema,
    plan: &Plan,
) -> Result<ArrowToPostgresBinaryEncoder, IngestError> {
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

/// Streams the file through the binary COPY encoder into the table, within the tenant's
/// storage quota.
pub(super) async fn copy_file(
    conn: &mut tenant::TenantTx,
    schema: &Ident,
    name: &Ident,
    plan: Plan,
    path: PathBuf,
    storage_quota: u64,
) -> Result<u64, ApiError> {
    let statement = store::copy_statement(schema, name, &plan)?;
    copy_from(conn, schema, storage_quota, &statement, move |sender| {
        encode_file(path, plan, sender)
    })
    .await
}

/// Copies rows already decoded into batches (a JSON rows body) into the table.
pub(super) async fn copy_batches(
    conn: &mut tenant::TenantTx,
    schema: &Ident,
    name: &Ident,
    plan: Plan,
    batches: Vec<RecordBatch>,
    storage_quota: u64,
) -> Result<u64, ApiError> {
    let statement = store::copy_statement(schema, name, &plan)?;
    let positions: Vec<usize> = (0..plan.columns.len()).collect();
    copy_from(conn, schema, storage_quota, &statement, move |sender| {
        if let Err(e) = encode_batches(batches.into_iter().map(Ok), &plan, &positions, &sender) {
            let _ = sender.blocking_send(Err(e));
        }
    })
    .await
}

/// Binary COPY's fixed header (signature, no flags, no extension) and trailer, as pgpq writes
/// them: a long stream is cut into several COPY statements at batch boundaries, each framed so.
pub(super) const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

pub(super) const COPY_TRAILER: &[u8] = b"\xff\xff";

/// COPY data between two storage measurements: an eighth of the quota, within 1 to 64 MiB, so
/// a file that inflates far beyond its size is stopped soon after it crosses the quota.
pub(super) fn measure_every(storage_quota: u64) -> usize {
    usize::try_from((storage_quota / 8).clamp(1 << 20, 64 << 20)).unwrap_or(64 << 20)
}

/// Runs `COPY ... FROM STDIN` fed by `produce`, which runs on a blocking thread and sends binary
/// COPY chunks (or the error that stopped it) through a bounded channel. `conn` runs as the
/// tenant `schema`; the tenant's storage is measured every [`measure_every`] bytes and at the
/// end, and above `storage_quota` the copy stops with 409 `storage_quota_exceeded` (the caller's
/// transaction then rolls everything back).
pub(super) async fn copy_from(
    conn: &mut tenant::TenantTx,
    schema: &Ident,
    storage_quota: u64,
    statement: &str,
    produce: impl FnOnce(mpsc::Sender<Result<bytes::Bytes, IngestError>>) + Send + 'static,
) -> Result<u64, ApiError> {
    let (sender, mut receiver) = mpsc::channel(4);
    let producer = tokio::task::spawn_blocking(move || produce(sender));
    let result = copy_segments(conn, schema, storage_quota, statement, &mut receiver).await;
    drop(receiver);
    let _ = producer.await;
    result
}

pub(super) async fn copy_segments(
    conn: &mut tenant::TenantTx,
    schema: &Ident,
    storage_quota: u64,
    statement: &str,
    receiver: &mut mpsc::Receiver<Result<bytes::Bytes, IngestError>>,
) -> Result<u64, ApiError> {
    let every = measure_every(storage_quota);
    let mut written = 0;
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
        if let Err(e) = copy.send(bytes).await {
            let _ = copy.abort("upload refused").await;
            return Err(copy_error(e));
        }
    }
    written += copy.finish().await.map_err(copy_error)?;
    let used = conn.storage_bytes(schema).await?;
    quota::check_storage(used, storage_quota)?;
    Ok(written)
}

/// A COPY rejected by PostgreSQL is about the data (a value out of range for its type, say).
pub(super) fn copy_error(e: sqlx::Error) -> ApiError {
    tenant::classify_error(e, "invalid_value").unwrap_or_else(ApiError::from)
}
