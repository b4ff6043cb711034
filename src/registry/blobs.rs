//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::Registry;
use super::error::{ErrorCode, RegistryError, Result};
use crate::oci::{Digest, Reference};

/// A byte range resolved against a blob's size: `start..end`, end exclusive.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RangeRequest {
    Whole,
    Part(u64, u64),
    Unsatisfiable,
}

/// Reads a single-range `Range: bytes=...` header (RFC 9110); anything this
/// does not understand is served whole, as the RFC allows.
pub(crate) fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Whole;
    };
    if spec.contains(',') {
        return RangeRequest::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(start), Ok(last)) if start <= last => (start, last.saturating_add(1).min(size)),
        // A backwards range can never be satisfied; say so rather than ignore it.
        (Ok(_), Ok(_)) => return RangeRequest::Unsatisfiable,
        (Ok(start), Err(_)) if b.is_empty() => (start, size),
        (Err(_), Ok(suffix)) if a.is_empty() && suffix > 0 => (size.saturating_sub(suffix), size),
        _ => return RangeRequest::Whole,
    };
    if range.0 >= size {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Part(range.0, range.1)
    }
}

pub(super) async fn get(
    reg: &Registry,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    head_only: bool,
) -> Result<Response> {
    let digest: Digest = digest.parse()?;
    let Some(size) = reg.meta.blob_in_repository(name, &digest).await? else {
        // Manifests are content too: serve one by digest from the blobs route.
        if let Some(m) = reg
            .meta
            .manifest(name, &Reference::Digest(digest.clone()))
            .await?
        {
            let builder = Response::builder()
                .header(header::CONTENT_TYPE, m.media_type)
                .header(header::CONTENT_LENGTH, m.payload.len())
                .header("docker-content-digest", digest.to_string());
            let body = if head_only {
                Body::empty()
            } else {
                Body::from(m.payload)
            };
            return builder.body(body).map_err(RegistryError::internal);
        }
        return Err(RegistryError::new(
            ErrorCode::BlobUnknown,
            format!("blob {digest} is not in repository {name}"),
        ));
    };
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let (status, start, end) = match range {
        RangeRequest::Whole => (StatusCode::OK, 0, size),
        RangeRequest::Part(s, e) => (StatusCode::PARTIAL_CONTENT, s, e),
        RangeRequest::Unsatisfiable => {
            return Err(RegistryError::new(
                ErrorCode::RangeInvalid,
                format!("range is outside the blob's {size} bytes"),
            )
            .with_header(header::CONTENT_RANGE, format!("bytes */{size}")));
        }
    };
    let mut builder = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, end - start)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, format!("\"{digest}\""))
        .header(header::CACHE_CONTROL, "max-age=31536000")
        .header("docker-content-digest", digest.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        builder = builder.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    // Object storage may hand out the bytes itself (storage.s3.redirect):
    // the whole blob only, a range is served here as asked.
    if !head_only
        && status == StatusCode::OK
        && let Some(url) = reg.blobs.redirect_url(&digest).await?
    {
        return Response::builder()
            .status(StatusCode::TEMPORARY_REDIRECT)
            .header(header::LOCATION, url)
            .header(header::CONTENT_LENGTH, 0)
            .header("docker-content-digest", digest.to_string())
            .body(Body::empty())
            .map_err(RegistryError::internal);
    }
    let body = if head_only || start == end {
        Body::empty()
    } else {
        // The transfer's permit goes with the body: released when the body is
        // done or dropped (the client went away or stopped reading).
        let permit = reg.transfer_permit()?;
        let stream = reg.blobs.get(&digest, start..end).await?;
        Body::from_stream(stream.map(move |chunk| {
            let _held = &permit;
            chunk
        }))
    };
    builder.body(body).map_err(RegistryError::internal)
}

pub(super) async fn delete(reg: &Registry, name: &str, digest: &str) -> Result<Response> {
    let digest: Digest = digest.parse()?;
    if !reg.meta.unlink_blob(name, &digest).await? {
        return Err(RegistryError::new(
            ErrorCode::BlobUnknown,
            format!("blob {digest} is not in repository {name}"),
        ));
    }
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .map_err(RegistryError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        let cases = [
            (None, Whole),
            (Some("bytes=0-9"), Part(0, 10)),
            (Some("bytes=10-"), Part(10, 100)),
            (Some("bytes=-10"), Part(90, 100)),
            (Some("bytes=90-200"), Part(90, 100)),
            (Some("bytes=100-"), Unsatisfiable),
            (Some("bytes=5-2"), Unsatisfiable),
            (Some("bytes=0-1,5-6"), Whole),
            (Some("items=0-1"), Whole),
        ];
        for (h, want) in cases {
            assert_eq!(parse_range(h, 100), want, "{h:?}");
        }
    }
}
