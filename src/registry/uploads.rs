//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (session, monolithic, or
//! cross-repository mount), `PATCH`/`PUT`/`GET`/`DELETE` on
//! `/v2/<name>/blobs/uploads/<id>`.
//!
//! Request bodies are streamed: frames are gathered into chunks of
//! [`CHUNK`] bytes and handed, through bounded channels, to a hashing task
//! and to the store's writer at once, so memory per upload stays a few chunks
//! whatever the blob's size, and hashing overlaps writing. Nothing waits for
//! the client on a thread: a slow body costs a task, and a body idle for
//! `server.bodyIdleTimeout` is cut. Limits: each transfer holds one of
//! `server.maxConcurrentTransfers` permits (429 beyond); an upload may not
//! pass `storage.maxBlobSize` (413, checked from Content-Length and while
//! streaming; the upload is discarded) nor take the disk below
//! `storage.minFreeBytes` (507, checked at the start and every few MiB). A
//! blob becomes visible only after its digest is verified and the store has
//! made it durable.
//!
//! A request carrying a whole blob the store already holds (`POST ?digest=`,
//! or a closing `PUT ?digest=` on an empty session) is only hashed: the
//! bytes are checked against the digest and not written or fsynced again,
//! and the held blob is linked (CI pushes the same base layers to new
//! repositories all day). Bodies sent with `PATCH` are stored as before:
//! their digest is not known until the closing `PUT`.
//!
//! Replicas: a session's row is in the database and its file in the shared
//! store, so any replica takes any request of it. One request at a time
//! appends to or completes a session, whichever replica it reaches (the
//! session's lease, `metadata::Lease`); the running hash state is
//! kept by the replica that computed it, and a replica without the state
//! for the current size re-reads the upload once at completion.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use std::sync::Arc;

use bytes::Bytes;
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
    headers: &HeaderMap,
    body: Body,
) -> Result<Response> {
    if let Some(mount) = query.get("mount") {
        let digest: Digest = mount.parse()?;
        let _visible = reg.lock_blob(&digest.to_string()).await?;
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
        let _transfer = reg.transfer_permit()?;
        check_declared_size(reg, body_length(headers), 0)?;
        let id = UploadId::new();
        let pin = pin_if_held(reg, &digest).await?;
        let sink = if pin.is_some() {
            Sink::HashOnly
        } else {
            check_free_space(reg).await?;
            reg.blobs.create_upload(&id).await?;
            Sink::Store
        };
        let outcome = async {
            let hasher = Some(Hasher::new(digest.algorithm()));
            let (got, cut) = receive(reg, &id, body, 0, hasher, sink).await?;
            if let Some(cut) = cut {
                return Err(cut.into_error());
            }
            commit(reg, name, &id, &digest, got, sink).await
        }
        .await;
        drop(pin);
        if outcome.is_err() {
            reg.blobs.abort_upload(&id).await?;
        }
        return outcome;
    }
    check_free_space(reg).await?;
    let id = UploadId::new();
    // The session's row first, then its file: a failure leaves neither (a
    // crash in between leaves a row without a file, which expires).
    reg.meta.create_upload(name, &id.to_string()).await?;
    if let Err(e) = reg.blobs.create_upload(&id).await {
        reg.meta.delete_upload(&id.to_string()).await?;
        return Err(e.into());
    }
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
    let _transfer = reg.transfer_permit()?;
    let state = reg.upload_state(&id.to_string());
    let mut state = state.lock().await;
    let session = reg.meta.lease_upload(&id.to_string()).await?;
    let mut refused = false;
    let outcome = async {
        let size = current_size(reg, &id).await?;
        check_content_range(headers, name, &id, size)?;
        if let Err(e) = check_declared_size(reg, body_length(headers), size) {
            refused = true;
            return Err(e);
        }
        let hasher = resume_hasher(&mut state.hashed, size);
        let (got, cut) = receive(reg, &id, body, size, hasher, Sink::Store).await?;
        state.hashed = got.hasher.map(|h| (got.size, h));
        match cut {
            None => Ok(upload_accepted(name, &id, got.size)),
            Some(Cut::Body(e)) => Err(e),
            Some(Cut::Refused(e)) => {
                refused = true;
                Err(e)
            }
        }
    }
    .await;
    if refused {
        // Nothing of a refused upload stays behind.
        drop(state);
        discard(reg, &id).await?;
        session.ended();
    } else {
        session.release().await;
    }
    outcome
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
    let _transfer = reg.transfer_permit()?;
    let state = reg.upload_state(&key);
    let mut state = state.lock().await;
    let session = reg.meta.lease_upload(&key).await?;
    // Whether the session is over: completed, or to be discarded.
    let mut over = false;
    let outcome = async {
        let size = current_size(reg, &id).await?;
        check_content_range(headers, name, &id, size)?;
        if let Err(e) = check_declared_size(reg, body_length(headers), size) {
            over = true;
            return Err(e);
        }
        // A whole blob in this request (nothing stored before) that the
        // store already holds is only hashed (with the digest's algorithm:
        // there is no stored upload to hash again), not written again.
        let pin = if size == 0 {
            pin_if_held(reg, &digest).await?
        } else {
            None
        };
        let (sink, hasher) = if pin.is_some() {
            (Sink::HashOnly, Some(Hasher::new(digest.algorithm())))
        } else {
            (Sink::Store, resume_hasher(&mut state.hashed, size))
        };
        let (got, cut) = receive(reg, &id, body, size, hasher, sink).await?;
        match cut {
            None => {
                let committed = commit(reg, name, &id, &digest, got, sink).await;
                // Nothing of a bad upload stays behind.
                over = committed.is_ok()
                    || committed
                        .as_ref()
                        .is_err_and(|e| e.code == ErrorCode::DigestInvalid);
                committed
            }
            Some(Cut::Body(e)) => {
                if sink == Sink::Store {
                    state.hashed = got.hasher.map(|h| (got.size, h));
                }
                Err(e)
            }
            Some(Cut::Refused(e)) => {
                over = true;
                Err(e)
            }
        }
    }
    .await;
    if over {
        drop(state);
        if outcome.is_ok() {
            reg.meta.delete_upload(&key).await?;
            reg.forget_upload(&key);
        } else {
            discard(reg, &id).await?;
        }
        session.ended();
    } else {
        session.release().await;
    }
    outcome
}

pub(super) async fn cancel(reg: &Registry, name: &str, id: &str) -> Result<Response> {
    let id = find_upload(reg, name, id).await?;
    let session = reg.meta.lease_upload(&id.to_string()).await?;
    discard(reg, &id).await?;
    session.ended();
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .map_err(RegistryError::internal)
}

/// Removes an upload session: its file, its row and its hash state.
async fn discard(reg: &Registry, id: &UploadId) -> Result<()> {
    let key = id.to_string();
    reg.blobs.abort_upload(id).await?;
    reg.meta.delete_upload(&key).await?;
    reg.forget_upload(&key);
    Ok(())
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

/// Reads a chunk's `Content-Range: [bytes[ =]]<first>-<last>[/<total>]`
/// (clients send it with and without the unit) as (first, last).
pub(crate) fn parse_content_range(text: &str) -> Option<(u64, u64)> {
    let spec = text
        .trim()
        .trim_start_matches("bytes")
        .trim_start_matches([' ', '=']);
    let spec = spec.split('/').next().unwrap_or("");
    spec.split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
}

/// Refuses a chunk that does not start where the upload ends (416).
fn check_content_range(headers: &HeaderMap, name: &str, id: &UploadId, size: u64) -> Result<()> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    match parse_content_range(text) {
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

/// What [`receive`] stored.
struct Received {
    /// The upload's size now.
    size: u64,
    /// The hasher, if it saw exactly the `size` bytes stored.
    hasher: Option<Hasher>,
}

/// How long a pin holds a blob for an upload verifying against it, at most
/// (a pin is dropped when its request ends; this bounds one whose replica
/// died). An upload still hashing after it may find the blob collected
/// (503, push again).
const PIN_FOR: std::time::Duration = std::time::Duration::from_secs(3600);

/// A blob pinned against garbage collection while a body is verified
/// against it; unpinned (in the background) when dropped.
struct Pin {
    meta: crate::metadata::Metadata,
    id: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let (meta, id) = (self.meta.clone(), std::mem::take(&mut self.id));
        tokio::spawn(async move {
            if let Err(e) = meta.gc_unpin_blob(&id).await {
                tracing::warn!("unpinning a blob after an upload: {e} (the pin expires by itself)");
            }
        });
    }
}

/// Whether the store holds blob `digest`: then it is pinned (garbage
/// collection passes it over) for an upload that only hashes its body.
/// Checked again under the blob's lock, so a sweep is not midway through
/// collecting it (a blob not held costs no lock).
async fn pin_if_held(reg: &Registry, digest: &Digest) -> Result<Option<Pin>> {
    if reg.blobs.stat(digest).await?.is_none() {
        return Ok(None);
    }
    let _locked = reg.lock_blob(&digest.to_string()).await?;
    if reg.blobs.stat(digest).await?.is_none() {
        return Ok(None);
    }
    let id = UploadId::new().to_string();
    let until = crate::metadata::now_ms() + PIN_FOR.as_millis() as i64;
    reg.meta
        .gc_pin_blob(&id, &digest.to_string(), until)
        .await?;
    Ok(Some(Pin {
        meta: reg.meta.clone(),
        id,
    }))
}

/// Where [`receive`] puts the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sink {
    /// Appended to the upload in the store.
    Store,
    /// Hashed only: the store already holds the blob the client names, so
    /// the body is verified against it and not written (or fsynced) again.
    /// The upload's stored size does not change.
    HashOnly,
}

/// Why [`receive`] stopped before the body's end.
enum Cut {
    /// The body failed or went idle: what arrived is kept, and the upload
    /// can go on from its new size.
    Body(RegistryError),
    /// A limit refused it (size, free space): the upload cannot go on.
    Refused(RegistryError),
}

impl Cut {
    fn into_error(self) -> RegistryError {
        match self {
            Cut::Body(e) | Cut::Refused(e) => e,
        }
    }
}

/// The body's declared length, if any.
fn body_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether an upload of `stored` bytes may take `more`: the size limit
/// (`storage.maxBlobSize`) as a pure decision.
fn within_size_limit(stored: u64, more: u64, max: u64) -> bool {
    stored.checked_add(more).is_some_and(|total| total <= max)
}

fn too_large(max: u64) -> RegistryError {
    RegistryError::new(
        ErrorCode::SizeInvalid,
        format!(
            "the blob is larger than this registry's maximum blob size of {max} bytes ({}); the upload is discarded",
            human_bytes(max)
        ),
    )
    .with_status(StatusCode::PAYLOAD_TOO_LARGE)
}

/// Refuses up front a body whose Content-Length would take the upload past
/// the size limit (413), before a byte of it is read.
fn check_declared_size(reg: &Registry, declared: Option<u64>, stored: u64) -> Result<()> {
    match declared {
        Some(len) if !within_size_limit(stored, len, reg.limits.max_blob_size) => {
            Err(too_large(reg.limits.max_blob_size))
        }
        _ => Ok(()),
    }
}

/// Whether `free` bytes leave the reserve intact; unknown free space (a
/// store that cannot tell) never refuses.
fn above_reserve(free: Option<u64>, reserve: u64) -> bool {
    reserve == 0 || free.is_none_or(|f| f >= reserve)
}

/// Refuses uploads (507) while the store's free space is below the reserve
/// (`storage.minFreeBytes`), before the disk is full.
async fn check_free_space(reg: &Registry) -> Result<()> {
    let reserve = reg.limits.min_free_bytes;
    if reserve == 0 {
        return Ok(());
    }
    let free = reg.blobs.available_space().await?;
    if above_reserve(free, reserve) {
        return Ok(());
    }
    Err(RegistryError::new(
        ErrorCode::BlobUploadInvalid,
        format!(
            "the registry's storage is below its free-space reserve ({} free, {} kept free): uploads are refused until space is freed",
            human_bytes(free.unwrap_or(0)),
            human_bytes(reserve)
        ),
    )
    .with_status(StatusCode::INSUFFICIENT_STORAGE))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Free space is checked again after every this many bytes received.
const SPACE_CHECK_EVERY: u64 = 8 << 20;

/// Streams `body` onto the end of upload `id`, which holds `stored` bytes,
/// hashing it with `hasher` if given. Stops early, keeping what was stored,
/// when the body fails or sends nothing for the body idle timeout, and when
/// the upload would pass the size limit or the disk its free-space reserve.
/// An `Err` is a failure of the store itself.
async fn receive(
    reg: &Registry,
    id: &UploadId,
    body: Body,
    stored: u64,
    hasher: Option<Hasher>,
    sink: Sink,
) -> Result<(Received, Option<Cut>)> {
    let (store_tx, writer) = match sink {
        Sink::Store => {
            let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
            let store = reg.blobs.clone();
            let id = id.clone();
            let writer = tokio::spawn(async move { store.append_upload(&id, rx).await });
            (Some(tx), Some(writer))
        }
        Sink::HashOnly => (None, None),
    };
    let (hash_tx, hashing) = match hasher {
        Some(h) => {
            let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
            (Some(tx), Some(spawn_hasher(h, rx)))
        }
        None => (None, None),
    };
    let idle = reg.limits.body_idle_timeout;
    let max = reg.limits.max_blob_size;
    let mut frames = body.into_data_stream();
    let mut pending = Gatherer::default();
    let mut cut = None;
    let mut hashed_all = true;
    let mut received = 0u64;
    let mut next_space_check = SPACE_CHECK_EVERY;
    'frames: loop {
        let next = match tokio::time::timeout(idle, frames.next()).await {
            Ok(next) => next,
            Err(_) => {
                cut = Some(Cut::Body(RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!(
                        "the request body sent nothing for {}; the upload keeps the {} bytes that arrived before and can be resumed",
                        humantime::format_duration(idle),
                        stored + received - pending.len() as u64
                    ),
                )));
                None
            }
        };
        let mut refused = None;
        if let Some(Ok(data)) = &next {
            received += data.len() as u64;
            if !within_size_limit(stored, received, max) {
                refused = Some(too_large(max));
            } else if received >= next_space_check {
                next_space_check = received + SPACE_CHECK_EVERY;
                if let Err(e) = check_free_space(reg).await {
                    refused = Some(e);
                }
            }
        }
        if let Some(e) = refused {
            cut = Some(Cut::Refused(e));
            break; // what is pending is not stored: the upload goes
        }
        let mut chunks = match &next {
            Some(Ok(data)) => pending.gather(data),
            Some(Err(_)) | None => Vec::new(),
        };
        if !matches!(next, Some(Ok(_))) {
            chunks.extend(pending.rest());
        }
        for chunk in chunks {
            if let Some(tx) = &hash_tx {
                hashed_all &= tx.send(chunk.clone()).await.is_ok();
            }
            if let Some(tx) = &store_tx
                && tx.send(chunk).await.is_err()
            {
                break 'frames; // the writer failed; its error is reported below
            }
        }
        match next {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                cut = Some(Cut::Body(RegistryError::new(
                    ErrorCode::BlobUploadInvalid,
                    format!("the request body was cut short: {e}"),
                )));
                break;
            }
            None => break,
        }
    }
    drop(store_tx);
    drop(hash_tx);
    let size = match writer {
        Some(writer) => writer.await.map_err(RegistryError::internal)??,
        // Everything that arrived was hashed (nothing is pending at the end).
        None if cut.is_none() => stored + received,
        None => stored,
    };
    let hasher = match hashing {
        Some(task) => task.await.map_err(RegistryError::internal)?,
        None => None,
    };
    let hasher = hasher.filter(|_| hashed_all);
    Ok((Received { size, hasher }, cut))
}

/// Chunk buffers an upload keeps for use again (what its channels can hold
/// at once, and a little more).
const POOL_KEEPS: usize = 2 * QUEUE + 2;

/// Gathers request frames into chunks of exactly [`CHUNK`] bytes, each in an
/// allocation of its own of that size (not one grown by doubling and shared
/// with the next), so what waits in the channels and the store's buffers is
/// the bytes themselves. A chunk's buffer comes back to the gatherer's pool
/// when the hasher and the writer have both dropped it, so an upload
/// allocates (and the kernel zeroes and maps) a handful of buffers, not one
/// per MiB.
#[derive(Default)]
struct Gatherer {
    pending: Vec<u8>,
    pool: ChunkPool,
}

#[derive(Clone, Default)]
struct ChunkPool(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

/// A chunk's buffer, returned to its pool when the last `Bytes` of it goes.
struct Pooled {
    buf: Vec<u8>,
    pool: ChunkPool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        if let Ok(mut kept) = self.pool.0.lock()
            && kept.len() < POOL_KEEPS
        {
            kept.push(buf);
        }
    }
}

impl Gatherer {
    /// Appends `data` and takes out every chunk it completes.
    fn gather(&mut self, mut data: &[u8]) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        while !data.is_empty() {
            if self.pending.capacity() == 0 {
                self.pending = self.fresh();
            }
            let take = (CHUNK - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() == CHUNK {
                chunks.push(self.freeze());
            }
        }
        chunks
    }

    /// What is pending, as a last (short) chunk.
    fn rest(&mut self) -> Option<Bytes> {
        (!self.pending.is_empty()).then(|| self.freeze())
    }

    fn len(&self) -> usize {
        self.pending.len()
    }

    fn fresh(&self) -> Vec<u8> {
        let kept = self.pool.0.lock().ok().and_then(|mut kept| kept.pop());
        kept.unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }

    fn freeze(&mut self) -> Bytes {
        Bytes::from_owner(Pooled {
            buf: std::mem::take(&mut self.pending),
            pool: self.pool.clone(),
        })
    }
}

/// Hashes the chunks received on `rx`. Waiting for a chunk is an await; each
/// chunk (at most [`CHUNK`] bytes) is hashed on the blocking pool, which
/// therefore never holds a thread for a slow peer. `None` if hashing failed.
fn spawn_hasher(
    hasher: Hasher,
    mut rx: mpsc::Receiver<Bytes>,
) -> tokio::task::JoinHandle<Option<Hasher>> {
    tokio::spawn(async move {
        let mut hasher = hasher;
        while let Some(chunk) = rx.recv().await {
            hasher = tokio::task::spawn_blocking(move || {
                hasher.update(&chunk);
                hasher
            })
            .await
            .ok()?;
        }
        Some(hasher)
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
    task.await
        .map_err(RegistryError::internal)?
        .map(Hasher::finish)
        .ok_or_else(|| RegistryError::internal("hashing the upload failed"))
}

/// Verifies the upload against `digest`, makes it a durable blob and links it
/// into the repository. With [`Sink::HashOnly`] the bytes were only hashed:
/// the blob the store holds is linked, and the session's (empty) upload
/// is discarded.
async fn commit(
    reg: &Registry,
    name: &str,
    id: &UploadId,
    digest: &Digest,
    got: Received,
    sink: Sink,
) -> Result<Response> {
    let actual = match (got.hasher, sink) {
        (Some(h), _) if h.algorithm() == digest.algorithm() => h.finish(),
        (_, Sink::Store) => {
            hash_stream(reg.blobs.read_upload(id).await?, digest.algorithm()).await?
        }
        (_, Sink::HashOnly) => return Err(RegistryError::internal("hashing the upload failed")),
    };
    if &actual != digest {
        return Err(RegistryError::new(
            ErrorCode::DigestInvalid,
            format!("uploaded content has digest {actual}, not {digest}"),
        ));
    }
    let _visible = reg.lock_blob(&digest.to_string()).await?;
    match sink {
        Sink::Store => reg.blobs.commit_upload(id, digest).await?,
        Sink::HashOnly => {
            // Under the blob's lock, and pinned since before the body came:
            // garbage collection has not taken it, but something else
            // (a person, a pin that expired) may have.
            if reg.blobs.stat(digest).await? != Some(got.size) {
                return Err(RegistryError::new(
                    ErrorCode::Unavailable,
                    format!(
                        "blob {digest} was removed while this upload was verified against it; push it again"
                    ),
                ));
            }
            reg.blobs.abort_upload(id).await?;
            reg.metrics.upload_deduplicated(got.size);
        }
    }
    reg.meta.link_blob(name, digest, got.size).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_gathered_into_whole_chunks() {
        // (frame sizes, chunks taken out after each frame, bytes left pending)
        let k = 1 << 10;
        let cases: [(&[usize], &[usize], usize); 5] = [
            (&[k], &[0], k),
            (&[CHUNK], &[1], 0),
            (&[CHUNK - 1, 2], &[0, 1], 1),
            (&[400 * k, 400 * k, 400 * k], &[0, 0, 1], 1200 * k - CHUNK),
            (&[3 * CHUNK + 5], &[3], 5),
        ];
        for (frames, taken, left) in cases {
            let mut pending = Gatherer::default();
            let mut all = Vec::new();
            let mut sent = 0u8;
            for (&frame, &want) in frames.iter().zip(taken) {
                let data: Vec<u8> = (0..frame).map(|i| sent.wrapping_add(i as u8)).collect();
                sent = sent.wrapping_add(frame as u8);
                all.extend_from_slice(&data);
                let chunks = pending.gather(&data);
                assert_eq!(chunks.len(), want, "{frames:?}");
                for chunk in chunks {
                    assert_eq!(chunk.len(), CHUNK, "{frames:?}");
                    assert_eq!(&chunk[..], &all[..CHUNK], "{frames:?}: bytes in order");
                    all.drain(..CHUNK);
                }
            }
            assert_eq!(pending.len(), left, "{frames:?}");
            assert_eq!(&pending.pending[..], &all[..], "{frames:?}");
            // The next chunk fills the same allocation instead of a larger one.
            assert!(pending.pending.capacity() <= CHUNK, "{frames:?}");
        }
    }

    #[test]
    fn chunk_buffers_are_used_again_once_dropped() {
        let mut g = Gatherer::default();
        let frame = vec![7u8; CHUNK];
        let first = g.gather(&frame).pop().unwrap();
        let held = g.gather(&frame).pop().unwrap();
        let at = first.as_ptr();
        assert_ne!(held.as_ptr(), at);
        // A clone (the hasher's) keeps the buffer out of the pool.
        let clone = first.clone();
        drop(first);
        let third = g.gather(&frame).pop().unwrap();
        assert_ne!(third.as_ptr(), at);
        drop(clone);
        let fourth = g.gather(&frame).pop().unwrap();
        assert_eq!(fourth.as_ptr(), at, "the buffer of the first chunk");
        assert!(fourth.iter().all(|&b| b == 7));
        // The last short chunk is pooled too.
        drop(fourth);
        let rest = {
            g.gather(&frame[..10]);
            g.rest().unwrap()
        };
        assert_eq!((rest.as_ptr(), rest.len()), (at, 10));
        assert!(g.rest().is_none());
    }

    #[test]
    fn size_limit() {
        let cases = [
            (0, 10, 10, true),
            (0, 11, 10, false),
            (5, 5, 10, true),
            (5, 6, 10, false),
            (u64::MAX, 1, u64::MAX, false),
        ];
        for (stored, more, max, want) in cases {
            assert_eq!(
                within_size_limit(stored, more, max),
                want,
                "{stored}+{more} vs {max}"
            );
        }
    }

    #[test]
    fn free_space_reserve() {
        let cases = [
            (Some(10), 0, true),
            (Some(0), 0, true),
            (Some(10), 10, true),
            (Some(9), 10, false),
            (None, 10, true),
        ];
        for (free, reserve, want) in cases {
            assert_eq!(above_reserve(free, reserve), want, "{free:?} vs {reserve}");
        }
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(100 << 30), "100.0 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
