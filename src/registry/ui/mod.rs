//! The web UI, served by `berth serve` under `/ui/`: projects, a project's
//! repositories, a repository's tags, a tag's details, and deletes with a
//! confirmation page. Server-rendered HTML from templates compiled into the
//! binary (`templates/ui/`); the pages work without JavaScript, which only
//! adds copy buttons and "select all".
//!
//! | path (below `/ui`) | page |
//! |---|---|
//! | `/` | projects the viewer may see (`q`) |
//! | `/login`, `POST /login`, `POST /logout` | sign-in with a user name and token |
//! | `/projects/<project>` | repositories (`q`, `sort`, `order`, `page`) |
//! | `/projects/<project>/repositories/<id>` | tags (`q`, `sort`, `order`, `kind`, `per_page`, `page`) |
//! | `/projects/<project>/repositories/<id>/tags/<tag>` | a tag: platforms, layers, referrers |
//! | `.../<id>/tags/delete?tag=..`, `POST` | confirm, then delete tags |
//! | `.../<id>/delete`, `POST` | confirm, then delete the repository |
//!
//! `<project>` is the URL-encoded project path in one segment, as in the
//! management API, whose access rules ([`Principal`], [`ProjectScope`]) and
//! queries the pages share: what a viewer cannot see is a 404, what they
//! cannot change shows no button and is refused (403) anyway. Every POST
//! needs the CSRF token of [`session`] and a same-origin `Origin` when the
//! browser sends one.
//!
//! One module per page ([`projects`], [`project`], [`repository`], [`tag`],
//! [`deletes`], [`sign_in`]); every handler takes the [`viewer::Viewer`] (or,
//! for a POST, [`viewer::Posted`]) extractor and returns a
//! [`error::UiResult`], whose errors [`error::render_errors`] renders in one
//! place. The page modules call the registry's metadata and the management
//! API's [`ProjectScope`]; they never touch storage or sessions directly.

mod deletes;
mod error;
mod project;
mod projects;
mod repository;
mod session;
mod sign_in;
mod tag;
mod viewer;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

pub use session::{DEFAULT_SESSION_TTL, Sessions};

use super::Registry;
#[cfg(doc)]
use super::{access::Principal, management::ProjectScope};

pub(super) fn routes() -> Router<Arc<Registry>> {
    const REPO: &str = "/ui/projects/{project}/repositories/{id}";
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(projects::projects))
        .route("/ui/login", get(sign_in::login_page).post(sign_in::login))
        .route("/ui/logout", post(sign_in::logout))
        .route("/ui/projects/{project}", get(project::project))
        .route(REPO, get(repository::repository))
        .route(
            &format!("{REPO}/delete"),
            get(deletes::confirm_repository_delete).post(deletes::delete_repository),
        )
        .route(
            &format!("{REPO}/tags/delete"),
            get(deletes::confirm_tags_delete).post(deletes::delete_tags),
        )
        .route(&format!("{REPO}/tags/{{tag}}"), get(tag::tag))
        .layer(middleware::from_fn(error::render_errors))
        .layer(middleware::from_fn(page_headers));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/static/app.css", get(css))
        .route("/ui/static/app.js", get(js))
        .merge(pages)
}

/// Headers of every page: no framing, no sniffing, scripts and styles from
/// this origin only, nothing cached (pages show what a session may see).
async fn page_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", include_str!("assets/app.css"))
}

async fn js() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    )
}
