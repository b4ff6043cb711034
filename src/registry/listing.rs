//! Listings: `/v2/<name>/tags/list`, `/v2/_catalog` (both paginated with `n`
//! and `last`, and a `Link` header to the next page), and
//! `/v2/<name>/referrers/<digest>`.
//!
//! Without `n` a listing answers its first [`DEFAULT_PAGE`] entries and a
//! `Link` to the rest (the spec lets a registry page what it answers; the
//! `Link` is how clients follow), so no one request renders a whole
//! repository. `n=0` answers an empty list and no `Link`, as the spec says.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use super::Registry;
use super::error::{ErrorCode, RegistryError, Result};
use crate::metadata::TagsVersion;
use crate::oci::Digest;
use crate::oci::manifest::OCI_INDEX;

/// Largest page served, whatever `n` asks for.
const MAX_PAGE: u32 = 10_000;
/// The page served when `n` is absent.
pub(super) const DEFAULT_PAGE: u32 = 1000;

struct Page {
    /// Entries asked for: `n`, else [`DEFAULT_PAGE`], at most [`MAX_PAGE`].
    n: u32,
    last: Option<String>,
}

fn page(query: &HashMap<String, String>) -> Result<Page> {
    let n = match query.get("n") {
        None => None,
        Some(v) => Some(v.parse::<u32>().map_err(|_| {
            RegistryError::new(
                ErrorCode::Unsupported,
                format!("n={v:?} is not a non-negative number"),
            )
            .with_status(StatusCode::BAD_REQUEST)
        })?),
    };
    Ok(Page {
        n: n.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE),
        last: query.get("last").cloned(),
    })
}

/// Cuts a one-longer-than-asked result to the page, returning the `Link`
/// header when there is more. An empty page (`n=0`) has no next page: a
/// `Link` there would name the same request again.
fn paginate(mut items: Vec<String>, n: u32, base: &str) -> (Vec<String>, Option<String>) {
    if n == 0 {
        return (Vec::new(), None);
    }
    if items.len() <= n as usize {
        return (items, None);
    }
    items.truncate(n as usize);
    let last = items.last().cloned().unwrap_or_default();
    let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
    (
        items,
        Some(format!("<{base}?n={n}&last={last}>; rel=\"next\"")),
    )
}

fn json_response(body: Value, content_type: &str, link: Option<String>) -> Result<Response> {
    let mut builder = Response::builder().header(header::CONTENT_TYPE, content_type);
    if let Some(link) = link {
        builder = builder.header(header::LINK, link);
    }
    builder
        .body(Body::from(body.to_string()))
        .map_err(RegistryError::internal)
}

pub(super) async fn tags(
    reg: &Registry,
    name: &str,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let p = page(query)?;
    let Some(version) = reg.meta.tags_version(name).await? else {
        return Err(RegistryError::new(
            ErrorCode::NameUnknown,
            format!("repository {name} is not known"),
        ));
    };
    if p.n == 0 {
        return page_response(CachedPage {
            body: Bytes::from(json!({ "name": name, "tags": [] }).to_string()),
            link: None,
        });
    }
    // Only first pages are kept: what follows `last` is the caller's choice,
    // so keying on it would let callers fill the cache.
    let key = (name.to_string(), p.n);
    if p.last.is_none()
        && let Some(page) = reg.tag_pages.get(&key, version)
    {
        return page_response(page);
    }
    let tags = reg
        .meta
        .tags(version.repository_id, Some(p.n + 1), p.last.as_deref())
        .await?;
    let (tags, link) = paginate(tags, p.n, &format!("/v2/{name}/tags/list"));
    let page = CachedPage {
        body: Bytes::from(json!({ "name": name, "tags": tags }).to_string()),
        link,
    };
    if p.last.is_none() {
        reg.tag_pages.put(key, version, page.clone());
    }
    page_response(page)
}

fn page_response(page: CachedPage) -> Result<Response> {
    let mut builder = Response::builder().header(header::CONTENT_TYPE, "application/json");
    if let Some(link) = page.link {
        builder = builder.header(header::LINK, link);
    }
    builder
        .body(Body::from(page.body))
        .map_err(RegistryError::internal)
}

/// A rendered tags/list page.
#[derive(Clone)]
pub(super) struct CachedPage {
    body: Bytes,
    link: Option<String>,
}

impl CachedPage {
    /// The bytes this page holds in the cache, with its key.
    fn size(&self, key: &PageKey) -> usize {
        self.body.len() + self.link.as_ref().map_or(0, String::len) + key.0.len() + 64
    }
}

/// A repository and the page size asked for: first pages only.
type PageKey = (String, u32);

/// Rendered first pages of tags/list, each valid while its repository's tag
/// version is unchanged. Bounded by bytes: when a page would not fit, the
/// cache starts over.
#[derive(Default)]
pub(super) struct TagPageCache {
    inner: Mutex<Pages>,
}

#[derive(Default)]
struct Pages {
    pages: HashMap<PageKey, (TagsVersion, CachedPage)>,
    bytes: usize,
}

impl TagPageCache {
    const BYTES: usize = 32 << 20;

    fn get(&self, key: &PageKey, version: TagsVersion) -> Option<CachedPage> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .pages
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, p)| p.clone())
    }

    fn put(&self, key: PageKey, version: TagsVersion, page: CachedPage) {
        let size = page.size(&key);
        if size > Self::BYTES / 16 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, old)) = inner.pages.remove(&key) {
            inner.bytes -= old.size(&key);
        }
        if inner.bytes + size > Self::BYTES {
            inner.pages.clear();
            inner.bytes = 0;
        }
        inner.bytes += size;
        inner.pages.insert(key, (version, page));
    }

    /// Pages kept, and the bytes they are accounted at.
    pub(super) fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (inner.pages.len(), inner.bytes)
    }
}

pub(super) async fn catalog(
    reg: &Registry,
    query: &HashMap<String, String>,
    visible: Box<dyn Fn(&str) -> bool + Send + Sync>,
) -> Result<Response> {
    let p = page(query)?;
    if p.n == 0 {
        return json_response(json!({ "repositories": [] }), "application/json", None);
    }
    let want = p.n as usize + 1;
    // Read in batches, keeping what the caller may see, until the page is full.
    let mut repos = Vec::new();
    let mut after = p.last.clone();
    loop {
        let batch = reg.meta.repositories(Some(1000), after.as_deref()).await?;
        let done = batch.len() < 1000;
        after = batch.last().cloned();
        repos.extend(batch.into_iter().filter(|r| visible(r)));
        if done || repos.len() >= want {
            break;
        }
    }
    repos.truncate(want);
    let (repos, link) = paginate(repos, p.n, "/v2/_catalog");
    json_response(json!({ "repositories": repos }), "application/json", link)
}

pub(super) async fn referrers(
    reg: &Registry,
    name: &str,
    digest: &str,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let subject: Digest = digest.parse()?;
    let artifact_type = query.get("artifactType").map(String::as_str);
    let found = reg.meta.referrers(name, &subject, artifact_type).await?;
    let manifests: Vec<Value> = found
        .into_iter()
        .map(|r| {
            let mut d = json!({ "mediaType": r.media_type, "digest": r.digest, "size": r.size });
            if let Some(t) = r.artifact_type {
                d["artifactType"] = Value::String(t);
            }
            if let Some(a) = r
                .annotations
                .and_then(|a| serde_json::from_str::<Value>(&a).ok())
            {
                d["annotations"] = a;
            }
            d
        })
        .collect();
    let body = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    let mut response = json_response(body, OCI_INDEX, None)?;
    if artifact_type.is_some() {
        response.headers_mut().insert(
            "oci-filters-applied",
            header::HeaderValue::from_static("artifactType"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[test]
    fn pages_and_links() {
        let base = "/v2/a/tags/list";
        // (fetched, n) -> (served, link)
        let cases: [(usize, u32, usize, Option<&str>); 5] = [
            (3, 2, 2, Some("</v2/a/tags/list?n=2&last=t1>; rel=\"next\"")),
            (2, 2, 2, None),
            (0, 2, 0, None),
            // n=0: an empty page and no Link (one would name this request again).
            (1, 0, 0, None),
            (0, 0, 0, None),
        ];
        for (fetched, n, served, link) in cases {
            let (items, l) = paginate(names(fetched), n, base);
            assert_eq!(items.len(), served, "{fetched} {n}");
            assert_eq!(l.as_deref(), link, "{fetched} {n}");
        }
    }

    #[test]
    fn page_sizes() {
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(page(&q(&[])).unwrap().n, DEFAULT_PAGE);
        assert_eq!(page(&q(&[("n", "0")])).unwrap().n, 0);
        assert_eq!(page(&q(&[("n", "7")])).unwrap().n, 7);
        assert_eq!(page(&q(&[("n", "99999999")])).unwrap().n, MAX_PAGE);
        assert!(page(&q(&[("n", "-1")])).is_err());
    }
}
