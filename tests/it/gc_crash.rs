//! The real `berth serve` is killed with SIGKILL in the middle of a garbage
//! collection sweep over thousands of unreferenced blobs. After a restart on
//! the same data directory: the tagged image (the only referenced blobs)
//! pulls whole with verified digests, the unfinished reviews are still queued,
//! the next sweep finishes the work, and fsck finds nothing wrong: no
//! referenced blob lost, no row without its file, no file without its row.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::common::server::{Launch, Server, push_blob};
use crate::common::{OCI_MANIFEST, sha256_digest as digest_of};

const GARBAGE: usize = 1500;

/// `berth serve` on `data` with `config`, ready once `/readyz` answers.
async fn start(data: &Path, config: &Path, log: &Path) -> Server {
    let launch = Launch::new(data, log).config(config).ready_path("/readyz");
    Server::start(launch).await.0
}

/// Blob files on disk, counted without reading them: a sweep may be
/// deleting them meanwhile.
fn blob_files(data: &Path) -> usize {
    crate::common::files(&data.join("blobs/sha256")).len()
}

async fn gc_status(http: &Client, base: &str) -> Value {
    http.get(format!("{base}/api/v1/gc"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_sweep_loses_no_referenced_blob_and_the_sweep_resumes() {
    let _alone = crate::common::alone().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.yaml");
    std::fs::write(&config, "gc:\n  reviewDelay: 0s\n  sweepInterval: 1h\n").unwrap();
    let http = Client::new();
    let mut server = start(&data, &config, &dir.path().join("first.log")).await;
    let base = server.base.clone();

    // The image that must survive.
    let layers: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i + 1; 50_000]).collect();
    let config_blob = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = push_blob(&http, &base, "keep/app", &config_blob).await;
    let mut descriptors = Vec::new();
    for l in &layers {
        let d = push_blob(&http, &base, "keep/app", l).await;
        descriptors.push(json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()}));
    }
    let manifest = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_blob.len()},
        "layers": descriptors})).unwrap();
    let r = http
        .put(format!("{base}/v2/keep/app/manifests/v1"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Thousands of blobs nothing references.
    let mut pushes = tokio::task::JoinSet::new();
    for w in 0..8usize {
        let (http, base) = (http.clone(), base.clone());
        pushes.spawn(async move {
            for i in (w..GARBAGE).step_by(8) {
                push_blob(
                    &http,
                    &base,
                    "junk/blobs",
                    format!("garbage {i}").as_bytes(),
                )
                .await;
            }
        });
    }
    while let Some(r) = pushes.join_next().await {
        r.unwrap();
    }
    let before = blob_files(&data);
    assert_eq!(before, GARBAGE + 3);

    // Start a sweep and kill the server once it is well under way.
    let sweep = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move { http.post(format!("{base}/api/v1/gc/sweep")).send().await })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while blob_files(&data) > before - GARBAGE / 10 {
        assert!(Instant::now() < deadline, "the sweep made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.child.kill().unwrap(); // SIGKILL
    server.child.wait().unwrap();
    let _ = sweep.await;
    let at_kill = blob_files(&data);
    eprintln!("killed mid-sweep: {before} blob files before, {at_kill} at the kill");
    assert!(
        at_kill > 3 + GARBAGE / 10,
        "the kill came before the sweep finished ({at_kill} files left)"
    );

    // Restart: the image is whole, the work is still queued.
    let mut server = start(&data, &config, &dir.path().join("second.log")).await;
    let base = server.base.clone();
    let mut expected: Vec<(String, Vec<u8>)> = vec![(config_digest.clone(), config_blob.clone())];
    for (d, l) in descriptors.iter().zip(&layers) {
        expected.push((d["digest"].as_str().unwrap().to_string(), l.clone()));
    }
    let verify_image = || async {
        let got = http
            .get(format!("{base}/v2/keep/app/manifests/v1"))
            .header("accept", OCI_MANIFEST)
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().to_vec(), manifest);
        for (d, want) in &expected {
            let body = http
                .get(format!("{base}/v2/keep/app/blobs/{d}"))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(&body.to_vec(), want, "blob {d}");
            assert_eq!(&digest_of(&body), d);
        }
    };
    verify_image().await;
    let status = gc_status(&http, &base).await;
    eprintln!("after restart: {status}");
    assert!(
        status["due_blob_reviews"].as_i64().unwrap() > 0,
        "the unfinished reviews are still queued"
    );
    let counts: Value = http
        .post(format!("{base}/api/v1/gc/sweep"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    eprintln!("resumed sweep: {counts}");
    // The killed sweep's deletions were counted in their transactions; a
    // blob whose row went but whose file was not yet deleted at the kill is
    // finished (file deleted) without being counted twice.
    assert_eq!(
        (status["blobs_deleted"].as_i64().unwrap() + counts["blobs_deleted"].as_i64().unwrap())
            as usize,
        GARBAGE,
        "the resumed sweep deletes the rest, each blob counted once"
    );
    assert_eq!(blob_files(&data), 3, "only the image's blobs are left");
    verify_image().await;
    let status = gc_status(&http, &base).await;
    assert_eq!(status["due_blob_reviews"], 0);
    assert_eq!(
        status["blobs_deleted"].as_i64().unwrap() as usize,
        GARBAGE,
        "the totals count the deletions of the killed sweep too"
    );
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let report = crate::common::fsck(&data).await.unwrap();
    assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);
    assert_eq!(report.blobs, 3);
}
