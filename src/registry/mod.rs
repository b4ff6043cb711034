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
mod api;
mod blobs;
pub mod cleanup;
pub mod error;
mod listing;
mod management;
mod manifests;
pub mod route;
mod token;
pub mod ui;
mod uploads;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

use crate::auth::Auth;
use crate::metadata::Metadata;
use crate::oci::Hasher;
use crate::storage::BlobStore;

pub use error::{ErrorCode, RegistryError, Result};
pub use route::{Route, parse_route};

/// Shared state behind every request.
pub struct Registry {
    pub meta: Metadata,
    pub blobs: Arc<dyn BlobStore>,
    /// Token authentication; `None` serves everyone everything.
    pub auth: Option<Arc<Auth>>,
    /// Hash state of chunked uploads, so each chunk is hashed once as it
    /// arrives. Lost on restart; the upload is then re-read at completion.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<UploadState>>>>,
    tag_pages: listing::TagPageCache,
    /// Striped per-digest locks: making a blob visible (file in place, rows
    /// written) and garbage-collecting it (rows deleted, file deleted) never
    /// interleave for one digest.
    blob_locks: Vec<tokio::sync::Mutex<()>>,
    /// One sweep at a time (periodic or asked for through the API).
    pub(crate) sweeping: tokio::sync::Mutex<()>,
    /// Upload sessions older than this (milliseconds) are removed by sweeps.
    pub upload_expiry_ms: std::sync::atomic::AtomicU64,
    /// Web UI sign-ins.
    pub(crate) ui_sessions: ui::Sessions,
}

#[derive(Default)]
struct UploadState {
    /// The hasher over the first `.0` bytes of the upload.
    hashed: Option<(u64, Hasher)>,
}

impl Registry {
    pub fn new(
        meta: Metadata,
        blobs: Arc<dyn BlobStore>,
        auth: Option<Arc<Auth>>,
    ) -> Arc<Registry> {
        Arc::new(Registry {
            meta,
            blobs,
            auth,
            uploads: Mutex::new(HashMap::new()),
            tag_pages: listing::TagPageCache::default(),
            blob_locks: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
            sweeping: tokio::sync::Mutex::new(()),
            upload_expiry_ms: std::sync::atomic::AtomicU64::new(24 * 3600 * 1000),
            ui_sessions: ui::Sessions::default(),
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

    /// Locks blob `digest` (see `blob_locks`).
    pub async fn lock_blob(&self, digest: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = digest
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        self.blob_locks[stripe as usize % self.blob_locks.len()]
            .lock()
            .await
    }

    fn upload_state(&self, id: &str) -> Arc<tokio::sync::Mutex<UploadState>> {
        let mut map = self.uploads.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id.to_string()).or_default().clone()
    }

    fn forget_upload(&self, id: &str) {
        self.uploads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
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
        .layer(middleware::from_fn(log_request))
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
    let route = parse_route(req.uri().path())?;
    let method = req.method().clone();
    let caller = access::authorize(reg, &method, &route, req.uri().query(), req.headers())?;
    let (parts, body) = req.into_parts();
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
            uploads::start(reg, &caller, &name, &query, body).await
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
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let response = next.run(req).await;
    let status = response.status().as_u16();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let quiet = matches!(method, Method::GET | Method::HEAD) && status < 400;
    if quiet {
        tracing::debug!(%method, %path, status, ms, "request");
    } else {
        tracing::info!(%method, %path, status, ms, "request");
    }
    response
}

/// `Location`-style path for a repository resource.
fn location(name: &str, tail: impl std::fmt::Display) -> String {
    format!("/v2/{name}/{tail}")
}
