//! Authorisation of registry requests, decided in one place from
//! (method, route) and the request's bearer token. Verification is local:
//! the token's signature and claims, no database look-up.

use axum::http::{HeaderMap, Method, header};

use super::error::{ErrorCode, RegistryError, Result};
use super::{Registry, Route};
use std::sync::Arc;

use crate::auth::model::ProtectionLevel;
use crate::auth::tags::{Level, TagRules};
use crate::auth::token::Claims;
use crate::auth::{Auth, Identity, Location};
use crate::metadata::TagOp;

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

fn challenge(
    auth: &Auth,
    headers: &HeaderMap,
    scope: Option<String>,
    error: Option<&str>,
) -> String {
    let realm = auth.realm.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        format!("http://{host}/jwt/auth")
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
        Err(refusal) => Err(refuse(auth, &need, mount_from.as_deref(), headers, refusal)),
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
    // A mount whose token never asked about the source gets a challenge for
    // it; a token that asked and was refused pull falls back to an upload.
    if let Some(from) = mount_from
        && !claims
            .access
            .iter()
            .any(|a| a.kind == "repository" && a.name == from)
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
    pub(crate) fn new(reg: &Registry, caller: &Caller, repo: &str) -> TagGuard {
        let admin = Level::At(ProtectionLevel::Admin);
        let (Caller::Token(claims), Some(auth)) = (caller, &reg.auth) else {
            return TagGuard {
                rules: None,
                level: admin,
            };
        };
        let model = auth.model();
        let Location::InProject(project) = model.locate(repo) else {
            return TagGuard {
                rules: None,
                level: admin,
            };
        };
        let identity = Identity::from_subject(&claims.sub).unwrap_or(Identity::Anonymous);
        let rules = TagRules::of(project);
        TagGuard {
            rules: (!rules.is_empty()).then_some(rules),
            level: Level::of(model.standing(&identity, project)),
        }
    }

    pub(crate) fn check(&self, tag: &str, op: TagOp) -> std::result::Result<(), String> {
        match &self.rules {
            Some(rules) => rules.check(tag, op, self.level),
            None => Ok(()),
        }
    }

    /// Is the caller the instance admin (or is authentication off)?
    pub(crate) fn is_admin(&self) -> bool {
        self.level == Level::At(ProtectionLevel::Admin)
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
            let identity = Identity::from_subject(&claims.sub).unwrap_or(Identity::Anonymous);
            Box::new(move |repo| model.actions(&identity, repo).pull)
        }
        _ => Box::new(|_| true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Reference;

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
