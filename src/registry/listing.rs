//! Listings: `/v2/<name>/tags/list`, `/v2/_catalog` (both paginated with `n`
//! and `last`, and a `Link` header to the next page), and
//! `/v2/<name>/referrers/<digest>`.

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

struct Page {
    n: Option<u32>,
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
        n: n.map(|n| n.min(MAX_PAGE)),
        last: query.get("last").cloned(),
    })
}

/// Cuts a one-longer-than-asked result to the page, returning the `Link`
/// header when there is more.
fn paginate(mut items: Vec<String>, n: Option<u32>, base: &str) -> (Vec<String>, Option<String>) {
    match n {
        Some(n) if items.len() > n as usize => {
            items.truncate(n as usize);
            let last = items.last().cloned().unwrap_or_default();
            let last: String = form_urlencoded::byte_serialize(last.as_bytes()).collect();
            (
                items,
                Some(format!("<{base}?n={n}&last={last}>; rel=\"next\"")),
            )
        }
        _ => (items, None),
    }
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
    let key = (name.to_string(), p.n, p.last.clone());
    if let Some(page) = reg.tag_pages.get(&key, version) {
        return page_response(page);
    }
    let tags = reg
        .meta
        .tags(version.repository_id, p.n.map(|n| n + 1), p.last.as_deref())
        .await?;
    let (tags, link) = paginate(tags, p.n, &format!("/v2/{name}/tags/list"));
    let page = CachedPage {
        body: Bytes::from(json!({ "name": name, "tags": tags }).to_string()),
        link,
    };
    reg.tag_pages.put(key, version, page.clone());
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

type PageKey = (String, Option<u32>, Option<String>);

/// Rendered tags/list pages, each valid while its repository's tag version is
/// unchanged. Bounded: when full it starts over.
#[derive(Default)]
pub(super) struct TagPageCache {
    pages: Mutex<HashMap<PageKey, (TagsVersion, CachedPage)>>,
}

impl TagPageCache {
    const CAPACITY: usize = 4096;

    fn get(&self, key: &PageKey, version: TagsVersion) -> Option<CachedPage> {
        let pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        pages
            .get(key)
            .filter(|(v, _)| *v == version)
            .map(|(_, p)| p.clone())
    }

    fn put(&self, key: PageKey, version: TagsVersion, page: CachedPage) {
        let mut pages = self.pages.lock().unwrap_or_else(|e| e.into_inner());
        if pages.len() >= Self::CAPACITY {
            pages.clear();
        }
        pages.insert(key, (version, page));
    }
}

pub(super) async fn catalog(
    reg: &Registry,
    query: &HashMap<String, String>,
    visible: Box<dyn Fn(&str) -> bool + Send + Sync>,
) -> Result<Response> {
    let p = page(query)?;
    let want = p.n.map(|n| n as usize + 1).unwrap_or(usize::MAX);
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
