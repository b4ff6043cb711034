//! Authorisation of registry requests, decided in one place from
//! (method, route) and the request's bearer token. Verification is local:
//! the token's signature and claims, no database look-up.
//!
//! The management API (and the web UI) authenticate their caller once per
//! request as a [`Principal`] (bearer token, Basic credentials, or none) and
//! ask it what it may do; [`TagGuard`] carries a project's protected and
//! immutable tag rules into the metadata layer's writing transactions.

use axum::http::{HeaderMap, Method, header};

use super::error::{ErrorCode, RegistryError, Result};
use super::{Registry, Route};
use std::sync::Arc;

use crate::auth::model::ProtectionLevel;
use crate::auth::tags::{Level, TagRules};
use crate::auth::token::Claims;
use crate::auth::{AccessModel, Auth, Identity, Location};
use crate::metadata::TagOp;
use crate::registry::metrics::AuthFailure;

/// What a route requires of the caller's token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Need<'a> {
    /// `/v2/`: any valid token, even one granting nothing.
    AnyToken,
    /// `/v2/_catalog`: the `registry:catalog:*` scope.
    Catalog,
    /// An action on a repository.
    Repository { name: &'a str, action: &'static str },
}

pub(crate) fn need<'a>(method: &Method, route: &'a Route) -> Need<'a> {
    let action = match (method, route) {
        (_, Route::Base) => return Need::AnyToken,
        (_, Route::Catalog) => return Need::Catalog,
        (
            &Method::DELETE,
            Route::Manifest { .. } | Route::Blob { .. } | Route::Repository { .. },
        ) => "delete",
        (&Method::PUT, Route::Manifest { .. }) => "push",
        (_, Route::UploadStart { .. } | Route::Upload { .. }) => "push",
        _ => "pull",
    };
    let name = route.repository().unwrap_or_default();
    Need::Repository { name, action }
}

/// Who is making a request, as far as the handlers need to know.
pub(crate) enum Caller {
    /// Authentication is off.
    Open,
    Token(Arc<Claims>),
}

impl Caller {
    /// Whether the caller may pull from `repo` (for cross-repository mounts).
    pub(crate) fn may_pull(&self, repo: &str) -> bool {
        match self {
            Caller::Open => true,
            Caller::Token(c) => c.allows(repo, "pull"),
        }
    }
}

/// The scheme and host a client used to reach us: one rule for the default
/// token realm and the web UI's `Secure` cookies. From `X-Forwarded-Proto`
/// and `X-Forwarded-Host` (their first entries) only when `trust_forwarded`
/// (`auth.trustForwardedHeaders`: a proxy in front sets them); else from the
/// request itself (its URI scheme, `Host`). A host that is not a plain
/// `host[:port]` is ignored, as it would end up inside a quoted header.
pub(crate) fn origin(
    headers: &HeaderMap,
    uri_scheme: Option<&str>,
    trust_forwarded: bool,
) -> (&'static str, String) {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let plain_host = |h: &&str| {
        h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
    };
    let forwarded_https = trust_forwarded
        .then(|| first("x-forwarded-proto"))
        .flatten()
        .map(|p| p.eq_ignore_ascii_case("https"));
    let https = forwarded_https.unwrap_or(uri_scheme == Some("https"));
    let host = trust_forwarded
        .then(|| first("x-forwarded-host"))
        .flatten()
        .filter(plain_host)
        .or_else(|| {
            headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(plain_host)
        })
        .unwrap_or("localhost");
    (if https { "https" } else { "http" }, host.to_string())
}

fn challenge(
    auth: &Auth,
    headers: &HeaderMap,
    scope: Option<String>,
    error: Option<&str>,
) -> String {
    let realm = auth.realm.clone().unwrap_or_else(|| {
        let (scheme, host) = origin(headers, auth.https.then_some("https"), auth.trust_forwarded);
        format!("{scheme}://{host}/jwt/auth")
    });
    let mut value = format!(
        "Bearer realm=\"{realm}\",service=\"{}\"",
        auth.tokens.service
    );
    if let Some(scope) = scope {
        value.push_str(&format!(",scope=\"{scope}\""));
    }
    if let Some(error) = error {
        value.push_str(&format!(",error=\"{error}\""));
    }
    value
}

/// The source repository of a cross-repository mount request.
fn mount_source(route: &Route, query: Option<&str>) -> Option<String> {
    if !matches!(route, Route::UploadStart { .. }) {
        return None;
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query?.as_bytes())
        .into_owned()
        .collect();
    pairs.iter().any(|(k, _)| k == "mount").then_some(())?;
    pairs.into_iter().find(|(k, _)| k == "from").map(|(_, v)| v)
}

/// Why a request was refused; turned into an error (with its challenge) only
/// on that path, so the accepted path allocates nothing.
enum Refusal {
    NoToken,
    InvalidToken(String),
    InsufficientScope(String),
}

pub(crate) fn authorize(
    reg: &Registry,
    method: &Method,
    route: &Route,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<Caller> {
    let Some(auth) = &reg.auth else {
        return Ok(Caller::Open);
    };
    let need = need(method, route);
    let mount_from = mount_source(route, query);
    match check(auth, &need, mount_from.as_deref(), headers) {
        Ok(claims) => Ok(Caller::Token(claims)),
        Err(refusal) => {
            reg.metrics.auth_failure(match refusal {
                Refusal::NoToken => AuthFailure::NoToken,
                Refusal::InvalidToken(_) => AuthFailure::InvalidToken,
                Refusal::InsufficientScope(_) => AuthFailure::InsufficientScope,
            });
            Err(refuse(auth, &need, mount_from.as_deref(), headers, refusal))
        }
    }
}

fn check(
    auth: &Auth,
    need: &Need,
    mount_from: Option<&str>,
    headers: &HeaderMap,
) -> Result<Arc<Claims>, Refusal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .ok_or(Refusal::NoToken)?;
    let claims = auth
        .tokens
        .verify(bearer.trim())
        .map_err(Refusal::InvalidToken)?;
    let allowed = match need {
        Need::AnyToken => true,
        Need::Catalog => claims
            .access
            .iter()
            .any(|a| a.kind == "registry" && a.name == "catalog"),
        Need::Repository { name, action } => claims.allows(name, action),
    };
    if !allowed {
        return Err(Refusal::InsufficientScope(
            "the token does not grant".into(),
        ));
    }
    // A mount whose token does not grant pull on the source gets a challenge
    // for it when a new token would grant it; otherwise (the caller may not
    // read the source: its token carries no entry for it) the mount falls
    // back to an upload.
    if let Some(from) = mount_from
        && !claims.allows(from, "pull")
        && auth.model().actions(&subject_identity(&claims), from).pull
    {
        return Err(Refusal::InsufficientScope(format!(
            "mounting from {from} needs a token that asks to pull from it; the token does not grant"
        )));
    }
    Ok(claims)
}

fn refuse(
    auth: &Auth,
    need: &Need,
    mount_from: Option<&str>,
    headers: &HeaderMap,
    refusal: Refusal,
) -> RegistryError {
    // A name too deep below its project is no matter of credentials.
    if let Need::Repository { name, .. } = need
        && let Location::TooDeep { project, levels } = auth.model().locate(name)
    {
        return RegistryError::new(
            ErrorCode::NameInvalid,
            format!(
                "repository {name} is {levels} levels below project {project}; at most {} are allowed",
                crate::auth::MAX_LEVELS_BELOW_PROJECT
            ),
        );
    }
    let scope = match need {
        Need::AnyToken => None,
        Need::Catalog => Some("registry:catalog:*".to_string()),
        // A mount also asks to pull from the source, as distribution does.
        Need::Repository {
            name,
            action: "push",
        } => Some(match mount_from {
            Some(from) => format!("repository:{name}:pull,push repository:{from}:pull"),
            None => format!("repository:{name}:pull,push"),
        }),
        Need::Repository { name, action } => Some(format!("repository:{name}:{action}")),
    };
    let (message, error) = match refusal {
        Refusal::NoToken => ("authentication required".to_string(), None),
        Refusal::InvalidToken(e) => (format!("invalid token: {e}"), Some("invalid_token")),
        Refusal::InsufficientScope(m) => (
            format!("{m} {}", scope.clone().unwrap_or_default()),
            Some("insufficient_scope"),
        ),
    };
    RegistryError::new(ErrorCode::Unauthorized, message).with_header(
        header::WWW_AUTHENTICATE,
        challenge(auth, headers, scope, error),
    )
}

/// The protected and immutable tag rules as they apply to one caller in one
/// repository; [`TagGuard::check`] is the metadata layer's `TagCheck`.
pub(crate) struct TagGuard {
    rules: Option<TagRules>,
    level: Level,
}

impl TagGuard {
    /// No rules, admin level: authentication off, or a repository in no project.
    fn open() -> TagGuard {
        TagGuard {
            rules: None,
            level: Level::At(ProtectionLevel::Admin),
        }
    }

    pub(crate) fn new(reg: &Registry, caller: &Caller, repo: &str) -> TagGuard {
        let (Caller::Token(claims), Some(auth)) = (caller, &reg.auth) else {
            return TagGuard::open();
        };
        TagGuard::of(&auth.model(), &subject_identity(claims), repo)
    }

    /// The rules of `repo`'s project as they apply to `identity`.
    pub(crate) fn of(model: &AccessModel, identity: &Identity, repo: &str) -> TagGuard {
        let Location::InProject(project) = model.locate(repo) else {
            return TagGuard::open();
        };
        let rules = TagRules::of(project);
        TagGuard {
            rules: (!rules.is_empty()).then_some(rules),
            level: Level::of(model.standing(identity, project)),
        }
    }

    pub(crate) fn check(&self, tag: &str, op: TagOp) -> std::result::Result<(), String> {
        match &self.rules {
            Some(rules) => rules.check(tag, op, self.level),
            None => Ok(()),
        }
    }

    /// Does a protected rule forbid this caller to delete `tag`?
    pub(crate) fn protected_against_delete(&self, tag: &str) -> bool {
        self.rules.as_ref().is_some_and(|r| {
            r.protected_refusal(tag, TagOp::Delete, self.level)
                .is_some()
        })
    }

    /// Does an immutable rule match `tag`?
    pub(crate) fn immutable(&self, tag: &str) -> bool {
        self.rules.as_ref().is_some_and(|r| r.immutable(tag))
    }

    /// Is the caller the instance admin (or is authentication off)?
    pub(crate) fn is_admin(&self) -> bool {
        self.level == Level::At(ProtectionLevel::Admin)
    }
}

/// The identity a token's subject names (anonymous if it names none).
fn subject_identity(claims: &Claims) -> Identity {
    Identity::from_subject(&claims.sub).unwrap_or(Identity::Anonymous)
}

/// A registry action, as the token protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Pull,
    Delete,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Delete => "delete",
        }
    }
}

/// Who calls the management API (and, later, the web UI), authenticated once
/// per request, with what they may do where. Three ways in:
/// - a bearer JWT from `/jwt/auth`: what its claims grant (subject `admin`:
///   everything);
/// - Basic `user:secret` with a personal or project access token or the admin
///   password (so `curl -u user:token` works), or no credentials at all
///   (anonymous): what the access model grants that identity;
/// - authentication off: everyone is the admin.
pub(crate) enum Principal {
    Open,
    Token {
        claims: Arc<Claims>,
        model: Arc<AccessModel>,
    },
    Identity {
        identity: Identity,
        model: Arc<AccessModel>,
    },
}

/// Why a caller could not be authenticated; the message, and the challenge
/// to answer with.
#[derive(Debug)]
pub(crate) struct Unauthenticated {
    pub(crate) message: String,
    pub(crate) challenges: Vec<String>,
}

impl Principal {
    /// Authenticates the caller of a request from its `Authorization` header.
    pub(crate) async fn authenticate(
        reg: &Registry,
        headers: &HeaderMap,
    ) -> std::result::Result<Principal, Unauthenticated> {
        let Some(auth) = &reg.auth else {
            return Ok(Principal::Open);
        };
        let refused = |message: String| Unauthenticated {
            message,
            challenges: Principal::challenges(reg, headers),
        };
        let model = auth.model();
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Principal::Identity {
                identity: Identity::Anonymous,
                model,
            });
        };
        let value = value
            .to_str()
            .map_err(|_| refused("the Authorization header is not text".into()))?;
        let (scheme, credentials) = value.split_once(' ').unwrap_or((value, ""));
        let credentials = credentials.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            let claims = auth
                .tokens
                .verify(credentials)
                .map_err(|e| refused(format!("invalid token: {e}")))?;
            return Ok(Principal::Token { claims, model });
        }
        if scheme.eq_ignore_ascii_case("basic") {
            use base64::Engine;
            let (user, secret) = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|text| {
                    text.split_once(':')
                        .map(|(u, s)| (u.to_string(), s.to_string()))
                })
                .ok_or_else(|| refused("malformed Basic credentials".into()))?;
            let identity = auth
                .authenticate(&user, &secret)
                .await
                .ok_or_else(|| refused("invalid username or token".into()))?;
            // The model may have been reloaded while an external source answered.
            return Ok(Principal::Identity {
                identity,
                model: auth.model(),
            });
        }
        Err(refused(format!(
            "unsupported authorization scheme {scheme:?}: use Basic or Bearer"
        )))
    }

    /// `WWW-Authenticate` values for a 401 from the management API.
    pub(crate) fn challenges(reg: &Registry, headers: &HeaderMap) -> Vec<String> {
        let mut out = vec!["Basic realm=\"berth\"".to_string()];
        if let Some(auth) = &reg.auth {
            out.insert(0, challenge(auth, headers, None, None));
        }
        out
    }

    pub(crate) fn is_admin(&self) -> bool {
        match self {
            Principal::Open => true,
            Principal::Token { claims, .. } => claims.sub == "admin",
            Principal::Identity { identity, .. } => *identity == Identity::Admin,
        }
    }

    pub(crate) fn is_anonymous(&self) -> bool {
        match self {
            Principal::Open => false,
            Principal::Token { claims, .. } => claims.sub == "anonymous",
            Principal::Identity { identity, .. } => *identity == Identity::Anonymous,
        }
    }

    /// May the caller do `action` on repository `repo`?
    ///
    /// The admin may do what the access model gives the admin, however it
    /// signed in: everything, except in a project whose registry is
    /// `disabled` (GitLab: "disabling the Container Registry disables all
    /// Container Registry operations", for administrators too). An admin
    /// bearer token used to pass every check here while Basic admin did not.
    pub(crate) fn may(&self, repo: &str, action: Action) -> bool {
        let allowed = |can: crate::auth::policy::Actions| match action {
            Action::Pull => can.pull,
            Action::Delete => can.delete,
        };
        match self {
            Principal::Open => true,
            Principal::Token { claims, model } if claims.sub == "admin" => {
                allowed(model.actions(&Identity::Admin, repo))
            }
            Principal::Token { claims, .. } => claims.allows(repo, action.as_str()),
            Principal::Identity { identity, model } => allowed(model.actions(identity, repo)),
        }
    }

    /// May the caller see declared project `path` at all (pull in it, as the
    /// access model says for who they are)? A bearer token answers for its
    /// subject, not only for the repositories it names.
    pub(crate) fn may_see_project(&self, path: &str) -> bool {
        match self {
            Principal::Open => true,
            Principal::Token { claims, model } => {
                model.actions(&subject_identity(claims), path).pull
            }
            Principal::Identity { identity, model } => model.actions(identity, path).pull,
        }
    }

    /// The tag rules of `repo` as they apply to this caller.
    pub(crate) fn tag_guard(&self, repo: &str) -> TagGuard {
        match self {
            Principal::Open => TagGuard::open(),
            Principal::Token { claims, model } => {
                TagGuard::of(model, &subject_identity(claims), repo)
            }
            Principal::Identity { identity, model } => TagGuard::of(model, identity, repo),
        }
    }

    /// The access model, unless authentication is off.
    pub(crate) fn model(&self) -> Option<&Arc<AccessModel>> {
        match self {
            Principal::Open => None,
            Principal::Token { model, .. } | Principal::Identity { model, .. } => Some(model),
        }
    }
}

/// A predicate for the catalog: may this caller pull from the repository?
pub(crate) fn catalog_filter(
    reg: &Registry,
    caller: &Caller,
) -> Box<dyn Fn(&str) -> bool + Send + Sync> {
    match (caller, &reg.auth) {
        (Caller::Token(claims), Some(auth)) => {
            let model = auth.model();
            let identity = subject_identity(claims);
            Box::new(move |repo| model.actions(&identity, repo).pull)
        }
        _ => Box::new(|_| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Reference;

    /// Issue 12, 7(i): forwarded scheme and host count only when trusted.
    #[test]
    fn origin_from_forwarded_headers_when_trusted() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, v.parse().unwrap());
            }
            m
        };
        let proxied = h(&[
            ("host", "berth.svc:5000"),
            ("x-forwarded-proto", "https, http"),
            ("x-forwarded-host", "registry.example.com"),
        ]);
        let bad_host = h(&[
            ("host", "berth.svc:5000"),
            ("x-forwarded-host", "evil\",x=\"y"),
        ]);
        type Case<'a> = (&'a HeaderMap, Option<&'a str>, bool, (&'a str, &'a str));
        let cases: [Case; 6] = [
            (&proxied, None, true, ("https", "registry.example.com")),
            (&proxied, None, false, ("http", "berth.svc:5000")),
            (&proxied, Some("https"), false, ("https", "berth.svc:5000")),
            (&bad_host, None, true, ("http", "berth.svc:5000")),
            (
                &h(&[("x-forwarded-proto", "http")]),
                Some("https"),
                true,
                ("http", "localhost"),
            ),
            (&h(&[]), None, true, ("http", "localhost")),
        ];
        for (headers, scheme, trust, (want_scheme, want_host)) in cases {
            let (s, host) = origin(headers, scheme, trust);
            assert_eq!(
                (s, host.as_str()),
                (want_scheme, want_host),
                "{headers:?} {trust}"
            );
        }
    }

    /// Issue 12, 7(vi): the admin is one rule whether it signs in with Basic
    /// credentials or presents an admin bearer token: everything, except in
    /// a project whose registry is disabled (GitLab: disabling the registry
    /// disables all its operations). The bearer token used to pass all.
    #[test]
    fn admin_is_one_rule_for_basic_and_bearer() {
        let mut declared = crate::auth::directory::Declared::default();
        let mut yaml = String::new();
        for level in ["enabled", "private", "disabled"] {
            yaml.push_str(&format!(
                "kind: Project\nmetadata: {{name: {level}}}\nspec: {{path: g/{level}, visibility: private, registryAccessLevel: {level}}}\n---\n"
            ));
        }
        crate::auth::directory::load_text(&yaml, &mut declared).unwrap();
        let model = Arc::new(AccessModel::new(declared, None));
        let basic = Principal::Identity {
            identity: Identity::Admin,
            model: Arc::clone(&model),
        };
        let bearer = Principal::Token {
            claims: Arc::new(Claims {
                iss: "berth".into(),
                sub: "admin".into(),
                aud: "berth".into(),
                exp: u64::MAX,
                nbf: 0,
                iat: 0,
                jti: String::new(),
                access: vec![],
            }),
            model,
        };
        // (repository, may pull, may delete, may see its project)
        let table = [
            ("g/enabled/app", true, true, true),
            ("g/private/app", true, true, true),
            ("g/disabled/app", false, false, false),
            ("elsewhere/app", true, true, true),
        ];
        for (repo, pull, delete, see) in table {
            let project = repo.rsplit_once('/').map_or(repo, |(p, _)| p);
            for (how, p) in [("basic", &basic), ("bearer", &bearer)] {
                assert_eq!(p.may(repo, Action::Pull), pull, "{how} pull {repo}");
                assert_eq!(p.may(repo, Action::Delete), delete, "{how} delete {repo}");
                assert_eq!(p.may_see_project(project), see, "{how} sees {project}");
                assert!(p.is_admin(), "{how}");
            }
        }
    }

    #[test]
    fn needs_by_method_and_route() {
        let n = |s: &str| s.to_string();
        let manifest = Route::Manifest {
            name: n("a/b"),
            reference: Reference::Tag(n("v1")),
        };
        let blob = Route::Blob {
            name: n("a/b"),
            digest: n("x"),
        };
        let upload = Route::Upload {
            name: n("a/b"),
            id: n("x"),
        };
        let cases = [
            (Method::GET, Route::Base, Need::AnyToken),
            (Method::GET, Route::Catalog, Need::Catalog),
            (
                Method::GET,
                manifest.clone(),
                Need::Repository {
                    name: "a/b",
                    action: "pull",
                },
            ),
            (
                Method::HEAD,
                manifest.clone(),
                Need::Repository {
                    name: "a/b",
                    action: "pull",
                },
            ),
            (
                Method::PUT,
                manifest.clone(),
                Need::Repository {
                    name: "a/b",
                    action: "push",
                },
            ),
            (
                Method::DELETE,
                manifest,
                Need::Repository {
                    name: "a/b",
                    action: "delete",
                },
            ),
            (
                Method::GET,
                blob.clone(),
                Need::Repository {
                    name: "a/b",
                    action: "pull",
                },
            ),
            (
                Method::DELETE,
                blob,
                Need::Repository {
                    name: "a/b",
                    action: "delete",
                },
            ),
            (
                Method::POST,
                Route::UploadStart { name: n("a/b") },
                Need::Repository {
                    name: "a/b",
                    action: "push",
                },
            ),
            (
                Method::GET,
                upload.clone(),
                Need::Repository {
                    name: "a/b",
                    action: "push",
                },
            ),
            (
                Method::DELETE,
                upload,
                Need::Repository {
                    name: "a/b",
                    action: "push",
                },
            ),
            (
                Method::GET,
                Route::Tags { name: n("a/b") },
                Need::Repository {
                    name: "a/b",
                    action: "pull",
                },
            ),
            (
                Method::GET,
                Route::Referrers {
                    name: n("a/b"),
                    digest: n("x"),
                },
                Need::Repository {
                    name: "a/b",
                    action: "pull",
                },
            ),
        ];
        for (method, route, want) in &cases {
            assert_eq!(&need(method, route), want, "{method} {route:?}");
        }
    }
}
