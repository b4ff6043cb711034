//! The OCI Distribution API (v1.1) over HTTP.
//!
//! Layering: [`route::parse_route`] turns a path into a typed [`Route`];
//! [`dispatch`] picks the handler for (method, route) in one table; handlers
//! (one module per resource) call the metadata layer for what is visible where
//! and the blob store for bytes. Every failure is a [`RegistryError`], turned
//! into the spec's JSON error body in one place. Nothing here knows about
//! Kubernetes.
//!
//! Beside it: the GitLab-like management API (`management`, JSON errors of
//! its own), the operator's endpoints (`api`), the token endpoint (`token`)
//! [`cleanup`], which runs cleanup policies over a project's repositories
//! (also in process), and the web UI ([`ui`]).

mod access;
pub mod api;
mod blobs;
pub mod cleanup;
pub mod error;
pub mod gc;
mod linger;
mod listing;
mod management;
mod manifests;
pub mod metrics;
#[cfg(test)]
mod parser_fuzz;
pub mod route;
mod token;
pub mod ui;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::auth::Auth;
use crate::metadata::{Held, Lock, Metadata};
use crate::oci::Hasher;
use crate::storage::BlobStore;

pub use error::{ErrorCode, RegistryError, Result};
pub use route::{Route, parse_route};

/// Seconds a client refused for too many transfers is told to wait.
const TRANSFER_RETRY_AFTER_SECS: u64 = 5;

/// Shared state behind every request.
pub struct Registry {
    pub meta: Metadata,
    pub blobs: Arc<dyn BlobStore>,
    /// Token authentication; `None` serves everyone everything.
    pub auth: Option<Arc<Auth>>,
    /// Hash state of chunked uploads, so each chunk is hashed once as it
    /// arrives. Lost on restart; the upload is then re-read at completion.
    uploads: Mutex<UploadStates>,
    /// Limits on transfers (sizes, free space, idle bodies).
    pub limits: TransferLimits,
    /// One permit per blob transfer in progress (uploads and blob reads).
    transfers: Arc<tokio::sync::Semaphore>,
    tag_pages: listing::TagPageCache,
    /// Striped per-digest locks: making a blob visible (file in place, rows
    /// written) and garbage-collecting it (rows deleted, file deleted) never
    /// interleave for one digest. Many stripes: a sweep holds a batch's
    /// digests at once, and an upload whose digest shares a stripe waits.
    blob_locks: Vec<tokio::sync::Mutex<()>>,
    /// One sweep at a time (periodic or asked for through the API).
    pub(crate) sweeping: tokio::sync::Mutex<()>,
    /// Upload sessions older than this (milliseconds) are removed by sweeps.
    pub upload_expiry_ms: std::sync::atomic::AtomicU64,
    /// Web UI sign-ins.
    pub(crate) ui_sessions: ui::Sessions,
    /// What `/metrics` reports.
    pub metrics: metrics::Metrics,
}

/// How many in-process locks the blob digests are spread over.
const BLOB_STRIPES: usize = 4096;

/// Blob digests locked together (see [`Registry::try_lock_blobs`]).
pub struct BlobLocks<'a> {
    _local: Vec<tokio::sync::MutexGuard<'a, ()>>,
    _shared: Held,
}

/// A blob digest locked (see [`Registry::lock_blob`]).
pub struct BlobLock<'a> {
    _local: tokio::sync::MutexGuard<'a, ()>,
    _shared: Held,
}

#[derive(Default)]
struct UploadState {
    /// The hasher over the first `.0` bytes of the upload.
    hashed: Option<(u64, Hasher)>,
}

/// What one blob transfer may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferLimits {
    /// The largest blob an upload may reach (413 beyond it).
    pub max_blob_size: u64,
    /// Uploads are refused while the store reports less free space (0: off).
    pub min_free_bytes: u64,
    /// A request body that sends nothing for this long is cut.
    pub body_idle_timeout: Duration,
    /// Blob transfers in progress at most (429 beyond).
    pub max_concurrent_transfers: usize,
}

impl Default for TransferLimits {
    fn default() -> Self {
        let storage = crate::config::StorageConfig::default();
        TransferLimits {
            max_blob_size: storage.max_blob_size,
            min_free_bytes: storage.min_free_bytes,
            body_idle_timeout: Duration::from_secs(60),
            max_concurrent_transfers: 1024,
        }
    }
}

/// Upload hash states kept at most; beyond it the least recently used idle
/// ones are dropped (their uploads are then re-read once at completion).
const MAX_UPLOAD_STATES: usize = 10_000;
/// How often states of abandoned uploads are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// The hash states of uploads in progress, bounded: freed when the upload
/// completes, is cancelled or its repository deleted, when unused for longer
/// than the upload expiry (the session is gone by then), and beyond
/// [`MAX_UPLOAD_STATES`] least recently used first. A state whose lock is held
/// (a chunk is being received) is never dropped.
struct UploadStates {
    map: HashMap<String, (Arc<tokio::sync::Mutex<UploadState>>, Instant)>,
    cap: usize,
    last_prune: Instant,
}

impl UploadStates {
    fn new(cap: usize, now: Instant) -> UploadStates {
        UploadStates {
            map: HashMap::new(),
            cap,
            last_prune: now,
        }
    }

    fn get(
        &mut self,
        id: &str,
        now: Instant,
        expiry: Duration,
    ) -> Arc<tokio::sync::Mutex<UploadState>> {
        if !self.map.contains_key(id)
            && (self.map.len() >= self.cap || now.duration_since(self.last_prune) >= PRUNE_EVERY)
        {
            self.prune(now, expiry);
        }
        let entry = self
            .map
            .entry(id.to_string())
            .or_insert_with(|| (Arc::default(), now));
        entry.1 = now;
        entry.0.clone()
    }

    fn prune(&mut self, now: Instant, expiry: Duration) {
        self.last_prune = now;
        let busy = |state: &Arc<tokio::sync::Mutex<UploadState>>| state.try_lock().is_err();
        self.map
            .retain(|_, (state, used)| busy(state) || now.duration_since(*used) < expiry);
        if self.map.len() >= self.cap {
            // Make room for a quarter of the cap at once, oldest first.
            let target = self.cap - self.cap / 4;
            let mut idle: Vec<(Instant, String)> = self
                .map
                .iter()
                .filter(|(_, (state, _))| !busy(state))
                .map(|(id, (_, used))| (*used, id.clone()))
                .collect();
            idle.sort();
            let excess = self.map.len().saturating_sub(target);
            for (_, id) in idle.into_iter().take(excess) {
                self.map.remove(&id);
            }
        }
    }

    fn forget(&mut self, id: &str) {
        self.map.remove(id);
    }
}
impl Registry {
    pub fn new(
        meta: Metadata,
        blobs: Arc<dyn BlobStore>,
        auth: Option<Arc<Auth>>,
        limits: TransferLimits,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            meta,
            blobs,
            auth,
            uploads: Mutex::new(UploadStates::new(MAX_UPLOAD_STATES, Instant::now())),
            transfers: Arc::new(tokio::sync::Semaphore::new(limits.max_concurrent_transfers)),
            limits,
            tag_pages: listing::TagPageCache::default(),
            blob_locks: (0..BLOB_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            sweeping: tokio::sync::Mutex::new(()),
            upload_expiry_ms: std::sync::atomic::AtomicU64::new(24 * 3600 * 1000),
            ui_sessions: ui::Sessions::default(),
            metrics: metrics::Metrics::new(),
        })
    }

    /// The Prometheus text exposition of [`Registry::metrics`], with the
    /// figures kept elsewhere read now (a database that does not answer
    /// leaves out the GC figures rather than failing the scrape).
    pub async fn encode_metrics(&self) -> String {
        let gc = match self.meta.gc_status(crate::metadata::now_ms()).await {
            Ok(gc) => Some(gc),
            Err(e) => {
                tracing::warn!("metrics: GC figures not read: {e}");
                None
            }
        };
        let max = self.limits.max_concurrent_transfers as u64;
        self.metrics.encode(metrics::Figures {
            gc,
            pools: self.meta.pool_figures(),
            transfers_in_progress: max.saturating_sub(self.transfers.available_permits() as u64),
            transfers_max: max,
        })
    }

    /// Rendered tags/list pages kept, and the bytes they are accounted at.
    pub fn tag_page_cache_usage(&self) -> (usize, usize) {
        self.tag_pages.usage()
    }

    pub fn upload_expiry(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.upload_expiry_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Locks blob `digest` (see `blob_locks`), across replicas too (on
    /// PostgreSQL, a database lock).
    pub async fn lock_blob(&self, digest: &str) -> Result<BlobLock<'_>> {
        let local = self.blob_stripe(digest).lock().await;
        let shared = self.meta.lock(Lock::Blob(digest)).await?;
        Ok(BlobLock {
            _local: local,
            _shared: shared,
        })
    }

    /// Blob digests locked for a batch: the locks had, the digests locked,
    /// and those another replica is at work on (to be skipped, as `FOR
    /// UPDATE SKIP LOCKED` would). The in-process stripes are waited for
    /// (an upload holds its one stripe briefly, and one sweep runs at a
    /// time), each taken once when digests share it; the database locks are
    /// only tried, after the stripes are had, so a sweep never waits while
    /// holding one.
    pub async fn try_lock_blobs(
        &self,
        digests: &[String],
    ) -> Result<(BlobLocks<'_>, Vec<String>, Vec<String>)> {
        let mut stripes: Vec<usize> = digests.iter().map(|d| self.stripe_of(d)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut local = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            local.push(self.blob_locks[stripe].lock().await);
        }
        let candidates = digests.to_vec();
        let mut busy = Vec::new();
        let locks: Vec<Lock<'_>> = candidates.iter().map(|d| Lock::Blob(d)).collect();
        let (shared, had) = self.meta.try_lock_many(&locks).await?;
        drop(locks);
        let mut locked = Vec::with_capacity(candidates.len());
        for (digest, had) in candidates.into_iter().zip(had) {
            if had {
                locked.push(digest);
            } else {
                busy.push(digest);
            }
        }
        let locks = BlobLocks {
            _local: local,
            _shared: shared,
        };
        Ok((locks, locked, busy))
    }

    fn blob_stripe(&self, digest: &str) -> &tokio::sync::Mutex<()> {
        &self.blob_locks[self.stripe_of(digest)]
    }

    fn stripe_of(&self, digest: &str) -> usize {
        let stripe = digest
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        stripe as usize % self.blob_locks.len()
    }

    fn upload_state(&self, id: &str) -> Arc<tokio::sync::Mutex<UploadState>> {
        let expiry = self.upload_expiry();
        let mut states = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        states.get(id, Instant::now(), expiry)
    }

    fn forget_upload(&self, id: &str) {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget(id);
    }

    /// A permit for one blob transfer, held until its body is done; 429
    /// TOOMANYREQUESTS with Retry-After when all are taken.
    fn transfer_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit> {
        self.transfers.clone().try_acquire_owned().map_err(|_| {
            RegistryError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "the registry is serving its maximum of {} blob transfers; retry later",
                    self.limits.max_concurrent_transfers
                ),
            )
            .with_header(header::RETRY_AFTER, TRANSFER_RETRY_AFTER_SECS)
        })
    }

    /// Deletes a repository (see [`Metadata::delete_repository`]) together
    /// with the files and hash states of its uploads in progress. A file that
    /// cannot be removed is logged (fsck finds it); the repository is gone.
    pub async fn delete_repository(
        &self,
        repo: &str,
        check: crate::metadata::TagCheck<'_>,
    ) -> crate::metadata::Result<bool> {
        let Some(uploads) = self.meta.delete_repository_and_uploads(repo, check).await? else {
            return Ok(false);
        };
        for id in uploads {
            if let Some(upload) = crate::storage::UploadId::parse(&id)
                && let Err(e) = self.blobs.abort_upload(&upload).await
            {
                tracing::warn!(repository = repo, upload = %id, "cannot remove the upload's file: {e}");
            }
            self.forget_upload(&id);
        }
        Ok(true)
    }
}

/// The HTTP application: the registry API plus health endpoints.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/v2", any(dispatch))
        .route("/v2/", any(dispatch))
        .route("/v2/{*path}", any(dispatch))
        .route("/api/v1/repositories/{*name}", any(api::repository))
        .route("/api/v1/gc", get(api::gc_status))
        .route("/api/v1/gc/sweep", axum::routing::post(api::gc_sweep))
        .merge(management::routes())
        .merge(ui::routes())
        .route("/jwt/auth", get(token::token))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            registry.clone(),
            log_request,
        ))
        .with_state(registry)
}

async fn readyz(State(reg): State<Arc<Registry>>) -> Response {
    if let Some(auth) = &reg.auth
        && !auth.synced()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "projects and tokens not loaded yet",
        )
            .into_response();
    }
    match reg.meta.ping().await {
        Ok(()) => "ok".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

async fn dispatch(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let head = req.method() == Method::HEAD;
    let mut response = match route_request(&reg, req).await {
        Ok(r) => r,
        Err(e) => head_safe(head, e).into_response(),
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    response
}

async fn route_request(reg: &Registry, req: Request) -> Result<Response> {
    let (parts, body) = req.into_parts();
    let body = linger::lingering(body);
    let route = parse_route(parts.uri.path())?;
    let method = parts.method.clone();
    let caller = access::authorize(reg, &method, &route, parts.uri.query(), &parts.headers)?;
    let query = parse_query(parts.uri.query());
    let headers = &parts.headers;
    match (&method, route) {
        (&Method::GET | &Method::HEAD, Route::Base) => Ok(Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("{}"))
            .map_err(RegistryError::internal)?),
        (&Method::GET, Route::Catalog) => {
            listing::catalog(reg, &query, access::catalog_filter(reg, &caller)).await
        }
        (&Method::GET, Route::Tags { name }) => listing::tags(reg, &name, &query).await,
        (&Method::GET, Route::Referrers { name, digest }) => {
            listing::referrers(reg, &name, &digest, &query).await
        }
        (&Method::GET | &Method::HEAD, Route::Manifest { name, reference }) => {
            manifests::get(reg, &name, &reference, method == Method::HEAD).await
        }
        (&Method::PUT, Route::Manifest { name, reference }) => {
            manifests::put(reg, &caller, &name, &reference, headers, body).await
        }
        (&Method::DELETE, Route::Manifest { name, reference }) => {
            manifests::delete(reg, &caller, &name, &reference).await
        }
        (&Method::GET | &Method::HEAD, Route::Blob { name, digest }) => {
            blobs::get(reg, &name, &digest, headers, method == Method::HEAD).await
        }
        (&Method::DELETE, Route::Blob { name, digest }) => blobs::delete(reg, &name, &digest).await,
        (&Method::POST, Route::UploadStart { name }) => {
            uploads::start(reg, &caller, &name, &query, headers, body).await
        }
        (&Method::GET, Route::Upload { name, id }) => uploads::status(reg, &name, &id).await,
        (&Method::PATCH, Route::Upload { name, id }) => {
            uploads::patch(reg, &name, &id, headers, body).await
        }
        (&Method::PUT, Route::Upload { name, id }) => {
            uploads::finish(reg, &name, &id, &query, headers, body).await
        }
        (&Method::DELETE, Route::Upload { name, id }) => uploads::cancel(reg, &name, &id).await,
        (method, route) => Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("{method} is not supported on {route:?}"),
        )),
    }
}

/// A HEAD reply has no body, so a client shows only its status: for an
/// invalid name, "400 Bad Request" and not why. Every client starts a push
/// with a HEAD (does the blob or manifest exist?), so HEAD on an invalid
/// name answers 404 (nothing exists there, which is true); the client goes
/// on to its upload or manifest PUT, whose 400 NAME_INVALID body it shows.
fn head_safe(head: bool, e: RegistryError) -> RegistryError {
    if head && matches!(e.code, ErrorCode::NameInvalid) {
        e.with_status(StatusCode::NOT_FOUND)
    } else {
        e
    }
}

fn parse_query(query: Option<&str>) -> HashMap<String, String> {
    query
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

/// Logs each request: writes and failures at info, successful reads at debug.
async fn log_request(State(reg): State<Arc<Registry>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let route = metrics::route_kind(&path);
    let _upload = (route == "blob_upload"
        && matches!(method, Method::POST | Method::PATCH | Method::PUT))
    .then(|| reg.metrics.upload());
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let elapsed = start.elapsed();
    reg.metrics
        .request(route, method.as_str(), status, elapsed.as_secs_f64());
    let ms = millis(elapsed);
    let quiet = matches!(method, Method::GET | Method::HEAD) && status < 400;
    if quiet {
        tracing::debug!(%method, %path, status, ms, "request");
    } else {
        tracing::info!(%method, %path, status, ms, "request");
    }
    response
}

/// A duration in milliseconds for logs, rounded to the microsecond so the
/// figure prints as written (`0.036`, not `0.036208000000000004`).
pub(crate) fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// `Location`-style path for a repository resource.
fn location(name: &str, tail: impl std::fmt::Display) -> String {
    format!("/v2/{name}/{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_states_are_bounded_and_expire() {
        let t0 = Instant::now();
        let expiry = Duration::from_secs(3600);
        let mut states = UploadStates::new(8, t0);
        for i in 0..8 {
            states.get(&format!("u{i}"), t0 + Duration::from_secs(i), expiry);
        }
        assert_eq!(states.map.len(), 8);
        // A held state survives; the oldest idle ones make room.
        let held = states.get("u0", t0 + Duration::from_secs(9), expiry);
        let _busy = held.try_lock().unwrap();
        states.get("new", t0 + Duration::from_secs(10), expiry);
        assert!(states.map.len() <= 8, "{}", states.map.len());
        assert!(states.map.contains_key("u0") && states.map.contains_key("new"));
        assert!(!states.map.contains_key("u1"));

        // Unused past the expiry: freed at the next prune, busy or not aside.
        let later = t0 + expiry + Duration::from_secs(100);
        states.get("late", later, expiry);
        let mut left: Vec<&String> = states.map.keys().collect();
        left.sort();
        assert_eq!(left, ["late", "u0"]);

        states.forget("late");
        assert!(!states.map.contains_key("late"));
    }

    #[test]
    fn log_figures_print_without_float_noise() {
        let cases = [
            (Duration::from_nanos(36_208), "0.036"),
            (Duration::from_nanos(36_208_000), "36.208"),
            (Duration::from_micros(1_500_250), "1500.25"),
            (Duration::ZERO, "0"),
        ];
        for (d, want) in cases {
            assert_eq!(super::millis(d).to_string(), want, "{d:?}");
        }
    }
}
