//! The real `berth serve` is killed with SIGKILL in the middle of a garbage
//! collection sweep over thousands of unreferenced blobs. After a restart on
//! the same data directory: the tagged image (the only referenced blobs)
//! pulls whole with verified digests, the unfinished reviews are still queued,
//! the next sweep finishes the work, and fsck finds nothing wrong: no
//! referenced blob lost, no row without its file, no file without its row.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const GARBAGE: usize = 1500;

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: Child,
    base: String,
}

fn start(data: &Path, config: &Path, log: &Path) -> Server {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["serve", "--no-auth", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_ready(http: &Client, s: &Server) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{}/readyz", s.base)).send().await
            && r.status() == StatusCode::OK
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("berth did not become ready");
}

async fn push_blob(http: &Client, base: &str, repo: &str, data: Vec<u8>) -> String {
    let digest = digest_of(&data);
    let r = http
        .post(format!("{base}/v2/{repo}/blobs/uploads/?digest={digest}"))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    digest
}

fn blob_files(data: &Path) -> usize {
    let mut n = 0;
    if let Ok(prefixes) = std::fs::read_dir(data.join("blobs/sha256")) {
        for p in prefixes {
            n += std::fs::read_dir(p.unwrap().path()).unwrap().count();
        }
    }
    n
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
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("berth.yaml");
    std::fs::write(&config, "gc:\n  reviewDelay: 0s\n  sweepInterval: 1h\n").unwrap();
    let http = Client::new();
    let mut server = start(&data, &config, &dir.path().join("first.log"));
    wait_ready(&http, &server).await;
    let base = server.base.clone();

    // The image that must survive.
    let layers: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i + 1; 50_000]).collect();
    let config_blob = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let config_digest = push_blob(&http, &base, "keep/app", config_blob.clone()).await;
    let mut descriptors = Vec::new();
    for l in &layers {
        let d = push_blob(&http, &base, "keep/app", l.clone()).await;
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
                    format!("garbage {i}").into_bytes(),
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
    let mut server = start(&data, &config, &dir.path().join("second.log"));
    wait_ready(&http, &server).await;
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
    let report = berth::fsck::check(&data, false, &|_| {}).await.unwrap();
    assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);
    assert_eq!(report.blobs, 3);
}
