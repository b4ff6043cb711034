//! The behaviour every [`BlobStore`] must have, run against each implementation.

use bytes::Bytes;
use futures_util::TryStreamExt;
use tokio::sync::mpsc;

use super::{BlobStore, StorageError, UploadId};
use crate::oci::Digest;

async fn append(store: &dyn BlobStore, id: &UploadId, parts: &[&[u8]]) -> u64 {
    let (tx, rx) = mpsc::channel(2);
    let parts: Vec<Bytes> = parts.iter().map(|p| Bytes::copy_from_slice(p)).collect();
    let send = async move {
        for p in parts {
            tx.send(p).await.unwrap();
        }
    };
    let (size, ()) = tokio::join!(store.append_upload(id, rx), send);
    size.unwrap()
}

async fn read_all(store: &dyn BlobStore, digest: &Digest, range: std::ops::Range<u64>) -> Vec<u8> {
    let chunks: Vec<Bytes> = store
        .get(digest, range)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

pub async fn run(store: &dyn BlobStore) {
    let data = b"hello, berth".repeat(100_000);
    let digest = Digest::sha256_of(&data);

    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert!(matches!(
        store.get(&digest, 0..1).await,
        Err(StorageError::BlobNotFound(_))
    ));

    // Uploads accumulate across appends and are not blobs until committed.
    let id = UploadId::new();
    store.create_upload(&id).await.unwrap();
    assert_eq!(store.upload_size(&id).await.unwrap(), Some(0));
    assert_eq!(
        append(store, &id, &[&data[..10], &data[10..500_000]]).await,
        500_000
    );
    assert_eq!(
        append(store, &id, &[&data[500_000..]]).await,
        data.len() as u64
    );
    let staged: Vec<Bytes> = store
        .read_upload(&id)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(staged.concat(), data);
    assert_eq!(store.stat(&digest).await.unwrap(), None);
    assert_eq!(
        store.uploads().await.unwrap(),
        vec![(id.to_string(), data.len() as u64)]
    );

    store.commit_upload(&id, &digest).await.unwrap();
    assert_eq!(store.upload_size(&id).await.unwrap(), None);
    assert_eq!(store.stat(&digest).await.unwrap(), Some(data.len() as u64));
    assert_eq!(read_all(store, &digest, 0..data.len() as u64).await, data);
    assert_eq!(read_all(store, &digest, 5..17).await, &data[5..17]);

    // Committing the same content twice keeps one blob.
    let again = UploadId::new();
    store.create_upload(&again).await.unwrap();
    append(store, &again, &[&data]).await;
    store.commit_upload(&again, &digest).await.unwrap();
    assert_eq!(
        store.list().await.unwrap(),
        vec![(digest.clone(), data.len() as u64)]
    );

    // Aborted uploads vanish; unknown uploads are reported as such.
    let aborted = UploadId::new();
    store.create_upload(&aborted).await.unwrap();
    store.abort_upload(&aborted).await.unwrap();
    assert_eq!(store.upload_size(&aborted).await.unwrap(), None);
    let (_tx, rx) = mpsc::channel(1);
    assert!(matches!(
        store.append_upload(&aborted, rx).await,
        Err(StorageError::UploadNotFound(_))
    ));
    assert!(matches!(
        store.commit_upload(&aborted, &digest).await,
        Err(StorageError::UploadNotFound(_))
    ));

    // What fsck removes by name goes whole.
    let orphan = UploadId::new();
    store.create_upload(&orphan).await.unwrap();
    append(store, &orphan, &[b"left behind"]).await;
    assert_eq!(
        store.uploads().await.unwrap(),
        vec![(orphan.to_string(), 11)]
    );
    store.remove_upload(&orphan.to_string()).await.unwrap();
    assert_eq!(store.upload_size(&orphan).await.unwrap(), None);
    assert!(store.uploads().await.unwrap().is_empty());
    assert!(store.remove_upload("../blobs").await.is_err());

    // Free space is a number of bytes, or unknown; never an error.
    let _space: Option<u64> = store.available_space().await.unwrap();

    // A range beyond a blob's end is an error in the stream, never a short
    // body that looks complete.
    let short: Result<Vec<Bytes>, _> = store
        .get(&digest, 0..data.len() as u64 + 10)
        .await
        .unwrap()
        .try_collect()
        .await;
    assert!(short.is_err());

    // Ranges of a larger blob, at offsets that are not page-aligned and
    // across the pieces a store hands out (4 MiB for a mapped file).
    let big: Vec<u8> = (0..(9 << 20) + 123u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    let big_digest = Digest::sha256_of(&big);
    let id = UploadId::new();
    store.create_upload(&id).await.unwrap();
    append(store, &id, &[&big[..3 << 20], &big[3 << 20..]]).await;
    store.commit_upload(&id, &big_digest).await.unwrap();
    let n = big.len() as u64;
    for range in [
        0..n,
        4097..n - 3,
        (4 << 20) - 5..(4 << 20) + 5,
        1_000_001..6_000_000,
        n - (2 << 20) - 1..n,
    ] {
        let (a, b) = (range.start as usize, range.end as usize);
        assert!(
            read_all(store, &big_digest, range.clone()).await == big[a..b],
            "range {range:?}"
        );
    }
    assert!(store.delete(&big_digest).await.unwrap());

    assert!(store.delete(&digest).await.unwrap());
    assert!(!store.delete(&digest).await.unwrap());
    assert!(store.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn fs_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = super::fs::FsStore::open(dir.path()).unwrap();
    run(&store).await;
    assert!(store.available_space().await.unwrap().unwrap() > 0);
}

#[path = "../../tests/common/s3.rs"]
pub(crate) mod s3_server;

/// An S3 store on a fresh bucket of the test's s3s-fs server.
pub(crate) fn s3_store() -> super::s3::S3Store {
    s3_store_and_bucket().0
}

/// The settings of a store on `bucket` of the test server at `endpoint`.
pub(crate) fn s3_settings(endpoint: String, bucket: String) -> super::s3::S3Settings {
    super::s3::S3Settings {
        endpoint: Some(endpoint),
        bucket,
        region: "us-east-1".into(),
        access_key_id: Some(s3_server::ACCESS_KEY.into()),
        secret_access_key: Some(s3_server::SECRET_KEY.into()),
        prefix: String::new(),
        path_style: true,
        ca_file: None,
        insecure_skip_verify: false,
        request_timeout: std::time::Duration::from_secs(30),
        redirect: None,
    }
}

/// [`s3_store`], and the directory where s3s-fs keeps the bucket's objects
/// as files (for tests that damage one behind the store's back).
pub(crate) fn s3_store_and_bucket() -> (super::s3::S3Store, std::path::PathBuf) {
    let (endpoint, bucket) = s3_server::fresh_bucket();
    let dir = s3_server::server().root.join(&bucket);
    let store = super::s3::S3Store::open(&s3_settings(endpoint, bucket)).unwrap();
    (store, dir)
}

#[tokio::test]
async fn s3_store_behaves_like_the_others() {
    let store = s3_store();
    store.check().await.unwrap();
    run(&store).await;
    assert_eq!(store.available_space().await.unwrap(), None);
}
