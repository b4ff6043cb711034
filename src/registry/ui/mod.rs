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

mod session;
mod views;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use askama::Template;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use futures_util::StreamExt;

use session::{CSRF_COOKIE, SESSION_COOKIE, cookie, random_token, set_cookie};
pub use session::{DEFAULT_SESSION_TTL, Sessions};
use views::*;

use super::Registry;
use super::access::{Action, Principal};
use super::management::ProjectScope;
use crate::auth::Identity;
use crate::auth::model::Visibility;
use crate::metadata::{MetadataError, RepositoryRow, TagKind, TagOrder, TagQuery};
use crate::oci::Digest;

/// Largest form body read.
const MAX_FORM: usize = 256 * 1024;
/// Most tags one bulk delete takes (a page holds at most 100).
const MAX_BULK: usize = 100;
const PER_PAGE_CHOICES: [u32; 3] = [20, 50, 100];

pub(super) fn routes() -> Router<Arc<Registry>> {
    const REPO: &str = "/ui/projects/{project}/repositories/{id}";
    let pages = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(projects))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", axum::routing::post(logout))
        .route("/ui/projects/{project}", get(project))
        .route(REPO, get(repository))
        .route(
            &format!("{REPO}/delete"),
            get(confirm_repository_delete).post(delete_repository),
        )
        .route(
            &format!("{REPO}/tags/delete"),
            get(confirm_tags_delete).post(delete_tags),
        )
        .route(&format!("{REPO}/tags/{{tag}}"), get(tag))
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

/// A page that could not be shown.
pub(super) struct UiError {
    status: StatusCode,
    heading: &'static str,
    message: String,
    /// Boxed: errors travel through every `?`, layouts are large.
    layout: Box<Layout>,
    show_sign_in: bool,
}

type UiResult<T = Response> = Result<T, UiError>;

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("web UI: {}", self.message);
        }
        let mut layout = *self.layout;
        layout.title = self.heading.to_string();
        let page = ErrorPage {
            layout,
            heading: self.heading,
            message: self.message,
            show_sign_in: self.show_sign_in,
        };
        html(self.status, &page, None)
    }
}

/// Renders a template (or, should that fail, a plain 500).
fn html(status: StatusCode, page: &impl Template, cookies: Option<Vec<String>>) -> Response {
    match page.render() {
        Ok(body) => {
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response();
            for c in cookies.into_iter().flatten() {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Err(e) => {
            tracing::error!("web UI: rendering a page: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// Who is looking, and what the page needs to know about them.
struct Viewer {
    reg: Arc<Registry>,
    principal: Principal,
    /// The signed-in name to show; `None` for anonymous visitors (and when
    /// authentication is off).
    name: Option<String>,
    session_id: Option<String>,
    /// What the CSRF token is bound to: the session id, else the browser's
    /// `berth_csrf` cookie (`None`: the browser has none yet).
    anchor: Option<String>,
    /// A new `berth_csrf` cookie to send (the browser had none).
    new_anchor: Option<String>,
    parts: Parts,
}

fn display_name(identity: &Identity, user: &str) -> String {
    match identity {
        Identity::Admin => "admin".into(),
        Identity::User { name, .. } => name.clone(),
        Identity::DeployToken { project, name } => format!("{name} (deploy token of {project})"),
        Identity::AccessToken { project, name } => format!("{name} (access token of {project})"),
        Identity::ServiceAccount { namespace, name } => {
            format!("system:serviceaccount:{namespace}:{name}")
        }
        Identity::Anonymous => user.to_string(),
    }
}

impl Viewer {
    async fn new(reg: Arc<Registry>, parts: Parts) -> Viewer {
        let cookies = parts
            .headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join("; ");
        let mut principal = Principal::Open;
        let mut name = None;
        let mut session_id = None;
        if let Some(auth) = &reg.auth {
            principal = Principal::Identity {
                identity: Identity::Anonymous,
                model: auth.model(),
            };
            if let Some(id) = cookie(&cookies, SESSION_COOKIE)
                && let Some(s) = reg.ui_sessions.get(id)
            {
                // The token is checked again (by its hash) on every request:
                // a removed or expired token ends the session.
                match auth.recheck(&s.user, &s.proof) {
                    Some(identity) => {
                        name = Some(display_name(&identity, &s.user));
                        session_id = Some(id.to_string());
                        principal = Principal::Identity {
                            identity,
                            model: auth.model(),
                        };
                    }
                    None => reg.ui_sessions.remove(id),
                }
            }
        }
        let browser_anchor = cookie(&cookies, CSRF_COOKIE).map(str::to_string);
        let (anchor, new_anchor) = match (&session_id, browser_anchor) {
            (Some(id), _) => (Some(id.clone()), None),
            (None, Some(a)) => (Some(a), None),
            (None, None) => (None, Some(random_token())),
        };
        Viewer {
            reg,
            principal,
            name,
            session_id,
            anchor,
            new_anchor,
            parts,
        }
    }

    /// Did the browser reach us over HTTPS (directly or through a proxy)?
    /// Did the browser reach us over HTTPS? The same rule as the token
    /// realm's scheme ([`access::origin`]): forwarded headers count only when
    /// `auth.trustForwardedHeaders` is set.
    fn secure(&self) -> bool {
        let trust = self.reg.auth.as_ref().is_some_and(|a| a.trust_forwarded);
        super::access::origin(&self.parts.headers, self.parts.uri.scheme_str(), trust).0 == "https"
    }

    /// The CSRF token for this page's forms.
    fn csrf(&self) -> String {
        let anchor = self.anchor.as_ref().or(self.new_anchor.as_ref());
        anchor
            .map(|a| self.reg.ui_sessions.csrf_token(a))
            .unwrap_or_default()
    }

    /// Cookies to set with a page: the CSRF anchor, when new.
    fn cookies(&self) -> Option<Vec<String>> {
        self.new_anchor.as_ref().map(|a| {
            vec![set_cookie(
                CSRF_COOKIE,
                a,
                "Strict",
                self.reg.ui_sessions.ttl(),
                self.secure(),
            )]
        })
    }

    fn path_and_query(&self) -> String {
        self.parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/ui/".into())
    }

    fn layout(&self, title: impl Into<String>, crumbs: Vec<Crumb>) -> Layout {
        let next = self.path_and_query();
        let login_href = if next.starts_with("/ui/login") {
            "/ui/login".to_string()
        } else {
            format!("/ui/login?next={}", encode(&next))
        };
        Layout {
            title: title.into(),
            user: self.name.clone(),
            csrf: self.csrf(),
            crumbs,
            login_href,
            auth_on: self.reg.auth.is_some(),
            notice: None,
        }
    }

    fn error(
        &self,
        status: StatusCode,
        heading: &'static str,
        message: impl Into<String>,
    ) -> UiError {
        UiError {
            status,
            heading,
            message: message.into(),
            layout: Box::new(self.layout(heading, vec![Crumb::link("Projects", "/ui/")])),
            show_sign_in: false,
        }
    }

    fn not_found(&self, what: impl Into<String>) -> UiError {
        let anonymous = self.principal.is_anonymous();
        let mut e = self.error(StatusCode::NOT_FOUND, "Not found", what);
        e.show_sign_in = anonymous;
        e
    }

    fn page(&self, page: &impl Template) -> Response {
        html(StatusCode::OK, page, self.cookies())
    }

    fn query(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.parts.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }

    fn param(&self, name: &str) -> String {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    /// The registry's address as clients reach it (`Host`).
    fn host(&self) -> String {
        self.parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| "localhost".into())
    }

    /// Refuses a form that does not come from a page of ours: a foreign
    /// `Origin` or `Sec-Fetch-Site`, or a missing or wrong CSRF token.
    fn check_form(&self, form: &Form) -> UiResult<()> {
        let refuse = |why: &str| {
            tracing::warn!(path = %self.parts.uri.path(), "web UI: form refused: {why}");
            Err(self.error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "The form was refused by the CSRF check ({why}). \
                     Reload the page and submit it again."
                ),
            ))
        };
        let headers = &self.parts.headers;
        if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
            && origin != "null"
        {
            let host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            if host != self.host() {
                return refuse("the request came from another site");
            }
        }
        if headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v == "cross-site")
        {
            return refuse("the request came from another site");
        }
        let token = form.get("csrf").unwrap_or_default();
        if token.is_empty() {
            return refuse("the form has no CSRF token");
        }
        match &self.anchor {
            Some(a) if self.reg.ui_sessions.csrf_valid(a, token) => Ok(()),
            _ => refuse("the CSRF token is wrong or expired"),
        }
    }

    fn scope(&self, project: &str) -> UiResult<ProjectScope> {
        let missing = || self.not_found(format!("There is no project {project} you can see."));
        let scope = ProjectScope::resolve(
            self.principal.model().cloned(),
            project,
            self.principal.is_admin(),
        )
        .ok_or_else(missing)?;
        // A declared project is shown to those who may pull in it.
        if let Some(model) = self.principal.model()
            && model.projects().iter().any(|p| p.path == project)
            && !self.principal.may_see_project(project)
        {
            return Err(missing());
        }
        Ok(scope)
    }

    /// Repository `id` of the project, if the viewer may pull from it.
    async fn repository(&self, scope: &ProjectScope, id: &str) -> UiResult<RepositoryRowView> {
        let missing = || self.not_found(format!("There is no repository {id} you can see."));
        let id: i64 = id.parse().map_err(|_| missing())?;
        let row = self
            .reg
            .meta
            .repository_by_id(id)
            .await
            .map_err(|e| self.internal(e))?
            .filter(|r| scope.contains(&r.name) && self.principal.may(&r.name, Action::Pull))
            .ok_or_else(missing)?;
        Ok(RepositoryRowView {
            can_delete: self.principal.may(&row.name, Action::Delete),
            row,
        })
    }

    fn internal(&self, e: impl std::fmt::Display) -> UiError {
        self.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            format!("The registry could not answer: {e}"),
        )
    }

    /// Projects › the project › the repository (when given) › `here`, the
    /// current page.
    fn crumbs(project: &str, repo: Option<&RepositoryRow>, here: &str) -> Vec<Crumb> {
        let mut crumbs = vec![
            Crumb::link("Projects", "/ui/"),
            Crumb::link(project, &project_href(project)),
        ];
        if let Some(r) = repo {
            crumbs.push(Crumb::link(
                relative(project, &r.name),
                &repository_href(project, r.id),
            ));
        }
        crumbs.push(Crumb::here(here));
        crumbs
    }
}

/// The repository `id` of the project, if the viewer may delete in it (403
/// otherwise; 404 if they may not see it).
async fn may_delete(v: &Viewer, project: &str, id: &str) -> UiResult<RepositoryRowView> {
    let scope = v.scope(project)?;
    let repo = v.repository(&scope, id).await?;
    if !repo.can_delete {
        return Err(v.error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("You may not delete in {}.", repo.row.name),
        ));
    }
    Ok(repo)
}

/// The viewer and fields of a posted form, after the CSRF check.
async fn posted(reg: Arc<Registry>, req: Request) -> UiResult<(Viewer, Form)> {
    let (v, body) = viewer(reg, req).await;
    let form = read_form(&v, body).await?;
    v.check_form(&form)?;
    Ok((v, form))
}

struct RepositoryRowView {
    row: RepositoryRow,
    can_delete: bool,
}

/// A repository's name below its project (`.` for the project's own).
fn relative<'a>(project: &str, repo: &'a str) -> &'a str {
    match repo.strip_prefix(project) {
        Some("") => ".",
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => repo,
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn project_href(project: &str) -> String {
    format!("/ui/projects/{}", encode(project))
}

fn repository_href(project: &str, id: i64) -> String {
    format!("{}/repositories/{id}", project_href(project))
}

async fn viewer(reg: Arc<Registry>, req: Request) -> (Viewer, Body) {
    let (parts, body) = req.into_parts();
    (Viewer::new(reg, parts).await, body)
}

// ---------------------------------------------------------------- projects

async fn projects(State(reg): State<Arc<Registry>>, req: Request) -> UiResult {
    let (v, _) = viewer(reg, req).await;
    let q = v.param("q");
    let needle = q.trim().to_lowercase();
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if let Some(model) = v.principal.model() {
        for p in model.projects() {
            if !v.principal.may_see_project(&p.path) {
                continue;
            }
            seen.insert(p.path.clone());
            rows.push((
                p.path.clone(),
                match p.visibility {
                    Visibility::Public => "Public",
                    Visibility::Internal => "Internal",
                    Visibility::Private => "Private",
                }
                .to_string(),
            ));
        }
    }
    // Without projects (authentication off), or for the admin's repositories
    // outside any project: group by the first path component.
    if v.principal.is_admin() {
        let names = v
            .reg
            .meta
            .repository_names()
            .await
            .map_err(|e| v.internal(e))?;
        let model = v.principal.model().cloned();
        for name in names {
            let outside = model
                .as_ref()
                .is_none_or(|m| matches!(m.locate(&name), crate::auth::Location::Outside));
            let top = name.split('/').next().unwrap_or(&name).to_string();
            if outside && seen.insert(top.clone()) {
                let label = if model.is_some() { "No project" } else { "—" };
                rows.push((top, label.to_string()));
            }
        }
    }
    rows.retain(|(path, _)| needle.is_empty() || path.to_lowercase().contains(&needle));
    rows.sort();
    let mut projects = Vec::with_capacity(rows.len());
    for (path, visibility) in rows {
        let count = match ProjectScope::resolve(
            v.principal.model().cloned(),
            &path,
            v.principal.is_admin(),
        ) {
            Some(scope) => scope
                .repositories(&v.reg.meta)
                .await
                .map_err(|e| v.internal(e))?
                .iter()
                .filter(|r| v.principal.may(&r.name, Action::Pull))
                .count(),
            None => 0,
        };
        projects.push(ProjectLine {
            href: project_href(&path),
            path,
            visibility,
            repositories: count,
        });
    }
    let mut layout = v.layout("Projects", vec![Crumb::here("Projects")]);
    if v.param("signed_out") == "1" {
        layout.notice = Some("You are signed out.".into());
    }
    Ok(v.page(&ProjectsPage {
        layout,
        q,
        projects,
    }))
}

// ---------------------------------------------------------------- sign-in

/// A `next` target that stays within the UI.
fn safe_next(next: &str) -> String {
    let ok = next.starts_with("/ui/")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.starts_with("/ui/login")
        && next.chars().all(|c| !c.is_control());
    if ok { next.to_string() } else { "/ui/".into() }
}

async fn login_page(State(reg): State<Arc<Registry>>, req: Request) -> UiResult {
    let (v, _) = viewer(reg, req).await;
    if v.reg.auth.is_none() {
        return Ok(Redirect::to("/ui/").into_response());
    }
    let next = safe_next(&v.param("next"));
    Ok(v.page(&LoginPage {
        layout: v.layout("Sign in", vec![Crumb::link("Projects", "/ui/")]),
        error: None,
        next,
        user: String::new(),
        session_hours: v.reg.ui_sessions.ttl().as_secs() / 3600,
    }))
}

/// A submitted form's fields (repeated names kept, in order).
struct Form(Vec<(String, String)>);

impl Form {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

async fn read_form(v: &Viewer, body: Body) -> UiResult<Form> {
    let mut out = Vec::new();
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| {
            v.error(
                StatusCode::BAD_REQUEST,
                "Bad request",
                format!("reading the form: {e}"),
            )
        })?;
        if out.len() + frame.len() > MAX_FORM {
            return Err(v.error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Bad request",
                "The form is too large.",
            ));
        }
        out.extend_from_slice(&frame);
    }
    Ok(Form(form_urlencoded::parse(&out).into_owned().collect()))
}

async fn login(State(reg): State<Arc<Registry>>, req: Request) -> UiResult {
    let (v, form) = posted(reg, req).await?;
    let Some(auth) = v.reg.auth.clone() else {
        return Ok(Redirect::to("/ui/").into_response());
    };
    let user = form.get("user").unwrap_or_default().trim().to_string();
    let token = form.get("token").unwrap_or_default().to_string();
    let next = safe_next(form.get("next").unwrap_or_default());
    let signed_in = if user.is_empty() || token.is_empty() {
        None
    } else {
        auth.sign_in(&user, &token).await
    };
    drop(token);
    let Some((identity, proof)) = signed_in else {
        tracing::info!(user = %user, "web UI: sign-in refused");
        let page = LoginPage {
            layout: v.layout("Sign in", vec![Crumb::link("Projects", "/ui/")]),
            error: Some("Invalid user name or token.".into()),
            next,
            user,
            session_hours: v.reg.ui_sessions.ttl().as_secs() / 3600,
        };
        return Ok(html(StatusCode::UNAUTHORIZED, &page, v.cookies()));
    };
    if let Some(old) = &v.session_id {
        v.reg.ui_sessions.remove(old);
    }
    let ttl = v.reg.ui_sessions.ttl_of(&proof);
    let id = v.reg.ui_sessions.create(&user, proof);
    tracing::info!(user = %user, identity = %identity.subject(), "web UI: signed in");
    let mut response = Redirect::to(&next).into_response();
    let cookie = set_cookie(SESSION_COOKIE, &id, "Lax", ttl, v.secure());
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

async fn logout(State(reg): State<Arc<Registry>>, req: Request) -> UiResult {
    let (v, _) = posted(reg, req).await?;
    if let Some(id) = &v.session_id {
        v.reg.ui_sessions.remove(id);
    }
    let mut response = Redirect::to("/ui/?signed_out=1").into_response();
    let cookie = set_cookie(SESSION_COOKIE, "", "Lax", Duration::ZERO, v.secure());
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    Ok(response)
}

// ---------------------------------------------------------------- a project

#[derive(Clone, Copy, PartialEq, Eq)]
enum RepoSort {
    Name,
    Updated,
    Size,
    Tags,
}

async fn project(
    State(reg): State<Arc<Registry>>,
    Path(project): Path<String>,
    req: Request,
) -> UiResult {
    let (v, _) = viewer(reg, req).await;
    let scope = v.scope(&project)?;
    let q = v.param("q");
    let sort = match v.param("sort").as_str() {
        "" | "name" => RepoSort::Name,
        "updated" => RepoSort::Updated,
        "size" => RepoSort::Size,
        "tags" => RepoSort::Tags,
        other => return Err(bad_param(&v, "sort", other, "name, updated, size or tags")),
    };
    let descending = parse_order(&v)?;
    let page = parse_page(&v)?;
    let mut rows: Vec<_> = v
        .reg
        .meta
        .repository_summaries(&project)
        .await
        .map_err(|e| v.internal(e))?
        .into_iter()
        .filter(|r| scope.contains(&r.row.name) && v.principal.may(&r.row.name, Action::Pull))
        .filter(|r| q.is_empty() || r.row.name.to_lowercase().contains(&q.to_lowercase()))
        .collect();
    rows.sort_by(|a, b| {
        let by = match sort {
            RepoSort::Name => std::cmp::Ordering::Equal,
            RepoSort::Updated => a.last_update.cmp(&b.last_update),
            RepoSort::Size => a.size.cmp(&b.size),
            RepoSort::Tags => a.tags.cmp(&b.tags),
        };
        by.then_with(|| a.row.name.cmp(&b.row.name))
    });
    if descending {
        rows.reverse();
    }
    let per_page = 50u32;
    let total = rows.len() as u64;
    let pages = total.div_ceil(u64::from(per_page)).max(1);
    let page = page.min(pages);
    let base = project_href(&project);
    let state = ListState {
        base: base.clone(),
        params: vec![
            ("q", q.clone(), ""),
            ("sort", v.param("sort"), "name"),
            ("order", v.param("order"), "asc"),
        ],
    };
    let shown: Vec<RepositoryLine> = rows
        .into_iter()
        .skip(((page - 1) * u64::from(per_page)) as usize)
        .take(per_page as usize)
        .map(|r| {
            let href = repository_href(&project, r.row.id);
            RepositoryLine {
                delete_href: format!("{href}/delete"),
                href,
                can_delete: v.principal.may(&r.row.name, Action::Delete),
                path: r.row.name,
                tags: r.tags,
                size: human_size(r.size),
                size_bytes: r.size,
                updated: r.last_update.map(Stamp::of),
            }
        })
        .collect();
    let mut layout = v.layout(
        project.clone(),
        vec![Crumb::link("Projects", "/ui/"), Crumb::here(&project)],
    );
    if v.param("deleted") == "repository" {
        layout.notice = Some("The repository was deleted.".into());
    }
    let count_text = count_text(total, "repository", "repositories", !q.is_empty());
    Ok(v.page(&ProjectPage {
        layout,
        path: project.clone(),
        base,
        q,
        sorts: options(
            &[
                ("name", "Name"),
                ("updated", "Last updated"),
                ("size", "Size"),
                ("tags", "Tag count"),
            ],
            &v.param("sort"),
        ),
        orders: order_options(descending),
        count_text,
        any_delete: shown.iter().any(|r| r.can_delete),
        rows: shown,
        pager: state.pager(page, pages),
    }))
}

fn bad_param(v: &Viewer, name: &str, value: &str, allowed: &str) -> UiError {
    v.error(
        StatusCode::BAD_REQUEST,
        "Bad request",
        format!("{name} must be {allowed}, not {value:?}."),
    )
}

fn parse_order(v: &Viewer) -> UiResult<bool> {
    match v.param("order").as_str() {
        "" | "asc" => Ok(false),
        "desc" => Ok(true),
        other => Err(bad_param(v, "order", other, "asc or desc")),
    }
}

fn parse_page(v: &Viewer) -> UiResult<u64> {
    match v.param("page").as_str() {
        "" => Ok(1),
        p => p
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| bad_param(v, "page", p, "a positive integer")),
    }
}

fn count_text(n: u64, one: &str, many: &str, filtered: bool) -> String {
    let noun = if n == 1 { one } else { many };
    match (filtered, n) {
        (true, 1) => format!("1 {noun} matches"),
        (true, _) => format!("{n} {noun} match"),
        (false, _) => format!("{n} {noun}"),
    }
}

// ---------------------------------------------------------------- a repository

async fn repository(
    State(reg): State<Arc<Registry>>,
    Path((project, id)): Path<(String, String)>,
    req: Request,
) -> UiResult {
    let started = Instant::now();
    let (v, _) = viewer(reg, req).await;
    let scope = v.scope(&project)?;
    let repo = v.repository(&scope, &id).await?;
    let q = v.param("q");
    let (order, sort_value) = match v.param("sort").as_str() {
        "" | "name" => (TagOrder::Name, "name"),
        "published" => (TagOrder::PublishedAt, "published"),
        "created" => (TagOrder::CreatedAt, "created"),
        "size" => (TagOrder::Size, "size"),
        other => {
            return Err(bad_param(
                &v,
                "sort",
                other,
                "name, published, created or size",
            ));
        }
    };
    let descending = parse_order(&v)?;
    let kind = match v.param("kind").as_str() {
        "" => None,
        "image" => Some(TagKind::Image),
        "index" => Some(TagKind::Index),
        "artifact" => Some(TagKind::Artifact),
        other => return Err(bad_param(&v, "kind", other, "image, index or artifact")),
    };
    let per_page = match v.param("per_page").as_str() {
        "" => PER_PAGE_CHOICES[0],
        p => p
            .parse::<u32>()
            .ok()
            .filter(|n| PER_PAGE_CHOICES.contains(n))
            .ok_or_else(|| bad_param(&v, "per_page", p, "20, 50 or 100"))?,
    };
    let page = parse_page(&v)?;
    let name_contains = (!q.is_empty()).then_some(q.as_str());
    let meta = &v.reg.meta;
    let total = meta
        .count_tags(repo.row.id, name_contains, kind)
        .await
        .map_err(|e| v.internal(e))?;
    let pages = total.div_ceil(u64::from(per_page)).max(1);
    let page = page.min(pages);
    let tags = meta
        .tag_page(
            repo.row.id,
            &TagQuery {
                name_contains,
                kind,
                order,
                descending,
                limit: per_page,
                offset: (page - 1) * u64::from(per_page),
            },
        )
        .await
        .map_err(|e| v.internal(e))?;
    let host = v.host();
    let href = repository_href(&project, repo.row.id);
    let state = ListState {
        base: href.clone(),
        params: vec![
            ("q", q.clone(), ""),
            ("sort", v.param("sort"), "name"),
            ("order", v.param("order"), "asc"),
            ("kind", v.param("kind"), ""),
            ("per_page", v.param("per_page"), "20"),
        ],
    };
    let return_query = state.query(Some(page));
    let rows = tags
        .into_iter()
        .map(|t| TagLine {
            href: format!("{href}/tags/{}", encode(&t.name)),
            delete_href: format!(
                "{href}/tags/delete?tag={}&return={}",
                encode(&t.name),
                encode(&return_query)
            ),
            pull: format!("docker pull {host}/{}:{}", repo.row.name, t.name),
            digest_short: short_digest(&t.digest),
            config: t.config_digest.as_deref().map(|c| ShortDigest {
                full: c.to_string(),
                short: short_digest(c),
            }),
            kind: kind_label(&t.media_type),
            size: human_size(t.total_size),
            size_bytes: t.total_size,
            published: Stamp::of(t.published_at),
            digest: t.digest,
            name: t.name,
        })
        .collect();
    let mut layout = v.layout(
        repo.row.name.clone(),
        Viewer::crumbs(&project, None, relative(&project, &repo.row.name)),
    );
    if let Ok(n) = v.param("deleted").parse::<u64>() {
        layout.notice = Some(if n == 1 {
            "Deleted 1 tag.".into()
        } else {
            format!("Deleted {n} tags.")
        });
    }
    let filtered = !q.is_empty() || kind.is_some();
    let page_view = RepositoryPage {
        layout,
        path: repo.row.name.clone(),
        base: href,
        reference: format!("{host}/{}", repo.row.name),
        pull: format!("docker pull {host}/{}", repo.row.name),
        q,
        sorts: options(
            &[
                ("name", "Name"),
                ("published", "Published"),
                ("created", "Created"),
                ("size", "Size"),
            ],
            sort_value,
        ),
        orders: order_options(descending),
        kinds: options(
            &[
                ("", "All"),
                ("image", "Images"),
                ("index", "Multi-platform"),
                ("artifact", "Artifacts"),
            ],
            &v.param("kind"),
        ),
        per_pages: options(
            &[("20", "20"), ("50", "50"), ("100", "100")],
            &per_page.to_string(),
        ),
        count_text: count_text(total, "tag", "tags", filtered),
        can_delete: repo.can_delete,
        return_query,
        rows,
        pager: state.pager(page, pages),
    };
    let response = v.page(&page_view);
    tracing::debug!(
        repository = %repo.row.name,
        tags = total,
        ms = crate::registry::millis(started.elapsed()),
        "web UI: tag page"
    );
    Ok(response)
}

/// The badge of a multi-platform index ("" for the rest), from the
/// manifest's media type.
fn kind_label(media_type: &str) -> String {
    if media_type.contains("index") || media_type.contains("manifest.list") {
        "multi-platform".into()
    } else {
        String::new()
    }
}

// ---------------------------------------------------------------- a tag

async fn tag(
    State(reg): State<Arc<Registry>>,
    Path((project, id, tag)): Path<(String, String, String)>,
    req: Request,
) -> UiResult {
    let (v, _) = viewer(reg, req).await;
    let scope = v.scope(&project)?;
    let repo = v.repository(&scope, &id).await?;
    let meta = &v.reg.meta;
    let detail = meta
        .tag_detail(repo.row.id, &tag)
        .await
        .map_err(|e| v.internal(e))?
        .ok_or_else(|| v.not_found(format!("{} has no tag {tag}.", repo.row.name)))?;
    let payload = meta
        .manifest_payload(detail.manifest_id)
        .await
        .map_err(|e| v.internal(e))?
        .unwrap_or_default();
    let manifest: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    let is_index = manifest.get("manifests").is_some_and(|m| m.is_array())
        || detail.media_type.contains("index")
        || detail.media_type.contains("manifest.list");
    let mut platforms = Vec::new();
    let mut layers = Vec::new();
    if is_index {
        let children = meta
            .child_manifests(detail.manifest_id)
            .await
            .map_err(|e| v.internal(e))?;
        let ids: Vec<i64> = children.iter().map(|(id, _)| *id).collect();
        let sizes = meta
            .manifest_total_sizes(&ids)
            .await
            .map_err(|e| v.internal(e))?;
        for entry in manifest["manifests"].as_array().into_iter().flatten() {
            let digest = entry["digest"].as_str().unwrap_or_default().to_string();
            let size = children
                .iter()
                .find(|(_, d)| *d == digest)
                .and_then(|(id, _)| sizes.get(id).copied())
                .unwrap_or_else(|| entry["size"].as_u64().unwrap_or(0));
            platforms.push(Platform {
                platform: platform_text(entry),
                digest_short: short_digest(&digest),
                digest,
                size: human_size(size),
                size_bytes: size,
            });
        }
    } else {
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            let digest = layer["digest"].as_str().unwrap_or_default().to_string();
            let size = layer["size"].as_u64().unwrap_or(0);
            layers.push(Layer {
                media_type: layer["mediaType"].as_str().unwrap_or("—").to_string(),
                digest_short: short_digest(&digest),
                digest,
                size: human_size(size),
                size_bytes: size,
            });
        }
    }
    let referrers = match Digest::from_str(&detail.digest) {
        Ok(d) => meta
            .referrers(&repo.row.name, &d, None)
            .await
            .map_err(|e| v.internal(e))?,
        Err(_) => Vec::new(),
    }
    .into_iter()
    .map(|r| {
        let size = r.size.max(0) as u64;
        ReferrerLine {
            artifact_type: r.artifact_type.unwrap_or_else(|| r.media_type.clone()),
            digest_short: short_digest(&r.digest),
            digest: r.digest,
            size: human_size(size),
            size_bytes: size,
        }
    })
    .collect();
    let host = v.host();
    let href = repository_href(&project, repo.row.id);
    let heading = format!("{}:{}", repo.row.name, detail.name);
    let crumbs = Viewer::crumbs(&project, Some(&repo.row), &detail.name);
    let page = TagPage {
        layout: v.layout(heading.clone(), crumbs),
        heading,
        reference: format!("{host}/{}:{}", repo.row.name, detail.name),
        pull: format!("docker pull {host}/{}:{}", repo.row.name, detail.name),
        by_digest: format!("docker pull {host}/{}@{}", repo.row.name, detail.digest),
        delete_href: format!("{href}/tags/delete?tag={}", encode(&detail.name)),
        can_delete: repo.can_delete,
        media_type: detail.media_type,
        config_digest: detail.config_digest,
        size: human_size(detail.total_size),
        size_bytes: detail.total_size,
        published: Stamp::of(detail.published_at),
        created: Stamp::of(detail.created_at),
        digest: detail.digest,
        is_index,
        platforms,
        layers,
        referrers,
    };
    Ok(v.page(&page))
}

fn platform_text(entry: &serde_json::Value) -> String {
    let p = &entry["platform"];
    let mut parts: Vec<&str> = ["os", "architecture", "variant"]
        .iter()
        .filter_map(|k| p[*k].as_str())
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        // An entry without a platform: an attestation or other artifact.
        parts.push(
            entry["artifactType"]
                .as_str()
                .or(entry["mediaType"].as_str())
                .unwrap_or("unknown"),
        );
    }
    parts.join("/")
}

// ---------------------------------------------------------------- deletes

/// A list page's query (`return` of the delete forms), kept only if it is
/// just the list parameters.
fn safe_return(value: &str) -> String {
    const KEYS: [&str; 6] = ["q", "sort", "order", "kind", "per_page", "page"];
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(value.as_bytes()) {
        if KEYS.contains(&k.as_ref()) {
            out.append_pair(&k, &v);
        }
    }
    out.finish()
}

fn with_query(href: &str, query: &str, extra: &str) -> String {
    let q: Vec<&str> = [query, extra]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if q.is_empty() {
        href.to_string()
    } else {
        format!("{href}?{}", q.join("&"))
    }
}

async fn confirm_tags_delete(
    State(reg): State<Arc<Registry>>,
    Path((project, id)): Path<(String, String)>,
    req: Request,
) -> UiResult {
    let (v, _) = viewer(reg, req).await;
    let repo = may_delete(&v, &project, &id).await?;
    let query = v.query();
    let mut tags: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, t)| t.clone())
        .collect();
    tags.dedup();
    if tags.len() > MAX_BULK {
        return Err(v.error(
            StatusCode::BAD_REQUEST,
            "Bad request",
            format!("At most {MAX_BULK} tags can be deleted at once."),
        ));
    }
    let return_query = safe_return(&v.param("return"));
    let href = repository_href(&project, repo.row.id);
    let heading = match tags.as_slice() {
        [] => "Delete tags".to_string(),
        [one] => format!("Delete tag {one}?"),
        many => format!("Delete {} tags?", many.len()),
    };
    let crumbs = Viewer::crumbs(&project, Some(&repo.row), "Delete");
    Ok(v.page(&ConfirmTagsPage {
        layout: v.layout(heading.clone(), crumbs),
        heading,
        repository: repo.row.name.clone(),
        action: format!("{href}/tags/delete"),
        cancel_href: with_query(&href, &return_query, ""),
        return_query,
        tags,
    }))
}

async fn delete_tags(
    State(reg): State<Arc<Registry>>,
    Path((project, id)): Path<(String, String)>,
    req: Request,
) -> UiResult {
    let (v, form) = posted(reg, req).await?;
    let repo = may_delete(&v, &project, &id).await?;
    let mut tags = form.all("tag");
    tags.dedup();
    if tags.is_empty() || tags.len() > MAX_BULK {
        return Err(v.error(
            StatusCode::BAD_REQUEST,
            "Bad request",
            format!("Select between 1 and {MAX_BULK} tags to delete."),
        ));
    }
    let guard = v.principal.tag_guard(&repo.row.name);
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for t in tags {
        match v
            .reg
            .meta
            .delete_tag(&repo.row.name, &t, &|tag, op| guard.check(tag, op))
            .await
        {
            Ok(true) => deleted.push(t),
            Ok(false) => failed.push((t, "no such tag (deleted already?)".to_string())),
            Err(MetadataError::TagRefused(why)) => failed.push((t, why)),
            Err(e) => return Err(v.internal(e)),
        }
    }
    tracing::info!(
        repository = %repo.row.name,
        deleted = ?deleted,
        failed = failed.len(),
        by = ?v.name,
        "web UI: deleted tags"
    );
    let return_query = safe_return(form.get("return").unwrap_or_default());
    let href = repository_href(&project, repo.row.id);
    let back = with_query(&href, &return_query, "");
    if failed.is_empty() {
        let to = with_query(&href, &return_query, &format!("deleted={}", deleted.len()));
        return Ok(Redirect::to(&to).into_response());
    }
    let heading = format!(
        "{} of {} tags deleted",
        deleted.len(),
        deleted.len() + failed.len()
    );
    let crumbs = Viewer::crumbs(&project, Some(&repo.row), "Delete");
    let status = if deleted.is_empty() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    Ok(html(
        status,
        &ResultPage {
            layout: v.layout(heading.clone(), crumbs),
            heading,
            deleted,
            failed,
            back_href: back,
        },
        v.cookies(),
    ))
}

async fn confirm_repository_delete(
    State(reg): State<Arc<Registry>>,
    Path((project, id)): Path<(String, String)>,
    req: Request,
) -> UiResult {
    let (v, _) = viewer(reg, req).await;
    let repo = may_delete(&v, &project, &id).await?;
    let (tags, _) = v
        .reg
        .meta
        .repository_usage(repo.row.id)
        .await
        .map_err(|e| v.internal(e))?;
    let href = repository_href(&project, repo.row.id);
    let crumbs = Viewer::crumbs(&project, Some(&repo.row), "Delete");
    Ok(v.page(&ConfirmRepositoryPage {
        layout: v.layout(format!("Delete repository {}?", repo.row.name), crumbs),
        repository: repo.row.name.clone(),
        tags: if tags == 1 {
            "1 tag".into()
        } else {
            format!("{tags} tags")
        },
        action: format!("{href}/delete"),
        cancel_href: href,
    }))
}

async fn delete_repository(
    State(reg): State<Arc<Registry>>,
    Path((project, id)): Path<(String, String)>,
    req: Request,
) -> UiResult {
    let (v, _) = posted(reg, req).await?;
    let repo = may_delete(&v, &project, &id).await?;
    let guard = v.principal.tag_guard(&repo.row.name);
    match v
        .reg
        .delete_repository(&repo.row.name, &|t, op| guard.check(t, op))
        .await
    {
        Ok(_) => {
            tracing::info!(repository = %repo.row.name, by = ?v.name, "web UI: deleted repository");
            Ok(
                Redirect::to(&format!("{}?deleted=repository", project_href(&project)))
                    .into_response(),
            )
        }
        Err(MetadataError::TagRefused(why)) => Err(v.error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("{} was not deleted: {why}", repo.row.name),
        )),
        Err(e) => Err(v.internal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_targets_stay_in_the_ui() {
        assert_eq!(safe_next("/ui/projects/a%2Fb"), "/ui/projects/a%2Fb");
        for bad in [
            "https://evil.example/",
            "//evil.example/ui/",
            "/ui//evil",
            "/ui/\\evil",
            "/v2/",
            "",
            "/ui/login?next=/ui/",
        ] {
            assert_eq!(safe_next(bad), "/ui/", "{bad}");
        }
    }

    #[test]
    fn return_queries_keep_list_parameters_only() {
        assert_eq!(
            safe_return("q=rc&sort=size&evil=1&page=2"),
            "q=rc&sort=size&page=2"
        );
        assert_eq!(safe_return(""), "");
        assert_eq!(with_query("/x", "", "deleted=2"), "/x?deleted=2");
        assert_eq!(with_query("/x", "q=a", "deleted=2"), "/x?q=a&deleted=2");
    }

    #[test]
    fn relative_names() {
        assert_eq!(relative("g/p", "g/p/app"), "app");
        assert_eq!(relative("g/p", "g/p"), ".");
        assert_eq!(relative("g/p", "other"), "other");
    }

    #[test]
    fn platforms() {
        let e = serde_json::json!({"platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}});
        assert_eq!(platform_text(&e), "linux/arm64/v8");
        let e = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json"});
        assert_eq!(
            platform_text(&e),
            "application/vnd.oci.image.manifest.v1+json"
        );
    }

    #[test]
    fn counts() {
        assert_eq!(count_text(1, "tag", "tags", false), "1 tag");
        assert_eq!(count_text(3, "tag", "tags", true), "3 tags match");
        assert_eq!(count_text(1, "tag", "tags", true), "1 tag matches");
    }
}
