//! S3-compatible object storage blob store (AWS S3, Ceph RGW, versitygw,
//! s3s-fs, ...), on the `object_store` crate.
//!
//! Layout in the bucket, under the optional key prefix (the only place it is
//! described):
//!
//! ```text
//! <prefix>blobs/<algorithm>/<first two hex chars>/<hex>  committed blobs, immutable
//! <prefix>uploads/<uuid>/started                        the upload exists (empty)
//! <prefix>uploads/<uuid>/<seq, 10 digits>               what one append received
//! <prefix>uploads/<uuid>/<name>.multipart               an S3 multipart upload in
//!                                                       progress: its id, a newline
//!                                                       and its key
//! ```
//!
//! Keys are built only from validated digests and UUIDs. An upload's state
//! lives in the bucket, not in a process: any replica can append to it, read
//! it back to re-hash it, or commit it (appends to one session are
//! serialized across replicas by the metadata layer's upload lease). Each
//! append streams into its own object as an S3 multipart upload of
//! [`part_size`] parts, so memory stays bounded whatever the blob's size and
//! however small the client's chunks; a client's PATCH below S3's 5 MiB part
//! minimum is simply a small segment. Before the first part is sent the
//! multipart id is written beside it, so an append cut short by a crash can
//! still be aborted when its upload expires (`abort_upload`): no multipart
//! upload outlives its session.
//!
//! Nothing appears under a blob's content address before the registry has
//! verified the digest: `commit_upload` copies a single segment to the
//! content key server-side (CopyObject), or streams several into it as one
//! multipart upload, which S3 makes visible only when completed. Either is
//! atomic: a crash leaves no blob or the whole blob. S3 acknowledges a write
//! once it is durable, so there is no fsync to do.

use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path;
use object_store::signer::Signer;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use tokio::sync::mpsc;

use super::{BlobStore, ByteStream, Result, StorageError, UploadId};
use crate::oci::Digest;

/// S3's smallest part (all but the last part of a multipart upload).
const MIN_PART: usize = 5 << 20;
/// Parts of one size before the part size doubles.
const PARTS_PER_SIZE: usize = 2_000;
/// Doublings at most: parts never grow past 80 MiB.
const MAX_DOUBLINGS: usize = 4;

/// The size of part `index` (from 0) of a multipart upload, the last one
/// excepted: 5 MiB, doubling every 2,000 parts up to 80 MiB. Objects up to
/// 9.8 GiB go in S3's smallest parts (memory: the parts held, see
/// [`PARTS_IN_FLIGHT`]), and the 10,000 parts S3 allows still reach 303 GiB.
pub fn part_size(index: usize) -> usize {
    MIN_PART << (index / PARTS_PER_SIZE).min(MAX_DOUBLINGS)
}

/// Parts sent at once by one append or commit while the next one fills:
/// what it holds in memory is this many parts plus the one being filled.
/// One keeps the client's stream and S3's requests overlapping; two made a
/// 512 MiB push to a local S3 server at most ~15% faster (noise of the same
/// order) for 5 MiB more memory per upload.
const PARTS_IN_FLIGHT: usize = 1;
/// The largest object S3's CopyObject copies (5 GiB).
const MAX_COPY: u64 = 5 << 30;
/// The marker that says an upload exists.
const STARTED: &str = "started";
/// The suffix of the key holding an append's multipart id.
const MULTIPART: &str = ".multipart";

/// Where and how to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// `http(s)://host:port`; `None` for AWS's own endpoint of `region`.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Key prefix for everything berth writes (empty, or ends with `/`).
    pub prefix: String,
    /// `http://host/bucket/key` rather than `http://bucket.host/key`.
    pub path_style: bool,
    /// PEM file of a CA to trust beside the system's (a private endpoint).
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept any certificate (tests only; logged loudly).
    pub insecure_skip_verify: bool,
    /// How long one request, retries included, may take before the store
    /// reports the bucket unavailable (503 to the client).
    pub request_timeout: Duration,
    /// Blob GETs are answered with a redirect to a presigned URL valid this
    /// long; `None`: berth streams the blob itself.
    pub redirect: Option<Duration>,
}

pub struct S3Store {
    /// For requests that move little (request timeout applies).
    s3: Arc<AmazonS3>,
    /// For requests that move whole blobs (no overall time limit).
    bulk: Arc<AmazonS3>,
    /// How long a GET body may send nothing before it is cut.
    stall: Duration,
    prefix: String,
    description: String,
    redirect: Option<Duration>,
}

/// An upload's objects, from one listing.
#[derive(Default)]
struct UploadObjects {
    started: bool,
    /// (sequence number, key, size), in order.
    segments: Vec<(u64, Path, u64)>,
    /// Keys of multipart-id markers.
    markers: Vec<Path>,
    /// Every key under the upload's prefix.
    all: Vec<Path>,
}

impl UploadObjects {
    fn size(&self) -> u64 {
        self.segments.iter().map(|s| s.2).sum()
    }

    /// The sequence number after every segment and marker.
    fn next_seq(&self) -> u64 {
        let from_segments = self.segments.iter().map(|s| s.0);
        let from_markers = self
            .markers
            .iter()
            .filter_map(|m| m.filename()?.strip_suffix(MULTIPART)?.parse::<u64>().ok());
        from_segments.chain(from_markers).max().map_or(0, |m| m + 1)
    }
}

/// Chunks gathered into parts of exactly [`part_size`] bytes without
/// copying them: a part is the chunks themselves (a chunk that straddles two
/// parts is split, sharing its memory), sent as one multi-buffer payload.
#[derive(Default)]
struct PartBuffer {
    filling: Vec<Bytes>,
    filled: usize,
    /// Parts made so far: the index of the one filling.
    made: usize,
    full: std::collections::VecDeque<(PutPayload, usize)>,
}

impl PartBuffer {
    fn push(&mut self, mut chunk: Bytes) {
        while !chunk.is_empty() {
            let size = part_size(self.made);
            let take = (size - self.filled).min(chunk.len());
            self.filling.push(chunk.split_to(take));
            self.filled += take;
            if self.filled == size {
                self.finish_part();
            }
        }
    }

    /// Makes what is gathered a part (the last one may be short).
    fn finish_part(&mut self) {
        if self.filled > 0 {
            let part = std::mem::take(&mut self.filling).into_iter().collect();
            self.full.push_back((part, self.filled));
            self.filled = 0;
            self.made += 1;
        }
    }
}

/// How an upload's segments become the blob's object.
#[derive(Debug, PartialEq, Eq)]
enum CommitPlan {
    /// Nothing was uploaded: an empty object.
    Empty,
    /// One segment S3 copies server-side (CopyObject takes up to 5 GiB).
    Copy,
    /// The segments streamed through berth into one multipart upload.
    Stream,
}

/// The plan for an upload whose segments have these sizes, in order.
fn commit_plan(sizes: &[u64]) -> CommitPlan {
    match sizes {
        [] => CommitPlan::Empty,
        [size] if *size <= MAX_COPY => CommitPlan::Copy,
        _ => CommitPlan::Stream,
    }
}

/// The outcome of a part's task, as its index and id.
fn part_sent(
    joined: Option<
        std::result::Result<(usize, object_store::Result<PartId>), tokio::task::JoinError>,
    >,
) -> Result<(usize, PartId)> {
    let (index, sent) = joined
        .expect("a part is in flight")
        .map_err(|e| StorageError::Io(io::Error::other(format!("sending a part failed: {e}"))))?;
    Ok((index, sent.map_err(classify)?))
}

/// An error with the causes its message leaves out ("error sending
/// request" says nothing of the certificate refused underneath), each once.
fn described(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

fn classify(e: object_store::Error) -> StorageError {
    match e {
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => StorageError::Io(io::Error::new(
            io::ErrorKind::PermissionDenied,
            e.to_string(),
        )),
        other => StorageError::Unavailable(described(&other)),
    }
}

fn is_not_found(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

impl S3Store {
    /// Builds the client; [`S3Store::check`] then proves the bucket answers.
    pub fn open(settings: &S3Settings) -> Result<S3Store, String> {
        let plain_http = settings
            .endpoint
            .as_ref()
            .is_some_and(|e| e.starts_with("http://"));
        let mut options = ClientOptions::new()
            .with_allow_http(plain_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_allow_invalid_certificates(settings.insecure_skip_verify);
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
            let cert = object_store::Certificate::from_pem(&pem)
                .map_err(|e| format!("{}: not a PEM certificate: {e}", ca.display()))?;
            options = options.with_root_certificate(cert);
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_virtual_hosted_style_request(!settings.path_style)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: settings.request_timeout,
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(key) = &settings.access_key_id {
            builder = builder.with_access_key_id(key);
        }
        if let Some(secret) = &settings.secret_access_key {
            builder = builder.with_secret_access_key(secret);
        }
        // Requests that move little answer within the request timeout, or
        // the bucket counts as unavailable. Those that move a whole blob
        // (GET bodies, server-side copies, completing a multipart upload)
        // have no overall limit: a GET is cut when its body stalls for the
        // request timeout instead (`object_stream`).
        let bulk = builder
            .clone()
            .with_client_options(options.clone().with_timeout_disabled())
            .build()
            .map_err(|e| e.to_string())?;
        let s3 = builder
            .with_client_options(options.with_timeout(settings.request_timeout))
            .build()
            .map_err(|e| e.to_string())?;
        let prefix = match settings.prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let description = format!(
            "s3://{}/{} at {}",
            settings.bucket,
            prefix,
            settings.endpoint.as_deref().unwrap_or("AWS")
        );
        Ok(S3Store {
            s3: Arc::new(s3),
            bulk: Arc::new(bulk),
            stall: settings.request_timeout,
            prefix,
            description,
            redirect: settings.redirect,
        })
    }

    /// Where the store keeps its objects, for logs and errors.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// Lists one key of the bucket: fails when the bucket is missing, the
    /// endpoint unreachable or the credentials refused.
    pub async fn check(&self) -> Result<(), String> {
        let mut keys = self.s3.list(Some(&self.key("blobs")));
        match keys.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(described(&e)),
        }
    }

    fn key(&self, rest: &str) -> Path {
        Path::from(format!("{}{rest}", self.prefix))
    }

    fn blob_key(&self, digest: &Digest) -> Path {
        let hex = digest.hex();
        self.key(&format!(
            "blobs/{}/{}/{hex}",
            digest.algorithm().as_str(),
            &hex[..2]
        ))
    }

    fn upload_prefix(&self, id: &UploadId) -> Path {
        self.key(&format!("uploads/{id}"))
    }

    async fn upload_objects(&self, id: &UploadId) -> Result<UploadObjects> {
        let mut found = UploadObjects::default();
        let mut listing = self.s3.list(Some(&self.upload_prefix(id)));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(classify)?;
            let name = meta.location.filename().unwrap_or_default().to_string();
            if name == STARTED {
                found.started = true;
            } else if name.ends_with(MULTIPART) {
                found.markers.push(meta.location.clone());
            } else if let Ok(seq) = name.parse::<u64>() {
                found.segments.push((seq, meta.location.clone(), meta.size));
            }
            found.all.push(meta.location);
        }
        found.segments.sort_by_key(|s| s.0);
        Ok(found)
    }

    async fn existing_upload(&self, id: &UploadId) -> Result<UploadObjects> {
        let found = self.upload_objects(id).await?;
        if found.started {
            Ok(found)
        } else {
            Err(StorageError::UploadNotFound(id.clone()))
        }
    }

    async fn delete_keys(&self, keys: Vec<Path>) -> Result<()> {
        for key in keys {
            match self.s3.delete(&key).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(())
    }

    /// Streams `stream` into the object `key` as a multipart upload whose id
    /// is first recorded at `marker` (when given), and completes it; on any
    /// failure the multipart upload is aborted. Returns the bytes written.
    /// Less than one part goes as a single PUT. Memory: the chunks of at
    /// most [`PARTS_IN_FLIGHT`] parts on their way and of the one filling,
    /// never copied.
    async fn write_object<S>(&self, key: &Path, marker: Option<&Path>, mut stream: S) -> Result<u64>
    where
        S: futures_util::Stream<Item = Result<Bytes>> + Unpin + Send,
    {
        let mut parts = PartBuffer::default();
        // Fill the first part before deciding how to write.
        let mut ended = false;
        while parts.full.is_empty() {
            match stream.next().await {
                Some(chunk) => parts.push(chunk?),
                None => {
                    ended = true;
                    break;
                }
            }
        }
        if ended {
            let len = parts.filled as u64;
            let data: PutPayload = parts.filling.into_iter().collect();
            self.s3.put(key, data).await.map_err(classify)?;
            return Ok(len);
        }
        let multipart = self.s3.create_multipart(key).await.map_err(classify)?;
        let written = async {
            if let Some(marker) = marker {
                self.s3
                    .put(marker, PutPayload::from(format!("{multipart}\n{key}")))
                    .await
                    .map_err(classify)?;
            }
            // Parts are sent by tasks of their own, so they go on while the
            // next part is read; dropping the set (on an error) stops them.
            let mut sending = tokio::task::JoinSet::new();
            let mut done: Vec<(usize, PartId)> = Vec::new();
            let mut written = 0u64;
            let mut index = 0;
            loop {
                while let Some((part, len)) = parts.full.pop_front() {
                    while sending.len() >= PARTS_IN_FLIGHT {
                        done.push(part_sent(sending.join_next().await)?);
                    }
                    written += len as u64;
                    let (s3, key, id) = (self.s3.clone(), key.clone(), multipart.clone());
                    sending
                        .spawn(async move { (index, s3.put_part(&key, &id, index, part).await) });
                    index += 1;
                }
                if ended {
                    break;
                }
                match stream.next().await {
                    Some(chunk) => parts.push(chunk?),
                    None => {
                        ended = true;
                        parts.finish_part();
                    }
                }
            }
            while !sending.is_empty() {
                done.push(part_sent(sending.join_next().await)?);
            }
            done.sort_unstable_by_key(|(index, _)| *index);
            let done = done.into_iter().map(|(_, part)| part).collect();
            self.bulk
                .complete_multipart(key, &multipart, done)
                .await
                .map_err(classify)?;
            Ok::<u64, StorageError>(written)
        }
        .await;
        if written.is_err() {
            // Best effort: the marker lets expiry abort it otherwise.
            if self.s3.abort_multipart(key, &multipart).await.is_ok()
                && let Some(marker) = marker
            {
                let _ = self.s3.delete(marker).await;
            }
        } else if let Some(marker) = marker {
            match self.s3.delete(marker).await {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(classify(e)),
            }
        }
        written
    }

    /// Aborts the multipart uploads the markers record (appends or commits
    /// a crash cut short); those already completed or aborted are skipped.
    async fn abort_multiparts(&self, markers: &[Path]) -> Result<()> {
        for marker in markers {
            let text = match self.s3.get(marker).await {
                Ok(body) => body.bytes().await.map_err(classify)?,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(classify(e)),
            };
            let text = String::from_utf8_lossy(&text).into_owned();
            let Some((multipart, key)) = text.split_once('\n') else {
                tracing::warn!(%marker, "not a multipart marker; deleted with the upload");
                continue;
            };
            match self
                .s3
                .abort_multipart(&Path::from(key), &multipart.to_string())
                .await
            {
                Ok(()) => {}
                // Completed or already aborted.
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(())
    }

    /// The bytes of an upload's segments, in order.
    fn segments_stream(&self, segments: Vec<(u64, Path, u64)>) -> ByteStream {
        let (s3, stall) = (self.bulk.clone(), self.stall);
        Box::pin(
            futures_util::stream::iter(segments)
                .then(move |(_, key, size)| {
                    let s3 = s3.clone();
                    async move {
                        object_stream(&s3, &key, 0..size, stall).await.map_err(|e| {
                            io::Error::other(format!("reading {key} from object storage: {e}"))
                        })
                    }
                })
                .try_flatten(),
        )
    }
}

/// Streams `range` of object `key`; a body shorter than the range ends in
/// an error, never in a short stream that looks complete. The answer, and
/// then each piece of the body, must come within `stall`.
async fn object_stream(
    s3: &AmazonS3,
    key: &Path,
    range: Range<u64>,
    stall: Duration,
) -> std::result::Result<ByteStream, object_store::Error> {
    let want = range.end.saturating_sub(range.start);
    if want == 0 {
        s3.head(key).await?;
        return Ok(Box::pin(futures_util::stream::empty()));
    }
    let options = GetOptions {
        range: Some(GetRange::Bounded(range)),
        ..GetOptions::default()
    };
    let body = match tokio::time::timeout(stall, s3.get_opts(key, options)).await {
        Ok(got) => got?.into_stream(),
        Err(_) => {
            return Err(object_store::Error::Generic {
                store: "S3",
                source: format!("GET {key}: no answer within {stall:?}").into(),
            });
        }
    };
    let checked = futures_util::stream::unfold(
        (body, 0u64, false),
        move |(mut body, seen, done)| async move {
            if done {
                return None;
            }
            let next = tokio::time::timeout(stall, body.next())
                .await
                .unwrap_or_else(|_| {
                    Some(Err(object_store::Error::Generic {
                        store: "S3",
                        source: format!("the body sent nothing for {stall:?}").into(),
                    }))
                });
            match next {
                Some(Ok(chunk)) => {
                    let seen = seen + chunk.len() as u64;
                    Some((Ok(chunk), (body, seen, false)))
                }
                Some(Err(e)) => Some((
                    Err(io::Error::other(format!(
                        "reading from object storage: {e}"
                    ))),
                    (body, seen, true),
                )),
                None if seen < want => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("object storage sent {seen} of {want} bytes"),
                    )),
                    (body, seen, true),
                )),
                None => None,
            }
        },
    );
    Ok(Box::pin(checked))
}

#[async_trait]
impl BlobStore for S3Store {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        match self.s3.head(&self.blob_key(digest)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    async fn get(&self, digest: &Digest, range: Range<u64>) -> Result<ByteStream> {
        // One request on the way that matters (the caller knows the size).
        let key = self.blob_key(digest);
        let e = match object_stream(&self.bulk, &key, range.clone(), self.stall).await {
            Ok(stream) => return Ok(stream),
            Err(e) if is_not_found(&e) => return Err(StorageError::BlobNotFound(digest.clone())),
            Err(e) => e,
        };
        // S3 refuses a range that starts at or past the end (416); the
        // trait's answer is an error in the stream.
        match self.stat(digest).await? {
            None => Err(StorageError::BlobNotFound(digest.clone())),
            Some(size) if range.start >= size => {
                Ok(Box::pin(futures_util::stream::once(async move {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the blob has {size} bytes, fewer than the range asks for"),
                    ))
                })))
            }
            Some(_) => Err(classify(e)),
        }
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        if self.stat(digest).await?.is_none() {
            return Ok(false);
        }
        match self.s3.delete(&self.blob_key(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }

    async fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let root = self.key("blobs");
        let mut out = Vec::new();
        let mut listing = self.s3.list(Some(&root));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(classify)?;
            let parts: Vec<_> = meta.location.parts().collect();
            // .../blobs/<algorithm>/<xx>/<hex>
            if parts.len() < 3 {
                continue;
            }
            let n = parts.len();
            let name = format!("{}:{}", parts[n - 3].as_ref(), parts[n - 1].as_ref());
            if let Ok(digest) = name.parse::<Digest>()
                && meta.location == self.blob_key(&digest)
            {
                out.push((digest, meta.size));
            }
        }
        out.sort();
        Ok(out)
    }

    async fn create_upload(&self, id: &UploadId) -> Result<()> {
        let key = self.upload_prefix(id).join(STARTED);
        self.s3
            .put(&key, PutPayload::default())
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn upload_size(&self, id: &UploadId) -> Result<Option<u64>> {
        let found = self.upload_objects(id).await?;
        Ok(found.started.then(|| found.size()))
    }

    async fn append_upload(&self, id: &UploadId, mut chunks: mpsc::Receiver<Bytes>) -> Result<u64> {
        let found = self.existing_upload(id).await?;
        let before = found.size();
        let seq = found.next_seq();
        let prefix = self.upload_prefix(id);
        let key = prefix.clone().join(format!("{seq:010}"));
        let marker = prefix.clone().join(format!("{seq:010}{MULTIPART}"));
        let first = match chunks.recv().await {
            Some(c) => c,
            // Nothing arrived: no empty segment.
            None => return Ok(before),
        };
        let stream = futures_util::stream::once(async move { Ok(first) }).chain(
            futures_util::stream::unfold(chunks, |mut rx| async move {
                rx.recv().await.map(|c| (Ok(c), rx))
            }),
        );
        let written = self
            .write_object(&key, Some(&marker), Box::pin(stream))
            .await?;
        Ok(before + written)
    }

    async fn read_upload(&self, id: &UploadId) -> Result<ByteStream> {
        let found = self.existing_upload(id).await?;
        Ok(self.segments_stream(found.segments))
    }

    async fn commit_upload(&self, id: &UploadId, digest: &Digest) -> Result<()> {
        let found = self.existing_upload(id).await?;
        let to = self.blob_key(digest);
        if self.stat(digest).await?.is_none() {
            let sizes: Vec<u64> = found.segments.iter().map(|(_, _, size)| *size).collect();
            match commit_plan(&sizes) {
                CommitPlan::Empty => {
                    self.s3
                        .put(&to, PutPayload::default())
                        .await
                        .map_err(classify)?;
                }
                CommitPlan::Copy => {
                    let (_, from, _) = &found.segments[0];
                    self.bulk.copy(from, &to).await.map_err(classify)?
                }
                CommitPlan::Stream => {
                    // Recorded like an append's, so a crash here leaves
                    // nothing that expiry cannot abort.
                    let marker = self
                        .upload_prefix(id)
                        .join(format!("commit-{}{MULTIPART}", UploadId::new()));
                    let stream = self.segments_stream(found.segments.clone());
                    let stream = stream.map_err(StorageError::Io);
                    self.write_object(&to, Some(&marker), Box::pin(stream))
                        .await?;
                }
            }
        }
        // An append a crash cut short may have left a multipart upload.
        self.abort_multiparts(&found.markers).await?;
        self.delete_keys(found.all).await
    }

    async fn abort_upload(&self, id: &UploadId) -> Result<()> {
        let found = self.upload_objects(id).await?;
        self.abort_multiparts(&found.markers).await?;
        // The started marker last: until it goes the upload still exists.
        let (started, rest): (Vec<Path>, Vec<Path>) = found
            .all
            .into_iter()
            .partition(|k| k.filename() == Some(STARTED));
        self.delete_keys(rest).await?;
        self.delete_keys(started).await
    }

    async fn redirect_url(&self, digest: &Digest) -> Result<Option<String>> {
        let Some(expiry) = self.redirect else {
            return Ok(None);
        };
        let url = self
            .s3
            .signed_url(reqwest::Method::GET, &self.blob_key(digest), expiry)
            .await
            .map_err(classify)?;
        Ok(Some(url.to_string()))
    }

    async fn uploads(&self) -> Result<Vec<(String, u64)>> {
        let mut sizes = std::collections::BTreeMap::<String, u64>::new();
        let mut listing = self.s3.list(Some(&self.key("uploads")));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(classify)?;
            let parts: Vec<String> = meta
                .location
                .parts()
                .map(|p| p.as_ref().to_string())
                .collect();
            // .../uploads/<name>/<object>
            let [.., name, object] = parts.as_slice() else {
                continue;
            };
            let size = sizes.entry(name.clone()).or_default();
            if object.parse::<u64>().is_ok() {
                *size += meta.size;
            }
        }
        Ok(sizes.into_iter().collect())
    }

    async fn remove_upload(&self, name: &str) -> Result<()> {
        if let Some(id) = UploadId::parse(name) {
            return self.abort_upload(&id).await;
        }
        if name.is_empty() || name.contains('/') {
            return Err(StorageError::Io(io::Error::other("not an upload name")));
        }
        let mut keys = Vec::new();
        let mut listing = self.s3.list(Some(&self.key(&format!("uploads/{name}"))));
        while let Some(meta) = listing.next().await {
            keys.push(meta.map_err(classify)?.location);
        }
        self.delete_keys(keys).await
    }

    async fn available_space(&self) -> Result<Option<u64>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::conformance::{s3_server, s3_settings, s3_store};

    #[test]
    fn an_error_says_its_causes_once() {
        #[derive(Debug)]
        struct Layer(&'static str, Option<Box<Layer>>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Layer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|l| l as _)
            }
        }
        let tls = Layer("invalid peer certificate: UnknownIssuer", None);
        let cases = [
            (
                Layer("error sending request", Some(Box::new(tls))),
                "error sending request: invalid peer certificate: UnknownIssuer",
            ),
            (
                Layer("connect: refused", Some(Box::new(Layer("refused", None)))),
                "connect: refused",
            ),
            (Layer("alone", None), "alone"),
        ];
        for (error, want) in cases {
            assert_eq!(described(&error), want);
        }
    }

    #[test]
    fn commit_copies_one_segment_up_to_5_gib_and_streams_the_rest() {
        let gib = 1u64 << 30;
        let cases: [(&[u64], CommitPlan); 6] = [
            (&[], CommitPlan::Empty),
            (&[1], CommitPlan::Copy),
            (&[5 * gib], CommitPlan::Copy),
            (&[5 * gib + 1], CommitPlan::Stream),
            (&[1, 1], CommitPlan::Stream),
            (&[gib, 5 * gib], CommitPlan::Stream),
        ];
        for (sizes, want) in cases {
            assert_eq!(commit_plan(sizes), want, "{sizes:?}");
        }
    }

    #[test]
    fn parts_are_the_smallest_s3_allows_until_they_must_grow() {
        let mib = 1 << 20;
        let cases = [
            (0, 5 * mib),
            (1_999, 5 * mib),
            (2_000, 10 * mib),
            (4_000, 20 * mib),
            (8_000, 80 * mib),
            (9_999, 80 * mib),
            (100_000, 80 * mib),
        ];
        for (index, want) in cases {
            assert_eq!(part_size(index), want, "part {index}");
        }
        // S3's 10,000 parts hold 300 GiB; the first 9.7 GiB in 5 MiB parts.
        let most: usize = (0..10_000).map(part_size).sum();
        assert!(most >= 300 << 30, "{most}");
    }

    #[test]
    fn parts_follow_the_sizes_whatever_the_chunks() {
        let mut parts = PartBuffer::default();
        let chunk = Bytes::from(vec![7u8; 3 << 20]);
        for _ in 0..4 {
            parts.push(chunk.clone());
        }
        parts.finish_part();
        let sizes: Vec<usize> = parts.full.iter().map(|(_, len)| *len).collect();
        assert_eq!(sizes, [MIN_PART, MIN_PART, (12 << 20) - 2 * MIN_PART]);
        assert!(parts.full.iter().all(|(p, len)| p.content_length() == *len));
    }

    async fn append(store: &S3Store, id: &UploadId, data: &[u8], chunk: usize) -> u64 {
        let (tx, rx) = mpsc::channel(4);
        let chunks: Vec<Bytes> = data.chunks(chunk).map(Bytes::copy_from_slice).collect();
        let send = async move {
            for c in chunks {
                tx.send(c).await.unwrap();
            }
        };
        let (size, ()) = tokio::join!(store.append_upload(id, rx), send);
        size.unwrap()
    }

    async fn collect(stream: ByteStream) -> Vec<u8> {
        let chunks: Vec<Bytes> = stream.try_collect().await.unwrap();
        chunks.concat()
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
    }

    #[tokio::test]
    async fn large_appends_go_as_multipart_uploads_and_compose_on_commit() {
        let store = s3_store();
        // Two appends of several parts each (odd chunk sizes, so parts are
        // cut across chunks), then one smaller than S3's minimum part.
        let data = pattern(2 * MIN_PART + 3 * MIN_PART / 2 + 12_345);
        let (a, rest) = data.split_at(2 * MIN_PART + 100);
        let (b, c) = rest.split_at(rest.len() - 12_345);
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        assert_eq!(append(&store, &id, a, 1_000_003).await, a.len() as u64);
        assert_eq!(
            append(&store, &id, b, 64 << 10).await,
            (a.len() + b.len()) as u64
        );
        assert_eq!(append(&store, &id, c, 4096).await, data.len() as u64);
        assert_eq!(
            store.upload_size(&id).await.unwrap(),
            Some(data.len() as u64)
        );
        let found = store.upload_objects(&id).await.unwrap();
        assert_eq!(found.segments.len(), 3);
        assert!(
            found.markers.is_empty(),
            "completed appends leave no marker"
        );
        assert!(collect(store.read_upload(&id).await.unwrap()).await == data);

        let digest = Digest::sha256_of(&data);
        store.commit_upload(&id, &digest).await.unwrap();
        assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));
        let range = MIN_PART as u64 - 10..MIN_PART as u64 * 3 + 10;
        let got = collect(store.get(&digest, range.clone()).await.unwrap()).await;
        assert!(got == data[range.start as usize..range.end as usize]);
        assert!(collect(store.get(&digest, 0..data.len() as u64).await.unwrap()).await == data);
        // Nothing of the upload is left in the bucket.
        assert!(store.upload_objects(&id).await.unwrap().all.is_empty());
        assert_eq!(store.upload_size(&id).await.unwrap(), None);
    }

    /// What a replica killed in the middle of an append leaves: a multipart
    /// upload with a part sent, recorded by its marker. Returns its key and id.
    async fn leave_an_interrupted_append(store: &S3Store, id: &UploadId) -> (Path, String) {
        let seq = store.upload_objects(id).await.unwrap().next_seq();
        let key = store.upload_prefix(id).join(format!("{seq:010}"));
        let marker = store
            .upload_prefix(id)
            .join(format!("{seq:010}{MULTIPART}"));
        let multipart = store.s3.create_multipart(&key).await.unwrap();
        store
            .s3
            .put(&marker, PutPayload::from(format!("{multipart}\n{key}")))
            .await
            .unwrap();
        store
            .s3
            .put_part(&key, &multipart, 0, PutPayload::from(vec![1u8; MIN_PART]))
            .await
            .unwrap();
        // The unfinished append counts for nothing; the next one goes after.
        assert_eq!(store.upload_objects(id).await.unwrap().next_seq(), seq + 1);
        (key, multipart)
    }

    /// Whether the multipart upload is gone from the server: completing it
    /// fails, and no object appeared.
    async fn assert_aborted(store: &S3Store, key: &Path, multipart: &String) {
        let completed = store
            .s3
            .complete_multipart(key, multipart, Vec::new())
            .await;
        assert!(completed.is_err(), "the multipart upload was not aborted");
        assert!(store.s3.head(key).await.is_err());
    }

    #[tokio::test]
    async fn an_interrupted_append_is_aborted_with_its_upload() {
        let store = s3_store();
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        assert_eq!(append(&store, &id, b"kept", 4).await, 4);
        let (key, multipart) = leave_an_interrupted_append(&store, &id).await;
        assert_eq!(store.upload_size(&id).await.unwrap(), Some(4));

        store.abort_upload(&id).await.unwrap();
        assert!(store.upload_objects(&id).await.unwrap().all.is_empty());
        assert_aborted(&store, &key, &multipart).await;
    }

    #[tokio::test]
    async fn a_resumed_upload_commits_and_aborts_the_interrupted_append() {
        let store = s3_store();
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        let (key, multipart) = leave_an_interrupted_append(&store, &id).await;
        assert_eq!(store.upload_size(&id).await.unwrap(), Some(0));
        // The client resumes from what the store holds, and finishes.
        let data = pattern(3000);
        assert_eq!(append(&store, &id, &data, 1000).await, 3000);
        let digest = Digest::sha256_of(&data);
        store.commit_upload(&id, &digest).await.unwrap();
        assert!(collect(store.get(&digest, 0..3000).await.unwrap()).await == data);
        assert!(store.upload_objects(&id).await.unwrap().all.is_empty());
        assert_aborted(&store, &key, &multipart).await;
    }

    #[tokio::test]
    async fn presigned_redirects_serve_the_blob_and_nothing_else() {
        let (endpoint, bucket) = s3_server::fresh_bucket();
        let settings = |redirect| S3Settings {
            prefix: "reg".into(),
            redirect,
            ..s3_settings(endpoint.clone(), bucket.clone())
        };
        let plain = S3Store::open(&settings(None)).unwrap();
        let redirecting = S3Store::open(&settings(Some(Duration::from_secs(60)))).unwrap();
        let data = pattern(100_000);
        let digest = Digest::sha256_of(&data);
        let id = UploadId::new();
        plain.create_upload(&id).await.unwrap();
        append(&plain, &id, &data, 10_000).await;
        plain.commit_upload(&id, &digest).await.unwrap();
        assert_eq!(plain.redirect_url(&digest).await.unwrap(), None);

        let url = redirecting.redirect_url(&digest).await.unwrap().unwrap();
        assert!(url.contains("X-Amz-Signature="), "{url}");
        let client = reqwest::Client::new();
        let got = client.get(&url).send().await.unwrap();
        assert_eq!(got.status(), 200);
        assert!(got.bytes().await.unwrap() == data);
        // The signature covers the key: another object is refused.
        let other = url.replacen(&digest.hex()[..8], "00000000", 2);
        assert_ne!(other, url);
        let refused = client.get(&other).send().await.unwrap();
        assert!(refused.status().is_client_error(), "{}", refused.status());
    }

    /// A blob takes as long to read as its reader takes: the request
    /// timeout bounds a silent server, not a long transfer.
    #[tokio::test]
    async fn a_read_may_outlast_the_request_timeout() {
        let (endpoint, bucket) = s3_server::fresh_bucket();
        let store = S3Store::open(&S3Settings {
            request_timeout: Duration::from_secs(1),
            ..s3_settings(endpoint, bucket)
        })
        .unwrap();
        let data = pattern(3 * MIN_PART);
        let digest = Digest::sha256_of(&data);
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        append(&store, &id, &data, 1 << 20).await;
        store.commit_upload(&id, &digest).await.unwrap();
        let mut stream = store.get(&digest, 0..data.len() as u64).await.unwrap();
        let mut got = stream.next().await.unwrap().unwrap().to_vec();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        while let Some(chunk) = stream.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        assert!(got == data);
    }

    #[tokio::test]
    async fn a_missing_bucket_or_a_silent_endpoint_is_reported() {
        let (endpoint, _) = s3_server::fresh_bucket();
        let settings = S3Settings {
            request_timeout: Duration::from_secs(5),
            ..s3_settings(endpoint, "no-such-bucket".into())
        };
        let err = S3Store::open(&settings).unwrap().check().await.unwrap_err();
        assert!(
            err.contains("no-such-bucket") || err.contains("NoSuchBucket"),
            "{err}"
        );

        // Nothing listens on the port: an unavailable store, not a crash.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let silent = S3Store::open(&S3Settings {
            endpoint: Some(format!("http://127.0.0.1:{port}")),
            request_timeout: Duration::from_secs(2),
            ..settings
        })
        .unwrap();
        assert!(silent.check().await.is_err());
        let digest = Digest::sha256_of(b"x");
        assert!(matches!(
            silent.stat(&digest).await,
            Err(StorageError::Unavailable(_))
        ));
    }
}
