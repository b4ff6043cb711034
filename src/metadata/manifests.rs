//! Manifests: storing one (with its blob and child references, and maybe a
//! tag, in one transaction), serving it, deleting it, and what the
//! management pages and cleanup runs ask about them.

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, Row};

use super::db;
use super::holders::{MANIFEST_HOLDERS, referenced_message};
use super::{Metadata, MetadataError, Result, TagCheck, TagOp, now_ms, parse_digest};
use crate::oci::{Digest, Manifest, Reference};

/// A manifest as served to clients.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub payload: Vec<u8>,
}

/// References looked up or inserted per statement (both backends allow
/// thousands of binds; a manifest rarely has more than a hundred).
const IN_CHUNK: usize = 500;

/// `($1, $2), ($1, $3), ...`: `n` rows sharing the first bind.
fn pairs_with_first(n: usize) -> String {
    (2..n + 2)
        .map(|i| format!("($1, ${i})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Metadata {
    /// Stores a manifest (idempotently) and, if given, points `tag` at it, in
    /// one transaction. Every referenced blob and child manifest must already
    /// be in the repository.
    pub async fn put_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        manifest: &Manifest,
        payload: &[u8],
        tag: Option<&str>,
        check: TagCheck<'_>,
    ) -> Result<()> {
        let mut tx = match tag {
            Some(tag) => self.begin_tag_write(repo, tag).await?,
            None => self.begin_write().await?,
        };
        let repo_id = Self::ensure_repository(&mut tx, repo).await?;
        // One statement per [`IN_CHUNK`] references, not one per reference:
        // on PostgreSQL each statement is a round trip.
        let blobs: Vec<String> = manifest.blobs.iter().map(Digest::to_string).collect();
        let mut linked = HashSet::new();
        for chunk in blobs.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT digest FROM repository_blobs WHERE repository_id = $1 AND digest IN ({})",
                db::placeholders(2, chunk.len())
            );
            let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(repo_id);
            for digest in chunk {
                query = query.bind(digest);
            }
            linked.extend(query.fetch_all(&mut *tx).await?);
        }
        if let Some(missing) = manifest
            .blobs
            .iter()
            .zip(&blobs)
            .find(|(_, d)| !linked.contains(*d))
        {
            return Err(MetadataError::BlobUnknown(missing.0.clone()));
        }
        let children: Vec<String> = manifest.children.iter().map(Digest::to_string).collect();
        let mut child_id = std::collections::HashMap::new();
        for chunk in children.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT digest, id FROM manifests WHERE repository_id = $1 AND digest IN ({})",
                db::placeholders(2, chunk.len())
            );
            let mut query = sqlx::query_as::<_, (String, i64)>(AssertSqlSafe(sql)).bind(repo_id);
            for digest in chunk {
                query = query.bind(digest);
            }
            child_id.extend(query.fetch_all(&mut *tx).await?);
        }
        let mut child_ids = Vec::with_capacity(children.len());
        for (child, digest) in manifest.children.iter().zip(&children) {
            let id = child_id.get(digest);
            child_ids.push(*id.ok_or_else(|| MetadataError::ManifestUnknown(child.clone()))?);
        }
        let now = now_ms();
        let annotations = manifest
            .annotations
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|a| serde_json::to_string(a).unwrap_or_default());
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, config_digest,
                                    subject_digest, annotations, payload, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (repository_id, digest) DO NOTHING
             RETURNING id",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .bind(manifest.kind.media_type())
        .bind(&manifest.artifact_type)
        .bind(payload.len() as i64)
        .bind(manifest.config.as_ref().map(Digest::to_string))
        .bind(manifest.subject.as_ref().map(Digest::to_string))
        .bind(annotations)
        .bind(payload)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let manifest_id = match inserted {
            Some(id) => {
                for chunk in blobs.chunks(IN_CHUNK) {
                    let sql = format!(
                        "INSERT INTO manifest_blobs (manifest_id, digest) VALUES {} ON CONFLICT DO NOTHING",
                        pairs_with_first(chunk.len())
                    );
                    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(id);
                    for digest in chunk {
                        query = query.bind(digest);
                    }
                    query.execute(&mut *tx).await?;
                }
                for chunk in child_ids.chunks(IN_CHUNK) {
                    let sql = format!(
                        "INSERT INTO manifest_references (parent_id, child_id) VALUES {} ON CONFLICT DO NOTHING",
                        pairs_with_first(chunk.len())
                    );
                    let mut query = sqlx::query(AssertSqlSafe(sql)).bind(id);
                    for child in chunk {
                        query = query.bind(*child);
                    }
                    query.execute(&mut *tx).await?;
                }
                id
            }
            None => {
                sqlx::query_scalar(
                    "SELECT id FROM manifests WHERE repository_id = $1 AND digest = $2",
                )
                .bind(repo_id)
                .bind(digest.to_string())
                .fetch_one(&mut *tx)
                .await?
            }
        };
        if let Some(tag) = tag {
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT manifest_id FROM tags WHERE repository_id = $1 AND name = $2",
            )
            .bind(repo_id)
            .bind(tag)
            .fetch_optional(&mut *tx)
            .await?;
            let op = match current {
                None => Some(TagOp::Create),
                Some(id) if id != manifest_id => Some(TagOp::Move),
                Some(_) => None,
            };
            if let Some(op) = op {
                check(tag, op).map_err(MetadataError::TagRefused)?;
            }
            sqlx::query(
                "INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (repository_id, name) DO UPDATE
                    SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at
                  WHERE tags.manifest_id <> excluded.manifest_id",
            )
            .bind(repo_id)
            .bind(tag)
            .bind(manifest_id)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>> {
        let row = match reference {
            Reference::Tag(tag) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.payload FROM tags t
                       JOIN repositories r ON r.id = t.repository_id
                       JOIN manifests m ON m.id = t.manifest_id
                      WHERE r.name = $1 AND t.name = $2",
                )
                .bind(repo)
                .bind(tag)
                .fetch_optional(&self.read)
                .await?
            }
            Reference::Digest(digest) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.payload FROM manifests m
                       JOIN repositories r ON r.id = m.repository_id
                      WHERE r.name = $1 AND m.digest = $2",
                )
                .bind(repo)
                .bind(digest.to_string())
                .fetch_optional(&self.read)
                .await?
            }
        };
        row.map(|row| {
            Ok(StoredManifest {
                digest: parse_digest(row.try_get("digest")?)?,
                media_type: row.try_get("media_type")?,
                payload: row.try_get("payload")?,
            })
        })
        .transpose()
    }

    /// Deletes a manifest and every tag pointing at it; `false` when absent.
    /// Refused ([`MetadataError::Referenced`]) while an index of the
    /// repository lists it; `check` is asked about each of its tags. Both are
    /// decided in the deleting transaction.
    pub async fn delete_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        check: TagCheck<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let found: Option<(i64, i64)> = sqlx::query_as(
            "SELECT m.id, m.repository_id FROM manifests m JOIN repositories r ON r.id = m.repository_id
              WHERE r.name = $1 AND m.digest = $2",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, repo_id)) = found else {
            return Ok(false);
        };
        // An index (or manifest list) of the repository still lists it:
        // deleting it would leave that index, and every tag above it, broken.
        // Referrers (`subject`) do not hold their subject: OCI lets a subject
        // go, and garbage collection then reviews its referrers.
        let holders = Self::holders(&mut tx, &MANIFEST_HOLDERS, digest, repo_id).await?;
        if let Some(holders) = holders {
            return Err(MetadataError::Referenced(referenced_message(
                &format!("manifest {digest}"),
                "index",
                &holders,
            )));
        }
        let tags: Vec<String> = sqlx::query_scalar("SELECT name FROM tags WHERE manifest_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        for tag in &tags {
            check(tag, TagOp::Delete).map_err(MetadataError::TagRefused)?;
        }
        sqlx::query("DELETE FROM manifests WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The manifests an index lists (its direct children): id and digest.
    pub async fn child_manifests(&self, parent_id: i64) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT m.id, m.digest FROM manifest_references r
               JOIN manifests m ON m.id = r.child_id WHERE r.parent_id = $1",
        )
        .bind(parent_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// The stored payload of a manifest, by id.
    pub async fn manifest_payload(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT payload FROM manifests WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// Digests of the repository's manifests that are in use: those listed in
    /// `running`, and every index listing one of them (at any depth).
    pub async fn manifests_in_use(
        &self,
        repository_id: i64,
        running: &[String],
    ) -> Result<HashSet<String>> {
        let mut in_use = HashSet::new();
        for chunk in running.chunks(500) {
            let sql = format!(
                "WITH RECURSIVE up(id) AS (
                     SELECT id FROM manifests WHERE repository_id = $1 AND digest IN ({})
                     UNION
                     SELECT r.parent_id FROM manifest_references r JOIN up ON r.child_id = up.id
                 )
                 SELECT m.digest FROM manifests m JOIN up ON m.id = up.id",
                db::placeholders(2, chunk.len())
            );
            let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(repository_id);
            for digest in chunk {
                query = query.bind(digest);
            }
            in_use.extend(query.fetch_all(&self.read).await?);
        }
        Ok(in_use)
    }

    /// Every manifest (id, repository, digest, media type, payload), for fsck.
    pub async fn all_manifests(&self) -> Result<Vec<(i64, String, String, String, Vec<u8>)>> {
        Ok(sqlx::query_as(
            "SELECT m.id, r.name, m.digest, m.media_type, m.payload
               FROM manifests m JOIN repositories r ON r.id = m.repository_id ORDER BY m.id",
        )
        .fetch_all(&self.read)
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::metadata::testing::{self, digest};
    use crate::metadata::{DatabaseConfig, PostgresConfig, TagOp};
    use crate::oci::manifest::{OCI_MANIFEST, parse};

    #[test]
    fn rows_share_the_first_bind() {
        assert_eq!(pairs_with_first(1), "($1, $2)");
        assert_eq!(pairs_with_first(3), "($1, $2), ($1, $3), ($1, $4)");
    }

    /// Two replicas, 24 manifest PUTs at once (their transactions overlap
    /// on PostgreSQL): 12 distinct manifests to one tag, 12 to tags of their
    /// own. The one tag is created once, and moved 11 times, as the tag
    /// rules are told; each manifest it moved away from is queued for
    /// review; every own tag is listed; the references of each manifest are
    /// recorded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_manifest_puts_on_two_replicas() {
        let url = testing::postgres::fresh_database().await;
        let config = DatabaseConfig::Postgres(PostgresConfig::new(&url));
        let replicas = [
            Arc::new(crate::metadata::open(&config).await.unwrap()),
            Arc::new(crate::metadata::open(&config).await.unwrap()),
        ];
        let repo = "r";
        for name in ["config", "layer"] {
            replicas[0]
                .link_blob(repo, &digest(name), 10)
                .await
                .unwrap();
        }
        let creates = Arc::new(AtomicUsize::new(0));
        let moves = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..24 {
            let meta = replicas[i % 2].clone();
            let (creates, moves) = (creates.clone(), moves.clone());
            tasks.push(tokio::spawn(async move {
                let blob = |name: &str| json!({"mediaType": "application/octet-stream", "digest": digest(name).to_string(), "size": 10});
                let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blob("config"),
                    "layers": [blob("layer")], "annotations": {"n": i.to_string()}});
                let payload = serde_json::to_vec(&m).unwrap();
                let d = Digest::sha256_of(&payload);
                let parsed = parse(Some(OCI_MANIFEST), &payload).unwrap();
                let tag = if i < 12 { "latest".to_string() } else { format!("own-{i}") };
                let check = move |t: &str, op: TagOp| {
                    if t == "latest" {
                        match op {
                            TagOp::Create => creates.fetch_add(1, Ordering::SeqCst),
                            _ => moves.fetch_add(1, Ordering::SeqCst),
                        };
                    }
                    Ok(())
                };
                meta.put_manifest(repo, &d, &parsed, &payload, Some(&tag), &check)
                    .await
                    .unwrap();
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(
            creates.load(Ordering::SeqCst),
            1,
            "tag latest created more than once"
        );
        assert_eq!(moves.load(Ordering::SeqCst), 11);
        let meta = &replicas[1];
        let id = testing::repo_id(meta, repo).await;
        let tags = meta.tags(id, None, None).await.unwrap();
        assert_eq!(tags.len(), 13, "{tags:?}");
        let switched: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM gc_manifest_reviews WHERE event = 'tag_switch'",
        )
        .fetch_one(&meta.read)
        .await
        .unwrap();
        assert_eq!(switched, 11);
        let references: i64 = sqlx::query_scalar("SELECT count(*) FROM manifest_blobs")
            .fetch_one(&meta.read)
            .await
            .unwrap();
        assert_eq!(references, 48, "2 blobs for each of 24 manifests");
    }

    /// A manifest naming a blob the repository lacks is refused with that
    /// blob, whichever position it is in, and nothing is stored.
    async fn names_the_missing_blob(backend: crate::metadata::Backend) {
        let (meta, _dir) = testing::db_on(backend).await;
        meta.link_blob("r", &digest("config"), 1).await.unwrap();
        meta.link_blob("r", &digest("l1"), 1).await.unwrap();
        let blob = |name: &str| json!({"mediaType": "application/octet-stream", "digest": digest(name).to_string(), "size": 1});
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blob("config"),
            "layers": [blob("l1"), blob("missing"), blob("l1")]});
        let payload = serde_json::to_vec(&m).unwrap();
        let d = Digest::sha256_of(&payload);
        let parsed = parse(Some(OCI_MANIFEST), &payload).unwrap();
        let err = meta
            .put_manifest(
                "r",
                &d,
                &parsed,
                &payload,
                Some("v1"),
                &crate::metadata::any_tag_write,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, MetadataError::BlobUnknown(b) if *b == digest("missing")),
            "{err:?}"
        );
        assert!(
            meta.manifest("r", &Reference::Digest(d))
                .await
                .unwrap()
                .is_none()
        );
    }

    testing::on_both_backends! {
        a_missing_blob_is_named => super::names_the_missing_blob;
    }
}
