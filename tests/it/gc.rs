//! Online garbage collection, in process: what a sweep deletes and keeps, and
//! a stress test where clients push, retag and delete while sweeps run with a
//! zero review delay. Afterwards every tagged image pulls with verified
//! digests, fsck finds nothing wrong, and the blob store holds exactly the
//! live blobs.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::Value;

use berth::oci::Digest;

use crate::common::app::{App, As};
use crate::common::{OCI_MANIFEST, blob_files, image_manifest};

/// No authentication, a zero review delay; sweeps are driven by the tests
/// (and by a stress task), not the timer.
async fn app(dir: &Path) -> App {
    App::setup()
        .data_dir(&dir.join("data"))
        .config(|c| {
            c.gc.review_delay = "0s".into();
            c.gc.sweep_interval = "1h".into();
        })
        .open()
        .await
}

/// The calls of this area.
trait Gc {
    /// A request without a body: its status and body.
    async fn fetch(&self, method: Method, uri: &str) -> (StatusCode, Vec<u8>);
    async fn push_image(&self, repo: &str, tag: &str, layers: &[Vec<u8>])
    -> Result<Digest, String>;
    async fn sweep(&self) -> Value;
    async fn pull_verified(&self, repo: &str, tag: &str) -> Vec<String>;
}

impl Gc for App {
    async fn fetch(&self, method: Method, uri: &str) -> (StatusCode, Vec<u8>) {
        let r = self.call(method, uri, &[], Body::empty()).await;
        (r.status, r.body)
    }

    /// Pushes config + layers + a manifest tagged `tag`. A blob swept between
    /// its upload and the manifest (zero review delay) fails the manifest with
    /// MANIFEST_BLOB_UNKNOWN, as it would for a client: the caller retries.
    async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: &[Vec<u8>],
    ) -> Result<Digest, String> {
        let config = format!("{{\"tag\":\"{tag}\",\"n\":{}}}", layers.len()).into_bytes();
        self.try_push_blob(As::Anonymous, repo, &config)
            .await
            .map_err(|r| r.status.to_string())?;
        for layer in layers {
            self.try_push_blob(As::Anonymous, repo, layer)
                .await
                .map_err(|r| r.status.to_string())?;
        }
        let layers: Vec<&[u8]> = layers.iter().map(Vec::as_slice).collect();
        let manifest = serde_json::to_vec(&image_manifest(&config, &layers)).unwrap();
        let r = self
            .call(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{tag}"),
                &[("content-type", OCI_MANIFEST)],
                manifest.clone(),
            )
            .await;
        if r.status != StatusCode::CREATED {
            return Err(format!("{}: {}", r.status, r.text()));
        }
        Ok(Digest::sha256_of(&manifest))
    }

    async fn sweep(&self) -> Value {
        let (s, body) = self.fetch(Method::POST, "/api/v1/gc/sweep").await;
        assert_eq!(s, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Pulls `repo:tag` whole and checks every digest; returns the blob digests.
    async fn pull_verified(&self, repo: &str, tag: &str) -> Vec<String> {
        let (s, manifest) = self
            .fetch(Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
            .await;
        assert_eq!(s, StatusCode::OK, "{repo}:{tag}");
        let m: Value = serde_json::from_slice(&manifest).unwrap();
        let mut digests = vec![m["config"]["digest"].as_str().unwrap().to_string()];
        for l in m["layers"].as_array().unwrap() {
            digests.push(l["digest"].as_str().unwrap().to_string());
        }
        for d in &digests {
            let (s, bytes) = self
                .fetch(Method::GET, &format!("/v2/{repo}/blobs/{d}"))
                .await;
            assert_eq!(s, StatusCode::OK, "{repo}:{tag} blob {d}");
            assert_eq!(
                &Digest::sha256_of(&bytes).to_string(),
                d,
                "{repo}:{tag} blob {d} content"
            );
        }
        digests
    }
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn a_sweep_deletes_what_is_dangling_and_keeps_what_is_tagged() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let shared = bytes(1, 4096);
    let only_old = bytes(2, 8192);
    let only_new = bytes(3, 2048);
    let old = app
        .push_image("g/app", "old", &[shared.clone(), only_old.clone()])
        .await
        .unwrap();
    app.push_image("g/app", "new", &[shared.clone(), only_new.clone()])
        .await
        .unwrap();
    // An untagged manifest listed by nothing, and a stray blob.
    app.push_blob("g/app", &bytes(4, 100)).await;
    let (s, _) = app.fetch(Method::DELETE, "/v2/g/app/manifests/old").await;
    assert_eq!(s, StatusCode::ACCEPTED, "tag delete");
    let counts = app.sweep().await;
    assert_eq!(counts["manifests_deleted"], 1, "{counts}");
    // old's config, its own layer and the stray blob.
    assert_eq!(counts["blobs_deleted"], 3, "{counts}");
    let (s, _) = app
        .fetch(Method::GET, &format!("/v2/g/app/manifests/{old}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the untagged manifest is gone");
    let gone = Digest::sha256_of(&only_old).to_string();
    let (s, _) = app
        .fetch(Method::HEAD, &format!("/v2/g/app/blobs/{gone}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        !blob_files(&app.data).iter().any(|(d, _)| *d == gone),
        "its file is deleted"
    );
    let live = app.pull_verified("g/app", "new").await;
    let files: Vec<String> = blob_files(&app.data).into_iter().map(|(d, _)| d).collect();
    let mut want = live.clone();
    want.sort();
    assert_eq!(files, want, "exactly the live blobs are on disk");
    let (s, status) = app.fetch(Method::GET, "/api/v1/gc").await;
    assert_eq!(s, StatusCode::OK);
    let status: Value = serde_json::from_slice(&status).unwrap();
    assert_eq!(status["blobs_deleted"], 3);
    assert_eq!(status["due_blob_reviews"], 0);
    assert!(status["last_sweep_at_ms"].as_i64().unwrap() > 0);
    // A second sweep finds nothing more.
    let again = app.sweep().await;
    assert_eq!(
        (
            again["manifests_deleted"].as_i64(),
            again["blobs_deleted"].as_i64()
        ),
        (Some(0), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_and_deletes_racing_sweeps_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = app(dir.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let sweeper = {
        let (app, stop) = (app.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut sweeps, mut deleted) = (0u32, 0i64);
            while !stop.load(Ordering::Relaxed) {
                let c = app.sweep().await;
                sweeps += 1;
                deleted +=
                    c["manifests_deleted"].as_i64().unwrap() + c["blobs_deleted"].as_i64().unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            (sweeps, deleted)
        })
    };
    // A small pool of layers shared between images, so blobs are shared,
    // unreferenced and re-referenced all the time.
    let pool: Vec<Vec<u8>> = (0..4)
        .map(|i| bytes(100 + i, 3000 + 500 * i as usize))
        .collect();
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let (app, pool) = (app.clone(), pool.clone());
        clients.push(tokio::spawn(async move {
            let repo = format!("stress/r{}", c % 2);
            let mut retried = 0u32;
            for i in 0..30u64 {
                let tag = format!("c{c}-t{}", i % 4);
                let layers = vec![
                    pool[((c + i) % 4) as usize].clone(),
                    bytes(c * 1000 + i, 1500),
                ];
                let mut pushed = None;
                for _ in 0..10 {
                    match app.push_image(&repo, &tag, &layers).await {
                        Ok(d) => {
                            pushed = Some(d);
                            break;
                        }
                        Err(e) if e.contains("BLOB_UNKNOWN") || e.contains("404") => retried += 1,
                        Err(e) => panic!("push {repo}:{tag}: {e}"),
                    }
                }
                let digest = pushed.expect("a push succeeds within 10 tries");
                match i % 5 {
                    // Delete the tag just pushed.
                    1 => {
                        app.fetch(Method::DELETE, &format!("/v2/{repo}/manifests/{tag}"))
                            .await;
                    }
                    // Delete the manifest by digest (and every tag on it).
                    3 => {
                        app.fetch(Method::DELETE, &format!("/v2/{repo}/manifests/{digest}"))
                            .await;
                    }
                    _ => {}
                }
            }
            retried
        }));
    }
    let mut retried = 0;
    for c in clients {
        retried += c.await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (sweeps, deleted) = sweeper.await.unwrap();
    app.sweep().await;
    app.sweep().await;
    eprintln!(
        "stress: {sweeps} sweeps deleted {deleted} manifests and blobs while the clients pushed; \
         {retried} pushes retried after a swept blob"
    );
    assert!(
        sweeps >= 2 && deleted > 0,
        "sweeps ran and deleted during the pushes"
    );

    // Every tag pulls completely with verified digests.
    let mut live = HashSet::new();
    let mut tags = 0;
    for repo in ["stress/r0", "stress/r1"] {
        let (s, body) = app
            .fetch(Method::GET, &format!("/v2/{repo}/tags/list"))
            .await;
        assert_eq!(s, StatusCode::OK);
        let list: Value = serde_json::from_slice(&body).unwrap();
        for tag in list["tags"].as_array().cloned().unwrap_or_default() {
            tags += 1;
            live.extend(app.pull_verified(repo, tag.as_str().unwrap()).await);
        }
    }
    assert!(tags > 0, "some tags survive");
    // The store holds exactly the live blobs: every byte on disk is referenced.
    let files = blob_files(&app.data);
    let on_disk: HashSet<String> = files.iter().map(|(d, _)| d.clone()).collect();
    assert_eq!(on_disk, live, "blob files == blobs of tagged images");
    let disk_bytes: u64 = files.iter().map(|(_, s)| s).sum();
    eprintln!(
        "stress: {tags} tags, {} live blobs, {disk_bytes} bytes on disk",
        live.len()
    );
    let report = crate::common::fsck(&app.data).await.unwrap();
    assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);
    assert_eq!(report.blob_bytes, disk_bytes);
    assert_eq!(report.unreferenced_blobs, 0);
}
