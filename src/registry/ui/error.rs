//! The UI's error: a page that could not be shown. Handlers return
//! [`UiResult`] and use `?`; metadata errors convert here, once. An error
//! leaves the handler as a bare status with the [`UiError`] in the
//! response's extensions, and [`render_errors`], the layer around every page,
//! renders it in the frame of the viewer who asked (their name, their CSRF
//! token, a sign-in link for an anonymous visitor who hit a 404). This module
//! knows nothing of the pages.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::viewer::{Viewer, ViewerSlot};
use super::views::{Crumb, ErrorPage, Layout, html};
use crate::metadata::MetadataError;

/// A page that could not be shown.
#[derive(Debug, Clone)]
pub(super) struct UiError {
    status: StatusCode,
    heading: &'static str,
    message: String,
    /// A "not found": offers an anonymous visitor to sign in.
    offer_sign_in: bool,
}

pub(super) type UiResult<T = Response> = Result<T, UiError>;

impl UiError {
    pub(super) fn new(
        status: StatusCode,
        heading: &'static str,
        message: impl Into<String>,
    ) -> Self {
        UiError {
            status,
            heading,
            message: message.into(),
            offer_sign_in: false,
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        UiError::new(StatusCode::BAD_REQUEST, "Bad request", message)
    }

    pub(super) fn forbidden(message: impl Into<String>) -> Self {
        UiError::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// What the viewer cannot see (or what does not exist: the same page).
    pub(super) fn not_found(message: impl Into<String>) -> Self {
        UiError {
            offer_sign_in: true,
            ..UiError::new(StatusCode::NOT_FOUND, "Not found", message)
        }
    }

    pub(super) fn internal(e: impl std::fmt::Display) -> Self {
        UiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            format!("The registry could not answer: {e}"),
        )
    }

    /// The error page as `viewer` sees it (`None`: no viewer was extracted,
    /// which no page handler does; a frame without a user then).
    fn render(self, viewer: Option<&Viewer>) -> Response {
        if self.status.is_server_error() {
            tracing::error!("web UI: {}", self.message);
        }
        let crumbs = vec![Crumb::link("Projects", "/ui/")];
        let (layout, anonymous) = match viewer {
            Some(v) => (v.layout(self.heading, crumbs), v.principal.is_anonymous()),
            None => (
                Layout {
                    title: self.heading.to_string(),
                    user: None,
                    csrf: String::new(),
                    crumbs,
                    login_href: "/ui/login".into(),
                    auth_on: false,
                    notice: None,
                },
                false,
            ),
        };
        let page = ErrorPage {
            layout,
            heading: self.heading,
            message: self.message,
            show_sign_in: self.offer_sign_in && anonymous,
        };
        html(self.status, &page, None)
    }
}

impl From<MetadataError> for UiError {
    fn from(e: MetadataError) -> Self {
        UiError::internal(e)
    }
}

impl IntoResponse for UiError {
    /// The status, and the error for [`render_errors`] to render.
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// The layer that renders every page's [`UiError`] in its viewer's frame.
pub(super) async fn render_errors(mut req: Request, next: Next) -> Response {
    let slot = ViewerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let mut response = next.run(req).await;
    match response.extensions_mut().remove::<UiError>() {
        Some(e) => e.render(slot.get()),
        None => response,
    }
}
