//! The GitLab-like management API (JSON), under `/api/v1/projects/<project>`
//! where `<project>` is the URL-encoded project path as one segment
//! (`g%2Fapp`, like GitLab's `:id`) and repositories are addressed by their
//! numeric id:
//!
//! | method and path (below `/api/v1/projects/<project>`) | needs | answer |
//! |---|---|---|
//! | `GET /registry/repositories[?tags=true]` | pull (each listed) | 200, paginated |
//! | `GET /registry/repositories/<id>` | pull | 200 |
//! | `DELETE /registry/repositories/<id>` | delete, tag rules | 202 (done already) |
//! | `GET /registry/repositories/<id>/tags[?name=&order_by=&sort=]` | pull | 200, paginated |
//! | `DELETE /registry/repositories/<id>/tags` (bulk) | delete | 200, a `RepositoryReport` |
//! | `GET /registry/repositories/<id>/tags/<tag>` | pull | 200 |
//! | `DELETE /registry/repositories/<id>/tags/<tag>` | delete, tag rules | 200 |
//! | `POST /cleanup` (a `CleanupRequest`) | admin | 200, a `CleanupReport` |
//!
//! Differences from GitLab: the bulk delete runs synchronously and answers
//! what it deleted (GitLab answers 202 and works in the background), and
//! takes `dry_run=true` to report without deleting.
//!
//! Callers authenticate, in the [`Call`] extractor, as a [`Principal`]
//! (bearer JWT, Basic credentials, or none). Errors are `{"message": "..."}`: 400 for bad parameters, 401 (with
//! `WWW-Authenticate`) when an anonymous caller needs to log in, 404 for what
//! the caller may not see (as GitLab hides private projects), 403 for what
//! they may see but not change, including refusals by tag rules.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde_json::{Value, json};

use super::Registry;
use super::access::{Action, Principal, Unauthenticated};
use super::cleanup::{self, CleanupError};
use crate::auth::tags::TagRules;
use crate::auth::{AccessModel, Location};
use crate::lifecycle::policy::{Guards, Rules, parse_older_than};
use crate::lifecycle::report::CleanupRequest;
use crate::metadata::{
    MetadataError, RepositoryDeletions, RepositoryRow, TagDetail, TagOrder, TagQuery, now_ms,
};

const PER_PAGE_DEFAULT: u32 = 20;
const PER_PAGE_MAX: u32 = 100;
/// Largest request body read (bulk-delete parameters, cleanup requests).
const MAX_BODY: usize = 1 << 20;

pub(super) fn routes() -> Router<Arc<Registry>> {
    const REPOS: &str = "/api/v1/projects/{project}/registry/repositories";
    Router::new()
        .route(REPOS, get(list_repositories))
        .route(
            &format!("{REPOS}/{{id}}"),
            get(get_repository).delete(delete_repository),
        )
        .route(
            &format!("{REPOS}/{{id}}/tags"),
            get(list_tags).delete(bulk_delete),
        )
        .route(
            &format!("{REPOS}/{{id}}/tags/{{tag}}"),
            get(get_tag).delete(delete_tag),
        )
        .route("/api/v1/projects/{project}/cleanup", post(run_cleanup))
}

/// A management API error: a status, a message, and for 401 the challenges.
#[derive(Debug)]
pub(super) struct ApiError {
    status: StatusCode,
    message: String,
    challenges: Vec<String>,
}

type ApiResult<T = Response> = Result<T, ApiError>;

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            challenges: Vec::new(),
        }
    }

    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("management API: {}", self.message);
        }
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "message": self.message }).to_string(),
        )
            .into_response();
        for c in self.challenges {
            if let Ok(v) = HeaderValue::from_str(&c) {
                response.headers_mut().append(header::WWW_AUTHENTICATE, v);
            }
        }
        response
    }
}

impl From<MetadataError> for ApiError {
    fn from(e: MetadataError) -> Self {
        match e {
            MetadataError::TagRefused(why) => ApiError::forbidden(why),
            other => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<Unauthenticated> for ApiError {
    fn from(u: Unauthenticated) -> Self {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: u.message,
            challenges: u.challenges,
        }
    }
}

impl From<CleanupError> for ApiError {
    fn from(e: CleanupError) -> Self {
        match e {
            CleanupError::Policy(_) => ApiError::bad_request(e.to_string()),
            CleanupError::UnknownProject(_) => ApiError::not_found(e.to_string()),
            CleanupError::Metadata(m) => m.into(),
        }
    }
}

/// A project as the management API addresses it. With authentication on,
/// a declared project: its repositories are the names
/// [`AccessModel::locate`] assigns it (not those of a subproject). For the
/// admin, a path that is no project also works, as a prefix over names in
/// no project. With authentication off, any name prefix.
pub(super) struct ProjectScope {
    path: String,
    model: Option<Arc<AccessModel>>,
    declared: bool,
}

impl ProjectScope {
    /// `None` when there is no such project for this caller.
    pub(super) fn resolve(
        model: Option<Arc<AccessModel>>,
        path: &str,
        admin: bool,
    ) -> Option<ProjectScope> {
        if path.is_empty() || path.starts_with('/') || path.ends_with('/') {
            return None;
        }
        let declared = model
            .as_ref()
            .is_some_and(|m| m.projects().iter().any(|p| p.path == path));
        (model.is_none() || declared || admin).then(|| ProjectScope {
            path: path.to_string(),
            model,
            declared,
        })
    }

    pub(super) fn contains(&self, repo: &str) -> bool {
        let below = repo == self.path
            || repo
                .strip_prefix(self.path.as_str())
                .is_some_and(|rest| rest.starts_with('/'));
        match &self.model {
            None => below,
            Some(m) => match m.locate(repo) {
                Location::InProject(p) => p.path == self.path,
                Location::Outside => below && !self.declared,
                // Pushed before the project was declared: still the
                // project's, to list and delete (the admin only, see
                // `AccessModel::actions`).
                Location::TooDeep { project, .. } => project == self.path,
            },
        }
    }

    /// The project's protected and immutable tag rules (none when it is no
    /// declared project).
    pub(super) fn tag_rules(&self) -> TagRules {
        self.model
            .as_ref()
            .and_then(|m| m.projects().iter().find(|p| p.path == self.path))
            .map(TagRules::of)
            .unwrap_or_default()
    }

    /// The project's repositories, in name order.
    pub(super) async fn repositories(
        &self,
        meta: &crate::metadata::Metadata,
    ) -> crate::metadata::Result<Vec<RepositoryRow>> {
        let mut rows = meta.repositories_under(&self.path).await?;
        rows.retain(|r| self.contains(&r.name));
        Ok(rows)
    }

    /// A repository's name below the project path (`""` for the project's own).
    fn relative<'a>(&self, repo: &'a str) -> &'a str {
        repo.strip_prefix(self.path.as_str())
            .map(|r| r.trim_start_matches('/'))
            .unwrap_or(repo)
    }
}

/// One management API request: who calls, and the request's head. An
/// extractor: a caller whose credentials do not hold is refused (401, with
/// the challenges) before the handler runs.
struct Call {
    reg: Arc<Registry>,
    principal: Principal,
    uri: Uri,
    headers: HeaderMap,
}

impl FromRequestParts<Arc<Registry>> for Call {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, reg: &Arc<Registry>) -> ApiResult<Call> {
        let principal = Principal::authenticate(reg, &parts.headers).await?;
        Ok(Call {
            reg: reg.clone(),
            principal,
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }
}

impl Call {
    fn unauthorized(&self, message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
            challenges: Principal::challenges(&self.reg, &self.headers),
        }
    }

    fn query(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }

    fn param(&self, name: &str) -> Option<String> {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }

    /// The registry's address as clients reach it (`Host`).
    fn host(&self) -> String {
        self.headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| self.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".into())
    }

    /// The project, if the caller may see it: a declared project they may
    /// not pull in is "not found" as one that does not exist (GitLab hides
    /// private projects so), except that an anonymous caller is asked to
    /// log in.
    fn scope(&self, project: &str) -> ApiResult<ProjectScope> {
        let not_found = || ApiError::not_found(format!("project {project} not found"));
        let scope = ProjectScope::resolve(
            self.principal.model().cloned(),
            project,
            self.principal.is_admin(),
        )
        .ok_or_else(not_found)?;
        if scope.declared && !self.principal.may_see_project(project) {
            return Err(if self.principal.is_anonymous() {
                self.unauthorized("authentication required")
            } else {
                not_found()
            });
        }
        Ok(scope)
    }

    /// Repository `id` of the project, if the caller may do `action` on it.
    async fn repository(
        &self,
        scope: &ProjectScope,
        id: &str,
        action: Action,
    ) -> ApiResult<RepositoryRow> {
        let not_found = || ApiError::not_found(format!("repository {id} not found"));
        let id: i64 = id.parse().map_err(|_| not_found())?;
        let row = self
            .reg
            .meta
            .repository_by_id(id)
            .await?
            .filter(|r| scope.contains(&r.name))
            .ok_or_else(not_found)?;
        self.require(&row.name, Action::Pull, not_found)?;
        if action != Action::Pull {
            self.require(&row.name, action, || {
                ApiError::forbidden(format!("you may not delete in repository {}", row.name))
            })?;
        }
        Ok(row)
    }

    /// Anonymous callers are asked to log in; others get `refusal`.
    fn require(
        &self,
        repo: &str,
        action: Action,
        refusal: impl FnOnce() -> ApiError,
    ) -> ApiResult<()> {
        if self.principal.may(repo, action) {
            Ok(())
        } else if self.principal.is_anonymous() {
            Err(self.unauthorized("authentication required"))
        } else {
            Err(refusal())
        }
    }

    fn rfc3339(ms: i64) -> String {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        humantime::format_rfc3339_millis(t).to_string()
    }

    fn repository_json(
        &self,
        scope: &ProjectScope,
        row: &RepositoryRow,
        usage: (u64, u64),
    ) -> Value {
        json!({
            "id": row.id,
            "name": scope.relative(&row.name),
            "path": row.name,
            "location": format!("{}/{}", self.host(), row.name),
            "created_at": Call::rfc3339(row.created_at),
            "tags_count": usage.0,
            "size": usage.1,
        })
    }

    fn tag_ref_json(&self, repo: &str, tag: &str) -> Value {
        json!({
            "name": tag,
            "path": format!("{repo}:{tag}"),
            "location": format!("{}/{repo}:{tag}", self.host()),
        })
    }

    fn tag_json(&self, repo: &str, t: &TagDetail) -> Value {
        let mut v = self.tag_ref_json(repo, &t.name);
        v["digest"] = json!(t.digest);
        v["config_digest"] = json!(t.config_digest);
        v["media_type"] = json!(t.media_type);
        v["total_size"] = json!(t.total_size);
        v["created_at"] = json!(Call::rfc3339(t.created_at));
        v["published_at"] = json!(Call::rfc3339(t.published_at));
        v
    }
}

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> ApiResult {
    let bytes = serde_json::to_vec(body)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok((status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response())
}

fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// GitLab's offset pagination: `page` (from 1) and `per_page` (default 20,
/// at most 100), answered with `X-Total`, `X-Total-Pages`, `X-Page`,
/// `X-Per-Page`, `X-Next-Page`, `X-Prev-Page` and a `Link` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pagination {
    page: u64,
    per_page: u32,
}

impl Pagination {
    fn of(call: &Call) -> ApiResult<Pagination> {
        let number = |name: &str, default: u64| -> ApiResult<u64> {
            match call.param(name) {
                None => Ok(default),
                Some(v) if v.is_empty() => Ok(default),
                Some(v) => v.parse::<u64>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    ApiError::bad_request(format!("{name} must be a positive integer, not {v:?}"))
                }),
            }
        };
        Ok(Pagination {
            page: number("page", 1)?,
            per_page: number("per_page", u64::from(PER_PAGE_DEFAULT))?.min(u64::from(PER_PAGE_MAX))
                as u32,
        })
    }

    fn offset(&self) -> u64 {
        (self.page - 1).saturating_mul(u64::from(self.per_page))
    }

    fn total_pages(&self, total: u64) -> u64 {
        total.div_ceil(u64::from(self.per_page)).max(1)
    }

    /// The response headers for a page of `total` items.
    fn headers(&self, call: &Call, total: u64) -> Vec<(HeaderName, String)> {
        let pages = self.total_pages(total);
        let next = (self.page < pages).then(|| self.page + 1);
        let prev = (self.page > 1).then(|| (self.page - 1).min(pages));
        let url = |page: u64| {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in call.query() {
                if k != "page" && k != "per_page" {
                    q.append_pair(&k, &v);
                }
            }
            q.append_pair("page", &page.to_string());
            q.append_pair("per_page", &self.per_page.to_string());
            format!("{}?{}", call.uri.path(), q.finish())
        };
        let mut links = Vec::new();
        if let Some(p) = prev {
            links.push(format!("<{}>; rel=\"prev\"", url(p)));
        }
        if let Some(n) = next {
            links.push(format!("<{}>; rel=\"next\"", url(n)));
        }
        links.push(format!("<{}>; rel=\"first\"", url(1)));
        links.push(format!("<{}>; rel=\"last\"", url(pages)));
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        vec![
            (HeaderName::from_static("x-total"), total.to_string()),
            (HeaderName::from_static("x-total-pages"), pages.to_string()),
            (HeaderName::from_static("x-page"), self.page.to_string()),
            (
                HeaderName::from_static("x-per-page"),
                self.per_page.to_string(),
            ),
            (HeaderName::from_static("x-next-page"), opt(next)),
            (HeaderName::from_static("x-prev-page"), opt(prev)),
            (header::LINK, links.join(", ")),
        ]
    }
}

fn paged(body: &Value, headers: Vec<(HeaderName, String)>) -> ApiResult {
    let mut response = json_response(StatusCode::OK, body)?;
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
    Ok(response)
}

/// `GET /api/v1/projects/<project>/registry/repositories[?tags=true]`.
async fn list_repositories(Path(project): Path<String>, call: Call) -> ApiResult {
    let scope = call.scope(&project)?;
    let pagination = Pagination::of(&call)?;
    let with_tags = flag(&call, "tags")?;
    let all = scope.repositories(&call.reg.meta).await?;
    let any = !all.is_empty();
    let visible: Vec<RepositoryRow> = all
        .into_iter()
        .filter(|r| call.principal.may(&r.name, Action::Pull))
        .collect();
    if visible.is_empty() && any && call.principal.is_anonymous() {
        return Err(call.unauthorized("authentication required"));
    }
    let total = visible.len() as u64;
    let start = usize::try_from(pagination.offset()).unwrap_or(usize::MAX);
    let mut items = Vec::new();
    for row in visible
        .iter()
        .skip(start)
        .take(pagination.per_page as usize)
    {
        let usage = call.reg.meta.repository_usage(row.id).await?;
        let mut item = call.repository_json(&scope, row, usage);
        if with_tags {
            let names = call.reg.meta.tags(row.id, None, None).await?;
            item["tags"] = Value::Array(
                names
                    .iter()
                    .map(|t| call.tag_ref_json(&row.name, t))
                    .collect(),
            );
        }
        items.push(item);
    }
    paged(&Value::Array(items), pagination.headers(&call, total))
}

/// A boolean query parameter (`true`/`false`, absent is false).
fn flag(call: &Call, name: &str) -> ApiResult<bool> {
    parse_flag(name, call.param(name).as_deref())
}

fn parse_flag(name: &str, value: Option<&str>) -> ApiResult<bool> {
    match value {
        None | Some("") | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not {v:?}"
        ))),
    }
}

/// `GET .../registry/repositories/<id>`.
async fn get_repository(Path((project, id)): Path<(String, String)>, call: Call) -> ApiResult {
    let scope = call.scope(&project)?;
    let row = call.repository(&scope, &id, Action::Pull).await?;
    let usage = call.reg.meta.repository_usage(row.id).await?;
    let mut item = call.repository_json(&scope, &row, usage);
    if flag(&call, "tags")? {
        let names = call.reg.meta.tags(row.id, None, None).await?;
        item["tags"] = Value::Array(
            names
                .iter()
                .map(|t| call.tag_ref_json(&row.name, t))
                .collect(),
        );
    }
    json_response(StatusCode::OK, &item)
}

/// `DELETE .../registry/repositories/<id>`: 202 like GitLab, although the
/// repository is already gone when the answer comes (its blobs are left to
/// garbage collection).
async fn delete_repository(Path((project, id)): Path<(String, String)>, call: Call) -> ApiResult {
    let scope = call.scope(&project)?;
    let row = call.repository(&scope, &id, Action::Delete).await?;
    let guard = call.principal.tag_guard(&row.name);
    if !call
        .reg
        .delete_repository(&row.name, &|t, op| guard.check(t, op))
        .await?
    {
        return Err(ApiError::not_found(format!("repository {id} not found")));
    }
    tracing::info!(repository = %row.name, "deleted repository");
    Ok(empty(StatusCode::ACCEPTED))
}

/// `GET .../registry/repositories/<id>/tags?name=&order_by=&sort=&page=&per_page=`.
async fn list_tags(Path((project, id)): Path<(String, String)>, call: Call) -> ApiResult {
    let scope = call.scope(&project)?;
    let row = call.repository(&scope, &id, Action::Pull).await?;
    let pagination = Pagination::of(&call)?;
    let order = match call.param("order_by").as_deref() {
        None | Some("") | Some("name") => TagOrder::Name,
        Some("published_at") => TagOrder::PublishedAt,
        Some("created_at") => TagOrder::CreatedAt,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "order_by must be name, published_at or created_at, not {v:?}"
            )));
        }
    };
    let descending = match call.param("sort").as_deref() {
        None | Some("") | Some("asc") => false,
        Some("desc") => true,
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "sort must be asc or desc, not {v:?}"
            )));
        }
    };
    let name = call.param("name").filter(|n| !n.is_empty());
    let total = call
        .reg
        .meta
        .count_tags(row.id, name.as_deref(), None)
        .await?;
    let tags = call
        .reg
        .meta
        .tag_page(
            row.id,
            &TagQuery {
                name_contains: name.as_deref(),
                kind: None,
                order,
                descending,
                limit: pagination.per_page,
                offset: pagination.offset(),
            },
        )
        .await?;
    let body = Value::Array(tags.iter().map(|t| call.tag_json(&row.name, t)).collect());
    paged(&body, pagination.headers(&call, total))
}

/// `GET .../registry/repositories/<id>/tags/<tag>`.
async fn get_tag(
    Path((project, id, tag)): Path<(String, String, String)>,
    call: Call,
) -> ApiResult {
    let scope = call.scope(&project)?;
    let row = call.repository(&scope, &id, Action::Pull).await?;
    let detail = call
        .reg
        .meta
        .tag_detail(row.id, &tag)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("tag {tag} not found")))?;
    json_response(StatusCode::OK, &call.tag_json(&row.name, &detail))
}

/// `DELETE .../registry/repositories/<id>/tags/<tag>`: 200, as GitLab.
async fn delete_tag(
    Path((project, id, tag)): Path<(String, String, String)>,
    call: Call,
) -> ApiResult {
    let scope = call.scope(&project)?;
    let row = call.repository(&scope, &id, Action::Delete).await?;
    let guard = call.principal.tag_guard(&row.name);
    if !call
        .reg
        .meta
        .delete_tag(&row.name, &tag, &|t, op| guard.check(t, op))
        .await?
    {
        return Err(ApiError::not_found(format!("tag {tag} not found")));
    }
    tracing::info!(repository = %row.name, tag = %tag, "deleted tag");
    Ok(empty(StatusCode::OK))
}

/// Reads a body of at most [`MAX_BODY`] bytes.
async fn read_body(body: Body) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    let mut frames = body.into_data_stream();
    while let Some(frame) = frames.next().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if out.len() + frame.len() > MAX_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            ));
        }
        out.extend_from_slice(&frame);
    }
    Ok(out)
}

/// Bulk-delete parameters from the query string and the body (a form or a
/// JSON object; the body's values win).
async fn bulk_parameters(call: &Call, body: Body) -> ApiResult<Vec<(String, String)>> {
    let mut params = call.query();
    let body = read_body(body).await?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(params);
    }
    let json = call
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let from_body: Vec<(String, String)> = if json {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) else {
            return Err(ApiError::bad_request("the body is not a JSON object"));
        };
        map.into_iter()
            .filter_map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s,
                    Value::Null => return None,
                    other => other.to_string(),
                };
                Some((k, v))
            })
            .collect()
    } else {
        form_urlencoded::parse(&body).into_owned().collect()
    };
    params.retain(|(k, _)| !from_body.iter().any(|(b, _)| b == k));
    params.extend(from_body);
    Ok(params)
}

/// `DELETE .../registry/repositories/<id>/tags`: GitLab's bulk delete
/// (`name_regex_delete` or the deprecated `name_regex`, `name_regex_keep`,
/// `keep_n`, `older_than`), plus `dry_run`. Synchronous: answers 200 with a
/// `RepositoryReport` of what it deleted (or, dry, would delete). Tags a
/// protected rule keeps this caller from deleting, and immutable tags, are
/// kept; `latest` always is.
async fn bulk_delete(
    Path((project, id)): Path<(String, String)>,
    call: Call,
    body: Body,
) -> ApiResult {
    let scope = call.scope(&project)?;
    let row = call.repository(&scope, &id, Action::Delete).await?;
    let params = bulk_parameters(&call, body).await?;
    let get = |name: &str| {
        params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let delete = get("name_regex_delete")
        .or_else(|| get("name_regex"))
        .ok_or_else(|| {
            ApiError::bad_request(
                "name_regex_delete is required (`.*` matches every tag; `latest` is always kept)",
            )
        })?;
    let keep_n = get("keep_n")
        .map(|v| {
            v.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("keep_n must be a non-negative integer, not {v:?}"))
            })
        })
        .transpose()?;
    let older_than = get("older_than")
        .map(|v| {
            parse_older_than(v).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "older_than must be a duration such as 1h, 7d, 2 weeks or 1month, not {v:?}"
                ))
            })
        })
        .transpose()?;
    let dry_run = parse_flag("dry_run", get("dry_run"))?;
    let rules = Rules::compile(Some(delete), get("name_regex_keep"), keep_n, older_than)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;

    let tags = call.reg.meta.policy_tags(row.id).await?;
    let guard = call.principal.tag_guard(&row.name);
    let evaluated = {
        let guards = Guards {
            protected: &|t| guard.protected_against_delete(t),
            immutable: &|t| guard.immutable(t),
            in_use: &|_| false,
        };
        cleanup::evaluate_repository(&row.name, &tags, &rules, &guards, now_ms())
    };
    let check = |t: &str, op| guard.check(t, op);
    let plans = [RepositoryDeletions {
        repository_id: row.id,
        tags: evaluated.plan.clone(),
        check: &check,
    }];
    let outcome = call
        .reg
        .meta
        .delete_tags_measured(&plans, !dry_run)
        .await?
        .pop()
        .unwrap_or_default();
    let report = cleanup::finish(evaluated, outcome);
    tracing::info!(
        repository = %row.name,
        tags_deleted = report.tags_deleted.len(),
        tags_failed = report.failed.len(),
        bytes_reclaimable = report.bytes_reclaimable,
        dry_run,
        "bulk tag delete"
    );
    json_response(StatusCode::OK, &report)
}

/// `POST /api/v1/projects/<project>/cleanup`: runs a cleanup policy (a
/// `CleanupRequest`) over the project; admin only (the operator signs admin
/// tokens). Answers a `CleanupReport`.
async fn run_cleanup(Path(project): Path<String>, call: Call, body: Body) -> ApiResult {
    if !call.principal.is_admin() {
        return Err(if call.principal.is_anonymous() {
            call.unauthorized("authentication required")
        } else {
            ApiError::forbidden("cleanup runs are for the registry admin")
        });
    }
    let body = read_body(body).await?;
    let request: CleanupRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not a cleanup request: {e}")))?;
    let report = cleanup::run_project(&call.reg, &project, &request, now_ms()).await?;
    json_response(StatusCode::OK, &report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert!(!parse_flag("x", None).unwrap());
        assert!(parse_flag("x", Some("true")).unwrap());
        assert!(!parse_flag("x", Some("false")).unwrap());
        let e = parse_flag("dry_run", Some("yes")).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("dry_run"), "{}", e.message);
    }

    #[test]
    fn pages() {
        let p = Pagination {
            page: 3,
            per_page: 20,
        };
        assert_eq!(p.offset(), 40);
        assert_eq!(p.total_pages(0), 1);
        assert_eq!(p.total_pages(40), 2);
        assert_eq!(p.total_pages(41), 3);
    }
}
