//! Several `berth serve` replicas on one PostgreSQL database and one data
//! directory (issue 14), every request sent to the next replica in turn, as
//! a load balancer without affinity would: a chunked upload whose requests
//! land on different replicas, two replicas racing on one upload session,
//! caches that see another replica's writes, a replica killed during
//! concurrent pushes, and three replicas sweeping at once under load.
//! These run on PostgreSQL whatever `BERTH_TEST_BACKEND` says (SQLite is one
//! process by design).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};

use crate::common::server::{Launch, Server};
use crate::common::{MIB, image_manifest, sha256_digest};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// `n` replicas of `berth serve --no-auth` on one fresh database and one
/// data directory.
struct Replicas {
    servers: Vec<Server>,
    /// Replicas still up (a killed one gets no more requests).
    up: Vec<AtomicBool>,
    next: AtomicUsize,
    http: Client,
    url: String,
    dir: tempfile::TempDir,
}

impl Replicas {
    async fn start(n: usize, config_yaml: &str) -> Arc<Replicas> {
        let dir = tempfile::tempdir().unwrap();
        let url = crate::common::postgres::fresh_database().await;
        let data = dir.path().join("data");
        let config = dir.path().join("berth.yaml");
        std::fs::write(
            &config,
            // The URL comes from the environment (as in the operator's pods).
            format!(
                "storage:\n  minFreeBytes: 0\ndatabase:\n  kind: postgres\n  maxConnections: 16\n{config_yaml}"
            ),
        )
        .unwrap();
        // Started together: the migrations run under an advisory lock.
        let starts = (0..n).map(|i| {
            let log = dir.path().join(format!("berth-{i}.log"));
            let (data, config, url) = (data.clone(), config.clone(), url.clone());
            async move {
                let launch = Launch::new(&data, &log).config(&config).database_url(&url);
                Server::start(launch).await.0
            }
        });
        let servers = futures_util::future::join_all(starts).await;
        Arc::new(Replicas {
            up: servers.iter().map(|_| AtomicBool::new(true)).collect(),
            servers,
            next: AtomicUsize::new(0),
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            url,
            dir,
        })
    }

    /// The base URL of the next replica that is up.
    fn next_base(&self) -> &str {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % self.servers.len();
            if self.up[i].load(Ordering::Relaxed) {
                return &self.servers[i].base;
            }
        }
    }

    /// `method path` on replica `i`.
    fn on(&self, i: usize, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.servers[i].base))
    }

    /// `method path` on the next replica.
    fn any(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.next_base()))
    }

    /// Pushes an image (config and layers monolithic, then the manifest),
    /// each request on the next replica; the manifest's digest, or the
    /// first failure (a push not acknowledged).
    async fn push_image(&self, repo: &str, tag: &str, blobs: &[Vec<u8>]) -> Result<String, String> {
        for blob in blobs {
            let digest = sha256_digest(blob);
            let r = self
                .any(
                    Method::POST,
                    &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                )
                .body(blob.clone())
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if r.status() != StatusCode::CREATED {
                return Err(format!("blob: {}", r.status()));
            }
        }
        let layers: Vec<&[u8]> = blobs[1..].iter().map(Vec::as_slice).collect();
        let manifest = serde_json::to_vec(&image_manifest(&blobs[0], &layers)).unwrap();
        let r = self
            .any(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", MANIFEST_TYPE)
            .body(manifest.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() != StatusCode::CREATED {
            return Err(format!("manifest: {}", r.status()));
        }
        Ok(sha256_digest(&manifest))
    }

    /// Pulls `repo:tag` from replica `i` and checks every digest.
    async fn pull_verified(&self, i: usize, repo: &str, tag: &str, want: &str) {
        let r = self
            .on(i, Method::GET, &format!("/v2/{repo}/manifests/{tag}"))
            .header("accept", MANIFEST_TYPE)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{repo}:{tag} on replica {i}");
        let body = r.bytes().await.unwrap();
        assert_eq!(sha256_digest(&body), want, "{repo}:{tag} on replica {i}");
        let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let mut descriptors = vec![m["config"].clone()];
        descriptors.extend(m["layers"].as_array().unwrap().iter().cloned());
        for d in descriptors {
            let digest = d["digest"].as_str().unwrap();
            let r = self
                .on(i, Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{digest} on replica {i}");
            assert_eq!(sha256_digest(&r.bytes().await.unwrap()), digest);
        }
    }

    async fn tags(&self, i: usize, repo: &str) -> Vec<String> {
        let r = self
            .on(i, Method::GET, &format!("/v2/{repo}/tags/list"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let v: serde_json::Value = r.json().await.unwrap();
        v["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    async fn gc_status(&self, i: usize) -> serde_json::Value {
        let r = self.on(i, Method::GET, "/api/v1/gc").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json().await.unwrap()
    }

    async fn sweep(&self, i: usize) -> serde_json::Value {
        let r = self
            .on(i, Method::POST, "/api/v1/gc/sweep")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "sweep on replica {i}");
        r.json().await.unwrap()
    }

    /// Stops every replica still up (SIGTERM) and checks the data directory
    /// and database with fsck; its problems.
    async fn stop_and_fsck(&mut self) -> Vec<berth::fsck::Problem> {
        for (i, s) in self.servers.iter_mut().enumerate() {
            if self.up[i].load(Ordering::Relaxed) {
                s.stop();
            }
        }
        let database = berth::metadata::DatabaseConfig::Postgres(
            berth::metadata::PostgresConfig::new(&self.url),
        );
        let data = self.dir.path().join("data");
        let report = berth::fsck::check_with(&data, &database, false, None, &|_| {})
            .await
            .unwrap();
        println!(
            "fsck: {} blobs, {} manifests, problems: {:?}",
            report.blobs, report.manifests, report.problems
        );
        report.problems
    }
}

/// `n` bytes no other call returns.
fn unique(n: usize) -> Vec<u8> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let seed = NEXT.fetch_add(1, Ordering::Relaxed) as u64 ^ std::process::id() as u64;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn image_blobs(layer_size: usize) -> Vec<Vec<u8>> {
    vec![unique(64), unique(layer_size), unique(layer_size)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_of_one_upload_and_one_repository_land_on_any_replica() {
    let _alone = crate::common::alone().await;
    let replicas = Replicas::start(3, "").await;
    let r = &replicas;

    // A chunked upload: POST on replica 0, each PATCH on the next replica,
    // PUT on the last.
    let data = unique(5 * MIB);
    let digest = sha256_digest(&data);
    let resp = r
        .on(0, Method::POST, "/v2/rr/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let mut location = resp.headers()["location"].to_str().unwrap().to_string();
    for (n, chunk) in data.chunks(MIB).enumerate() {
        let start = n * MIB;
        let resp = r
            .on((n + 1) % 3, Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .header(
                "content-range",
                format!("{start}-{}", start + chunk.len() - 1),
            )
            .body(chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "chunk {n}");
        location = resp.headers()["location"].to_str().unwrap().to_string();
    }
    let resp = r
        .on(0, Method::PUT, &format!("{location}?digest={digest}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    for i in 0..3 {
        let resp = r
            .on(i, Method::GET, &format!("/v2/rr/app/blobs/{digest}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(sha256_digest(&resp.bytes().await.unwrap()), digest);
    }

    // Two replicas race to append the first 4 MiB of one session: one
    // request at a time appends, so exactly one is taken and the other is
    // told the session moved on (416); the session holds 4 MiB, not 8.
    let resp = r
        .on(0, Method::POST, "/v2/rr/app/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body = unique(4 * MIB);
    let patch = |i: usize| {
        r.on(i, Method::PATCH, &location)
            .header("content-type", "application/octet-stream")
            .header("content-range", format!("0-{}", 4 * MIB - 1))
            .body(body.clone())
            .send()
    };
    let (a, b) = tokio::join!(patch(1), patch(2));
    let statuses = [a.unwrap().status(), b.unwrap().status()];
    println!("two replicas appending at once: {statuses:?}");
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::ACCEPTED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::RANGE_NOT_SATISFIABLE));
    let resp = r.on(0, Method::GET, &location).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        resp.headers()["range"].to_str().unwrap(),
        format!("0-{}", 4 * MIB - 1)
    );

    // A tag list cached by one replica follows another replica's writes.
    let mut pushed = Vec::new();
    for tag in ["a", "b", "c"] {
        let d = r
            .push_image("rr/app", tag, &image_blobs(1024))
            .await
            .unwrap();
        pushed.push((tag, d));
    }
    for i in 0..3 {
        assert_eq!(r.tags(i, "rr/app").await, ["a", "b", "c"]);
    }
    let resp = r
        .on(2, Method::DELETE, "/v2/rr/app/manifests/b")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    r.push_image("rr/app", "d", &image_blobs(1024))
        .await
        .unwrap();
    for i in 0..3 {
        assert_eq!(r.tags(i, "rr/app").await, ["a", "c", "d"], "replica {i}");
    }
    for (tag, d) in &pushed {
        if *tag != "b" {
            r.pull_verified(1, "rr/app", tag, d).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_during_pushes_loses_no_acknowledged_image() {
    let _alone = crate::common::alone().await;
    let replicas = Replicas::start(3, "").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut pushers = Vec::new();
    for p in 0..6 {
        let (r, stop) = (replicas.clone(), stop.clone());
        pushers.push(tokio::spawn(async move {
            let (mut acked, mut failed) = (Vec::new(), 0);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let tag = format!("p{p}-{n}");
                n += 1;
                match r
                    .push_image("kill/app", &tag, &image_blobs(256 << 10))
                    .await
                {
                    Ok(d) => acked.push((tag, d)),
                    Err(_) => failed += 1,
                }
            }
            (acked, failed)
        }));
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // SIGKILL replica 1; the balancer stops sending to it.
    let pid = replicas.servers[1].child.id();
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    replicas.up[1].store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failed = 0;
    for p in pushers {
        let (a, f) = p.await.unwrap();
        acked.extend(a);
        failed += f;
    }
    println!(
        "{} pushes acknowledged, {failed} failed (those in flight on the killed replica)",
        acked.len()
    );
    assert!(acked.len() >= 20, "too few pushes to mean anything");
    for (n, (tag, d)) in acked.iter().enumerate() {
        replicas
            .pull_verified([0, 2][n % 2], "kill/app", tag, d)
            .await;
    }
    let mut replicas = Arc::into_inner(replicas).expect("only the test holds the replicas");
    replicas.servers[1].child.wait().unwrap();
    // fsck finds nothing wrong but what the killed replica's requests in
    // flight left on disk, at most one per push that failed: the file of an
    // upload it was receiving (a monolithic upload has no session row), or
    // a blob file it had put in place but not yet recorded (the order that
    // keeps a row from ever naming a missing file). `fsck --repair` removes
    // both; no acknowledged data is among them.
    let problems = replicas.stop_and_fsck().await;
    assert!(
        problems.iter().all(|p| matches!(
            p,
            berth::fsck::Problem::OrphanUploadFile { .. }
                | berth::fsck::Problem::OrphanBlobFile { .. }
        )),
        "{problems:?}"
    );
    assert!(problems.len() <= failed, "{problems:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_sweeping_at_once_delete_exactly_the_garbage() {
    let _alone = crate::common::alone().await;
    let replicas = Replicas::start(3, "gc:\n  reviewDelay: 0s\n  sweepInterval: 24h\n").await;
    let r = &replicas;
    // Live images and garbage: images whose manifests are then deleted
    // (their blobs are unique to them).
    let mut live = Vec::new();
    for n in 0..10 {
        let tag = format!("live-{n}");
        let d = r
            .push_image("gc/app", &tag, &image_blobs(4096))
            .await
            .unwrap();
        live.push((tag, d));
    }
    let mut garbage_blobs = Vec::new();
    for n in 0..40 {
        let blobs = image_blobs(4096);
        let d = r
            .push_image("gc/app", &format!("junk-{n}"), &blobs)
            .await
            .unwrap();
        let resp = r
            .any(Method::DELETE, &format!("/v2/gc/app/manifests/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        garbage_blobs.extend(blobs.iter().map(|b| sha256_digest(b)));
    }
    // Deleting a manifest queues its blobs' reviews (due at once: review
    // delay 0), beside those every upload queued.
    let before = r.gc_status(1).await;
    let pending = before["pending_blob_reviews"].as_i64().unwrap();
    let deleted_before = before["blobs_deleted"].as_i64().unwrap();
    println!("blob reviews pending before the sweepers: {pending}");
    assert!(pending >= garbage_blobs.len() as i64, "{before}");

    // Load meanwhile: pulls of the live images, pushes of new ones (each
    // of their 3 blobs queues one more review).
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (r, stop, live) = (replicas.clone(), stop.clone(), live.clone());
        tokio::spawn(async move {
            let mut pushed = Vec::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let (tag, d) = &live[n % live.len()];
                r.pull_verified(n % 3, "gc/app", tag, d).await;
                let tag = format!("new-{n}");
                let d = r
                    .push_image("gc/app", &tag, &image_blobs(4096))
                    .await
                    .unwrap();
                pushed.push((tag, d));
                n += 1;
            }
            pushed
        })
    };
    let sweeps = (0..3).map(|i| r.sweep(i));
    let counts = futures_util::future::join_all(sweeps).await;
    stop.store(true, Ordering::Relaxed);
    let pushed = load.await.unwrap();
    // What the load queued meanwhile and the sweepers did not reach: one
    // more sweep, alone.
    let last = r.sweep(0).await;
    let sum = |k: &str| {
        counts.iter().map(|c| c[k].as_i64().unwrap()).sum::<i64>() + last[k].as_i64().unwrap()
    };
    println!(
        "sweepers: {}; then alone: {last}; {} images pushed meanwhile",
        counts
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        pushed.len()
    );
    assert_eq!(sum("blobs_deleted"), garbage_blobs.len() as i64);
    // Each review taken once: those pending, and one per blob pushed since.
    assert_eq!(
        sum("blob_reviews"),
        pending + 3 * pushed.len() as i64,
        "a review was processed twice, or one was lost"
    );
    let after = r.gc_status(2).await;
    assert_eq!(after["pending_blob_reviews"].as_i64(), Some(0), "{after}");
    assert_eq!(
        after["blobs_deleted"].as_i64().unwrap() - deleted_before,
        garbage_blobs.len() as i64
    );
    let gone: HashSet<&String> = garbage_blobs.iter().collect();
    for (n, d) in gone.iter().enumerate() {
        let resp = r
            .on(n % 3, Method::HEAD, &format!("/v2/gc/app/blobs/{d}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "garbage {d}");
    }
    for (n, (tag, d)) in live.iter().chain(pushed.iter()).enumerate() {
        r.pull_verified(n % 3, "gc/app", tag, d).await;
    }
    let mut replicas = Arc::into_inner(replicas).expect("only the test holds the replicas");
    let problems = replicas.stop_and_fsck().await;
    assert!(problems.is_empty(), "{problems:?}");
}
