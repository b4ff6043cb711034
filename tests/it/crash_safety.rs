//! Crash safety: the real `berth serve` is killed with SIGKILL in the middle of
//! chunked uploads, upload finalisations and manifest puts, then restarted on
//! the same data directory. Every image and blob committed before the kill (a
//! success response was received) must still pull with verified digests, and
//! no partial blob may be visible, neither over HTTP nor in the blob area on
//! disk. Several kill rounds run against one data directory.
//!
//! ```sh
//! cargo test --release --test it crash_safety -- --nocapture
//! ```
//!
//! "Committed" means the client saw the success status (201) before the kill.
//! An operation that got no response is "interrupted"; if the server may have
//! received all of its bytes it may or may not have landed, and if it landed it
//! must be whole. If the client had not even handed over all the bytes of the
//! request naming the digest, the blob cannot be complete and must be absent.
//!
//! After each restart the test also checks every blob file on disk hashes to
//! its name, that interrupted upload sessions either resume to a verified blob
//! or answer 404 BLOB_UPLOAD_UNKNOWN (then a fresh upload must work), and that
//! a new push and pull works. Set `CRASH_SAFETY_LOG_DIR` to keep the server
//! logs.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};
use reqwest::{Client, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::common::server::{Launch, Server};
use crate::common::{MIB, OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, sha256_digest};
const KIB: usize = 1 << 10;
/// Size of each piece a streamed request body is handed to the client in.
const STREAM_PIECE: usize = 64 * KIB;
/// Pause between pieces of a "slow" body: 64 KiB / 6 ms, about 10 MiB/s, so
/// the slow requests below take 0.8-1.9 s, longer than the longest round.
const SLOW: Duration = Duration::from_millis(6);
const FAST: Duration = Duration::ZERO;

const OCTETS: &str = "application/octet-stream";

/// When the kill lands after the start of each round's concurrent phase.
const KILL_AFTER_MS: [u64; 3] = [350, 600, 800];

// ---------------------------------------------------------------- utilities

/// splitmix64: fast, seedable, good enough for random blob contents.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn size(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Bytes {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        Bytes::from(v)
    }
}

/// How much of a streamed request body has been handed to the HTTP client.
#[derive(Default)]
struct Progress {
    /// Bytes handed over so far (counted when a piece is produced, so an upper
    /// bound on what the server can have received).
    sent: AtomicU64,
    /// The last piece has been handed over.
    all: AtomicBool,
}

impl Progress {
    fn complete() -> Arc<Progress> {
        let p = Progress::default();
        p.all.store(true, SeqCst);
        Arc::new(p)
    }
}

/// A request body streamed in [`STREAM_PIECE`] pieces with `delay` between
/// them, recording its progress.
fn tracked_body(data: Bytes, delay: Duration, progress: Arc<Progress>) -> reqwest::Body {
    if data.is_empty() {
        progress.all.store(true, SeqCst);
        return reqwest::Body::from(Bytes::new());
    }
    let stream = futures_util::stream::unfold(
        (data, 0usize, progress),
        move |(data, offset, progress)| async move {
            if offset >= data.len() {
                return None;
            }
            if offset > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let end = (offset + STREAM_PIECE).min(data.len());
            progress.sent.store(end as u64, SeqCst);
            if end == data.len() {
                progress.all.store(true, SeqCst);
            }
            let piece = data.slice(offset..end);
            Some((Ok::<_, std::io::Error>(piece), (data, end, progress)))
        },
    );
    reqwest::Body::wrap_stream(stream)
}

// ------------------------------------------------------------------- server

/// Starts `berth serve` on `data_dir` (log `berth-<n>.log` in `log_dir`) and
/// waits until `GET /v2/` answers 200; returns the server and the time that
/// took.
async fn start(data_dir: &Path, log_dir: &Path, n: usize) -> (Server, Duration) {
    let log = log_dir.join(format!("berth-{n}.log"));
    Server::start(Launch::new(data_dir, &log)).await
}

// --------------------------------------------------------------- HTTP layer

#[derive(Clone)]
struct Http {
    c: Client,
    base: String,
}

impl Http {
    fn new(base: &str) -> Http {
        Http {
            c: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("build HTTP client"),
            base: base.to_string(),
        }
    }

    /// An absolute URL for a path (or a `Location` value, which berth sends as
    /// a path).
    fn url(&self, path: &str) -> String {
        if path.starts_with("http://") {
            path.to_string()
        } else {
            format!("{}{}", self.base, path)
        }
    }
}

/// Keeps only the path (and query) of a `Location`, so that it can be used
/// against the restarted server on another port.
fn location_path(value: &str) -> String {
    match value.strip_prefix("http://") {
        Some(rest) => rest
            .find('/')
            .map(|i| rest[i..].to_string())
            .unwrap_or_default(),
        None => value.to_string(),
    }
}

#[derive(Debug)]
enum OpErr {
    /// No response: the server died (or was gone) during the request.
    Transport(String),
    /// A response that is not what the protocol promises.
    Status(String),
}

fn transport(what: String) -> impl FnOnce(reqwest::Error) -> OpErr {
    move |e| OpErr::Transport(format!("{what}: {e:?}"))
}

async fn expect_status(
    resp: reqwest::Response,
    want: StatusCode,
    what: &str,
) -> Result<reqwest::Response, OpErr> {
    if resp.status() == want {
        return Ok(resp);
    }
    let status = resp.status();
    let headers = format!("{:?}", resp.headers());
    let body = resp.text().await.unwrap_or_default();
    Err(OpErr::Status(format!(
        "{what}: expected {want}, got {status} headers={headers} body={body}"
    )))
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

// ------------------------------------------------------------------ records

#[derive(Clone, Debug)]
struct BlobRec {
    repo: String,
    digest: String,
    size: u64,
}

#[derive(Clone, Debug)]
struct ImageRec {
    repo: String,
    tag: String,
    digest: String,
    manifest: Bytes,
    blobs: Vec<BlobRec>,
}

/// One blob upload, with enough state to judge it after a crash and resume it.
struct UploadOp {
    kind: &'static str,
    repo: String,
    digest: String,
    data: Bytes,
    /// The session's `Location` path, once a session exists.
    location: Option<String>,
    /// Bytes the server acknowledged (202 with its Range).
    acked: u64,
    /// Offset at which the request in flight started.
    inflight_start: u64,
    inflight: Arc<Progress>,
    /// A request naming the digest (finalising PUT or monolithic POST) started.
    digest_sent: bool,
    /// How the request in flight at the kill failed.
    cut: Option<String>,
}

impl UploadOp {
    fn new(kind: &'static str, repo: &str, data: Bytes) -> UploadOp {
        UploadOp {
            kind,
            repo: repo.to_string(),
            digest: sha256_digest(&data),
            data,
            location: None,
            acked: 0,
            inflight_start: 0,
            inflight: Progress::complete(),
            digest_sent: false,
            cut: None,
        }
    }

    fn len(&self) -> u64 {
        self.data.len() as u64
    }

    /// Whether the server may have been given the complete blob along with its
    /// digest; if not, the blob must not be visible after the crash.
    fn may_have_landed(&self) -> bool {
        self.digest_sent && self.inflight.all.load(SeqCst)
    }

    /// Upper bound on the bytes the server can hold for this session.
    fn max_sent(&self) -> u64 {
        self.inflight_start + self.inflight.sent.load(SeqCst)
    }

    fn begin(&mut self) -> Arc<Progress> {
        self.inflight_start = self.acked;
        self.inflight = Arc::new(Progress::default());
        self.inflight.clone()
    }

    fn settle(&mut self) {
        self.inflight_start = self.acked;
        self.inflight = Progress::complete();
    }

    fn record(&self) -> BlobRec {
        BlobRec {
            repo: self.repo.clone(),
            digest: self.digest.clone(),
            size: self.len(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "{} upload of {} ({} bytes) in {} [session {:?}, acked {}, max sent {}, digest sent {}, cut by {:?}]",
            self.kind,
            self.digest,
            self.len(),
            self.repo,
            self.location,
            self.acked,
            self.max_sent(),
            self.digest_sent,
            self.cut
        )
    }

    /// `POST /v2/<name>/blobs/uploads/` → 202 + Location.
    async fn open(&mut self, h: &Http) -> Result<(), OpErr> {
        let url = h.url(&format!("/v2/{}/blobs/uploads/", self.repo));
        let what = format!("POST {url}");
        let resp =
            h.c.post(&url)
                .header(CONTENT_LENGTH, 0)
                .send()
                .await
                .map_err(transport(what.clone()))?;
        let resp = expect_status(resp, StatusCode::ACCEPTED, &what).await?;
        let loc = header(&resp, "location")
            .ok_or_else(|| OpErr::Status(format!("{what}: 202 without Location")))?;
        self.location = Some(location_path(&loc));
        Ok(())
    }

    /// `PATCH <location>` with the next `len` bytes → 202, Range 0-<end>.
    async fn patch(&mut self, h: &Http, len: usize, delay: Duration) -> Result<(), OpErr> {
        let loc = self.location.clone().expect("open the session first");
        let url = h.url(&loc);
        let start = self.acked as usize;
        let end = start + len;
        let what = format!("PATCH {url} bytes {start}-{}", end - 1);
        let progress = self.begin();
        let resp =
            h.c.patch(&url)
                .header(CONTENT_TYPE, OCTETS)
                .header(CONTENT_RANGE, format!("{start}-{}", end - 1))
                .header(CONTENT_LENGTH, len)
                .body(tracked_body(self.data.slice(start..end), delay, progress))
                .send()
                .await
                .map_err(transport(what.clone()))?;
        let resp = expect_status(resp, StatusCode::ACCEPTED, &what).await?;
        let range = header(&resp, "range");
        if range.as_deref() != Some(format!("0-{}", end - 1).as_str()) {
            return Err(OpErr::Status(format!(
                "{what}: 202 with Range {range:?}, expected 0-{}",
                end - 1
            )));
        }
        if let Some(loc) = header(&resp, "location") {
            self.location = Some(location_path(&loc));
        }
        self.acked = end as u64;
        self.settle();
        Ok(())
    }

    /// `PUT <location>?digest=<d>` carrying whatever was not sent yet → 201.
    async fn finish(&mut self, h: &Http, delay: Duration) -> Result<(), OpErr> {
        let loc = self.location.clone().expect("open the session first");
        let sep = if loc.contains('?') { '&' } else { '?' };
        let url = h.url(&format!("{loc}{sep}digest={}", self.digest));
        let start = self.acked as usize;
        let rest = self.data.slice(start..);
        let what = format!("PUT {url} with {} bytes", rest.len());
        let progress = self.begin();
        self.digest_sent = true;
        let mut req = h.c.put(&url).header(CONTENT_LENGTH, rest.len());
        if !rest.is_empty() {
            req = req
                .header(CONTENT_TYPE, OCTETS)
                .header(CONTENT_RANGE, format!("{start}-{}", self.data.len() - 1));
        }
        let resp = req
            .body(tracked_body(rest, delay, progress))
            .send()
            .await
            .map_err(transport(what.clone()))?;
        let resp = expect_status(resp, StatusCode::CREATED, &what).await?;
        self.check_created(&resp, &what)?;
        self.acked = self.len();
        self.settle();
        Ok(())
    }

    /// `POST /v2/<name>/blobs/uploads/?digest=<d>` with the whole blob → 201.
    async fn monolithic(&mut self, h: &Http, delay: Duration) -> Result<(), OpErr> {
        let url = h.url(&format!(
            "/v2/{}/blobs/uploads/?digest={}",
            self.repo, self.digest
        ));
        let what = format!("POST {url} with {} bytes", self.data.len());
        let progress = self.begin();
        self.digest_sent = true;
        let resp =
            h.c.post(&url)
                .header(CONTENT_TYPE, OCTETS)
                .header(CONTENT_LENGTH, self.data.len())
                .body(tracked_body(self.data.clone(), delay, progress))
                .send()
                .await
                .map_err(transport(what.clone()))?;
        let resp = expect_status(resp, StatusCode::CREATED, &what).await?;
        self.check_created(&resp, &what)?;
        self.acked = self.len();
        self.settle();
        Ok(())
    }

    fn check_created(&self, resp: &reqwest::Response, what: &str) -> Result<(), OpErr> {
        let got = header(resp, "docker-content-digest");
        if got.as_deref() != Some(self.digest.as_str()) {
            return Err(OpErr::Status(format!(
                "{what}: 201 with Docker-Content-Digest {got:?}, expected {}",
                self.digest
            )));
        }
        Ok(())
    }
}

/// A manifest PUT that got no response.
struct ManifestAttempt {
    image: ImageRec,
}

/// What the concurrent phase produced, filled in by every worker.
#[derive(Default)]
struct Records {
    blobs: Vec<BlobRec>,
    images: Vec<ImageRec>,
    uploads: Vec<UploadOp>,
    manifests: Vec<ManifestAttempt>,
    unexpected: Vec<String>,
    /// Workers that have got going (slow request under way, or something
    /// committed); the kill waits for all of them.
    armed: usize,
}

type Shared = Arc<Mutex<Records>>;

fn arm(rec: &Shared) {
    rec.lock().unwrap().armed += 1;
}

/// Files the outcome of one upload; true if it was committed.
fn file_upload(rec: &Shared, op: UploadOp, outcome: Result<(), OpErr>) -> Option<BlobRec> {
    let mut rec = rec.lock().unwrap();
    match outcome {
        Ok(()) => {
            let b = op.record();
            rec.blobs.push(b.clone());
            Some(b)
        }
        Err(OpErr::Transport(e)) => {
            let mut op = op;
            op.cut = Some(e);
            rec.uploads.push(op);
            None
        }
        Err(OpErr::Status(s)) => {
            rec.unexpected.push(s);
            None
        }
    }
}

async fn put_manifest(h: &Http, image: &ImageRec, by_digest: bool) -> Result<(), OpErr> {
    let reference = if by_digest { &image.digest } else { &image.tag };
    let url = h.url(&format!("/v2/{}/manifests/{reference}", image.repo));
    let what = format!("PUT {url}");
    let resp =
        h.c.put(&url)
            .header(CONTENT_TYPE, OCI_MANIFEST)
            .body(image.manifest.clone())
            .send()
            .await
            .map_err(transport(what.clone()))?;
    let resp = expect_status(resp, StatusCode::CREATED, &what).await?;
    let got = header(&resp, "docker-content-digest");
    if got.as_deref() != Some(image.digest.as_str()) {
        return Err(OpErr::Status(format!(
            "{what}: 201 with Docker-Content-Digest {got:?}, expected {}",
            image.digest
        )));
    }
    Ok(())
}

fn file_manifest(rec: &Shared, image: ImageRec, outcome: Result<(), OpErr>) -> bool {
    let mut rec = rec.lock().unwrap();
    match outcome {
        Ok(()) => {
            rec.images.push(image);
            true
        }
        Err(OpErr::Transport(_)) => {
            rec.manifests.push(ManifestAttempt { image });
            false
        }
        Err(OpErr::Status(s)) => {
            rec.unexpected.push(s);
            false
        }
    }
}

fn image_manifest(repo: &str, tag: &str, config: &BlobRec, layers: &[BlobRec]) -> ImageRec {
    let desc = |media_type: &str, b: &BlobRec| serde_json::json!({ "mediaType": media_type, "digest": b.digest, "size": b.size });
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": desc(OCI_CONFIG, config),
        "layers": layers.iter().map(|l| desc(OCI_LAYER, l)).collect::<Vec<_>>(),
        "annotations": { "org.example.berth.test": format!("{repo}:{tag}") },
    });
    let manifest = Bytes::from(serde_json::to_vec(&body).unwrap());
    let mut blobs = vec![config.clone()];
    blobs.extend_from_slice(layers);
    ImageRec {
        repo: repo.to_string(),
        tag: tag.to_string(),
        digest: sha256_digest(&manifest),
        manifest,
        blobs,
    }
}

fn config_blob(note: &str) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [] },
            "config": { "Labels": { "berth.test": note } },
        }))
        .unwrap(),
    )
}

// ------------------------------------------------------- phase 1: clean push

/// Pushes one complete image; any failure here is a test failure.
async fn push_image(h: &Http, rng: &mut Rng, repo: &str, tag: &str, layers: usize) -> ImageRec {
    let mut config = UploadOp::new("config", repo, config_blob(&format!("{repo}:{tag}")));
    config.monolithic(h, FAST).await.expect("push config");
    let mut layer_recs = Vec::new();
    for i in 0..layers {
        let size = rng.size(MIB, 4 * MIB);
        let mut op = UploadOp::new("layer", repo, rng.bytes(size));
        op.open(h).await.expect("open upload");
        // Whole MiB chunks by PATCH; the last (partial) chunk rides on the PUT
        // for every other layer.
        let mut left = size;
        while left > MIB || (left > 0 && i % 2 == 0) {
            let n = left.min(MIB);
            op.patch(h, n, FAST).await.expect("PATCH chunk");
            left -= n;
        }
        op.finish(h, FAST).await.expect("PUT upload");
        layer_recs.push(op.record());
    }
    let image = image_manifest(repo, tag, &config.record(), &layer_recs);
    put_manifest(h, &image, false).await.expect("PUT manifest");
    image
}

// --------------------------------------------------- phase 2: chaos workers

/// A large chunked upload whose second PATCH streams slowly: mid-write at the
/// kill.
async fn slow_patch_worker(h: Http, rec: Shared, repo: String, mut rng: Rng) {
    let size = rng.size(12 * MIB, 20 * MIB);
    let mut op = UploadOp::new("slow-patch", &repo, rng.bytes(size));
    let outcome = async {
        op.open(&h).await?;
        op.patch(&h, MIB, FAST).await?;
        arm(&rec);
        op.patch(&h, size - MIB, SLOW).await?;
        op.finish(&h, FAST).await
    }
    .await;
    file_upload(&rec, op, outcome);
}

/// An upload whose finalising PUT carries the last several MiB slowly: the kill
/// lands mid-PUT.
async fn slow_put_worker(h: Http, rec: Shared, repo: String, mut rng: Rng) {
    let size = rng.size(10 * MIB, 16 * MIB);
    let mut op = UploadOp::new("slow-put", &repo, rng.bytes(size));
    let outcome = async {
        op.open(&h).await?;
        op.patch(&h, 2 * MIB, FAST).await?;
        arm(&rec);
        op.finish(&h, SLOW).await
    }
    .await;
    file_upload(&rec, op, outcome);
}

/// A monolithic upload (`POST ?digest=` with the whole blob) streaming slowly:
/// the kill lands mid-body of a request that names the digest.
async fn slow_monolithic_worker(h: Http, rec: Shared, repo: String, mut rng: Rng) {
    let size = rng.size(10 * MIB, 16 * MIB);
    let mut op = UploadOp::new("slow-monolithic", &repo, rng.bytes(size));
    arm(&rec);
    let outcome = op.monolithic(&h, SLOW).await;
    file_upload(&rec, op, outcome);
}

/// Back-to-back uploads of 64 KiB-3 MiB blobs in the three styles, until one
/// fails: some commit just before the kill, one is cut somewhere in the middle
/// (often in the finalising PUT's verify/fsync/rename).
async fn rapid_upload_worker(h: Http, rec: Shared, repo: String, mut rng: Rng) {
    for i in 0.. {
        let size = rng.size(64 * KIB, 3 * MIB);
        let mut op = UploadOp::new("rapid", &repo, rng.bytes(size));
        let outcome = match i % 3 {
            0 => {
                async {
                    op.open(&h).await?;
                    op.patch(&h, size / 2, FAST).await?;
                    op.patch(&h, size - size / 2, FAST).await?;
                    op.finish(&h, FAST).await
                }
                .await
            }
            1 => op.monolithic(&h, FAST).await,
            _ => {
                async {
                    op.open(&h).await?;
                    op.finish(&h, FAST).await
                }
                .await
            }
        };
        if file_upload(&rec, op, outcome).is_none() {
            return;
        }
        if i == 0 {
            arm(&rec);
        }
    }
}

/// New tags on already committed images, in a loop.
async fn retag_worker(h: Http, rec: Shared, images: Vec<ImageRec>, round: usize) {
    for i in 0.. {
        let mut image = images[i % images.len()].clone();
        image.tag = format!("r{round}-retag-{i}");
        let outcome = put_manifest(&h, &image, false).await;
        if !file_manifest(&rec, image, outcome) {
            return;
        }
        if i == 0 {
            arm(&rec);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Whole new images in a loop: config (monolithic), layer (chunked), manifest.
async fn new_image_worker(
    h: Http,
    rec: Shared,
    repo: String,
    mut rng: Rng,
    round: usize,
    w: usize,
) {
    for i in 0.. {
        let tag = format!("r{round}-new-{w}-{i}");
        let mut config = UploadOp::new("new-config", &repo, config_blob(&format!("{repo}:{tag}")));
        let outcome = config.monolithic(&h, FAST).await;
        let Some(config) = file_upload(&rec, config, outcome) else {
            return;
        };
        if i == 0 {
            arm(&rec);
        }
        let size = rng.size(256 * KIB, 2 * MIB);
        let mut layer = UploadOp::new("new-layer", &repo, rng.bytes(size));
        let outcome = async {
            layer.open(&h).await?;
            layer.patch(&h, size / 2, FAST).await?;
            layer.finish(&h, FAST).await
        }
        .await;
        let Some(layer) = file_upload(&rec, layer, outcome) else {
            return;
        };
        let image = image_manifest(&repo, &tag, &config, &[layer]);
        let outcome = put_manifest(&h, &image, false).await;
        if !file_manifest(&rec, image, outcome) {
            return;
        }
    }
}

// ------------------------------------------------------ phase 3: verification

/// Everything known to be committed, across rounds.
#[derive(Default)]
struct Committed {
    /// (repo, digest) → size.
    blobs: BTreeMap<(String, String), u64>,
    images: Vec<ImageRec>,
}

impl Committed {
    fn add_blob(&mut self, b: &BlobRec) {
        self.blobs
            .insert((b.repo.clone(), b.digest.clone()), b.size);
    }

    fn add_image(&mut self, image: &ImageRec) {
        for b in &image.blobs {
            self.add_blob(b);
        }
        self.images.push(image.clone());
    }
}

/// HEAD and GET a blob and check its length and digest.
async fn verify_blob(h: &Http, repo: &str, digest: &str, size: u64) -> Result<(), String> {
    let url = h.url(&format!("/v2/{repo}/blobs/{digest}"));
    let head =
        h.c.head(&url)
            .send()
            .await
            .map_err(|e| format!("HEAD {url}: {e:?}"))?;
    let head_length = header(&head, "content-length");
    if head.status() != StatusCode::OK || head_length != Some(size.to_string()) {
        return Err(format!(
            "HEAD {url}: {} with Content-Length {head_length:?}, expected 200 and {size}",
            head.status()
        ));
    }
    let resp =
        h.c.get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e:?}"))?;
    let status = resp.status();
    if status != StatusCode::OK {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("GET {url}: expected 200, got {status}: {body}"));
    }
    let length = header(&resp, "content-length");
    let header_digest = header(&resp, "docker-content-digest");
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: body: {e:?}"))?;
    let actual = sha256_digest(&body);
    if length != Some(size.to_string())
        || body.len() as u64 != size
        || actual != digest
        || header_digest.as_deref() != Some(digest)
    {
        return Err(format!(
            "GET {url}: Content-Length {length:?}, {} bytes hashing to {actual}, \
             Docker-Content-Digest {header_digest:?}; expected {size} bytes of {digest}",
            body.len()
        ));
    }
    Ok(())
}

/// GET a manifest by tag and by digest and check it is exactly what was put.
async fn verify_image(h: &Http, image: &ImageRec) -> Result<(), String> {
    for reference in [&image.tag, &image.digest] {
        let url = h.url(&format!("/v2/{}/manifests/{reference}", image.repo));
        let resp =
            h.c.get(&url)
                .header(ACCEPT, OCI_MANIFEST)
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e:?}"))?;
        let status = resp.status();
        if status != StatusCode::OK {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("GET {url}: expected 200, got {status}: {body}"));
        }
        let header_digest = header(&resp, "docker-content-digest");
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("GET {url}: body: {e:?}"))?;
        let actual = sha256_digest(&body);
        if actual != image.digest
            || body != image.manifest
            || header_digest.as_deref() != Some(image.digest.as_str())
        {
            return Err(format!(
                "GET {url}: body hashes to {actual} (Docker-Content-Digest {header_digest:?}), \
                 expected {}",
                image.digest
            ));
        }
    }
    Ok(())
}

async fn tags_of(h: &Http, repo: &str) -> Result<BTreeSet<String>, String> {
    let url = h.url(&format!("/v2/{repo}/tags/list"));
    let resp =
        h.c.get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e:?}"))?;
    let status = resp.status();
    let body = resp
        .bytes()
        .await
        .map_err(|e| format!("GET {url}: {e:?}"))?;
    if status != StatusCode::OK {
        return Err(format!(
            "GET {url}: expected 200, got {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: bad JSON: {e}"))?;
    Ok(v["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

/// An error response's first OCI error code.
fn error_code(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Walks `<data>/blobs`: every file must be `sha256/<2 hex>/<64 hex>` and hash
/// to its name. Returns the number of blob files.
fn verify_blob_area(data_dir: &Path, problems: &mut Vec<String>) -> usize {
    let mut files = 0;
    let root = data_dir.join("blobs");
    for alg in std::fs::read_dir(&root).expect("read blobs/") {
        let alg = alg.unwrap();
        if alg.file_name() != "sha256" {
            problems.push(format!("unexpected entry in blob area: {:?}", alg.path()));
            continue;
        }
        for prefix in std::fs::read_dir(alg.path()).unwrap() {
            let prefix = prefix.unwrap();
            let p = prefix.file_name().to_string_lossy().into_owned();
            if !prefix.file_type().unwrap().is_dir() {
                problems.push(format!("unexpected file in blob area: {:?}", prefix.path()));
                continue;
            }
            for entry in std::fs::read_dir(prefix.path()).unwrap() {
                let entry = entry.unwrap();
                let name = entry.file_name().to_string_lossy().into_owned();
                let well_named = name.len() == 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                    && name.starts_with(&p);
                if !well_named || !entry.file_type().unwrap().is_file() {
                    problems.push(format!("unexpected entry in blob area: {:?}", entry.path()));
                    continue;
                }
                let bytes = std::fs::read(entry.path()).unwrap();
                let actual = hex::encode(Sha256::digest(&bytes));
                if actual != name {
                    problems.push(format!(
                        "torn or partial blob on disk: {:?} ({} bytes) hashes to sha256:{actual}",
                        entry.path(),
                        bytes.len()
                    ));
                }
                files += 1;
            }
        }
    }
    files
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// Tallies of one round, for the summary.
#[derive(Default, Debug)]
struct Tally {
    committed_blobs: usize,
    committed_images: usize,
    interrupted_uploads: usize,
    strictly_absent: usize,
    landed_without_response: usize,
    interrupted_manifests: usize,
    manifests_landed: usize,
    sessions_resumed: usize,
    sessions_unknown: usize,
    /// Of `sessions_unknown`, those whose blob had not landed: the session
    /// itself was lost by the crash.
    sessions_lost: usize,
    /// Uploads that had no session to resume (monolithic, or POST cut).
    sessions_never_opened: usize,
    /// Files left in `uploads/` once every session was resumed or found gone.
    orphan_upload_files: usize,
}

// --------------------------------------------------------------------- test

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_uploads_and_manifest_puts_loses_nothing_committed() {
    let _alone = crate::common::alone().await;
    let t_start = Instant::now();
    let data = tempfile::tempdir().expect("data dir");
    // Server logs go to a temporary directory, or to CRASH_SAFETY_LOG_DIR if
    // set (kept after the test, for debugging).
    let log_tmp = tempfile::tempdir().expect("log dir");
    let log_dir = match std::env::var_os("CRASH_SAFETY_LOG_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("create CRASH_SAFETY_LOG_DIR");
            dir
        }
        None => log_tmp.path().to_path_buf(),
    };
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    println!("crash_safety: seed {seed:#x}, data dir {:?}", data.path());
    let mut rng = Rng::new(seed, 0);
    let repos = ["crash/app", "crash/tools/builder", "crash/base"];

    let (mut server, startup) = start(data.path(), &log_dir, 0).await;
    println!("crash_safety: first start in {startup:?}");
    let mut committed = Committed::default();
    let mut totals = Tally::default();

    for (round, kill_after) in KILL_AFTER_MS.iter().copied().enumerate() {
        let h = Http::new(&server.base);

        // Phase 1: complete images, pushed cleanly.
        let count = if round == 0 { 3 } else { 2 };
        for i in 0..count {
            let repo = repos[(round + i) % repos.len()];
            let image = push_image(&h, &mut rng, repo, &format!("r{round}-base-{i}"), 2).await;
            committed.add_image(&image);
        }

        // Phase 2: concurrent operations, then SIGKILL while they run.
        let rec: Shared = Arc::default();
        let mut tasks = Vec::new();
        let mut stream_id = (round as u64 + 1) * 1000;
        let mut next_rng = || {
            stream_id += 1;
            Rng::new(seed, stream_id)
        };
        for w in 0..4 {
            let repo = repos[w % repos.len()].to_string();
            tasks.push(tokio::spawn(slow_patch_worker(
                h.clone(),
                rec.clone(),
                repo,
                next_rng(),
            )));
        }
        for w in 0..3 {
            let repo = repos[(w + 1) % repos.len()].to_string();
            tasks.push(tokio::spawn(slow_put_worker(
                h.clone(),
                rec.clone(),
                repo,
                next_rng(),
            )));
        }
        for w in 0..2 {
            let repo = repos[(w + 2) % repos.len()].to_string();
            tasks.push(tokio::spawn(slow_monolithic_worker(
                h.clone(),
                rec.clone(),
                repo,
                next_rng(),
            )));
        }
        for w in 0..2 {
            let repo = repos[(w + 2) % repos.len()].to_string();
            tasks.push(tokio::spawn(rapid_upload_worker(
                h.clone(),
                rec.clone(),
                repo,
                next_rng(),
            )));
        }
        tasks.push(tokio::spawn(retag_worker(
            h.clone(),
            rec.clone(),
            committed.images.clone(),
            round,
        )));
        for w in 0..2 {
            let repo = repos[w % repos.len()].to_string();
            tasks.push(tokio::spawn(new_image_worker(
                h.clone(),
                rec.clone(),
                repo,
                next_rng(),
                round,
                w,
            )));
        }
        // SIGKILL once every worker is under way and the round's delay has
        // passed: on a loaded machine the kill comes later rather than before
        // anything is in flight.
        let phase_start = Instant::now();
        loop {
            let armed = rec.lock().unwrap().armed;
            if armed >= tasks.len() && phase_start.elapsed() >= Duration::from_millis(kill_after) {
                break;
            }
            assert!(
                phase_start.elapsed() < Duration::from_secs(20),
                "only {armed} of {} workers got going in 20 s: {:?}",
                tasks.len(),
                rec.lock().unwrap().unexpected
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let kill_ms = phase_start.elapsed().as_millis();
        server.sigkill();
        let killed_at = Instant::now();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("a worker hung after the kill")
                .expect("a worker panicked");
        }
        let rec = Arc::try_unwrap(rec)
            .ok()
            .expect("workers are done")
            .into_inner()
            .unwrap();
        let mut problems: Vec<String> = rec
            .unexpected
            .iter()
            .map(|s| format!("unexpected response before the kill: {s}"))
            .collect();
        for b in &rec.blobs {
            committed.add_blob(b);
        }
        for image in &rec.images {
            committed.add_image(image);
        }
        let mut tally = Tally {
            committed_blobs: rec.blobs.len(),
            committed_images: rec.images.len(),
            interrupted_uploads: rec.uploads.len(),
            interrupted_manifests: rec.manifests.len(),
            ..Tally::default()
        };
        let uploads_dir_files = count_files(&data.path().join("uploads"));

        // Phase 3: restart on the same data directory.
        let (restarted, startup) = start(data.path(), &log_dir, round + 1).await;
        server = restarted;
        let restart_after_kill = killed_at.elapsed();
        let h = Http::new(&server.base);

        // Everything committed, in every round so far, pulls and verifies.
        for ((repo, digest), size) in &committed.blobs {
            if let Err(e) = verify_blob(&h, repo, digest, *size).await {
                problems.push(format!("committed blob lost or corrupt: {e}"));
            }
        }
        for image in &committed.images {
            if let Err(e) = verify_image(&h, image).await {
                problems.push(format!("committed image lost or corrupt: {e}"));
            }
        }
        for repo in repos {
            match tags_of(&h, repo).await {
                Ok(tags) => {
                    for image in committed.images.iter().filter(|i| i.repo == repo) {
                        if !tags.contains(&image.tag) {
                            problems.push(format!(
                                "committed tag {repo}:{} missing from tags/list",
                                image.tag
                            ));
                        }
                    }
                }
                Err(e) => problems.push(e),
            }
        }

        // No partial blob is visible: interrupted uploads are absent, or (only
        // if the server may have had every byte) whole.
        let mut landed = BTreeSet::new();
        for op in &rec.uploads {
            let url = h.url(&format!("/v2/{}/blobs/{}", op.repo, op.digest));
            let head =
                h.c.head(&url)
                    .send()
                    .await
                    .expect("HEAD blob after restart");
            let resp = h.c.get(&url).send().await.expect("GET blob after restart");
            let status = resp.status();
            if head.status() != status {
                problems.push(format!(
                    "HEAD {url} says {} but GET says {status} for an interrupted {}",
                    head.status(),
                    op.describe()
                ));
            }
            let body = resp.bytes().await.unwrap_or_default();
            match status {
                StatusCode::NOT_FOUND => {
                    let code = error_code(&String::from_utf8_lossy(&body));
                    if code != "BLOB_UNKNOWN" {
                        problems.push(format!(
                            "GET {url}: 404 with code {code:?}, expected BLOB_UNKNOWN"
                        ));
                    }
                    if !op.may_have_landed() {
                        tally.strictly_absent += 1;
                    }
                }
                StatusCode::OK if op.may_have_landed() => {
                    if sha256_digest(&body) == op.digest && body.len() as u64 == op.len() {
                        tally.landed_without_response += 1;
                        landed.insert(op.digest.clone());
                        committed.add_blob(&op.record());
                    } else {
                        problems.push(format!(
                            "PARTIAL BLOB VISIBLE: GET {url} gave {} bytes hashing to {} for {}",
                            body.len(),
                            sha256_digest(&body),
                            op.describe()
                        ));
                    }
                }
                other => problems.push(format!(
                    "GET {url}: {other} ({} bytes) for an interrupted {}; \
                     the server never had the whole blob, so it must be 404",
                    body.len(),
                    op.describe()
                )),
            }
        }

        // Interrupted manifest PUTs: the tag is absent, or it is exactly the
        // manifest that was sent.
        for attempt in &rec.manifests {
            let image = &attempt.image;
            let url = h.url(&format!("/v2/{}/manifests/{}", image.repo, image.tag));
            let resp =
                h.c.get(&url)
                    .header(ACCEPT, OCI_MANIFEST)
                    .send()
                    .await
                    .expect("GET manifest after restart");
            let status = resp.status();
            let body = resp.bytes().await.unwrap_or_default();
            match status {
                StatusCode::NOT_FOUND => {
                    let code = error_code(&String::from_utf8_lossy(&body));
                    if code != "MANIFEST_UNKNOWN" && code != "NAME_UNKNOWN" {
                        problems.push(format!("GET {url}: 404 with code {code:?}"));
                    }
                }
                StatusCode::OK if sha256_digest(&body) == image.digest => {
                    tally.manifests_landed += 1;
                    match verify_image(&h, image).await {
                        Ok(()) => committed.add_image(image),
                        Err(e) => problems.push(format!("interrupted manifest half there: {e}")),
                    }
                    for b in &image.blobs {
                        if let Err(e) = verify_blob(&h, &b.repo, &b.digest, b.size).await {
                            problems.push(format!("landed manifest's blob missing: {e}"));
                        }
                    }
                }
                other => problems.push(format!(
                    "GET {url}: {other}, body hashing to {} (expected 404 or {})",
                    sha256_digest(&body),
                    image.digest
                )),
            }
        }

        // Nothing torn or partial in the blob area on disk.
        let blob_files = verify_blob_area(data.path(), &mut problems);
        for (_, digest) in committed.blobs.keys() {
            let hex = &digest["sha256:".len()..];
            let path = data.path().join("blobs/sha256").join(&hex[..2]).join(hex);
            if !path.is_file() {
                problems.push(format!("committed blob {digest} has no file at {path:?}"));
            }
        }

        // Interrupted sessions: continue correctly, or 404 BLOB_UPLOAD_UNKNOWN.
        for mut op in rec.uploads {
            let Some(loc) = op.location.clone() else {
                tally.sessions_never_opened += 1;
                continue;
            };
            let url = h.url(&loc);
            let resp = h.c.get(&url).send().await.expect("GET upload status");
            let status = resp.status();
            let range = header(&resp, "range");
            let body = resp.text().await.unwrap_or_default();
            match status {
                StatusCode::NO_CONTENT => {
                    // "0-0" is how berth (like distribution) reports an empty
                    // upload; our sessions never hold exactly one byte.
                    let size = match range.as_deref().and_then(|r| r.strip_prefix("0-")) {
                        Some("0") => 0,
                        Some(end) => match end.parse::<u64>() {
                            Ok(end) => end + 1,
                            Err(_) => {
                                problems.push(format!("GET {url}: bad Range {range:?}"));
                                continue;
                            }
                        },
                        None => {
                            problems.push(format!("GET {url}: 204 without a Range: {range:?}"));
                            continue;
                        }
                    };
                    if size < op.acked || size > op.max_sent() || size > op.len() {
                        problems.push(format!(
                            "GET {url}: session holds {size} bytes after restart, but \
                             {} were acknowledged and at most {} sent ({})",
                            op.acked,
                            op.max_sent(),
                            op.describe()
                        ));
                        continue;
                    }
                    op.acked = size;
                    op.settle();
                    let resumed = async {
                        if size < op.len() {
                            op.patch(&h, (op.len() - size) as usize, FAST).await?;
                        }
                        op.finish(&h, FAST).await
                    }
                    .await;
                    match resumed {
                        Ok(()) => match verify_blob(&h, &op.repo, &op.digest, op.len()).await {
                            Ok(()) => {
                                tally.sessions_resumed += 1;
                                committed.add_blob(&op.record());
                            }
                            Err(e) => problems.push(format!("resumed upload does not pull: {e}")),
                        },
                        Err(e) => problems.push(format!(
                            "resuming {} from byte {size} failed: {e:?}",
                            op.describe()
                        )),
                    }
                }
                StatusCode::NOT_FOUND if error_code(&body) == "BLOB_UPLOAD_UNKNOWN" => {
                    tally.sessions_unknown += 1;
                    if !landed.contains(&op.digest) {
                        tally.sessions_lost += 1;
                        let hex = &op.digest["sha256:".len()..];
                        let on_disk = data
                            .path()
                            .join("blobs/sha256")
                            .join(&hex[..2])
                            .join(hex)
                            .is_file();
                        if !op.may_have_landed() {
                            // The server never had the whole blob, yet the
                            // session it acknowledged is gone.
                            problems.push(format!(
                                "session lost by the crash: GET {url} -> 404 {body} for {}",
                                op.describe()
                            ));
                        }
                        println!(
                            "crash_safety: note: session gone but blob not served: {} \
                             (blob file on disk: {on_disk}; server said {body})",
                            op.describe()
                        );
                        // The client's recourse is a fresh upload, which must
                        // work (and reuse any whole blob file left on disk).
                        let mut again = UploadOp::new("re-upload", &op.repo, op.data.clone());
                        match again.monolithic(&h, FAST).await {
                            Ok(()) => match verify_blob(&h, &op.repo, &op.digest, op.len()).await {
                                Ok(()) => committed.add_blob(&again.record()),
                                Err(e) => problems.push(format!("re-uploaded blob: {e}")),
                            },
                            Err(e) => problems.push(format!(
                                "re-uploading {} after its session was lost: {e:?}",
                                op.digest
                            )),
                        }
                    }
                }
                other => problems.push(format!(
                    "GET {url} (interrupted session): {other} {body}, \
                     expected 204 or 404 BLOB_UPLOAD_UNKNOWN"
                )),
            }
        }

        tally.orphan_upload_files = count_files(&data.path().join("uploads"));

        // The restarted server is fully usable: a new push and pull.
        let repo = format!("crash/after-restart-{round}");
        let image = push_image(&h, &mut rng, &repo, "latest", 2).await;
        committed.add_image(&image);
        if let Err(e) = verify_image(&h, &image).await {
            problems.push(format!("fresh image after restart: {e}"));
        }
        for b in &image.blobs {
            if let Err(e) = verify_blob(&h, &b.repo, &b.digest, b.size).await {
                problems.push(format!("fresh blob after restart: {e}"));
            }
        }

        println!(
            "crash_safety: round {round}: SIGKILL {kill_ms} ms into phase 2; restarted, ready in \
             {startup:?} ({restart_after_kill:?} after the kill)\n  \
             phase 2: committed {} blobs and {} manifest puts; interrupted {} uploads \
             ({} provably incomplete -> 404, {} landed whole without a response) and {} \
             manifest puts ({} landed)\n  \
             interrupted sessions: {} resumed to a verified blob, {} answered 404 \
             BLOB_UPLOAD_UNKNOWN ({} of them without the blob having landed), {} had no \
             session\n  \
             disk: {} files in uploads/ at the kill, {} left orphaned after resuming; \
             {} blob files all hash to their names\n  \
             verified so far: {} blobs, {} images (tag and digest)",
            tally.committed_blobs,
            tally.committed_images,
            tally.interrupted_uploads,
            tally.strictly_absent,
            tally.landed_without_response,
            tally.interrupted_manifests,
            tally.manifests_landed,
            tally.sessions_resumed,
            tally.sessions_unknown,
            tally.sessions_lost,
            tally.sessions_never_opened,
            uploads_dir_files,
            tally.orphan_upload_files,
            blob_files,
            committed.blobs.len(),
            committed.images.len(),
        );
        assert!(
            problems.is_empty(),
            "round {round}: {} problem(s):\n{}\n--- server log tail ---\n{}",
            problems.len(),
            problems.join("\n"),
            server.log_tail()
        );
        totals.committed_blobs += tally.committed_blobs;
        totals.committed_images += tally.committed_images;
        totals.interrupted_uploads += tally.interrupted_uploads;
        totals.strictly_absent += tally.strictly_absent;
        totals.interrupted_manifests += tally.interrupted_manifests;
        totals.sessions_resumed += tally.sessions_resumed;
        totals.sessions_unknown += tally.sessions_unknown;
        totals.sessions_never_opened += tally.sessions_never_opened;
        totals.sessions_lost += tally.sessions_lost;
        totals.orphan_upload_files = tally.orphan_upload_files;
        totals.landed_without_response += tally.landed_without_response;
        totals.manifests_landed += tally.manifests_landed;
    }

    // The kills must really have landed mid-operation, with work committed
    // around them, or the test proved nothing.
    assert!(
        totals.strictly_absent > 0,
        "no upload was provably cut mid-body by the kill: {totals:?}"
    );
    assert!(
        totals.committed_blobs > 0 && totals.committed_images > 0,
        "nothing committed during the concurrent phases: {totals:?}"
    );
    assert!(
        totals.sessions_resumed + totals.sessions_unknown > 0,
        "no interrupted session to resume: {totals:?}"
    );
    println!(
        "crash_safety: {} kill rounds passed in {:?}: {totals:?}",
        KILL_AFTER_MS.len(),
        t_start.elapsed()
    );
    drop(server);
}
