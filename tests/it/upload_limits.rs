//! Upload limits and leaks, in process (issue 12, findings 1, 2 and 6): the
//! size limit is enforced while the body streams, the free-space reserve
//! refuses uploads but not reads, the transfer cap answers 429, an idle body
//! is cut and the upload resumes, and nothing of a refused, failed or deleted
//! upload stays on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use tower::ServiceExt;

use berth::config::Config;
use berth::oci::Digest;

use crate::common::app::App;
use crate::common::{MIB, channel_body};

/// A registry without authentication on `data` (default: a fresh temporary
/// directory), configured by `tune`; every call must be answered within 20 s.
async fn app_with(data: Option<&Path>, tune: impl FnOnce(&mut Config) + 'static) -> App {
    let mut setup = App::setup()
        .config(tune)
        .answer_within(Duration::from_secs(20));
    if let Some(data) = data {
        setup = setup.data_dir(data);
    }
    setup.open().await
}

/// The entries of the upload area (not recursive).
fn upload_files(app: &App) -> Vec<PathBuf> {
    std::fs::read_dir(app.data.join("uploads"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn max_blob_size_is_refused_up_front_and_while_streaming() {
    let app = app_with(None, |c| c.storage.max_blob_size = MIB as u64).await;

    // Declared too large: refused before a byte is read, nothing created.
    let digest = Digest::sha256_of(b"x");
    let r = app
        .call(
            Method::POST,
            &format!("/v2/a/b/blobs/uploads/?digest={digest}"),
            &[("content-length", "10485760")],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let (code, message) = r.error();
    assert_eq!(code, "SIZE_INVALID");
    assert!(message.contains("1048576 bytes"), "{message}");
    assert!(upload_files(&app).is_empty());

    // No length declared: the body streams and never ends; the server must
    // answer 413 once the limit is passed, without waiting for the end (it
    // then discards what the client still sends, within bounds: see
    // registry::linger).
    let (tx, body) = channel_body();
    let sent = Arc::new(AtomicUsize::new(0));
    let feeder = tokio::spawn({
        let sent = sent.clone();
        async move {
            while tx.send(Bytes::from(vec![7u8; 64 << 10])).await.is_ok() {
                if sent.fetch_add(64 << 10, Ordering::SeqCst) > 2 * MIB {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    });
    let t0 = Instant::now();
    let monolithic = format!("/v2/a/b/blobs/uploads/?digest={digest}");
    let call = app.call(Method::POST, &monolithic, &[], body);
    let r = tokio::time::timeout(Duration::from_secs(30), call)
        .await
        .expect("no answer while the body went on");
    let sent = sent.load(Ordering::SeqCst);
    println!(
        "streamed upload refused after {sent} bytes sent, in {:?}",
        t0.elapsed()
    );
    assert!(
        !feeder.is_finished(),
        "the answer came only after the body ended"
    );
    feeder.abort();
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{:?}", r.error());
    assert_eq!(r.error().0, "SIZE_INVALID");
    assert!(upload_files(&app).is_empty());

    // A chunked session that grows past the limit is discarded altogether.
    let loc = app.start_upload("a/b").await;
    let r = app.call(Method::PATCH, &loc, &[], vec![1u8; MIB / 2]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app.call(Method::PATCH, &loc, &[], vec![1u8; MIB]).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        app.call(Method::GET, &loc, &[], Body::empty()).await.status,
        StatusCode::NOT_FOUND
    );
    assert!(upload_files(&app).is_empty());

    // At the limit exactly: accepted.
    app.push_blob("a/b", &vec![3u8; MIB]).await;
}

#[tokio::test]
async fn free_space_reserve_refuses_uploads_but_not_reads() {
    let first = app_with(None, |c| c.storage.min_free_bytes = 0).await;
    let data = b"pushed before the disk got low".to_vec();
    let digest = first.push_blob("a/b", &data).await;
    let dir = first.dir.clone();
    let data_dir = first.data.clone();

    // The same data directory with a reserve larger than any disk.
    let app = app_with(Some(&data_dir), |c| c.storage.min_free_bytes = u64::MAX / 2).await;
    let r = app
        .call(Method::POST, "/v2/a/b/blobs/uploads/", &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE);
    let (code, message) = r.error();
    println!("refused: {code}: {message}");
    assert_eq!(code, "BLOB_UPLOAD_INVALID");
    assert!(message.contains("free-space reserve"), "{message}");
    let other = Digest::sha256_of(b"new");
    let r = app
        .call(
            Method::POST,
            &format!("/v2/a/b/blobs/uploads/?digest={other}"),
            &[],
            b"new".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::INSUFFICIENT_STORAGE);
    assert!(upload_files(&app).is_empty());

    // Reads go on.
    let r = app
        .call(
            Method::GET,
            &format!("/v2/a/b/blobs/{digest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, data);
    drop(dir);
}

#[tokio::test]
async fn transfer_cap_answers_429_with_retry_after() {
    let app = app_with(None, |c| c.server.max_concurrent_transfers = 1).await;
    let digest = app.push_blob("a/b", b"some layer").await;
    let loc = app.start_upload("a/b").await;

    // A PATCH whose body stays open holds the only transfer permit.
    let (tx, body) = channel_body();
    tx.send(Bytes::from_static(b"first bytes")).await.unwrap();
    let router = app.router.clone();
    let held = tokio::spawn(async move {
        let req = Request::builder()
            .method(Method::PATCH)
            .uri(loc)
            .body(body)
            .unwrap();
        router.oneshot(req).await.unwrap().status()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let blob = format!("/v2/a/b/blobs/{digest}");
    let r = app.call(Method::GET, &blob, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.error().0, "TOOMANYREQUESTS");
    assert!(r.header("retry-after").parse::<u64>().unwrap() > 0);
    // HEAD moves no bytes and is not counted.
    let head = app.call(Method::HEAD, &blob, &[], Body::empty()).await;
    assert_eq!(head.status, StatusCode::OK);

    drop(tx);
    assert_eq!(held.await.unwrap(), StatusCode::ACCEPTED);
    let r = app.call(Method::GET, &blob, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, b"some layer");
}

#[tokio::test]
async fn idle_body_is_cut_and_the_upload_resumes() {
    let app = app_with(None, |c| c.server.body_idle_timeout = "1s".into()).await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 241) as u8).collect();
    let digest = Digest::sha256_of(&data);
    let loc = app.start_upload("a/b").await;

    let (tx, body) = channel_body();
    tx.send(Bytes::copy_from_slice(&data[..100_000]))
        .await
        .unwrap();
    let t0 = Instant::now();
    let r = app.call(Method::PATCH, &loc, &[], body).await;
    let took = t0.elapsed();
    println!("idle body cut after {took:?}");
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let (code, message) = r.error();
    assert_eq!(code, "BLOB_UPLOAD_INVALID");
    assert!(message.contains("sent nothing"), "{message}");
    assert!(took < Duration::from_secs(10));
    drop(tx);

    // What arrived is kept; the client resumes from there.
    let s = app.call(Method::GET, &loc, &[], Body::empty()).await;
    assert_eq!(s.header("range"), "0-99999");
    let r = app
        .call(
            Method::PATCH,
            &loc,
            &[("content-range", "100000-299999")],
            data[100_000..].to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let r = app
        .call(
            Method::PUT,
            &format!("{loc}?digest={digest}"),
            &[],
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.error());
}

#[tokio::test]
async fn deleting_a_repository_removes_its_upload_files() {
    let app = app_with(None, |_| {}).await;
    app.push_blob("a/b", b"layer").await;
    for _ in 0..3 {
        let loc = app.start_upload("a/b").await;
        let r = app.call(Method::PATCH, &loc, &[], vec![5u8; 1000]).await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
    }
    let kept = app.start_upload("a/other").await;
    assert_eq!(upload_files(&app).len(), 4);

    let r = app
        .call(
            Method::DELETE,
            "/api/v1/repositories/a/b",
            &[],
            Body::empty(),
        )
        .await;
    assert!(r.status.is_success(), "{} {:?}", r.status, r.error());
    let left = upload_files(&app);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(kept.ends_with(&*left[0].file_name().unwrap().to_string_lossy()));
}

#[tokio::test]
async fn a_failed_upload_start_leaves_no_file() {
    let app = app_with(None, |_| {}).await;
    // Make every new upload row fail, as a full or broken database would.
    let refuse = if crate::common::on_postgres() {
        "CREATE FUNCTION test_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'refused by the test'; END $$;
         CREATE TRIGGER test_refuse_uploads BEFORE INSERT ON uploads
         FOR EACH ROW EXECUTE FUNCTION test_refuse();"
    } else {
        "CREATE TRIGGER test_refuse_uploads BEFORE INSERT ON uploads
         BEGIN SELECT RAISE(FAIL, 'refused by the test'); END"
    };
    sqlx::raw_sql(refuse).execute(&app.db).await.unwrap();
    let r = app
        .call(Method::POST, "/v2/a/b/blobs/uploads/", &[], Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        upload_files(&app).is_empty(),
        "a failed start left {:?}",
        upload_files(&app)
    );
}
