//! What holds an object a delete would take away: the manifests of the
//! repository referencing a blob, the indexes listing a manifest, and the
//! tags above them; and the refusal a client reads.

use super::db::Tx;
use super::{Metadata, Result};
use crate::oci::Digest;

/// How many holders and tags a refusal names before "and N more".
const HOLDERS_SHOWN: usize = 2;
const TAGS_SHOWN: usize = 3;

/// The queries that find what holds an object, built around one `seed`
/// query of manifest ids (binding the object's digest and a repository id):
/// the first holders' digests, their count, and the tags on them or on any
/// index above them (indexes listing them, and so on up), which are what
/// keeps the object in use.
pub(super) struct HolderQueries {
    digests: &'static str,
    count: &'static str,
    tags: &'static str,
}

macro_rules! holder_queries {
    ($seed:literal) => {
        HolderQueries {
            digests: concat!(
                "SELECT digest FROM manifests WHERE id IN (",
                $seed,
                ") ORDER BY id LIMIT $3"
            ),
            count: concat!("SELECT count(*) FROM (", $seed, ") AS holders"),
            tags: concat!(
                "WITH RECURSIVE up(id) AS (",
                $seed,
                " UNION SELECT r.parent_id FROM manifest_references r JOIN up ON r.child_id = up.id)
                 SELECT DISTINCT t.name FROM tags t JOIN up ON t.manifest_id = up.id
                  ORDER BY t.name LIMIT $3"
            ),
        }
    };
}

/// Manifests of the repository that reference a blob (config or layer).
pub(super) const BLOB_HOLDERS: HolderQueries = holder_queries!(
    "SELECT mb.manifest_id FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
      WHERE mb.digest = $1 AND m.repository_id = $2"
);

/// Indexes (and manifest lists) of the repository that list a manifest.
pub(super) const MANIFEST_HOLDERS: HolderQueries = holder_queries!(
    "SELECT r.parent_id FROM manifest_references r JOIN manifests c ON c.id = r.child_id
      WHERE c.digest = $1 AND c.repository_id = $2"
);

/// What still references an object that a delete would take away: the
/// first few referencing manifests (at most `HOLDERS_SHOWN + 1`), how many
/// there are, and the first few tags (at most `TAGS_SHOWN + 1`) on them or on
/// an index above them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Holders {
    digests: Vec<String>,
    count: i64,
    tags: Vec<String>,
}

/// The refusal a client reads, e.g. "manifest sha256:c… is referenced by
/// index sha256:i… (tag v1); delete the index first".
pub(super) fn referenced_message(object: &str, holder_kind: &str, h: &Holders) -> String {
    let shown = &h.digests[..h.digests.len().min(HOLDERS_SHOWN)];
    let mut by = format!("{holder_kind} {}", shown.join(&format!(", {holder_kind} ")));
    let more = h.count - shown.len() as i64;
    if more > 0 {
        by.push_str(&format!(" and {more} more"));
    }
    let tags = match h.tags.len() {
        0 => "untagged".to_string(),
        1 => format!("tag {}", h.tags[0]),
        n if n <= TAGS_SHOWN => format!("tags {}", h.tags.join(", ")),
        _ => format!("tags {}, …", h.tags[..TAGS_SHOWN].join(", ")),
    };
    let them = match (h.count, holder_kind) {
        (1, kind) => format!("the {kind}"),
        (_, "index") => "those indexes".to_string(),
        (_, kind) => format!("those {kind}s"),
    };
    format!("{object} is referenced by {by} ({tags}); delete {them} first")
}

impl Metadata {
    /// The manifests that `q.seed` selects (binding a digest and a
    /// repository id), and the tags on them or on any index above them;
    /// `None` when it selects none.
    pub(super) async fn holders(
        tx: &mut Tx<'_>,
        q: &HolderQueries,
        digest: &Digest,
        repo_id: i64,
    ) -> Result<Option<Holders>> {
        let digests: Vec<String> = sqlx::query_scalar(q.digests)
            .bind(digest.to_string())
            .bind(repo_id)
            .bind(HOLDERS_SHOWN as i64 + 1)
            .fetch_all(&mut **tx)
            .await?;
        if digests.is_empty() {
            return Ok(None);
        }
        let count: i64 = if digests.len() > HOLDERS_SHOWN {
            sqlx::query_scalar(q.count)
                .bind(digest.to_string())
                .bind(repo_id)
                .fetch_one(&mut **tx)
                .await?
        } else {
            digests.len() as i64
        };
        let tags: Vec<String> = sqlx::query_scalar(q.tags)
            .bind(digest.to_string())
            .bind(repo_id)
            .bind(TAGS_SHOWN as i64 + 1)
            .fetch_all(&mut **tx)
            .await?;
        Ok(Some(Holders {
            digests,
            count,
            tags,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Backend;
    use crate::metadata::testing::{db_on, on_both_backends, put};
    use crate::metadata::{MetadataError, any_tag_write};

    fn holders(digests: &[&str], count: i64, tags: &[&str]) -> Holders {
        Holders {
            digests: digests.iter().map(|s| s.to_string()).collect(),
            count,
            tags: tags.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn referenced_messages_name_the_holders_and_their_tags() {
        let cases = [
            (
                "index",
                holders(&["sha256:i"], 1, &["v1"]),
                "manifest sha256:c is referenced by index sha256:i (tag v1); delete the index first",
            ),
            (
                "manifest",
                holders(&["sha256:m"], 1, &[]),
                "manifest sha256:c is referenced by manifest sha256:m (untagged); delete the manifest first",
            ),
            (
                "index",
                holders(&["sha256:a", "sha256:b"], 2, &["a", "b", "c"]),
                "manifest sha256:c is referenced by index sha256:a, index sha256:b (tags a, b, c); delete those indexes first",
            ),
            (
                "manifest",
                holders(
                    &["sha256:a", "sha256:b", "sha256:x"],
                    7,
                    &["a", "b", "c", "d"],
                ),
                "manifest sha256:c is referenced by manifest sha256:a, manifest sha256:b and 5 more (tags a, b, c, …); delete those manifests first",
            ),
        ];
        for (kind, h, want) in cases {
            assert_eq!(referenced_message("manifest sha256:c", kind, &h), want);
        }
    }

    fn image(config: &Digest, layer: &Digest) -> serde_json::Value {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 5}],
        })
    }

    /// The reference checks of the delete paths, on the database alone: what
    /// an index lists and what a manifest references stay until their holder
    /// is gone; a subject does not hold its referrers' deletion back.
    async fn deletes_refuse_what_is_still_referenced(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
        let config = Digest::sha256_of(b"{}");
        let layer = Digest::sha256_of(b"layer");
        for (d, n) in [(&config, 2), (&layer, 5)] {
            meta.link_blob("r", d, n).await.unwrap();
            meta.link_blob("other", d, n).await.unwrap();
        }
        let child = put(&meta, "r", image(&config, &layer), None).await;
        let index = put(
            &meta,
            "r",
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": child.to_string(), "size": 1}],
            }),
            Some("v1"),
        )
        .await;
        let referrer = put(
            &meta,
            "r",
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/x-sig",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.to_string(), "size": 2},
                "layers": [],
                "subject": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index.to_string(), "size": 1},
            }),
            None,
        )
        .await;

        let refused = |r: Result<bool>| match r {
            Err(MetadataError::Referenced(m)) => m,
            other => panic!("not refused: {other:?}"),
        };
        let m = refused(meta.delete_manifest("r", &child, &any_tag_write).await);
        assert_eq!(
            m,
            format!(
                "manifest {child} is referenced by index {index} (tag v1); delete the index first"
            )
        );
        let m = refused(meta.unlink_blob("r", &layer).await);
        assert_eq!(
            m,
            format!(
                "blob {layer} is referenced by manifest {child} (tag v1); delete the manifest first"
            )
        );
        let m = refused(meta.unlink_blob("r", &config).await);
        assert!(m.contains(&format!("manifest {child}")), "{m}");
        assert!(m.contains(&format!("manifest {referrer}")), "{m}");
        // Another repository's links are its own.
        assert!(meta.unlink_blob("other", &layer).await.unwrap());

        // The subject may go before its referrer; then the index, the child,
        // and the blobs once nothing references them.
        assert!(
            meta.delete_manifest("r", &index, &any_tag_write)
                .await
                .unwrap()
        );
        assert!(
            meta.delete_manifest("r", &child, &any_tag_write)
                .await
                .unwrap()
        );
        assert!(meta.unlink_blob("r", &layer).await.unwrap());
        let m = refused(meta.unlink_blob("r", &config).await);
        assert_eq!(
            m,
            format!(
                "blob {config} is referenced by manifest {referrer} (untagged); delete the manifest first"
            )
        );
        assert!(
            meta.delete_manifest("r", &referrer, &any_tag_write)
                .await
                .unwrap()
        );
        assert!(meta.unlink_blob("r", &config).await.unwrap());
        assert!(!meta.unlink_blob("r", &config).await.unwrap());
    }

    on_both_backends! {
        deletes_refuse_what_is_still_referenced => super::deletes_refuse_what_is_still_referenced;
    }
}
