//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::access::{Caller, TagGuard};
use super::error::{ErrorCode, RegistryError, Result};
use super::{Registry, location};
use crate::oci::{Digest, Reference, manifest};

pub(super) async fn get(
    reg: &Registry,
    name: &str,
    reference: &Reference,
    head_only: bool,
) -> Result<Response> {
    let Some(m) = reg.meta.manifest(name, reference).await? else {
        return Err(unknown(reg, name, reference).await);
    };
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, &m.media_type)
        .header(header::CONTENT_LENGTH, m.payload.len())
        .header(header::ETAG, format!("\"{}\"", m.digest))
        .header("docker-content-digest", m.digest.to_string());
    let body = if head_only {
        Body::empty()
    } else {
        Body::from(m.payload)
    };
    builder.body(body).map_err(RegistryError::internal)
}

async fn unknown(reg: &Registry, name: &str, reference: &Reference) -> RegistryError {
    match reg.meta.repository_exists(name).await {
        Ok(false) => RegistryError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} is not known"),
        ),
        Ok(true) => RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!("manifest {reference} is not in repository {name}"),
        ),
        Err(e) => e.into(),
    }
}

/// Reads a manifest body, refusing it as soon as it passes the size limit.
async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Vec<u8>> {
    let too_large = || {
        RegistryError::new(
            ErrorCode::ManifestInvalid,
            format!(
                "manifest is larger than the {} byte limit",
                manifest::MAX_MANIFEST_BYTES
            ),
        )
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > manifest::MAX_MANIFEST_BYTES) {
        return Err(too_large());
    }
    let mut payload = Vec::with_capacity(declared.unwrap_or(4096));
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("the request body was cut short: {e}"),
            )
        })?;
        if payload.len() + frame.len() > manifest::MAX_MANIFEST_BYTES {
            return Err(too_large());
        }
        payload.extend_from_slice(&frame);
    }
    Ok(payload)
}

pub(super) async fn put(
    reg: &Registry,
    caller: &Caller,
    name: &str,
    reference: &Reference,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let payload = read_limited(headers, body).await?;
    let (digest, tag) = match reference {
        Reference::Digest(d) => {
            let actual = Digest::of(d.algorithm(), &payload);
            if &actual != d {
                return Err(RegistryError::new(
                    ErrorCode::DigestInvalid,
                    format!("manifest has digest {actual}, not {d}"),
                ));
            }
            (actual, None)
        }
        Reference::Tag(t) => (Digest::sha256_of(&payload), Some(t.as_str())),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let parsed = manifest::parse(content_type, &payload)?;
    let guard = TagGuard::new(reg, caller, name);
    reg.meta
        .put_manifest(name, &digest, &parsed, &payload, tag, &|t, op| {
            guard.check(t, op)
        })
        .await?;
    let mut builder = Response::builder()
        .status(StatusCode::CREATED)
        .header(
            header::LOCATION,
            location(name, format!("manifests/{digest}")),
        )
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-content-digest", digest.to_string());
    if let Some(subject) = &parsed.subject {
        builder = builder.header("oci-subject", subject.to_string());
    }
    builder.body(Body::empty()).map_err(RegistryError::internal)
}

/// Deletes by digest (the manifest and its tags) or by tag; protected and
/// immutable tag rules apply to every tag that would go.
pub(super) async fn delete(
    reg: &Registry,
    caller: &Caller,
    name: &str,
    reference: &Reference,
) -> Result<Response> {
    let guard = TagGuard::new(reg, caller, name);
    let check = |t: &str, op| guard.check(t, op);
    let deleted = match reference {
        Reference::Digest(d) => reg.meta.delete_manifest(name, d, &check).await?,
        Reference::Tag(t) => reg.meta.delete_tag(name, t, &check).await?,
    };
    if !deleted {
        return Err(unknown(reg, name, reference).await);
    }
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .map_err(RegistryError::internal)
}
