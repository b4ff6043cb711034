//! `GET /jwt/auth`: the Docker token endpoint. Takes Basic credentials (a
//! user or token name and the token) or none, and returns a signed JWT that
//! grants exactly the part of the requested scopes the caller may have.

use std::sync::Arc;
use std::time::SystemTime;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::Registry;
use super::error::{ErrorCode, RegistryError};
use crate::auth::Identity;
use crate::auth::token::{Access, MAX_SCOPES, parse_scope};

pub(super) async fn token(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    match issue(&reg, &parts).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn issue(reg: &Registry, req: &Parts) -> Result<Response, RegistryError> {
    let Some(auth) = &reg.auth else {
        return Err(RegistryError::not_found(
            "authentication is not enabled on this registry",
        ));
    };
    let model = auth.model();
    let refused = || {
        reg.metrics
            .auth_failure(crate::registry::metrics::AuthFailure::BadCredentials);
        RegistryError::new(ErrorCode::Unauthorized, "invalid username or token")
            .with_header(header::WWW_AUTHENTICATE, "Basic realm=\"berth\"")
    };
    let identity = match basic_credentials(req) {
        Credentials::None => Identity::Anonymous,
        Credentials::Malformed => return Err(refused()),
        Credentials::Basic(user, secret) => {
            auth.authenticate(&user, &secret).await.ok_or_else(|| {
                tracing::info!(user = %user, "token request with unknown or expired credentials");
                refused()
            })?
        }
    };
    let requested = requested_scopes(req.uri.query().unwrap_or(""))?;
    let granted = model.grant(&identity, &requested);
    let (token, claims) = auth
        .tokens
        .issue(&identity.subject(), granted)
        .map_err(RegistryError::internal)?;
    let issued_at = humantime::format_rfc3339_seconds(
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(claims.iat),
    );
    let body = json!({
        "token": token,
        "access_token": token,
        "expires_in": claims.exp - claims.iat,
        "issued_at": issued_at.to_string(),
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from(body.to_string()))
        .map_err(RegistryError::internal)
}

/// The scopes a token request asks for (`scope` parameters, each one or
/// more space-separated scopes), at most [`MAX_SCOPES`] of them: more is
/// refused rather than cut, so no client gets a token silently short of what
/// it asked.
fn requested_scopes(query: &str) -> Result<Vec<Access>, RegistryError> {
    let mut requested = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "scope" {
            continue;
        }
        for scope in v.split(' ').filter(|s| !s.is_empty()) {
            if requested.len() == MAX_SCOPES {
                return Err(RegistryError::new(
                    ErrorCode::Denied,
                    format!("a token request may ask for at most {MAX_SCOPES} scopes; ask for fewer per token"),
                )
                .with_status(StatusCode::BAD_REQUEST));
            }
            if let Some(access) = parse_scope(scope) {
                requested.push(access);
            }
        }
    }
    Ok(requested)
}

enum Credentials {
    None,
    Malformed,
    Basic(String, String),
}

/// Credentials presented are either well-formed Basic or refused; only their
/// absence means anonymous.
fn basic_credentials(req: &Parts) -> Credentials {
    let Some(value) = req.headers.get(header::AUTHORIZATION) else {
        return Credentials::None;
    };
    let parsed = (|| {
        let value = value.to_str().ok()?;
        let encoded = value
            .strip_prefix("Basic ")
            .or_else(|| value.strip_prefix("basic "))?;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        let (user, secret) = text.split_once(':')?;
        Some(Credentials::Basic(user.to_string(), secret.to_string()))
    })();
    parsed.unwrap_or(Credentials::Malformed)
}
