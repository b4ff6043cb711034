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
        let mut tx = self.begin_write().await?;
        let repo_id = Self::ensure_repository(&mut tx, repo).await?;
        for blob in &manifest.blobs {
            let linked = sqlx::query(
                "SELECT 1 FROM repository_blobs WHERE repository_id = $1 AND digest = $2",
            )
            .bind(repo_id)
            .bind(blob.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if linked.is_none() {
                return Err(MetadataError::BlobUnknown(blob.clone()));
            }
        }
        let mut child_ids = Vec::with_capacity(manifest.children.len());
        for child in &manifest.children {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM manifests WHERE repository_id = $1 AND digest = $2",
            )
            .bind(repo_id)
            .bind(child.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            child_ids.push(id.ok_or_else(|| MetadataError::ManifestUnknown(child.clone()))?);
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
                for blob in &manifest.blobs {
                    sqlx::query("INSERT INTO manifest_blobs (manifest_id, digest) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(id)
                        .bind(blob.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                for child in child_ids {
                    sqlx::query("INSERT INTO manifest_references (parent_id, child_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                        .bind(id)
                        .bind(child)
                        .execute(&mut *tx)
                        .await?;
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
