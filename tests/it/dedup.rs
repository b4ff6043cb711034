//! Uploads of a blob the store already holds (issue 17): the body is hashed
//! against the digest the client names and not written again: no upload file
//! appears (`POST ?digest=`) or grows (a session's closing `PUT ?digest=`
//! with the whole body). Content that does not match is refused as usual;
//! a blob garbage-collected while the body was hashed is not linked.

use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use bytes::Bytes;

use berth::oci::Digest;

use crate::common::app::App;
use crate::common::{MIB, channel_body};

/// Every upload file with its size.
fn upload_files(app: &App) -> Vec<(PathBuf, u64)> {
    std::fs::read_dir(app.data.join("uploads"))
        .map(|d| {
            d.flatten()
                .map(|e| (e.path(), e.metadata().unwrap().len()))
                .collect()
        })
        .unwrap_or_default()
}

/// A registry without authentication; every call answered within 20 s.
async fn open() -> App {
    App::setup()
        .answer_within(Duration::from_secs(20))
        .open()
        .await
}

/// The status of a HEAD of blob `digest` in `repo`.
async fn head(app: &App, repo: &str, digest: &Digest) -> StatusCode {
    app.call(
        Method::HEAD,
        &format!("/v2/{repo}/blobs/{digest}"),
        &[],
        Body::empty(),
    )
    .await
    .status
}

fn blob_file(app: &App, digest: &Digest) -> PathBuf {
    let hex = digest.hex();
    app.data.join("blobs/sha256").join(&hex[..2]).join(hex)
}

/// 4 MiB, different for each `seed`.
fn content(seed: u8) -> Vec<u8> {
    (0..(4 * MIB) as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

/// Sends `data` on `uri` with `method` in two halves; between them (the
/// server has read the first half, and the 1 MiB chunks it gathers are
/// handed on) `midway` runs. Returns the reply and what `midway` returned.
async fn send_in_halves<T>(
    app: &App,
    method: Method,
    uri: &str,
    data: &[u8],
    midway: impl AsyncFnOnce() -> T,
) -> (crate::common::app::Reply, T) {
    let (tx, body) = channel_body();
    let call = app.call(method, uri, &[], body);
    let feed = async {
        let half = data.len() / 2;
        for piece in data[..half].chunks(256 << 10) {
            tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        // Sent means taken by the server; give it time to pass them on.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = midway().await;
        for piece in data[half..].chunks(256 << 10) {
            tx.send(Bytes::copy_from_slice(piece)).await.unwrap();
        }
        drop(tx);
        seen
    };
    tokio::join!(call, feed)
}

#[tokio::test]
async fn a_blob_already_held_is_hashed_not_written_again() {
    let app = open().await;
    let data = content(1);
    let digest = app.push_blob("a/first", &data).await;
    let file = blob_file(&app, &digest);
    let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());

    // Monolithic POST ?digest= to another repository: no upload file at all.
    let (r, files) = send_in_halves(
        &app,
        Method::POST,
        &format!("/v2/b/second/blobs/uploads/?digest={digest}"),
        &data,
        async || upload_files(&app),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.error());
    assert!(files.is_empty(), "the upload wrote {files:?}");
    assert_eq!(r.header("docker-content-digest"), digest.to_string());

    // A session's closing PUT with the whole body: its file stays empty.
    let loc = app.start_upload("c/third").await;
    let (r, files) = send_in_halves(
        &app,
        Method::PUT,
        &format!("{loc}?digest={digest}"),
        &data,
        async || upload_files(&app),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.error());
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].1, 0, "the closing PUT wrote into {files:?}");
    assert!(upload_files(&app).is_empty(), "{:?}", upload_files(&app));

    // Both repositories serve it; the blob file is the one first written.
    for repo in ["b/second", "c/third"] {
        let r = app
            .call(
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{repo}");
        assert!(r.body == data, "{repo} serves other bytes");
    }
    let now = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&file).unwrap());
    assert_eq!(inode, now, "the blob file was replaced");
}

/// A held blob named by a sha512 digest is verified with sha512 (the
/// session's closing PUT starts from no hash state of that algorithm).
#[tokio::test]
async fn a_held_sha512_blob_is_verified_with_sha512() {
    let app = open().await;
    let data = content(4);
    let digest = Digest::of(berth::oci::Algorithm::Sha512, &data);
    let r = app
        .call(
            Method::POST,
            &format!("/v2/a/first/blobs/uploads/?digest={digest}"),
            &[],
            data.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.error());
    let loc = app.start_upload("b/second").await;
    let r = app
        .call(Method::PUT, &format!("{loc}?digest={digest}"), &[], data)
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.error());
    assert_eq!(head(&app, "b/second", &digest).await, StatusCode::OK);
    assert!(upload_files(&app).is_empty(), "{:?}", upload_files(&app));
}

#[tokio::test]
async fn other_content_under_a_held_digest_is_refused() {
    let app = open().await;
    let digest = app.push_blob("a/first", &content(1)).await;
    let other = content(2);
    let (r, ()) = send_in_halves(
        &app,
        Method::POST,
        &format!("/v2/b/second/blobs/uploads/?digest={digest}"),
        &other,
        async || (),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "DIGEST_INVALID");
    assert_eq!(head(&app, "b/second", &digest).await, StatusCode::NOT_FOUND);
    assert!(upload_files(&app).is_empty(), "{:?}", upload_files(&app));
    assert!(blob_file(&app, &digest).exists());
}

#[tokio::test]
async fn a_blob_removed_while_hashed_is_not_linked() {
    let app = open().await;
    let data = content(3);
    let digest = app.push_blob("a/first", &data).await;
    let file = blob_file(&app, &digest);
    // The file goes while the body is hashed (pinned, garbage collection
    // passes it over; someone removes it by hand).
    let (r, ()) = send_in_halves(
        &app,
        Method::POST,
        &format!("/v2/b/second/blobs/uploads/?digest={digest}"),
        &data,
        async || std::fs::remove_file(&file).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.error_code(), "UNAVAILABLE");
    assert!(r.error().1.contains("push it again"), "{:?}", r.error());
    assert_eq!(head(&app, "b/second", &digest).await, StatusCode::NOT_FOUND);

    // Pushed again, it is written again.
    app.push_blob("b/second", &data).await;
    assert!(file.exists());
}
