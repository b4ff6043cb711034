//! How long a garbage collection sweep over a large registry takes, and what
//! it does to the latency of pushes and pulls served meanwhile (issue 5: "a
//! sweep over 100,000 blobs / 10,000 manifests, timed; the sweep must not
//! block pushes and pulls").
//!
//! Usage: `cargo run --release --example gc_bench [-- <options>]`
//!
//! | option               | default          | meaning                                     |
//! | -------------------- | ---------------- | ------------------------------------------- |
//! | `--blobs N`          | 100000           | blobs pushed during setup                   |
//! | `--manifests N`      | 10000            | image manifests pushed during setup         |
//! | `--repos N`          | 20               | repositories they are spread over           |
//! | `--data-dir PATH`    | a temporary dir  | where the temporary registry is created     |
//! | `--idle-secs S`      | 30               | how long latency is measured with no sweep  |
//! | `--pull-rate R`      | 200              | pull requests per second (4 clients)        |
//! | `--push-rate R`      | 5                | image pushes per second (1 client, 5 req.)  |
//! | `--concurrency N`    | 32               | requests in flight during setup             |
//!
//! `RUST_LOG` (e.g. `warn`, or `warn,sqlx::query=debug`) shows the registry's
//! and sqlx's logs on standard error.
//!
//! Setup (timed apart, not part of the figures) opens a registry with a zero
//! review delay and no timer sweeps and pushes, through the HTTP router in
//! process, small blobs (64 to 512 deterministic pseudo-random bytes each,
//! real files) and image manifests (a config, two base layers shared by the
//! repository, ~8 layers of their own and the first layer of the previous
//! image of the repository). Then half of the images become garbage in the
//! ways clients make it: tags deleted, manifests pushed untagged, tags moved
//! to another image, manifests deleted by digest; 5% of the blobs are never
//! referenced. The benchmark computes what must be collected.
//!
//! Then a load of pulls (GET manifest by tag, HEAD blob, GET blob) and pushes
//! (POST + PUT of two blobs, PUT manifest with a new tag) runs against a real
//! HTTP server on 127.0.0.1, first for `--idle-secs` with no sweep, then
//! during one `berth::registry::gc::sweep`, and the latencies are printed side by side
//! (with the count over 100 ms). A probe appending 4 KB to a file on the same
//! file system and fdatasyncing it every 20 ms runs alongside: its row shows
//! whether the disk itself stalled.
//! The run fails (exit 1) if the sweep's counts differ from the expected
//! garbage, if any request failed, if a surviving tag or blob does not pull
//! or a collected one still does, or if the files left on disk are not
//! exactly the live blobs; it stops with exit 2 if the sweep returns an error.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::serve::ListenerExt;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::json;
use tokio::task::JoinSet;
use tower::ServiceExt;

use berth::config::Config;
use berth::metadata::now_ms;
use berth::oci::Digest;
use berth::registry::api::SweepCounts;
use berth::registry::router;
use berth::server::open_registry;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const PULL_CLIENTS: usize = 4;
const PUSH_CLIENTS: usize = 1;

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// `len` bytes starting with `tag` (which makes them unique), then noise.
    fn bytes(&mut self, tag: &[u8], len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len.max(tag.len()));
        out.extend_from_slice(tag);
        while out.len() < len {
            out.extend_from_slice(&self.next().to_le_bytes());
        }
        out.truncate(len.max(tag.len()));
        out
    }
}

struct Args {
    blobs: usize,
    manifests: usize,
    repos: usize,
    data_dir: Option<PathBuf>,
    idle: Duration,
    pull_rate: f64,
    push_rate: f64,
    concurrency: usize,
}

fn parse_args() -> Args {
    let mut args = Args {
        blobs: 100_000,
        manifests: 10_000,
        repos: 20,
        data_dir: None,
        idle: Duration::from_secs(30),
        pull_rate: 200.0,
        push_rate: 5.0,
        concurrency: 32,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| fail(&format!("{flag} needs a value")))
        };
        let num = |v: String| -> f64 {
            v.parse()
                .unwrap_or_else(|_| fail(&format!("{flag}: {v:?} is not a number")))
        };
        match flag.as_str() {
            "--blobs" => args.blobs = num(value()) as usize,
            "--manifests" => args.manifests = num(value()) as usize,
            "--repos" => args.repos = num(value()) as usize,
            "--data-dir" => args.data_dir = Some(PathBuf::from(value())),
            "--idle-secs" => args.idle = Duration::from_secs_f64(num(value())),
            "--pull-rate" => args.pull_rate = num(value()),
            "--push-rate" => args.push_rate = num(value()),
            "--concurrency" => args.concurrency = (num(value()) as usize).max(1),
            _ => fail(&format!("unknown option {flag} (see the doc comment)")),
        }
    }
    args
}

fn fail(message: &str) -> ! {
    eprintln!("gc_bench: {message}");
    std::process::exit(2)
}

// ---------------------------------------------------------------------------
// The data set.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Stays tagged.
    Live,
    /// Tag deleted (`DELETE /manifests/<tag>`): the sweep deletes it.
    Untag,
    /// Pushed by digest, never tagged: the sweep deletes it.
    Untagged,
    /// Its tag moved to another (live) image: the sweep deletes it.
    Retagged(usize),
    /// Deleted by digest through the API: gone before the sweep, whose work
    /// is then its blobs.
    Deleted,
}

struct BlobSpec {
    repo: usize,
    digest: Digest,
    size: u64,
}

struct ManifestSpec {
    repo: usize,
    blobs: Vec<usize>,
    payload: Vec<u8>,
    digest: Digest,
    fate: Fate,
}

struct Plan {
    repos: Vec<String>,
    blobs: Vec<BlobSpec>,
    manifests: Vec<ManifestSpec>,
    strays: usize,
}

/// The bytes of setup blob `i` (64 to 512, regenerated when pushed).
fn blob_data(i: usize) -> Vec<u8> {
    let mut rng = Rng::new(0xB10B ^ (i as u64).wrapping_mul(0xD1B5_4A32_D192_ED03));
    let len = 64 + rng.below(449) as usize;
    rng.bytes(&(i as u64).to_le_bytes(), len)
}

impl Plan {
    /// Blob indices: `[0, 2R)` two base layers per repository, then one
    /// config per manifest, then layers each owned by manifest `j % M`, then
    /// strays (5%) that no manifest references.
    fn new(args: &Args) -> Plan {
        let (m, r) = (args.manifests, args.repos.clamp(1, args.manifests.max(1)));
        let strays = args.blobs / 20;
        let base = 2 * r;
        let Some(layers) = args
            .blobs
            .checked_sub(base + m + strays)
            .filter(|l| *l >= m)
        else {
            fail(&format!(
                "{} blobs are too few for {m} manifests (need at least {})",
                args.blobs,
                base + 2 * m + strays
            ));
        };
        let repos: Vec<String> = (0..r).map(|i| format!("bench/app{i:02}")).collect();
        let owner_repo = |i: usize| -> usize {
            if i < base {
                i / 2
            } else if i < base + m {
                (i - base) % r
            } else if i < base + m + layers {
                ((i - base - m) % m) % r
            } else {
                i % r
            }
        };
        let blobs: Vec<BlobSpec> = (0..args.blobs)
            .map(|i| {
                let data = blob_data(i);
                BlobSpec {
                    repo: owner_repo(i),
                    digest: Digest::sha256_of(&data),
                    size: data.len() as u64,
                }
            })
            .collect();
        let mut rng = Rng::new(0xFA7E);
        let mut fates: Vec<Fate> = (0..m)
            .map(|_| match rng.below(100) {
                0..50 => Fate::Live,
                50..75 => Fate::Untag,
                75..85 => Fate::Untagged,
                85..95 => Fate::Retagged(usize::MAX),
                _ => Fate::Deleted,
            })
            .collect();
        // A moved tag goes to the first live image of the same repository.
        let mut first_live = vec![None; r];
        for (i, f) in fates.iter().enumerate() {
            if *f == Fate::Live && first_live[i % r].is_none() {
                first_live[i % r] = Some(i);
            }
        }
        for (i, f) in fates.iter_mut().enumerate() {
            if let Fate::Retagged(_) = f {
                *f = first_live[i % r].map_or(Fate::Untag, Fate::Retagged);
            }
        }
        let manifests = (0..m)
            .map(|i| {
                let repo = i % r;
                let mut refs = vec![base + i, 2 * repo, 2 * repo + 1];
                refs.extend((i..layers).step_by(m).map(|j| base + m + j));
                if i >= r {
                    refs.push(base + m + (i - r)); // previous image's first layer
                }
                let descriptor = |media: &str, b: usize| {
                    json!({"mediaType": media, "digest": blobs[b].digest.to_string(), "size": blobs[b].size})
                };
                let payload = serde_json::to_vec(&json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": descriptor(OCI_CONFIG, refs[0]),
                    "layers": refs[1..].iter().map(|b| descriptor(OCI_LAYER, *b)).collect::<Vec<_>>(),
                }))
                .expect("manifest JSON");
                ManifestSpec {
                    repo,
                    digest: Digest::sha256_of(&payload),
                    blobs: refs,
                    payload,
                    fate: fates[i],
                }
            })
            .collect();
        Plan {
            repos,
            blobs,
            manifests,
            strays,
        }
    }
}

/// What the sweep must delete, computed from the plan.
struct Expected {
    manifests: i64,
    api_deleted: usize,
    /// Per blob: whether a live manifest references it.
    live_blob: Vec<bool>,
    garbage_blobs: i64,
    garbage_blob_bytes: i64,
    manifest_bytes: i64,
    /// (repository, tag, digest) of every tag that must still pull.
    live_tags: Vec<(String, String, String)>,
}

impl Expected {
    fn new(plan: &Plan) -> Expected {
        let mut live_blob = vec![false; plan.blobs.len()];
        let (mut manifests, mut api_deleted, mut manifest_bytes) = (0, 0, 0);
        let mut live_tags = Vec::new();
        for (i, m) in plan.manifests.iter().enumerate() {
            let repo = &plan.repos[m.repo];
            match m.fate {
                Fate::Live => {
                    for b in &m.blobs {
                        live_blob[*b] = true;
                    }
                    live_tags.push((repo.clone(), format!("v{i}"), m.digest.to_string()));
                }
                Fate::Deleted => api_deleted += 1,
                Fate::Untag | Fate::Untagged | Fate::Retagged(_) => {
                    manifests += 1;
                    manifest_bytes += m.payload.len() as i64;
                }
            }
            if let Fate::Retagged(k) = m.fate {
                let target = plan.manifests[k].digest.to_string();
                live_tags.push((repo.clone(), format!("v{i}"), target));
            }
        }
        let garbage: Vec<&BlobSpec> = plan
            .blobs
            .iter()
            .zip(&live_blob)
            .filter(|(_, live)| !**live)
            .map(|(b, _)| b)
            .collect();
        Expected {
            manifests,
            api_deleted,
            garbage_blobs: garbage.len() as i64,
            garbage_blob_bytes: garbage.iter().map(|b| b.size as i64).sum(),
            manifest_bytes,
            live_blob,
            live_tags,
        }
    }
}

// ---------------------------------------------------------------------------
// In-process calls (setup and checks) and helpers.

async fn call(
    router: &Router,
    method: Method,
    uri: &str,
    ctype: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(c) = ctype {
        req = req.header("content-type", c);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("the router is infallible");
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await.expect("response body").to_bytes();
    (parts.status, parts.headers, bytes)
}

/// Runs `f` over `items` with at most `concurrency` tasks in flight; results
/// in completion order.
async fn run_all<T, R, F, Fut>(
    items: impl IntoIterator<Item = T>,
    concurrency: usize,
    f: F,
) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let mut set = JoinSet::new();
    let mut out = Vec::new();
    for item in items {
        while set.len() >= concurrency {
            out.push(set.join_next().await.expect("a task").expect("task"));
        }
        set.spawn(f(item));
    }
    while let Some(r) = set.join_next().await {
        out.push(r.expect("task"));
    }
    out
}

fn expect_status(what: &str, got: StatusCode, want: StatusCode, body: &[u8]) {
    if got != want {
        fail(&format!(
            "setup: {what}: {got} (wanted {want}): {}",
            String::from_utf8_lossy(body)
        ));
    }
}

/// Blob files under the store and their total size.
fn blob_files(data: &Path) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let root = data.join("blobs/sha256");
    for prefix in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(prefix.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            out.insert(format!("sha256:{}", f.file_name().to_string_lossy()), size);
        }
    }
    out
}

fn mb(bytes: i64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------
// The load: pull and push clients over HTTP.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    GetManifest,
    HeadBlob,
    GetBlob,
    PostUpload,
    PutBlob,
    PutManifest,
    ImagePush,
    Fsync,
}

const KINDS: [(Kind, &str); 8] = [
    (Kind::GetManifest, "GET manifest"),
    (Kind::HeadBlob, "HEAD blob"),
    (Kind::GetBlob, "GET blob"),
    (Kind::PostUpload, "POST upload"),
    (Kind::PutBlob, "PUT blob"),
    (Kind::PutManifest, "PUT manifest"),
    (Kind::ImagePush, "whole push (5 req.)"),
    (Kind::Fsync, "disk: fsync probe"),
];

fn is_pull(k: Kind) -> bool {
    matches!(k, Kind::GetManifest | Kind::HeadBlob | Kind::GetBlob)
}

fn is_push_request(k: Kind) -> bool {
    matches!(k, Kind::PostUpload | Kind::PutBlob | Kind::PutManifest)
}

#[derive(Default)]
struct Samples {
    latencies: Vec<(Kind, Duration)>,
    errors: Vec<String>,
    error_count: usize,
    pushed: Vec<Pushed>,
}

impl Samples {
    fn error(&mut self, e: String) {
        self.error_count += 1;
        if self.errors.len() < 5 {
            self.errors.push(e);
        }
    }
    fn merge(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.error_count += other.error_count;
        for e in other.errors {
            if self.errors.len() < 5 {
                self.errors.push(e);
            }
        }
        self.pushed.extend(other.pushed);
    }
    fn of(&self, pred: impl Fn(Kind) -> bool) -> Vec<Duration> {
        let mut v: Vec<Duration> = self
            .latencies
            .iter()
            .filter(|(k, _)| pred(*k))
            .map(|(_, d)| *d)
            .collect();
        v.sort_unstable();
        v
    }
}

/// An image pushed by the load, which must survive the sweep.
struct Pushed {
    repo: String,
    tag: String,
    digest: String,
    blobs: Vec<(String, u64)>,
}

/// What the pull clients ask for: only things that must survive the sweep.
struct Targets {
    tags: Vec<(String, String, String)>,
    blobs: Vec<(String, String)>,
}

struct Load {
    client: reqwest::Client,
    base: String,
    targets: Arc<Targets>,
    repos: Vec<String>,
    pull_rate: f64,
    push_rate: f64,
    /// A file on the data directory's file system for the fsync probe.
    probe: PathBuf,
}

impl Load {
    /// Runs the clients until `stop` is set; `phase` names the pushed tags.
    fn start(&self, phase: &'static str, stop: Arc<AtomicBool>) -> JoinSet<Samples> {
        let mut set = JoinSet::new();
        set.spawn(fsync_probe(self.probe.clone(), stop.clone()));
        if self.pull_rate > 0.0 {
            let period = Duration::from_secs_f64(PULL_CLIENTS as f64 / self.pull_rate);
            for w in 0..PULL_CLIENTS {
                let (client, base, targets, stop) = (
                    self.client.clone(),
                    self.base.clone(),
                    self.targets.clone(),
                    stop.clone(),
                );
                let seed = 0x9011 + w as u64 + if phase == "idle" { 0 } else { 100 };
                set.spawn(pull_client(client, base, targets, period, seed, stop));
            }
        }
        if self.push_rate > 0.0 {
            let period = Duration::from_secs_f64(PUSH_CLIENTS as f64 / self.push_rate);
            for w in 0..PUSH_CLIENTS {
                let (client, base, repos, stop) = (
                    self.client.clone(),
                    self.base.clone(),
                    self.repos.clone(),
                    stop.clone(),
                );
                set.spawn(push_client(client, base, repos, period, phase, w, stop));
            }
        }
        set
    }
}

/// Every 20 ms, appends 4 KB to a file and fdatasyncs it (as a commit to
/// SQLite's WAL does): shows whether the disk itself stalls.
async fn fsync_probe(path: PathBuf, stop: Arc<AtomicBool>) -> Samples {
    tokio::task::spawn_blocking(move || {
        let mut s = Samples::default();
        let mut file = match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) => {
                s.error(format!("fsync probe {}: {e}", path.display()));
                return s;
            }
        };
        let block = [0x5a_u8; 4096];
        let mut written = 0;
        while !stop.load(Ordering::Relaxed) {
            if written >= 1 << 20 {
                written = 0;
                if let Err(e) = file.set_len(0) {
                    s.error(format!("fsync probe: {e}"));
                }
            }
            let t = Instant::now();
            match file.write_all(&block).and_then(|()| file.sync_data()) {
                Ok(()) => s.latencies.push((Kind::Fsync, t.elapsed())),
                Err(e) => s.error(format!("fsync probe: {e}")),
            }
            written += block.len();
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    })
    .await
    .expect("fsync probe")
}

async fn collect(mut set: JoinSet<Samples>) -> Samples {
    let mut all = Samples::default();
    while let Some(s) = set.join_next().await {
        all.merge(s.expect("client task"));
    }
    all
}

fn ticker(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

async fn pull_client(
    client: reqwest::Client,
    base: String,
    targets: Arc<Targets>,
    period: Duration,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> Samples {
    let mut rng = Rng::new(seed);
    let mut s = Samples::default();
    let mut tick = ticker(period);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let kind = [Kind::GetManifest, Kind::HeadBlob, Kind::GetBlob][rng.below(3) as usize];
        let started = Instant::now();
        let outcome: Result<(), String> = async {
            match kind {
                Kind::GetManifest => {
                    let (repo, tag, digest) =
                        &targets.tags[rng.below(targets.tags.len() as u64) as usize];
                    let resp = client
                        .get(format!("{base}/v2/{repo}/manifests/{tag}"))
                        .header("accept", OCI_MANIFEST)
                        .send()
                        .await
                        .map_err(|e| format!("GET {repo}:{tag}: {e}"))?;
                    let status = resp.status();
                    let body = resp.bytes().await.map_err(|e| e.to_string())?;
                    if status != StatusCode::OK || Digest::sha256_of(&body).to_string() != *digest {
                        return Err(format!("GET {repo}:{tag}: {status}, or not {digest}"));
                    }
                }
                _ => {
                    let (repo, digest) =
                        &targets.blobs[rng.below(targets.blobs.len() as u64) as usize];
                    let url = format!("{base}/v2/{repo}/blobs/{digest}");
                    if kind == Kind::HeadBlob {
                        let resp = client.head(url).send().await.map_err(|e| e.to_string())?;
                        if resp.status() != StatusCode::OK {
                            return Err(format!("HEAD {repo}@{digest}: {}", resp.status()));
                        }
                    } else {
                        let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
                        let status = resp.status();
                        let body = resp.bytes().await.map_err(|e| e.to_string())?;
                        if status != StatusCode::OK
                            || Digest::sha256_of(&body).to_string() != *digest
                        {
                            return Err(format!("GET {repo}@{digest}: {status}, or bad content"));
                        }
                    }
                }
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => s.latencies.push((kind, started.elapsed())),
            Err(e) => s.error(e),
        }
    }
    s
}

async fn push_client(
    client: reqwest::Client,
    base: String,
    repos: Vec<String>,
    period: Duration,
    phase: &'static str,
    worker: usize,
    stop: Arc<AtomicBool>,
) -> Samples {
    let mut rng = Rng::new(0x9054 + worker as u64 + if phase == "idle" { 0 } else { 100 });
    let mut s = Samples::default();
    let mut tick = ticker(period);
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let repo = repos[n % repos.len()].clone();
        let tag = format!("load-{phase}-{worker}-{n}");
        let prefix = format!("{tag}/");
        let (config_len, layer_len) = (64 + rng.below(449), 256 + rng.below(3841));
        let config = rng.bytes(prefix.as_bytes(), config_len as usize);
        let layer = rng.bytes(prefix.as_bytes(), layer_len as usize);
        let started = Instant::now();
        match push_image(&client, &base, &repo, &tag, &config, &layer, &mut s).await {
            Ok(pushed) => {
                s.latencies.push((Kind::ImagePush, started.elapsed()));
                s.pushed.push(pushed);
            }
            Err(e) => s.error(e),
        }
    }
    s
}

/// POST + PUT of the config and a layer, then PUT of the manifest.
async fn push_image(
    client: &reqwest::Client,
    base: &str,
    repo: &str,
    tag: &str,
    config: &[u8],
    layer: &[u8],
    s: &mut Samples,
) -> Result<Pushed, String> {
    let mut blobs = Vec::new();
    for data in [config, layer] {
        let digest = Digest::sha256_of(data).to_string();
        let t = Instant::now();
        let resp = client
            .post(format!("{base}/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .map_err(|e| format!("POST upload in {repo}: {e}"))?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(format!("POST upload in {repo}: {}", resp.status()));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or("POST upload: no Location")?
            .to_string();
        s.latencies.push((Kind::PostUpload, t.elapsed()));
        let sep = if location.contains('?') { '&' } else { '?' };
        let t = Instant::now();
        let resp = client
            .put(format!("{base}{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .map_err(|e| format!("PUT blob {digest}: {e}"))?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!("PUT blob {repo}@{digest}: {status}: {body}"));
        }
        s.latencies.push((Kind::PutBlob, t.elapsed()));
        blobs.push((digest, data.len() as u64));
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": blobs[0].0, "size": blobs[0].1},
        "layers": [{"mediaType": OCI_LAYER, "digest": blobs[1].0, "size": blobs[1].1}],
    }))
    .map_err(|e| e.to_string())?;
    let digest = Digest::sha256_of(&manifest).to_string();
    let t = Instant::now();
    let resp = client
        .put(format!("{base}/v2/{repo}/manifests/{tag}"))
        .header("content-type", OCI_MANIFEST)
        .body(manifest)
        .send()
        .await
        .map_err(|e| format!("PUT manifest {repo}:{tag}: {e}"))?;
    let status = resp.status();
    if status != StatusCode::CREATED {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("PUT manifest {repo}:{tag}: {status}: {body}"));
    }
    s.latencies.push((Kind::PutManifest, t.elapsed()));
    Ok(Pushed {
        repo: repo.to_string(),
        tag: tag.to_string(),
        digest,
        blobs,
    })
}

/// Requests slower than this are counted apart.
const SLOW: Duration = Duration::from_millis(100);

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn stats(sorted: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if sorted.is_empty() {
        return format!(
            "{:>6} {:>7} {:>7} {:>7} {:>7} {:>6}",
            0, "-", "-", "-", "-", "-"
        );
    }
    format!(
        "{:>6} {:>7.2} {:>7.2} {:>7.2} {:>7.2} {:>6}",
        sorted.len(),
        ms(percentile(sorted, 0.50)),
        ms(percentile(sorted, 0.95)),
        ms(percentile(sorted, 0.99)),
        ms(*sorted.last().expect("not empty")),
        sorted.len() - sorted.partition_point(|d| *d <= SLOW),
    )
}

fn print_table(idle: &Samples, sweep: &Samples) {
    println!(
        "latency (ms)          {:^45} | {:^45}",
        "idle", "during the sweep"
    );
    let head = format!(
        "{:>6} {:>7} {:>7} {:>7} {:>7} {:>6}",
        "n", "p50", "p95", "p99", "max", ">100ms"
    );
    println!("{:<21} {head} | {head}", "request");
    let row = |label: &str, pred: &dyn Fn(Kind) -> bool| {
        println!(
            "{label:<21} {} | {}",
            stats(&idle.of(pred)),
            stats(&sweep.of(pred))
        );
    };
    for (kind, label) in KINDS {
        row(label, &|k| k == kind);
        if kind == Kind::GetBlob {
            row("all pulls", &is_pull);
        }
        if kind == Kind::PutManifest {
            row("all push requests", &is_push_request);
        }
    }
}

// ---------------------------------------------------------------------------

#[tokio::main]
async fn main() {
    // The registry's own logs (and sqlx's), on standard error, if asked for.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = parse_args();
    let plan = Plan::new(&args);
    let expected = Expected::new(&plan);
    if expected.live_tags.is_empty() {
        fail("no image stays live at this scale: use more manifests");
    }

    let temp = match &args.data_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(&format!("{dir:?}: {e}")));
            tempfile::tempdir_in(dir)
        }
        None => tempfile::tempdir(),
    }
    .unwrap_or_else(|e| fail(&format!("temporary directory: {e}")));
    let data = temp.path().join("data");
    let mut config = Config {
        data_dir: data.clone(),
        ..Config::default()
    };
    config.auth.enabled = false;
    config.gc.review_delay = "0s".into();
    // Only the benchmark sweeps.
    config.gc.sweep_interval = "30days".into();
    let (reg, _) = open_registry(&config)
        .await
        .unwrap_or_else(|e| fail(&format!("open_registry: {e}")));
    let app = router(reg.clone());

    println!(
        "gc_bench: {} blobs, {} manifests in {} repositories; data in {}",
        plan.blobs.len(),
        plan.manifests.len(),
        plan.repos.len(),
        data.display()
    );

    // --- Setup ------------------------------------------------------------
    let setup_started = Instant::now();
    let t = Instant::now();
    let repos = Arc::new(plan.repos.clone());
    let blob_jobs: Vec<(usize, usize, String)> = plan
        .blobs
        .iter()
        .enumerate()
        .map(|(i, b)| (i, b.repo, b.digest.to_string()))
        .collect();
    run_all(blob_jobs, args.concurrency, |(i, repo, digest)| {
        let (app, repos) = (app.clone(), repos.clone());
        async move {
            let uri = format!("/v2/{}/blobs/uploads/?digest={digest}", repos[repo]);
            let (s, _, body) = call(&app, Method::POST, &uri, None, blob_data(i)).await;
            expect_status(&uri, s, StatusCode::CREATED, &body);
        }
    })
    .await;
    let blobs_took = t.elapsed();

    let t = Instant::now();
    let manifest_jobs: Vec<(String, String, Vec<u8>)> = plan
        .manifests
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let reference = match m.fate {
                Fate::Untagged => m.digest.to_string(),
                _ => format!("v{i}"),
            };
            (plan.repos[m.repo].clone(), reference, m.payload.clone())
        })
        .collect();
    run_all(
        manifest_jobs,
        args.concurrency,
        |(repo, reference, payload)| {
            let app = app.clone();
            async move {
                let uri = format!("/v2/{repo}/manifests/{reference}");
                let (s, _, body) = call(&app, Method::PUT, &uri, Some(OCI_MANIFEST), payload).await;
                expect_status(&uri, s, StatusCode::CREATED, &body);
            }
        },
    )
    .await;
    let manifests_took = t.elapsed();

    let t = Instant::now();
    let mut garbage_jobs = Vec::new();
    for (i, m) in plan.manifests.iter().enumerate() {
        let repo = plan.repos[m.repo].clone();
        match m.fate {
            Fate::Live | Fate::Untagged => {}
            Fate::Untag => garbage_jobs.push((Method::DELETE, repo, format!("v{i}"), vec![])),
            Fate::Retagged(k) => garbage_jobs.push((
                Method::PUT,
                repo,
                format!("v{i}"),
                plan.manifests[k].payload.clone(),
            )),
            Fate::Deleted => {
                garbage_jobs.push((Method::DELETE, repo, m.digest.to_string(), vec![]))
            }
        }
    }
    let garbage_ops = garbage_jobs.len();
    run_all(
        garbage_jobs,
        args.concurrency,
        |(method, repo, reference, payload)| {
            let app = app.clone();
            async move {
                let uri = format!("/v2/{repo}/manifests/{reference}");
                let want = if method == Method::PUT {
                    StatusCode::CREATED
                } else {
                    StatusCode::ACCEPTED
                };
                let what = format!("{method} {uri}");
                let (s, _, body) = call(&app, method, &uri, Some(OCI_MANIFEST), payload).await;
                expect_status(&what, s, want, &body);
            }
        },
    )
    .await;
    let garbage_took = t.elapsed();
    let setup_took = setup_started.elapsed();
    println!(
        "setup: {} ({} blobs in {}, {:.0}/s; {} manifests in {}; {} untag/retag/delete operations in {}) — not part of the figures below",
        secs(setup_took),
        plan.blobs.len(),
        secs(blobs_took),
        plan.blobs.len() as f64 / blobs_took.as_secs_f64(),
        plan.manifests.len(),
        secs(manifests_took),
        garbage_ops,
        secs(garbage_took),
    );
    let count = |f: fn(Fate) -> bool| plan.manifests.iter().filter(|m| f(m.fate)).count();
    println!(
        "images: {} live, {} tag deleted, {} pushed untagged, {} tag moved to another image, {} deleted by digest",
        count(|f| f == Fate::Live),
        count(|f| f == Fate::Untag),
        count(|f| f == Fate::Untagged),
        count(|f| matches!(f, Fate::Retagged(_))),
        count(|f| f == Fate::Deleted),
    );
    println!(
        "garbage expected: {} manifests ({} more were deleted through the API), {} blobs ({} never referenced), {} ({} of blobs + {} of manifests)",
        expected.manifests,
        expected.api_deleted,
        expected.garbage_blobs,
        plan.strays,
        mb(expected.garbage_blob_bytes + expected.manifest_bytes),
        mb(expected.garbage_blob_bytes),
        mb(expected.manifest_bytes),
    );
    let status = reg
        .meta
        .gc_status(now_ms())
        .await
        .unwrap_or_else(|e| fail(&format!("gc_status: {e}")));
    println!(
        "reviews due before the sweep: {} manifests, {} blobs",
        status.due_manifest_reviews, status.due_blob_reviews
    );

    // --- Load: idle, then during the sweep ----------------------------------
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| fail(&format!("bind: {e}")));
    let addr = listener.local_addr().expect("local address");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let server = tokio::spawn(axum::serve(listener, app.clone()).into_future());
    let live_blobs: Vec<(String, String)> = plan
        .blobs
        .iter()
        .zip(&expected.live_blob)
        .filter(|(_, live)| **live)
        .map(|(b, _)| (plan.repos[b.repo].clone(), b.digest.to_string()))
        .collect();
    let load = Load {
        client: reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .build()
            .expect("HTTP client"),
        base: format!("http://{addr}"),
        targets: Arc::new(Targets {
            tags: expected.live_tags.clone(),
            blobs: live_blobs,
        }),
        repos: plan.repos.clone(),
        pull_rate: args.pull_rate,
        push_rate: args.push_rate,
        probe: temp.path().join("fsync-probe"),
    };
    println!(
        "load over HTTP on {addr}: {PULL_CLIENTS} pull clients, {} pulls/s in all (GET manifest by tag, HEAD blob, GET blob); {PUSH_CLIENTS} push client, {} images/s (POST+PUT config, POST+PUT layer, PUT manifest with a new tag)",
        args.pull_rate, args.push_rate
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load.start("idle", stop.clone());
    tokio::time::sleep(args.idle).await;
    stop.store(true, Ordering::Relaxed);
    let idle = collect(clients).await;

    let files_before = blob_files(&data);
    let bytes_before: u64 = files_before.values().sum();
    println!(
        "blob store before the sweep: {} files, {}",
        files_before.len(),
        mb(bytes_before as i64)
    );

    let stop = Arc::new(AtomicBool::new(false));
    let clients = load.start("sweep", stop.clone());
    let sweeper = {
        let (reg, stop) = (reg.clone(), stop.clone());
        tokio::spawn(async move {
            let started = Instant::now();
            let counts = berth::registry::gc::sweep(&reg, reg.upload_expiry()).await;
            let took = started.elapsed();
            stop.store(true, Ordering::Relaxed);
            (counts, took)
        })
    };
    let (counts, sweep_took) = sweeper.await.expect("sweep task");
    let during = collect(clients).await;
    let counts: SweepCounts = counts.unwrap_or_else(|e| fail(&format!("sweep failed: {e:?}")));
    let objects = counts.manifests_deleted + counts.blobs_deleted;
    println!(
        "sweep: {} — deleted {} manifests, {} blobs, {} bytes ({}), {} expired uploads; {:.0} objects deleted/s, {:.0} reviews/s",
        secs(sweep_took),
        counts.manifests_deleted,
        counts.blobs_deleted,
        counts.bytes_deleted,
        mb(counts.bytes_deleted),
        counts.uploads_expired,
        objects as f64 / sweep_took.as_secs_f64(),
        (status.due_manifest_reviews + status.due_blob_reviews) as f64 / sweep_took.as_secs_f64(),
    );
    println!(
        "requests: idle {} in {} ({} failed), during the sweep {} in {} ({} failed)",
        idle.of(|k| is_pull(k) || is_push_request(k)).len(),
        secs(args.idle),
        idle.error_count,
        during.of(|k| is_pull(k) || is_push_request(k)).len(),
        secs(sweep_took),
        during.error_count,
    );
    print_table(&idle, &during);

    // --- Checks -------------------------------------------------------------
    let mut failures: Vec<String> = Vec::new();
    for (phase, s) in [("idle", &idle), ("during the sweep", &during)] {
        if s.error_count > 0 {
            failures.push(format!(
                "{} requests failed {phase}, e.g. {:?}",
                s.error_count, s.errors
            ));
        }
    }
    let want = (
        expected.manifests,
        expected.garbage_blobs,
        expected.garbage_blob_bytes + expected.manifest_bytes,
        0,
    );
    let got = (
        counts.manifests_deleted,
        counts.blobs_deleted,
        counts.bytes_deleted,
        counts.uploads_expired,
    );
    if got != want {
        failures.push(format!(
            "sweep counts (manifests, blobs, bytes, uploads) {got:?}, expected {want:?}"
        ));
    }

    let files_after = blob_files(&data);
    let bytes_after: u64 = files_after.values().sum();
    let pushed: Vec<&Pushed> = idle.pushed.iter().chain(&during.pushed).collect();
    let pushed_during: u64 = during
        .pushed
        .iter()
        .flat_map(|p| &p.blobs)
        .map(|(_, size)| size)
        .sum();
    let mut want_files: HashMap<String, u64> = plan
        .blobs
        .iter()
        .zip(&expected.live_blob)
        .filter(|(_, live)| **live)
        .map(|(b, _)| (b.digest.to_string(), b.size))
        .collect();
    want_files.extend(pushed.iter().flat_map(|p| p.blobs.iter().cloned()));
    let freed = bytes_before as i64 + pushed_during as i64 - bytes_after as i64;
    println!(
        "blob store after the sweep: {} files, {}; freed {} bytes ({} before + {} pushed during the sweep - {} after), expected {}",
        files_after.len(),
        mb(bytes_after as i64),
        freed,
        bytes_before,
        pushed_during,
        bytes_after,
        expected.garbage_blob_bytes,
    );
    if freed != expected.garbage_blob_bytes {
        failures.push(format!(
            "{freed} bytes freed on disk, expected {}",
            expected.garbage_blob_bytes
        ));
    }
    if files_after != want_files {
        let extra = files_after
            .keys()
            .filter(|d| !want_files.contains_key(*d))
            .count();
        let missing = want_files
            .keys()
            .filter(|d| !files_after.contains_key(*d))
            .count();
        failures.push(format!(
            "blob files on disk are not the live blobs: {extra} left over, {missing} missing"
        ));
    }

    // Every tag that must survive pulls (manifest digest checked) and every
    // live blob is there; collected manifests and blobs are not.
    let t = Instant::now();
    let mut tag_checks: Vec<(String, String, String)> = expected.live_tags.clone();
    tag_checks.extend(
        pushed
            .iter()
            .map(|p| (p.repo.clone(), p.tag.clone(), p.digest.clone())),
    );
    let mut blob_checks: Vec<(String, String, bool)> = plan
        .blobs
        .iter()
        .zip(&expected.live_blob)
        .map(|(b, live)| (plan.repos[b.repo].clone(), b.digest.to_string(), *live))
        .collect();
    blob_checks.extend(pushed.iter().flat_map(|p| {
        p.blobs
            .iter()
            .map(|(d, _)| (p.repo.clone(), d.clone(), true))
    }));
    let gone_manifests: Vec<(String, String)> = plan
        .manifests
        .iter()
        .filter(|m| m.fate != Fate::Live)
        .map(|m| (plan.repos[m.repo].clone(), m.digest.to_string()))
        .collect();
    let (n_tags, n_blobs, n_gone) = (tag_checks.len(), blob_checks.len(), gone_manifests.len());
    let mut problems: Vec<String> = run_all(tag_checks, args.concurrency, |(repo, tag, digest)| {
        let app = app.clone();
        async move {
            let uri = format!("/v2/{repo}/manifests/{tag}");
            let (s, _, body) = call(&app, Method::GET, &uri, None, vec![]).await;
            let ok = s == StatusCode::OK && Digest::sha256_of(&body).to_string() == digest;
            (!ok).then(|| format!("{repo}:{tag} does not pull {digest}: {s}"))
        }
    })
    .await
    .into_iter()
    .flatten()
    .collect();
    problems.extend(
        run_all(
            blob_checks.into_iter().enumerate(),
            args.concurrency,
            |(i, (repo, digest, live))| {
                let app = app.clone();
                async move {
                    // Every 20th live blob is read whole and its digest checked.
                    let method = if live && i % 20 == 0 {
                        Method::GET
                    } else {
                        Method::HEAD
                    };
                    let uri = format!("/v2/{repo}/blobs/{digest}");
                    let (s, _, body) = call(&app, method.clone(), &uri, None, vec![]).await;
                    let ok = if live {
                        s == StatusCode::OK
                            && (method == Method::HEAD
                                || Digest::sha256_of(&body).to_string() == digest)
                    } else {
                        s == StatusCode::NOT_FOUND
                    };
                    (!ok).then(|| format!("{method} {repo}@{digest} (live: {live}): {s}"))
                }
            },
        )
        .await
        .into_iter()
        .flatten(),
    );
    let live_digests: HashSet<String> = expected.live_tags.iter().map(|t| t.2.clone()).collect();
    problems.extend(
        run_all(gone_manifests, args.concurrency, |(repo, digest)| {
            let app = app.clone();
            let live = live_digests.contains(&digest);
            async move {
                let uri = format!("/v2/{repo}/manifests/{digest}");
                let (s, _, _) = call(&app, Method::GET, &uri, None, vec![]).await;
                let want = if live {
                    StatusCode::OK
                } else {
                    StatusCode::NOT_FOUND
                };
                (s != want).then(|| format!("{repo}@{digest}: {s}, wanted {want}"))
            }
        })
        .await
        .into_iter()
        .flatten(),
    );
    println!(
        "checked in {}: {n_tags} tags pull their manifest, {n_blobs} blobs present or gone as expected, {n_gone} collected or deleted manifests gone: {} problems",
        secs(t.elapsed()),
        problems.len()
    );
    if !problems.is_empty() {
        failures.push(format!(
            "{} pull checks failed, e.g. {:?}",
            problems.len(),
            &problems[..problems.len().min(5)]
        ));
    }
    server.abort();
    drop(app);
    drop(reg);

    let report = berth::fsck::check(&data, false, &|_| {})
        .await
        .unwrap_or_else(|e| fail(&format!("fsck: {e}")));
    println!(
        "fsck: {} blobs, {} bytes, {} manifests, {} unreferenced blobs, {} problems",
        report.blobs,
        report.blob_bytes,
        report.manifests,
        report.unreferenced_blobs,
        report.problems.len()
    );
    if !report.problems.is_empty() || report.unreferenced_blobs != 0 {
        failures.push(format!(
            "fsck: {} unreferenced blobs, problems {:?}",
            report.unreferenced_blobs,
            &report.problems[..report.problems.len().min(5)]
        ));
    }

    if failures.is_empty() {
        println!("OK: the sweep deleted exactly the garbage and every live image still pulls");
    } else {
        for f in &failures {
            println!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}
