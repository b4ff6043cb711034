//! The management API (JSON, same token authentication as the data plane).
//! For now: deleting a whole repository, which the operator uses when a
//! Project is deleted.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::access;
use super::error::{ErrorCode, RegistryError};
use super::{Registry, Route};
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
    access::authorize(reg, &req.method, &route, None, &req.headers)?;
    let Route::Repository { name } = route else {
        unreachable!("built above")
    };
    if !reg.meta.delete_repository(&name).await? {
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
