//! The operator's management endpoints (JSON, same token authentication as
//! the data plane): deleting a whole repository by name (the operator does
//! when a Project is deleted), garbage collection status and sweeps (admin
//! only). The GitLab-like project API is in `management.rs`. The JSON
//! payloads the operator reads back ([`GcStatus`], [`SweepCounts`]) are
//! defined here.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::access::{self, Principal};
use super::error::{ErrorCode, RegistryError};
use super::{Registry, Route};
use crate::metadata::GcState;
use crate::oci::validate_repository;

/// `DELETE /api/v1/repositories/<name>`: 204, or 404 NAME_UNKNOWN.
pub(super) async fn repository(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    match delete_repository(&reg, &parts).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn delete_repository(
    reg: &Registry,
    req: &axum::http::request::Parts,
) -> Result<Response, RegistryError> {
    let name = req
        .uri
        .path()
        .strip_prefix("/api/v1/repositories/")
        .unwrap_or_default()
        .trim_end_matches('/')
        .to_string();
    validate_repository(&name)
        .map_err(|e| RegistryError::new(ErrorCode::NameInvalid, e.to_string()))?;
    if req.method != Method::DELETE {
        return Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("{} is not supported on repositories", req.method),
        ));
    }
    let route = Route::Repository { name };
    let caller = access::authorize(reg, &req.method, &route, None, &req.headers)?;
    let Route::Repository { name } = route else {
        unreachable!("built above")
    };
    // Tag rules hold for every tag that would go, except when the admin (the
    // operator) empties a Project that is being deleted: the project and its
    // rules cease to exist.
    let guard = access::TagGuard::new(reg, &caller, &name);
    let project_deleted = guard.is_admin()
        && form_urlencoded::parse(req.uri.query().unwrap_or_default().as_bytes())
            .any(|(k, v)| k == "project_deleted" && v == "true");
    let check = |t: &str, op| {
        if project_deleted {
            Ok(())
        } else {
            guard.check(t, op)
        }
    };
    if !reg.delete_repository(&name, &check).await? {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} does not exist"),
        ));
    }
    tracing::info!(repository = %name, "deleted repository");
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::empty())
        .map_err(RegistryError::internal)
}

/// Garbage collection is the instance admin's (and the operator's, which
/// signs admin tokens with the Registry's key): an admin bearer token, or
/// the admin's Basic credentials.
async fn require_admin(
    reg: &Registry,
    headers: &axum::http::HeaderMap,
) -> Result<(), RegistryError> {
    let unauthorized = |message: String, challenges: Vec<String>| {
        challenges.into_iter().fold(
            RegistryError::new(ErrorCode::Unauthorized, message),
            |e, c| e.with_header(axum::http::header::WWW_AUTHENTICATE, c),
        )
    };
    match Principal::authenticate(reg, headers).await {
        Ok(p) if p.is_admin() => Ok(()),
        Ok(p) if p.is_anonymous() => Err(unauthorized(
            "authentication required".into(),
            Principal::challenges(reg, headers),
        )),
        Ok(_) => Err(RegistryError::new(
            ErrorCode::Denied,
            "garbage collection is for the registry admin",
        )),
        Err(u) => Err(unauthorized(u.message, u.challenges)),
    }
}

fn json(status: StatusCode, body: &impl serde::Serialize) -> Result<Response, RegistryError> {
    Response::builder()
        .status(status)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            serde_json::to_vec(body).map_err(RegistryError::internal)?,
        ))
        .map_err(RegistryError::internal)
}

/// Garbage collection figures (the JSON of `GET /api/v1/gc`, which the
/// operator reads back).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcStatus {
    pub pending_manifest_reviews: i64,
    pub pending_blob_reviews: i64,
    pub due_manifest_reviews: i64,
    pub due_blob_reviews: i64,
    pub review_delay_ms: i64,
    pub last_sweep_at_ms: Option<i64>,
    pub sweeps: i64,
    pub manifests_deleted: i64,
    pub blobs_deleted: i64,
    pub bytes_deleted: i64,
    pub uploads_expired: i64,
}

impl From<GcState> for GcStatus {
    fn from(s: GcState) -> GcStatus {
        GcStatus {
            pending_manifest_reviews: s.pending_manifest_reviews,
            pending_blob_reviews: s.pending_blob_reviews,
            due_manifest_reviews: s.due_manifest_reviews,
            due_blob_reviews: s.due_blob_reviews,
            review_delay_ms: s.review_delay_ms,
            last_sweep_at_ms: s.last_sweep_at_ms,
            sweeps: s.sweeps,
            manifests_deleted: s.manifests_deleted,
            blobs_deleted: s.blobs_deleted,
            bytes_deleted: s.bytes_deleted,
            uploads_expired: s.uploads_expired,
        }
    }
}

/// What one sweep did (the JSON of `POST /api/v1/gc/sweep`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SweepCounts {
    pub manifests_deleted: i64,
    pub blobs_deleted: i64,
    pub bytes_deleted: i64,
    pub uploads_expired: i64,
    /// Blob reviews this sweep took (kept or deleted); a review another
    /// sweeper holds is skipped, not counted.
    #[serde(default)]
    pub blob_reviews: i64,
}

/// `GET /api/v1/gc`: pending reviews, last sweep, totals deleted.
pub(super) async fn gc_status(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let result = async {
        require_admin(&reg, &parts.headers).await?;
        let status = reg.meta.gc_status(crate::metadata::now_ms()).await?;
        json(StatusCode::OK, &GcStatus::from(status))
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

/// `POST /api/v1/gc/sweep`: runs a sweep now; answers what it deleted.
pub(super) async fn gc_sweep(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let result = async {
        require_admin(&reg, &parts.headers).await?;
        let counts = crate::registry::gc::sweep(&reg, reg.upload_expiry()).await?;
        json(StatusCode::OK, &counts)
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}
