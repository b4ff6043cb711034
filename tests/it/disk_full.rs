//! Disk full: the real `berth serve` runs on a small tmpfs that an upload fills
//! to the last block. Then manifests are written, a garbage collection sweep
//! runs, more is written, space is freed, more is written, and the server is
//! restarted. Every write that was acknowledged (201/202) must read back
//! identical before and after the restart; writes while the disk is full must
//! get a clear error (5xx, or the free-space reserve's refusal), never a
//! silent loss; the sweep must end; `berth fsck` must find nothing wrong.
//!
//! The test mounts a tmpfs, so it needs root (CI runs as root):
//!
//! ```sh
//! cargo test --release --test it disk_full -- --nocapture
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Client, StatusCode};

use crate::common::server::{Launch, Server, berth_bin};
use crate::common::{OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256_digest as sha256};

/// Size of the tmpfs the data directory lives on.
const DISK: &str = "24m";

/// `berth serve` on `data_dir` with `config`, logging to `log`.
async fn start(data_dir: &Path, config: &Path, log: PathBuf) -> Server {
    Server::start(Launch::new(data_dir, &log).config(config))
        .await
        .0
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("create mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root (CI runs as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }

    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.dir)
            .output()
            .expect("run df");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the available bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// What the registry acknowledged: it must all read back identical.
#[derive(Default)]
struct Acknowledged {
    /// (repository, digest) -> bytes
    blobs: BTreeMap<(String, String), Bytes>,
    /// (repository, tag) -> manifest bytes
    tags: BTreeMap<(String, String), Bytes>,
}

struct Http {
    c: Client,
    base: String,
}

impl Http {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Monolithic blob upload (POST then PUT); the status of the PUT (or of
    /// the POST when it fails).
    async fn push_blob(&self, repo: &str, data: &Bytes) -> StatusCode {
        let r = self
            .c
            .post(self.url(&format!("/v2/{repo}/blobs/uploads/")))
            .send()
            .await
            .expect("POST upload");
        if r.status() != StatusCode::ACCEPTED {
            return r.status();
        }
        let location = r.headers()["location"]
            .to_str()
            .expect("location")
            .to_string();
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self
            .c
            .put(self.url(&format!("{location}{sep}digest={}", sha256(data))))
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONTENT_LENGTH, data.len())
            .body(data.clone())
            .send()
            .await
            .expect("PUT upload");
        r.status()
    }

    async fn put_manifest(&self, repo: &str, tag: &str, manifest: &Bytes) -> StatusCode {
        self.c
            .put(self.url(&format!("/v2/{repo}/manifests/{tag}")))
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .expect("PUT manifest")
            .status()
    }

    async fn get(&self, path: &str) -> (StatusCode, Bytes) {
        let r = self.c.get(self.url(path)).send().await.expect("GET");
        let status = r.status();
        (status, r.bytes().await.unwrap_or_default())
    }

    /// Pushes an image (config, one layer, manifest under `tag`); records what
    /// was acknowledged. Returns the manifest's status.
    async fn push_image(
        &self,
        ack: &mut Acknowledged,
        repo: &str,
        tag: &str,
        seed: u64,
    ) -> StatusCode {
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#
        ));
        let layer = Bytes::from(
            (0..4096u64)
                .flat_map(|i| (i.wrapping_mul(seed | 1)).to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        // Blobs no manifest references may be collected (the review delay is
        // zero): they count as kept only once the manifest is acknowledged.
        for blob in [&config, &layer] {
            let status = self.push_blob(repo, blob).await;
            if status != StatusCode::CREATED {
                assert_clear_error(status, "blob upload");
                return status;
            }
        }
        let manifest = Bytes::from(
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256(&config), "size": config.len()},
                "layers": [{"mediaType": OCI_LAYER, "digest": sha256(&layer), "size": layer.len()}],
            })
            .to_string(),
        );
        let status = self.put_manifest(repo, tag, &manifest).await;
        if status == StatusCode::CREATED {
            ack.tags
                .insert((repo.to_string(), tag.to_string()), manifest);
            for blob in [config, layer] {
                ack.blobs.insert((repo.to_string(), sha256(&blob)), blob);
            }
        } else {
            assert_clear_error(status, "manifest PUT");
        }
        status
    }

    /// Every acknowledged tag and blob reads back identical.
    async fn verify(&self, ack: &Acknowledged, when: &str) {
        for ((repo, tag), manifest) in &ack.tags {
            let (status, body) = self.get(&format!("/v2/{repo}/manifests/{tag}")).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{when}: {repo}:{tag} was acknowledged"
            );
            assert_eq!(
                &body, manifest,
                "{when}: {repo}:{tag} reads back different bytes"
            );
        }
        for ((repo, digest), data) in &ack.blobs {
            let (status, body) = self.get(&format!("/v2/{repo}/blobs/{digest}")).await;
            assert_eq!(
                status,
                StatusCode::OK,
                "{when}: blob {digest} in {repo} was acknowledged"
            );
            assert_eq!(
                &body, data,
                "{when}: blob {digest} in {repo} reads back different bytes"
            );
        }
    }
}

/// A write refused while the disk is full must say so: a server error or the
/// free-space reserve's refusal, never a success nor a client error.
fn assert_clear_error(status: StatusCode, what: &str) {
    assert!(
        status.is_server_error(),
        "{what} while the disk is full answered {status}, not a 5xx"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_full_disk() {
    let _alone = crate::common::alone().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    // DISK_FULL_LOGS=DIR keeps the server logs there.
    let logs = std::env::var_os("DISK_FULL_LOGS")
        .map(PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let disk = Tmpfs::mount(&tmp.path().join("disk"), DISK);
    let data = disk.dir.join("data");
    let config = tmp.path().join("berth.yaml");
    // Reviews due at once, so the sweep below has something to delete; no
    // periodic sweep (the test runs it); no free-space reserve, so the disk
    // really fills.
    std::fs::write(
        &config,
        "gc:\n  reviewDelay: 0s\n  sweepInterval: 24h\nstorage:\n  minFreeBytes: 0\n",
    )
    .expect("write config");
    let mut server = start(&data, &config, logs.join("berth-1.log")).await;
    let http = Http {
        c: Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client"),
        base: server.base.clone(),
    };
    let mut ack = Acknowledged::default();

    // Before: an image, and one whose tag is deleted later (for the sweep).
    assert_eq!(
        http.push_image(&mut ack, "full/app", "before", 1).await,
        StatusCode::CREATED
    );
    assert_eq!(
        http.push_image(&mut ack, "full/app", "doomed", 2).await,
        StatusCode::CREATED
    );

    // Fill the disk to its last block with one upload session that stays open.
    let r = http
        .c
        .post(http.url("/v2/full/filler/blobs/uploads/"))
        .send()
        .await
        .expect("POST filler");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let filler = r.headers()["location"]
        .to_str()
        .expect("location")
        .to_string();
    let chunk = Bytes::from(vec![7u8; 64 << 20]);
    let r = http
        .c
        .patch(http.url(&filler))
        .header(CONTENT_TYPE, "application/octet-stream")
        .body(chunk)
        .send()
        .await
        .expect("PATCH filler");
    assert_clear_error(r.status(), "an upload larger than the disk");
    let left = disk.available();
    println!("disk full: {left} bytes left after the filler upload");
    assert!(
        left < 64 << 10,
        "the filler should have filled the disk, {left} bytes left"
    );

    // While full: manifests (new tags of the existing image, new images),
    // a tag delete and a sweep, then more writes.
    let mut acknowledged_while_full = 0;
    let (status, before) = http.get("/v2/full/app/manifests/before").await;
    assert_eq!(status, StatusCode::OK);
    for i in 0..30 {
        let status = http
            .put_manifest("full/app", &format!("full-{i}"), &before)
            .await;
        if status == StatusCode::CREATED {
            acknowledged_while_full += 1;
            ack.tags
                .insert(("full/app".into(), format!("full-{i}")), before.clone());
        } else {
            assert_clear_error(status, "manifest PUT");
        }
        if http
            .push_image(&mut ack, "full/other", &format!("o{i}"), 100 + i)
            .await
            == StatusCode::CREATED
        {
            acknowledged_while_full += 1;
        }
    }
    println!("while full: {acknowledged_while_full} writes acknowledged");
    let r = http
        .c
        .delete(http.url("/v2/full/app/manifests/doomed"))
        .send()
        .await
        .expect("DELETE tag");
    if r.status() == StatusCode::ACCEPTED {
        // Its manifest and blobs are garbage now, free to be collected.
        let doomed = ack
            .tags
            .remove(&("full/app".to_string(), "doomed".to_string()))
            .expect("doomed was pushed");
        let doomed: serde_json::Value = serde_json::from_slice(&doomed).expect("manifest JSON");
        for d in [&doomed["config"]["digest"], &doomed["layers"][0]["digest"]] {
            let d = d.as_str().expect("digest").to_string();
            ack.blobs.remove(&("full/app".to_string(), d));
        }
    } else {
        assert_clear_error(r.status(), "tag delete");
    }
    let t0 = Instant::now();
    let r = http
        .c
        .post(http.url("/api/v1/gc/sweep"))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    println!(
        "sweep while full: {:?} in {:?}",
        r.as_ref().map(|r| r.status()),
        t0.elapsed()
    );
    assert!(
        r.is_ok(),
        "the sweep while the disk is full did not end in 30 s"
    );
    for i in 30..40 {
        let status = http
            .put_manifest("full/app", &format!("full-{i}"), &before)
            .await;
        if status == StatusCode::CREATED {
            ack.tags
                .insert(("full/app".into(), format!("full-{i}")), before.clone());
        } else {
            assert_clear_error(status, "manifest PUT");
        }
    }
    // Whatever got acknowledged so far reads back.
    http.verify(&ack, "while full").await;

    // Free the space: cancel the filler upload.
    let r = http
        .c
        .delete(http.url(&filler))
        .send()
        .await
        .expect("DELETE filler");
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "cancel the filler upload"
    );
    println!("freed: {} bytes available", disk.available());

    // After: every write must succeed again.
    for i in 0..10 {
        assert_eq!(
            http.push_image(&mut ack, "full/after", &format!("a{i}"), 1000 + i)
                .await,
            StatusCode::CREATED,
            "pushes must work again once space is free:\n{}",
            server.log_text()
        );
    }
    let status = http.put_manifest("full/app", "after", &before).await;
    assert_eq!(status, StatusCode::CREATED);
    ack.tags
        .insert(("full/app".into(), "after".into()), before.clone());
    let r = http
        .c
        .post(http.url("/api/v1/gc/sweep"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("a sweep with space again");
    assert_eq!(r.status(), StatusCode::OK, "sweep with space again");
    http.verify(&ack, "after freeing space").await;

    // Restart on the same data: still all there.
    server.stop();
    let server = start(&data, &config, logs.join("berth-2.log")).await;
    let http = Http {
        base: server.base.clone(),
        ..http
    };
    http.verify(&ack, "after the restart").await;
    println!(
        "verified {} tags and {} blobs after the restart",
        ack.tags.len(),
        ack.blobs.len()
    );
    drop(server);

    let mut fsck = Command::new(berth_bin());
    fsck.arg("fsck").arg("--data-dir").arg(&data);
    if let Some(url) = crate::common::postgres_for(&data).await {
        fsck.arg("--database-url").arg(url);
    }
    let out = fsck.output().expect("run berth fsck");
    assert!(
        out.status.success(),
        "fsck found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
