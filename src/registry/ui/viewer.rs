//! Who is looking at a page: the [`Viewer`] extractor (the signed-in
//! identity of the session cookie, or an anonymous visitor), what they may
//! see ([`Viewer::scope`], [`Viewer::repository`]), the frame of their pages,
//! and [`Posted`], the extractor of a form that passed the CSRF check. Every
//! page handler takes one of the two; none reads cookies or checks a form
//! itself.

use std::convert::Infallible;
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use askama::Template;
use axum::body::Body;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::Response;
use futures_util::StreamExt;

use super::error::{UiError, UiResult};
use super::session::{CSRF_COOKIE, CsrfKey, SESSION_COOKIE, cookie, random_token, set_cookie};
use super::views::{Crumb, Layout, encode, html};
use crate::auth::Identity;
use crate::metadata::RepositoryRow;
use crate::registry::Registry;
use crate::registry::access::{Action, Principal};
use crate::registry::management::ProjectScope;

/// Largest form body read.
const MAX_FORM: usize = 256 * 1024;

/// Who is looking, and what the page needs to know about them. An
/// extractor; cheap to clone (one per request, shared).
#[derive(Clone)]
pub(super) struct Viewer(Arc<Seen>);

/// What [`Viewer`] holds.
pub(super) struct Seen {
    pub(super) reg: Arc<Registry>,
    pub(super) principal: Principal,
    /// The signed-in name to show; `None` for anonymous visitors (and when
    /// authentication is off).
    pub(super) name: Option<String>,
    pub(super) session_id: Option<String>,
    /// What the CSRF token is bound to: the session id, else the browser's
    /// `berth_csrf` cookie (`None`: the browser has none yet).
    anchor: Option<String>,
    /// A new `berth_csrf` cookie to send (the browser had none).
    new_anchor: Option<String>,
    /// `None` while the database cannot be read: no form then passes.
    csrf_key: Option<CsrfKey>,
    uri: Uri,
    headers: HeaderMap,
}

impl Deref for Viewer {
    type Target = Seen;

    fn deref(&self) -> &Seen {
        &self.0
    }
}

/// Where the extractor leaves the request's viewer for the layer that
/// renders errors (see [`super::error::render_errors`]).
#[derive(Clone, Default)]
pub(super) struct ViewerSlot(Arc<OnceLock<Viewer>>);

impl ViewerSlot {
    pub(super) fn get(&self) -> Option<&Viewer> {
        self.0.get()
    }
}

impl FromRequestParts<Arc<Registry>> for Viewer {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        reg: &Arc<Registry>,
    ) -> Result<Self, Self::Rejection> {
        if let Some(v) = parts.extensions.get::<Viewer>() {
            return Ok(v.clone());
        }
        let v = Viewer::new(reg.clone(), parts).await;
        parts.extensions.insert(v.clone());
        if let Some(slot) = parts.extensions.get::<ViewerSlot>() {
            let _ = slot.0.set(v.clone());
        }
        Ok(v)
    }
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

/// A repository the viewer may pull from, and whether they may delete in it.
pub(super) struct RepositoryRowView {
    pub(super) row: RepositoryRow,
    pub(super) can_delete: bool,
}

impl Viewer {
    async fn new(reg: Arc<Registry>, parts: &Parts) -> Viewer {
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
            let found = match cookie(&cookies, SESSION_COOKIE) {
                Some(id) => reg
                    .ui_sessions
                    .get(&reg.meta, id)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!("web UI: cannot read the session: {e}");
                        None
                    })
                    .map(|s| (id, s)),
                None => None,
            };
            if let Some((id, s)) = found {
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
                    None => {
                        if let Err(e) = reg.ui_sessions.remove(&reg.meta, id).await {
                            tracing::warn!("web UI: cannot end a session: {e}");
                        }
                    }
                }
            }
        }
        let browser_anchor = cookie(&cookies, CSRF_COOKIE).map(str::to_string);
        let (anchor, new_anchor) = match (&session_id, browser_anchor) {
            (Some(id), _) => (Some(id.clone()), None),
            (None, Some(a)) => (Some(a), None),
            (None, None) => (None, Some(random_token())),
        };
        let csrf_key = reg
            .ui_sessions
            .csrf_key(&reg.meta)
            .await
            .inspect_err(|e| tracing::warn!("web UI: cannot read the CSRF key: {e}"))
            .ok();
        Viewer(Arc::new(Seen {
            csrf_key,
            reg,
            principal,
            name,
            session_id,
            anchor,
            new_anchor,
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        }))
    }

    /// Did the browser reach us over HTTPS? The same rule as the token
    /// realm's scheme ([`crate::registry::access::origin`]): forwarded
    /// headers count only when `auth.trustForwardedHeaders` is set.
    pub(super) fn secure(&self) -> bool {
        let auth = self.reg.auth.as_ref();
        let trust = auth.is_some_and(|a| a.trust_forwarded);
        let scheme = match auth.is_some_and(|a| a.https) {
            true => Some("https"),
            false => self.uri.scheme_str(),
        };
        crate::registry::access::origin(&self.headers, scheme, trust).0 == "https"
    }

    /// The CSRF token for this page's forms.
    fn csrf(&self) -> String {
        let anchor = self.anchor.as_ref().or(self.new_anchor.as_ref());
        match (anchor, &self.csrf_key) {
            (Some(a), Some(key)) => key.token(a),
            _ => String::new(),
        }
    }

    /// Cookies to set with a page: the CSRF anchor, when new.
    pub(super) fn cookies(&self) -> Option<Vec<String>> {
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
        self.uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/ui/".into())
    }

    pub(super) fn layout(&self, title: impl Into<String>, crumbs: Vec<Crumb>) -> Layout {
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

    /// A page (200), with the CSRF cookie when the browser has none.
    pub(super) fn page(&self, page: &impl Template) -> Response {
        html(StatusCode::OK, page, self.cookies())
    }

    /// The query string's parameters, in order.
    pub(super) fn query(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect()
    }

    /// A query parameter (`""` when absent).
    pub(super) fn param(&self, name: &str) -> String {
        self.query()
            .into_iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .unwrap_or_default()
    }

    /// The registry's address as clients reach it (`Host`).
    pub(super) fn host(&self) -> String {
        self.headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| "localhost".into())
    }

    /// A list page's `order` (`true`: descending).
    pub(super) fn descending(&self) -> UiResult<bool> {
        match self.param("order").as_str() {
            "" | "asc" => Ok(false),
            "desc" => Ok(true),
            other => Err(bad_param("order", other, "asc or desc")),
        }
    }

    /// A list page's `page` (from 1).
    pub(super) fn page_number(&self) -> UiResult<u64> {
        match self.param("page").as_str() {
            "" => Ok(1),
            p => p
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| bad_param("page", p, "a positive integer")),
        }
    }

    /// Refuses a form that does not come from a page of ours: a foreign
    /// `Origin` or `Sec-Fetch-Site`, or a missing or wrong CSRF token.
    fn check_form(&self, form: &Form) -> UiResult<()> {
        let refuse = |why: &str| {
            tracing::warn!(path = %self.uri.path(), "web UI: form refused: {why}");
            Err(UiError::forbidden(format!(
                "The form was refused by the CSRF check ({why}). \
                 Reload the page and submit it again."
            )))
        };
        let headers = &self.headers;
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
        match (&self.anchor, &self.csrf_key) {
            (Some(a), Some(key)) if key.valid(a, token) => Ok(()),
            _ => refuse("the CSRF token is wrong or expired"),
        }
    }

    /// The project, if the viewer may see it (404 otherwise).
    pub(super) fn scope(&self, project: &str) -> UiResult<ProjectScope> {
        let missing = || UiError::not_found(format!("There is no project {project} you can see."));
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
    pub(super) async fn repository(
        &self,
        scope: &ProjectScope,
        id: &str,
    ) -> UiResult<RepositoryRowView> {
        let missing = || UiError::not_found(format!("There is no repository {id} you can see."));
        let id: i64 = id.parse().map_err(|_| missing())?;
        let row = self
            .reg
            .meta
            .repository_by_id(id)
            .await?
            .filter(|r| scope.contains(&r.name) && self.principal.may(&r.name, Action::Pull))
            .ok_or_else(missing)?;
        Ok(RepositoryRowView {
            can_delete: self.principal.may(&row.name, Action::Delete),
            row,
        })
    }

    /// Repository `id` of the project, if the viewer may delete in it (403
    /// otherwise; 404 if they may not see it).
    pub(super) async fn deletable(&self, project: &str, id: &str) -> UiResult<RepositoryRowView> {
        let scope = self.scope(project)?;
        let repo = self.repository(&scope, id).await?;
        if !repo.can_delete {
            return Err(UiError::forbidden(format!(
                "You may not delete in {}.",
                repo.row.name
            )));
        }
        Ok(repo)
    }
}

/// A query parameter with a value the page does not take.
pub(super) fn bad_param(name: &str, value: &str, allowed: &str) -> UiError {
    UiError::bad_request(format!("{name} must be {allowed}, not {value:?}."))
}

/// A submitted form's fields (repeated names kept, in order).
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    pub(super) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    async fn read(body: Body) -> UiResult<Form> {
        let mut out = Vec::new();
        let mut frames = body.into_data_stream();
        while let Some(frame) = frames.next().await {
            let frame =
                frame.map_err(|e| UiError::bad_request(format!("reading the form: {e}")))?;
            if out.len() + frame.len() > MAX_FORM {
                return Err(UiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Bad request",
                    "The form is too large.",
                ));
            }
            out.extend_from_slice(&frame);
        }
        Ok(Form(form_urlencoded::parse(&out).into_owned().collect()))
    }
}

/// A posted form and its viewer, after the CSRF check: the extractor of
/// every POST handler (a form that fails the check is a 403 page).
pub(super) struct Posted(pub(super) Viewer, pub(super) Form);

impl FromRequest<Arc<Registry>> for Posted {
    type Rejection = UiError;

    async fn from_request(req: Request, reg: &Arc<Registry>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Ok(v) = Viewer::from_request_parts(&mut parts, reg).await;
        let form = Form::read(body).await?;
        v.check_form(&form)?;
        Ok(Posted(v, form))
    }
}
