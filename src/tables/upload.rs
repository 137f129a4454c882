//! Stage 1 of an upload: the request body to a temporary file (multipart) or to bytes (JSON
//! rows), within the size limits, before anything is parsed.

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{HttpRequest, web};
use futures_util::TryStreamExt;
use tokio::io::AsyncWriteExt;

use crate::error::ApiError;

/// A multipart form: the `file` part saved to a temporary file, the other parts as text.
pub(super) struct Form {
    file: Option<tempfile::TempPath>,
    /// The text parts by name.
    pub(super) fields: std::collections::HashMap<String, String>,
}

impl Form {
    /// The `file` part, or 400 naming the missing field.
    pub(super) fn take_file(&mut self) -> Result<tempfile::TempPath, ApiError> {
        self.file.take().ok_or_else(|| {
            ApiError::bad_request(
                "invalid_form",
                "the form field file (the Parquet file) is missing",
            )
        })
    }
}

/// Largest text field of a form.
const SMALL_FIELD_LIMIT: usize = 256 * 1024;

/// A text field, in memory, within [`SMALL_FIELD_LIMIT`].
async fn read_small_field(
    field: &mut actix_multipart::Field,
    name: &str,
) -> Result<String, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.try_next().await.map_err(multipart_error)? {
        if bytes.len() + chunk.len() > SMALL_FIELD_LIMIT {
            return Err(ApiError::PayloadTooLarge {
                detail: format!("the form field {name} exceeds {SMALL_FIELD_LIMIT} bytes"),
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::bad_request(
            "invalid_form",
            format!("the form field {name} is not UTF-8"),
        )
    })
}

fn multipart_error(e: actix_multipart::MultipartError) -> ApiError {
    ApiError::bad_request("invalid_form", format!("malformed multipart body: {e}"))
}

/// Streams a multipart body: `file` to a temporary file (bounded by `limit`), the text fields
/// named in `fields` into memory; any other part is refused.
pub(super) async fn read_form(
    mut payload: Multipart,
    limit: u64,
    fields: &[&str],
) -> Result<Form, ApiError> {
    let mut form = Form {
        file: None,
        fields: std::collections::HashMap::new(),
    };
    while let Some(mut field) = payload.try_next().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            form.file = Some(save_file(&mut field, limit).await?);
        } else if fields.contains(&name.as_str()) {
            let text = read_small_field(&mut field, &name).await?;
            form.fields.insert(name, text);
        } else {
            return Err(ApiError::bad_request(
                "invalid_form",
                format!(
                    "unknown form field {name:?}; expected file and {}",
                    fields.join(", ")
                ),
            ));
        }
    }
    Ok(form)
}

/// Streams a file field to a temporary file, refusing it past `limit` bytes.
async fn save_file(
    field: &mut actix_multipart::Field,
    limit: u64,
) -> Result<tempfile::TempPath, ApiError> {
    let temp = tempfile::NamedTempFile::new()
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("creating a temporary file: {e}")))?;
    let (std_file, path) = temp.into_parts();
    let mut file = tokio::fs::File::from_std(std_file);
    let mut written: u64 = 0;
    while let Some(chunk) = field.try_next().await.map_err(multipart_error)? {
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::PayloadTooLarge {
                detail: format!("the upload exceeds the limit of {limit} bytes"),
            });
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("writing the upload: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("writing the upload: {e}")))?;
    Ok(path)
}

/// Runs `work` on the blocking pool, in the request's span so its logs stay with the upload.
pub(super) async fn on_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(work))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("a blocking task failed: {e}")))
}

/// 415 unless the request is `multipart/form-data`.
pub(super) fn require_multipart(req: &HttpRequest) -> Result<(), ApiError> {
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if is_multipart {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType {
            detail: "expected Content-Type: multipart/form-data with the fields file, table_name and columns".to_owned(),
        })
    }
}

/// The whole body in memory (JSON rows), refused past `limit` bytes.
pub(super) async fn read_body(
    mut payload: web::Payload,
    limit: usize,
) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload
        .try_next()
        .await
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge {
                detail: format!(
                    "the body exceeds the limit of {limit} bytes; send large loads as Parquet"
                ),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
