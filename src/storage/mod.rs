//! Blob storage: content-addressed, immutable blobs plus a staging area for
//! uploads in progress. Knows nothing of repositories, manifests or HTTP; which
//! repository may see which blob is the metadata layer's business.
//!
//! Implementations: [`fs::FsStore`] (local directory, the embedded default)
//! and [`s3::S3Store`] (S3-compatible object storage); the shared test suite
//! in [`conformance`] runs against both.

pub mod durable;
pub mod fs;
pub mod s3;

#[cfg(test)]
pub(crate) mod conformance;

use std::fmt;
use std::io;
use std::ops::Range;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::mpsc;

use crate::oci::Digest;

pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("blob {0} is not in storage")]
    BlobNotFound(Digest),
    #[error("upload {0} is not in storage")]
    UploadNotFound(UploadId),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    /// The store did not answer (object storage down or unreachable):
    /// nothing was changed, worth a retry.
    #[error("blob storage is unavailable: {0}")]
    Unavailable(String),
}

/// The identifier of an upload in progress: a UUID, validated before it is
/// ever used to build a path or a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UploadId(uuid::Uuid);

impl UploadId {
    pub fn new() -> UploadId {
        UploadId(uuid::Uuid::new_v4())
    }

    pub fn parse(s: &str) -> Option<UploadId> {
        uuid::Uuid::try_parse(s).ok().map(UploadId)
    }
}

impl Default for UploadId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.as_hyphenated().fmt(f)
    }
}

#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// Size of a committed blob, or `None` when it is absent.
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Streams the bytes of `range` (clamped by the caller to the blob's size).
    async fn get(&self, digest: &Digest, range: Range<u64>) -> Result<ByteStream>;
    /// Removes a committed blob; `false` when it was not there.
    async fn delete(&self, digest: &Digest) -> Result<bool>;
    /// Removes many committed blobs (garbage collection's batches); absent
    /// ones are not an error. By default a few [`BlobStore::delete`]s at a
    /// time.
    async fn delete_many(&self, digests: &[Digest]) -> Result<()> {
        for some in digests.chunks(16) {
            let deletes: Vec<_> = some.iter().map(|d| self.delete(d)).collect();
            for deleted in futures_util::future::join_all(deletes).await {
                deleted?;
            }
        }
        Ok(())
    }
    /// Every committed blob with its size (for fsck and garbage collection).
    async fn list(&self) -> Result<Vec<(Digest, u64)>>;

    /// Starts an empty upload.
    async fn create_upload(&self, id: &UploadId) -> Result<()>;
    /// Bytes received so far, or `None` when the upload does not exist.
    async fn upload_size(&self, id: &UploadId) -> Result<Option<u64>>;
    /// Appends every chunk received on `chunks` until the sender is dropped;
    /// returns the upload's new size.
    async fn append_upload(&self, id: &UploadId, chunks: mpsc::Receiver<Bytes>) -> Result<u64>;
    /// Streams the bytes received so far (to re-hash after a restart).
    async fn read_upload(&self, id: &UploadId) -> Result<ByteStream>;
    /// Makes the upload durable and visible as blob `digest`, atomically. The
    /// caller has verified the digest. If the blob already exists the upload is
    /// simply discarded.
    async fn commit_upload(&self, id: &UploadId, digest: &Digest) -> Result<()>;
    /// Discards an upload; absent uploads are not an error.
    async fn abort_upload(&self, id: &UploadId) -> Result<()>;

    /// A URL the client may fetch the whole blob from directly (a presigned
    /// object storage URL), when the store is set to hand those out.
    async fn redirect_url(&self, _digest: &Digest) -> Result<Option<String>> {
        Ok(None)
    }

    /// Every upload in the store by name (its UUID, or whatever stray name
    /// the store holds) with the bytes it holds: for fsck to compare with
    /// the sessions the metadata knows.
    async fn uploads(&self) -> Result<Vec<(String, u64)>>;
    /// Removes an upload by the name [`BlobStore::uploads`] gave (fsck
    /// repair of an orphan).
    async fn remove_upload(&self, name: &str) -> Result<()>;

    /// Bytes that uploads may still write before the store's space runs out,
    /// or `None` when the store cannot tell (object storage).
    async fn available_space(&self) -> Result<Option<u64>>;
}
