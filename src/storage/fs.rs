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
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use memmap2::{Advice, Mmap, MmapOptions};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use super::{BlobStore, ByteStream, Result, StorageError, UploadId};
use crate::oci::Digest;

/// Size of each read when streaming a small blob or an upload out (what a
/// stalled reader keeps in memory, so small).
const READ_CHUNK: u64 = 64 << 10;
/// Blob ranges at least this long are served from a memory map of the file:
/// the socket write copies straight from the page cache (one copy in the
/// kernel, as `sendfile` does for a plain socket, and the one a TLS
/// connection encrypts from), with no read into a buffer and no trip to the
/// blocking pool per 64 KiB.
const MAP_AT_LEAST: u64 = 1 << 20;
/// A mapped range is handed on in pieces of this size, each mapped and
/// faulted in (`MADV_POPULATE_READ`) on the blocking pool first, so a blob
/// not in the page cache is read from disk there and never on a runtime
/// thread. What a stalled reader keeps mapped is about one piece and what
/// hyper queues beyond it (400 KiB).
const MAPPED_PIECE: u64 = 512 << 10;
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

/// Maps `len` bytes of a committed blob file from `offset` (no I/O: the
/// pages are read when faulted in).
#[allow(unsafe_code)]
fn map_piece(file: &File, offset: u64, len: usize) -> io::Result<Mmap> {
    // SAFETY: blob files are immutable once committed: written under
    // uploads/, fsynced, renamed into place, never truncated or rewritten
    // by berth (a deletion unlinks the file, which leaves a map valid). A
    // file cut short by someone else would fault on access; populating the
    // piece before it is handed on turns that into an error for what is not
    // yet sent.
    unsafe { MmapOptions::new().offset(offset).len(len).map(file) }
}

/// Whether every page of `map` is in the page cache (`mincore`), so that
/// faulting it in reads nothing from disk.
#[allow(unsafe_code)]
fn resident(map: &Mmap) -> bool {
    let page = rustix::param::page_size();
    // memmap2 maps from the page holding the offset and points into it:
    // round down to that page, which is part of the mapping.
    let ptr = map.as_ptr() as usize;
    let start = ptr & !(page - 1);
    let len = ptr + map.len() - start;
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: [start, start + len) lies within the live mapping `map`, and
    // `vec` has a byte for each of its pages; mincore writes only `vec`.
    let rc = unsafe { libc::mincore(start as *mut libc::c_void, len, vec.as_mut_ptr()) };
    rc == 0 && vec.iter().all(|&b| b & 1 == 1)
}

/// Streams `range` of a blob file in [`MAPPED_PIECE`]s, each its own map,
/// unmapped when the connection has sent it: a slow or stalled reader holds
/// one or two pieces, not the blob. A piece is faulted in before it is
/// handed on: right here when the page cache holds all of it, else on the
/// blocking pool (which reads it from disk). `short` when the file ended
/// before the range asked for (an error after the bytes that exist).
fn stream_mapped(file: File, range: Range<u64>, short: bool) -> ByteStream {
    let file = Arc::new(file);
    Box::pin(futures_util::stream::try_unfold(range.start, move |at| {
        let file = file.clone();
        let end = range.end;
        async move {
            if at == end {
                if short {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                return Ok(None);
            }
            let len = (end - at).min(MAPPED_PIECE);
            let map = map_piece(&file, at, len as usize)?;
            let map = if resident(&map) {
                map.advise(Advice::PopulateRead)?;
                map
            } else {
                blocking(move || {
                    map.advise(Advice::PopulateRead)?;
                    Ok(map)
                })
                .await
                .map_err(io::Error::other)?
            };
            Ok(Some((Bytes::from_owner(map), at + len)))
        }
    }))
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
        let want = range.end.saturating_sub(range.start);
        let opened = blocking(move || {
            let Some(mut file) = not_found_as_none(File::open(path))? else {
                return Ok(None);
            };
            let end = range.end.min(file.metadata()?.len());
            if end > range.start && end - range.start >= MAP_AT_LEAST {
                let short = end < range.end;
                return Ok(Some(stream_mapped(file, range.start..end, short)));
            }
            file.seek(SeekFrom::Start(range.start))?;
            Ok(Some(stream_file(tokio::fs::File::from_std(file), want)))
        })
        .await?;
        opened.ok_or_else(|| StorageError::BlobNotFound(digest.clone()))
    }

    async fn delete(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest);
        blocking(move || not_found_as_none(fs::remove_file(path)).map(|r| r.is_some())).await
    }

    /// One trip to the blocking pool for the whole batch.
    async fn delete_many(&self, digests: &[Digest]) -> Result<()> {
        let paths: Vec<PathBuf> = digests.iter().map(|d| self.blob_path(d)).collect();
        blocking(move || {
            for path in paths {
                not_found_as_none(fs::remove_file(path))?;
            }
            Ok(())
        })
        .await
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
        let mut file = Some(file);
        let mut unflushed = 0u64;
        // Waiting for the next chunk is an await, never a parked thread; each
        // chunk is written from where it lies (no copy into a buffer of the
        // runtime's) on the blocking pool.
        while let Some(chunk) = chunks.recv().await {
            let mut f = file.take().expect("the file is back after each write");
            unflushed += chunk.len() as u64;
            file = Some(
                blocking(move || {
                    f.write_all(&chunk)?;
                    Ok(f)
                })
                .await?,
            );
            if unflushed >= FLUSH_EVERY {
                unflushed = 0;
                flush();
            }
        }
        if unflushed > 0 {
            flush();
        }
        let f = file.take().expect("the file is back after each write");
        blocking(move || Ok(f.metadata()?.len())).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::TryStreamExt;

    /// A blob the page cache does not hold is read on the blocking pool,
    /// one that it holds right where the stream is polled; both whole.
    #[tokio::test]
    async fn mapped_pieces_whether_cached_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let data: Vec<u8> = (0..(3 << 20) + 77u32)
            .map(|i| (i * 7 + i / 4093) as u8)
            .collect();
        let digest = Digest::sha256_of(&data);
        let id = UploadId::new();
        store.create_upload(&id).await.unwrap();
        let (tx, rx) = mpsc::channel(1);
        tx.send(Bytes::from(data.clone())).await.unwrap();
        drop(tx);
        store.append_upload(&id, rx).await.unwrap();
        store.commit_upload(&id, &digest).await.unwrap();
        let file = File::open(store.blob_path(&digest)).unwrap();
        let on_tmpfs = rustix::fs::fstatfs(&file).unwrap().f_type as i64 == 0x0102_1994;

        // Committed blobs are fsynced, so their pages are clean and may go.
        rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        let piece = map_piece(&file, 1 << 20, MAPPED_PIECE as usize).unwrap();
        if !on_tmpfs {
            assert!(!resident(&piece), "evicted pages are not resident");
        }
        drop(piece);
        let n = data.len() as u64;
        for range in [0..n, 4097..n - 1] {
            let got: Vec<Bytes> = store
                .get(&digest, range.clone())
                .await
                .unwrap()
                .try_collect()
                .await
                .unwrap();
            let got = got.concat();
            assert!(
                got == data[range.start as usize..range.end as usize],
                "{range:?}"
            );
        }
        let piece = map_piece(&file, 1 << 20, MAPPED_PIECE as usize).unwrap();
        assert!(resident(&piece), "read pages are resident");
    }
}
