//! `/v2/...` paths parsed into typed routes. Repository names may contain any
//! number of `/`, so the route is recognised from the right-hand end of the
//! path and everything before the route keyword is the name.

use crate::oci::{Reference, validate_repository, validate_tag};

use super::error::{ErrorCode, RegistryError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/tags/list`
    Tags { name: String },
    /// `/v2/<name>/manifests/<reference>`
    Manifest { name: String, reference: Reference },
    /// `/v2/<name>/blobs/<digest>` (digest checked by the handler, which
    /// reports a bad one as DIGEST_INVALID)
    Blob { name: String, digest: String },
    /// `/v2/<name>/blobs/uploads/`
    UploadStart { name: String },
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload { name: String, id: String },
    /// `/v2/<name>/referrers/<digest>`
    Referrers { name: String, digest: String },
    /// `/api/v1/repositories/<name>` (management API)
    Repository { name: String },
}

impl Route {
    /// The repository the route addresses, if any.
    pub fn repository(&self) -> Option<&str> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Tags { name }
            | Route::Manifest { name, .. }
            | Route::Blob { name, .. }
            | Route::UploadStart { name }
            | Route::Upload { name, .. }
            | Route::Referrers { name, .. }
            | Route::Repository { name } => Some(name),
        }
    }
}

/// Parses the path of a request under `/v2/`.
pub fn parse_route(path: &str) -> Result<Route> {
    let rest = path
        .strip_prefix("/v2/")
        .or_else(|| (path == "/v2").then_some(""))
        .ok_or_else(|| RegistryError::not_found(format!("no route for {path}")))?;
    if rest.is_empty() {
        return Ok(Route::Base);
    }
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let n = parts.len();
    let name_of = |len: usize| -> Result<String> {
        let name = parts[..len].join("/");
        validate_repository(&name)?;
        Ok(name)
    };
    let tail = |k: usize| -> Option<&str> { n.checked_sub(k).map(|i| parts[i]) };
    let route = match (tail(3), tail(2), tail(1)) {
        (Some("blobs"), Some("uploads"), Some("")) if n > 3 => Route::UploadStart {
            name: name_of(n - 3)?,
        },
        (Some("blobs"), Some("uploads"), Some(id)) if n > 3 => Route::Upload {
            name: name_of(n - 3)?,
            id: id.to_string(),
        },
        (_, Some("blobs"), Some("uploads")) if n > 2 => Route::UploadStart {
            name: name_of(n - 2)?,
        },
        (_, Some("tags"), Some("list")) if n > 2 => Route::Tags {
            name: name_of(n - 2)?,
        },
        (_, Some("blobs"), Some(digest)) if n > 2 => Route::Blob {
            name: name_of(n - 2)?,
            digest: digest.to_string(),
        },
        (_, Some("referrers"), Some(digest)) if n > 2 => Route::Referrers {
            name: name_of(n - 2)?,
            digest: digest.to_string(),
        },
        (_, Some("manifests"), Some(reference)) if n > 2 => Route::Manifest {
            name: name_of(n - 2)?,
            reference: parse_reference(reference)?,
        },
        _ => return Err(RegistryError::not_found(format!("no route for {path}"))),
    };
    Ok(route)
}

fn parse_reference(s: &str) -> Result<Reference> {
    if s.contains(':') {
        Ok(Reference::Digest(s.parse().map_err(
            |e: crate::oci::DigestError| {
                RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
            },
        )?))
    } else {
        validate_tag(s)?;
        Ok(Reference::Tag(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn name(s: &str) -> String {
        s.to_string()
    }

    #[test]
    fn parses_every_route_at_any_depth() {
        let cases = vec![
            ("/v2/", Route::Base),
            ("/v2", Route::Base),
            ("/v2/_catalog", Route::Catalog),
            ("/v2/a/tags/list", Route::Tags { name: name("a") }),
            (
                "/v2/g/s/p/img/tags/list",
                Route::Tags {
                    name: name("g/s/p/img"),
                },
            ),
            (
                "/v2/g/p/manifests/latest",
                Route::Manifest {
                    name: name("g/p"),
                    reference: Reference::Tag("latest".into()),
                },
            ),
            (
                &*Box::leak(format!("/v2/g/p/manifests/{D}").into_boxed_str()),
                Route::Manifest {
                    name: name("g/p"),
                    reference: Reference::Digest(D.parse().unwrap()),
                },
            ),
            (
                "/v2/g/p/blobs/x",
                Route::Blob {
                    name: name("g/p"),
                    digest: name("x"),
                },
            ),
            (
                "/v2/g/p/blobs/uploads/",
                Route::UploadStart { name: name("g/p") },
            ),
            (
                "/v2/g/p/blobs/uploads",
                Route::UploadStart { name: name("g/p") },
            ),
            (
                "/v2/g/p/blobs/uploads/abc",
                Route::Upload {
                    name: name("g/p"),
                    id: name("abc"),
                },
            ),
            (
                "/v2/g/p/referrers/x",
                Route::Referrers {
                    name: name("g/p"),
                    digest: name("x"),
                },
            ),
            // Route keywords are legal name components.
            (
                "/v2/blobs/manifests/tags/list",
                Route::Tags {
                    name: name("blobs/manifests"),
                },
            ),
            (
                "/v2/manifests/manifests/v1",
                Route::Manifest {
                    name: name("manifests"),
                    reference: Reference::Tag("v1".into()),
                },
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse_route(path).unwrap(), want, "{path}");
        }
    }

    #[test]
    fn refuses_bad_paths_with_the_right_code() {
        let cases = [
            ("/v2/tags/list", ErrorCode::Unsupported),
            ("/v2/a/b", ErrorCode::Unsupported),
            ("/v3/a/tags/list", ErrorCode::Unsupported),
            ("/v2/A/tags/list", ErrorCode::NameInvalid),
            ("/v2/../etc/tags/list", ErrorCode::NameInvalid),
            ("/v2/a/../../b/blobs/uploads/", ErrorCode::NameInvalid),
            ("/v2/a//b/manifests/x", ErrorCode::NameInvalid),
            ("/v2/a/manifests/sha256:zz", ErrorCode::DigestInvalid),
            ("/v2/a/manifests/-bad", ErrorCode::ManifestInvalid),
        ];
        for (path, want) in cases {
            assert_eq!(parse_route(path).unwrap_err().code, want, "{path}");
        }
    }
}
