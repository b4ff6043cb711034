//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic, or
//! cross-repository mount), `PATCH`/`PUT`/`GET`/`DELETE` on
//! `/v2/<name>/blobs/uploads/<id>`.
//!
//! Request bodies are streamed: frames are gathered into chunks of
//! [`CHUNK`] bytes and handed, through bounded channels, to a hashing thread
//! and to the store's writer at once, so memory per upload stays a few chunks
//! whatever the blob's size, and hashing overlaps writing. A blob becomes
//! visible only after its digest is verified and the store has made it durable.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::access::Caller;
use super::error::{ErrorCode, RegistryError, Result};
use super::{Registry, location};
use crate::oci::{Algorithm, Digest, Hasher, validate_repository};
use crate::storage::{ByteStream, UploadId};

/// Bytes gathered from the request before they are handed on.
const CHUNK: usize = 1 << 20;
/// Chunks that may wait in each channel.
const QUEUE: usize = 4;

pub(super) async fn start(
    reg: &Registry,
    caller: &Caller,
    name: &str,
    query: &HashMap<String, String>,
    body: Body,
) -> Result<Response> {
    if let Some(mount) = query.get("mount") {
        let digest: Digest = mount.parse()?;
        let _visible = reg.lock_blob(&digest.to_string()).await;
        if let Some(from) = query
            .get("from")
            .filter(|f| validate_repository(f).is_ok() && caller.may_pull(f))
            && let Some(size) = reg.meta.blob_in_repository(from, &digest).await?
        {
            reg.meta.link_blob(name, &digest, size).await?;
            return Ok(blob_created(name, &digest));
        }
        // Not mountable from there: fall back to an ordinary upload session.
    } else if let Some(digest) = query.get("digest") {
        let digest: Digest = digest.parse()?;
        let id = UploadId::new();
        reg.blobs.create_upload(&id).await?;
        let outcome = async {
            let (size, hasher) =
                receive(reg, &id, body, Some(Hasher::new(digest.algorithm()))).await?;
            commit(reg, name, &id, &digest, size, hasher).await
        }
        .await;
        if outcome.is_err() {
            reg.blobs.abort_upload(&id).await?;
        }
        return outcome;
    }
    let id = UploadId::new();
    reg.blobs.create_upload(&id).await?;
    reg.meta.create_upload(name, &id.to_string()).await?;
    Ok(upload_accepted(name, &id, 0))
}

pub(super) async fn status(reg: &Registry, name: &str, id: &str) -> Result<Response> {
    let id = find_upload(reg, name, id).await?;
    let size = current_size(reg, &id).await?;
    let mut response = upload_accepted(name, &id, size);
    *response.status_mut() = StatusCode::NO_CONTENT;
    Ok(response)
}

pub(super) async fn patch(
    reg: &Registry,
    name: &str,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let id = find_upload(reg, name, id).await?;
    let state = reg.upload_state(&id.to_string());
    let mut state = state.lock().await;
    let size = current_size(reg, &id).await?;
    check_content_range(headers, name, &id, size)?;
    let hasher = resume_hasher(&mut state.hashed, size);
    let (size, hasher) = receive(reg, &id, body, hasher).await?;
    state.hashed = hasher.map(|h| (size, h));
    Ok(upload_accepted(name, &id, size))
}

pub(super) async fn finish(
    reg: &Registry,
    name: &str,
    id: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    let id = find_upload(reg, name, id).await?;
    let digest: Digest = query
        .get("digest")
        .ok_or_else(|| {
            RegistryError::new(
                ErrorCode::DigestInvalid,
                "the digest query parameter is required",
            )
        })?
        .parse()?;
    let key = id.to_string();
    let state = reg.upload_state(&key);
    let mut state = state.lock().await;
    let size = current_size(reg, &id).await?;
    check_content_range(headers, name, &id, size)?;
    let hasher = resume_hasher(&mut state.hashed, size);
    let (size, hasher) = receive(reg, &id, body, hasher).await?;
    let outcome = commit(reg, name, &id, &digest, size, hasher).await;
    if matches!(&outcome, Err(e) if e.code == ErrorCode::DigestInvalid) {
        // Nothing of a bad upload stays behind.
        reg.blobs.abort_upload(&id).await?;
    }
    if outcome.is_ok() || matches!(&outcome, Err(e) if e.code == ErrorCode::DigestInvalid) {
        reg.meta.delete_upload(&key).await?;
        drop(state);
        reg.forget_upload(&key);
    }
    outcome
}

pub(super) async fn cancel(reg: &Registry, name: &str, id: &str) -> Result<Response> {
    let id = find_upload(reg, name, id).await?;
    let key = id.to_string();
    reg.blobs.abort_upload(&id).await?;
    reg.meta.delete_upload(&key).await?;
    reg.forget_upload(&key);
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .map_err(RegistryError::internal)
}

async fn find_upload(reg: &Registry, name: &str, id: &str) -> Result<UploadId> {
    let unknown = || {
        RegistryError::new(
            ErrorCode::BlobUploadUnknown,
            format!("upload {id} is not in progress in {name}"),
        )
    };
    let id = UploadId::parse(id).ok_or_else(unknown)?;
    if reg.meta.upload_in_repository(name, &id.to_string()).await? {
        Ok(id)
    } else {
        Err(unknown())
    }
}

async fn current_size(reg: &Registry, id: &UploadId) -> Result<u64> {
    reg.blobs.upload_size(id).await?.ok_or_else(|| {
        RegistryError::new(
            ErrorCode::BlobUploadUnknown,
            format!("upload {id} has no data in storage"),
        )
    })
}

/// The kept hasher if it covers exactly the `size` bytes uploaded so far.
fn resume_hasher(kept: &mut Option<(u64, Hasher)>, size: u64) -> Option<Hasher> {
    match kept.take() {
        Some((hashed, h)) if hashed == size => Some(h),
        _ if size == 0 => Some(Hasher::new(Algorithm::Sha256)),
        _ => None,
    }
}

/// Refuses a chunk that does not start where the upload ends (416).
fn check_content_range(headers: &HeaderMap, name: &str, id: &UploadId, size: u64) -> Result<()> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let spec = text
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    let spec = spec.split('/').next().unwrap_or("");
    let parsed = spec
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)));
    match parsed {
        Some((start, end)) if start == size && end >= start => Ok(()),
        _ => Err(RegistryError::new(
            ErrorCode::BlobUploadInvalid,
            format!("Content-Range {text:?} does not continue the upload, which has {size} bytes"),
        )
        .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
        .with_header(
            header::LOCATION,
            location(name, format!("blobs/uploads/{id}")),
        )
        .with_header(header::RANGE, range_value(size))),
    }
}

/// Streams `body` onto the end of upload `id`, hashing it with `hasher` if
/// given. Returns the upload's new size and the hasher, which is returned only
/// if it saw exactly the bytes that were stored.
async fn receive(
    reg: &Registry,
    id: &UploadId,
    body: Body,
    hasher: Option<Hasher>,
) -> Result<(u64, Option<Hasher>)> {
    let (store_tx, store_rx) = mpsc::channel::<Bytes>(QUEUE);
    let writer = {
        let store = reg.blobs.clone();
        let id = id.clone();
        tokio::spawn(async move { store.append_upload(&id, store_rx).await })
    };
    let (hash_tx, hashing) = match hasher {
        Some(h) => {
            let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
            (Some(tx), Some(spawn_hasher(h, rx)))
        }
        None => (None, None),
    };
    let mut frames = body.into_data_stream();
    let mut pending = BytesMut::new();
    let mut body_error = None;
    let mut hashed_all = true;
    loop {
        let next = frames.next().await;
        let flush = match &next {
            Some(Ok(data)) => {
                pending.extend_from_slice(data);
                pending.len() >= CHUNK
            }
            Some(Err(_)) | None => !pending.is_empty(),
        };
        if flush {
            let chunk = pending.split().freeze();
            if let Some(tx) = &hash_tx {
                hashed_all &= tx.send(chunk.clone()).await.is_ok();
            }
            if store_tx.send(chunk).await.is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        match next {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                body_error = Some(e);
                break;
            }
            None => break,
        }
    }
    drop(store_tx);
    drop(hash_tx);
    let size = writer.await.map_err(RegistryError::internal)??;
    let hasher = match hashing {
        Some(task) => Some(task.await.map_err(RegistryError::internal)?),
        None => None,
    };
    if let Some(e) = body_error {
        return Err(RegistryError::new(
            ErrorCode::BlobUploadInvalid,
            format!("the request body was cut short: {e}"),
        ));
    }
    Ok((size, hasher.filter(|_| hashed_all)))
}

fn spawn_hasher(
    mut hasher: Hasher,
    mut rx: mpsc::Receiver<Bytes>,
) -> tokio::task::JoinHandle<Hasher> {
    tokio::task::spawn_blocking(move || {
        while let Some(chunk) = rx.blocking_recv() {
            hasher.update(&chunk);
        }
        hasher
    })
}

async fn hash_stream(mut stream: ByteStream, algorithm: Algorithm) -> Result<Digest> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let task = spawn_hasher(Hasher::new(algorithm), rx);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(RegistryError::internal)?;
        if tx.send(chunk).await.is_err() {
            break;
        }
    }
    drop(tx);
    Ok(task.await.map_err(RegistryError::internal)?.finish())
}

/// Verifies the upload against `digest`, makes it a durable blob and links it
/// into the repository.
async fn commit(
    reg: &Registry,
    name: &str,
    id: &UploadId,
    digest: &Digest,
    size: u64,
    hasher: Option<Hasher>,
) -> Result<Response> {
    let actual = match hasher {
        Some(h) if h.algorithm() == digest.algorithm() => h.finish(),
        _ => hash_stream(reg.blobs.read_upload(id).await?, digest.algorithm()).await?,
    };
    if &actual != digest {
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!("uploaded content has digest {actual}, not {digest}"),
        ));
    }
    let _visible = reg.lock_blob(&digest.to_string()).await;
    reg.blobs.commit_upload(id, digest).await?;
    reg.meta.link_blob(name, digest, size).await?;
    Ok(blob_created(name, digest))
}

fn range_value(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn upload_accepted(name: &str, id: &UploadId, size: u64) -> Response {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header(
            header::LOCATION,
            location(name, format!("blobs/uploads/{id}")),
        )
        .header(header::RANGE, range_value(size))
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-upload-uuid", id.to_string())
        .body(Body::empty())
        .unwrap_or_default()
}

fn blob_created(name: &str, digest: &Digest) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, location(name, format!("blobs/{digest}")))
        .header(header::CONTENT_LENGTH, 0)
        .header("docker-content-digest", digest.to_string())
        .body(Body::empty())
        .unwrap_or_default()
}
