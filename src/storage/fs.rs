//! Filesystem blob store.
//!
//! On-disk layout under the data directory (the only place it is described):
//!
//! ```text
//! <root>/blobs/<algorithm>/<first two hex chars>/<hex>   committed blobs, immutable
//! <root>/uploads/<uuid>                                  uploads in progress
//! ```
//!
//! Paths are built only from validated digests and UUIDs, never from
//! repository names or other request text. A blob becomes visible by a
//! `rename` from `uploads/` after its bytes are fsynced, and the directory is
//! fsynced after the rename, so a crash leaves either nothing or a whole blob.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{BlobStore, ByteStream, Result, StorageError, UploadId};
use crate::oci::Digest;

/// Size of each read when streaming a blob out (what a stalled reader keeps
/// in memory, so small).
const READ_CHUNK: u64 = 64 << 10;
/// While an upload is written, it is flushed to disk (in the background)
/// every this many bytes and at the end of each append, so the fsync before
/// the blob is committed has little left to do and disk writeback overlaps
/// with receiving.
const FLUSH_EVERY: u64 = 32 << 20;

pub struct FsStore {
    root: PathBuf,
}

impl FsStore {
    /// Opens (creating if needed) a store rooted at `root`.
    pub fn open(root: &Path) -> io::Result<FsStore> {
        super::durable::create_dir_all_synced(&root.join("blobs"))?;
        super::durable::create_dir_all_synced(&root.join("uploads"))?;
        Ok(FsStore {
            root: root.to_path_buf(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(&hex[..2])
            .join(hex)
    }

    fn upload_path(&self, id: &UploadId) -> PathBuf {
        self.root.join("uploads").join(id.to_string())
    }

    fn upload_files(root: &Path) -> io::Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(root.join("uploads"))? {
            let entry = entry?;
            out.push((
                entry.file_name().to_string_lossy().into_owned(),
                entry.metadata()?.len(),
            ));
        }
        out.sort();
        Ok(out)
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> Result<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(StorageError::Io),
        Err(e) => Err(StorageError::Io(io::Error::other(e))),
    }
}

fn not_found_as_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Streams `len` bytes of `file` from its current position. Each read is a
/// short blocking call on tokio's pool (disk only); a slow consumer parks no
/// thread: the stream is simply not polled until it wants more.
fn stream_file(file: tokio::fs::File, len: u64) -> ByteStream {
    Box::pin(futures_util::stream::try_unfold(
        (file.take(len), len),
        |(mut reader, remaining)| async move {
            if remaining == 0 {
                return Ok(None);
            }
            let want = remaining.min(READ_CHUNK) as usize;
            let mut buf = BytesMut::with_capacity(want);
            while buf.len() < want {
                if reader.read_buf(&mut buf).await? == 0 {
                    // The file is shorter than the range asked for.
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            let got = buf.len() as u64;
            Ok(Some((
                buf.freeze(),
                (reader, remaining.saturating_sub(got)),
            )))
        },
    ))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[async_trait]
impl BlobStore for FsStore {
    async fn stat(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest);
        blocking(move || not_found_as_none(fs::metadata(path)).map(|m| m.map(|m| m.len()))).await
    }

    async fn get(&self, digest: &Digest, range: Range<u64>) -> Result<ByteStream> {
        let path = self.blob_path(digest);
        let file = blocking(move || {
            let file = not_found_as_none(File::open(path))?;
            if let Some(mut f) = file {
                f.seek(SeekFrom::Start(range.start))?;
                Ok(Some(f))
            } else {
                Ok(None)
            }
        })
        .await?
        .ok_or_else(|| StorageError::BlobNotFound(digest.clone()))?;
        Ok(stream_file(
            tokio::fs::File::from_std(file),
            range.end.saturating_sub(range.start),
        ))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        blocking(move || not_found_as_none(fs::remove_file(path)).map(|r| r.is_some())).await
    }

    async fn list(&self) -> Result<Vec<(Digest, u64)>> {
        let root = self.root.join("blobs");
        blocking(move || {
            let mut out = Vec::new();
            for alg in fs::read_dir(&root)? {
                let alg = alg?;
                let alg_name = alg.file_name().to_string_lossy().into_owned();
                for prefix in fs::read_dir(alg.path())? {
                    for entry in fs::read_dir(prefix?.path())? {
                        let entry = entry?;
                        let name = format!("{alg_name}:{}", entry.file_name().to_string_lossy());
                        if let Ok(digest) = name.parse::<Digest>() {
                            out.push((digest, entry.metadata()?.len()));
                        }
                    }
                }
            }
            out.sort();
            Ok(out)
        })
        .await
    }

    async fn create_upload(&self, id: &UploadId) -> Result<()> {
        let path = self.upload_path(id);
        blocking(move || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map(drop)
        })
        .await
    }

    async fn upload_size(&self, id: &UploadId) -> Result<Option<u64>> {
        let path = self.upload_path(id);
        blocking(move || not_found_as_none(fs::metadata(path)).map(|m| m.map(|m| m.len()))).await
    }

    async fn append_upload(&self, id: &UploadId, mut chunks: mpsc::Receiver<Bytes>) -> Result<u64> {
        let path = self.upload_path(id);
        let id = id.clone();
        let file = blocking(move || not_found_as_none(OpenOptions::new().append(true).open(path)))
            .await?
            .ok_or(StorageError::UploadNotFound(id))?;
        // The flushes run on their own (a failure resurfaces in the commit's
        // fsync); at most one at a time, and never awaited here, so a client
        // is not made to wait for writeback.
        let flush_handle = file.try_clone()?;
        let mut flushing: Option<tokio::task::JoinHandle<()>> = None;
        let mut flush = move || {
            if flushing.as_ref().is_none_or(|f| f.is_finished())
                && let Ok(f) = flush_handle.try_clone()
            {
                flushing = Some(tokio::task::spawn_blocking(move || {
                    let _ = f.sync_data();
                }));
            }
        };
        let mut file = tokio::fs::File::from_std(file);
        let mut unflushed = 0u64;
        // Waiting for the next chunk is an await, never a parked thread.
        while let Some(chunk) = chunks.recv().await {
            file.write_all(&chunk).await?;
            unflushed += chunk.len() as u64;
            if unflushed >= FLUSH_EVERY {
                unflushed = 0;
                file.flush().await?;
                flush();
            }
        }
        file.flush().await?;
        if unflushed > 0 {
            flush();
        }
        Ok(file.metadata().await?.len())
    }

    async fn read_upload(&self, id: &UploadId) -> Result<ByteStream> {
        let path = self.upload_path(id);
        let id = id.clone();
        let (file, len) = blocking(move || {
            let Some(file) = not_found_as_none(File::open(path))? else {
                return Ok(None);
            };
            let len = file.metadata()?.len();
            Ok(Some((file, len)))
        })
        .await?
        .ok_or(StorageError::UploadNotFound(id))?;
        Ok(stream_file(tokio::fs::File::from_std(file), len))
    }

    async fn commit_upload(&self, id: &UploadId, digest: &Digest) -> Result<()> {
        let from = self.upload_path(id);
        let to = self.blob_path(digest);
        let id = id.clone();
        let found = blocking(move || {
            let Some(file) = not_found_as_none(File::open(&from))? else {
                return Ok(false);
            };
            if to.exists() {
                fs::remove_file(&from)?;
                return Ok(true);
            }
            file.sync_all()?;
            let dir = to.parent().expect("blob path has a parent");
            super::durable::create_dir_all_synced(dir)?;
            fs::rename(&from, &to)?;
            sync_dir(dir)?;
            Ok(true)
        })
        .await?;
        if found {
            Ok(())
        } else {
            Err(StorageError::UploadNotFound(id))
        }
    }

    async fn abort_upload(&self, id: &UploadId) -> Result<()> {
        let path = self.upload_path(id);
        blocking(move || not_found_as_none(fs::remove_file(path)).map(drop)).await
    }

    async fn uploads(&self) -> Result<Vec<(String, u64)>> {
        let root = self.root.clone();
        blocking(move || FsStore::upload_files(&root)).await
    }

    async fn remove_upload(&self, name: &str) -> Result<()> {
        if name.contains('/') || name.starts_with('.') || name.is_empty() {
            return Err(StorageError::Io(io::Error::other(
                "not an upload file name",
            )));
        }
        let path = self.root.join("uploads").join(name);
        blocking(move || not_found_as_none(fs::remove_file(path)).map(drop)).await
    }

    async fn available_space(&self) -> Result<Option<u64>> {
        let root = self.root.clone();
        blocking(move || {
            let st = rustix::fs::statvfs(&root).map_err(io::Error::from)?;
            // Blocks available to unprivileged writers, in fragment-size units.
            Ok(Some(st.f_bavail.saturating_mul(st.f_frsize)))
        })
        .await
    }
}
