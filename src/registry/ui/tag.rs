//! A tag's page (`/ui/projects/<project>/repositories/<id>/tags/<tag>`):
//! its manifest's platforms (an index) or layers (an image), its referrers,
//! and pull commands by tag and by digest.

use std::str::FromStr;

use axum::extract::Path;
use axum::response::Response;

use super::error::{UiError, UiResult};
use super::viewer::Viewer;
use super::views::{
    Layer, Platform, ReferrerLine, Stamp, TagPage, crumbs, encode, human_size, repository_href,
    short_digest,
};
use crate::oci::Digest;

pub(super) async fn tag(
    Path((project, id, tag)): Path<(String, String, String)>,
    v: Viewer,
) -> UiResult<Response> {
    let scope = v.scope(&project)?;
    let repo = v.repository(&scope, &id).await?;
    let meta = &v.reg.meta;
    let detail = meta
        .tag_detail(repo.row.id, &tag)
        .await?
        .ok_or_else(|| UiError::not_found(format!("{} has no tag {tag}.", repo.row.name)))?;
    let payload = meta
        .manifest_payload(detail.manifest_id)
        .await?
        .unwrap_or_default();
    let manifest: serde_json::Value = serde_json::from_slice(&payload).unwrap_or_default();
    let is_index = manifest.get("manifests").is_some_and(|m| m.is_array())
        || detail.media_type.contains("index")
        || detail.media_type.contains("manifest.list");
    let mut platforms = Vec::new();
    let mut layers = Vec::new();
    if is_index {
        let children = meta.child_manifests(detail.manifest_id).await?;
        let ids: Vec<i64> = children.iter().map(|(id, _)| *id).collect();
        let sizes = meta.manifest_total_sizes(&ids).await?;
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
        Ok(d) => meta.referrers(&repo.row.name, &d, None).await?,
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
    let crumbs = crumbs(&project, Some(&repo.row), &detail.name);
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
