//! Manifests: storing one (with its blob and child references, and maybe a
//! tag, in one transaction), serving it, deleting it, and what the
//! management pages and cleanup runs ask about them.

use std::collections::HashSet;

use sqlx::{AssertSqlSafe, Row};

use super::db;
use super::holders::{MANIFEST_HOLDERS, referenced_message};
use super::put_batch::{Outcome, PutBatcher};
use super::usage::TOTAL_SIZE;
use super::{Metadata, MetadataError, Result, TagCheck, TagOp, now_ms, parse_digest};
use crate::oci::{Digest, Manifest, Reference};

/// A manifest as served to clients.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub payload: Vec<u8>,
}

/// The manifest's annotations as stored (`None` when it has none).
fn annotations_json(manifest: &Manifest) -> Option<String> {
    manifest
        .annotations
        .as_ref()
        .filter(|a| !a.is_empty())
        .map(|a| serde_json::to_string(a).unwrap_or_default())
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
        if let Some(puts) = &self.puts {
            return Self::put_manifest_batched(puts, repo, digest, manifest, payload, tag, check)
                .await;
        }
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
        let annotations = annotations_json(manifest);
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
        let (manifest_id, total_size): (i64, i64) = match inserted {
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
                let total: i64 = sqlx::query_scalar(TOTAL_SIZE)
                    .bind(id)
                    .fetch_one(&mut *tx)
                    .await?;
                sqlx::query("UPDATE manifests SET total_size = $1 WHERE id = $2")
                    .bind(total)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                (id, total)
            }
            None => {
                sqlx::query_as(
                    "SELECT id, total_size FROM manifests WHERE repository_id = $1 AND digest = $2",
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
                "INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at, total_size)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (repository_id, name) DO UPDATE
                    SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at,
                        total_size = excluded.total_size
                  WHERE tags.manifest_id <> excluded.manifest_id",
            )
            .bind(repo_id)
            .bind(tag)
            .bind(manifest_id)
            .bind(now)
            .bind(now)
            .bind(total_size)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// [`Metadata::put_manifest`] through the replica's batcher (PostgreSQL:
    /// `berth_put_manifests`, one round trip and one commit for every PUT of
    /// a batch). The tag rules are asked beforehand about both changes the
    /// PUT may make to `tag`; the database applies the answer that fits.
    async fn put_manifest_batched(
        puts: &PutBatcher,
        repo: &str,
        digest: &Digest,
        manifest: &Manifest,
        payload: &[u8],
        tag: Option<&str>,
        check: TagCheck<'_>,
    ) -> Result<()> {
        let (may_create, may_move) = match tag {
            Some(tag) => (check(tag, TagOp::Create), check(tag, TagOp::Move)),
            None => (Ok(()), Ok(())),
        };
        let joined = |digests: &[Digest]| {
            digests
                .iter()
                .map(Digest::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        };
        let put = serde_json::json!({
            "repo": repo,
            "digest": digest.to_string(),
            "media_type": manifest.kind.media_type(),
            "artifact_type": manifest.artifact_type,
            "size": payload.len(),
            "config": manifest.config.as_ref().map(Digest::to_string),
            "subject": manifest.subject.as_ref().map(Digest::to_string),
            "annotations": annotations_json(manifest),
            "payload": hex::encode(payload),
            "now": now_ms(),
            "blobs": joined(&manifest.blobs),
            "children": joined(&manifest.children),
            "tag": tag,
            "may_create": may_create.is_ok(),
            "may_move": may_move.is_ok(),
        });
        let (code, message) = match puts.put(put, payload.len()).await? {
            Outcome::Stored => return Ok(()),
            Outcome::Refused { code, message } => (code, message),
        };
        let named = || parse_digest(message.clone());
        match code.as_str() {
            "BR001" => Err(MetadataError::BlobUnknown(named()?)),
            "BR002" => Err(MetadataError::ManifestUnknown(named()?)),
            "BR003" => Err(MetadataError::TagRefused(
                may_create.err().unwrap_or_default(),
            )),
            "BR004" => Err(MetadataError::TagRefused(
                may_move.err().unwrap_or_default(),
            )),
            _ => Err(MetadataError::Database(sqlx::Error::Protocol(format!(
                "manifest PUT failed in the database: {code}: {message}"
            )))),
        }
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

    use serde_json::json;

    use super::*;
    use crate::metadata::TagOp;
    use crate::metadata::testing::{self, digest};
    use crate::oci::manifest::{OCI_MANIFEST, parse};

    /// Manifest PUTs at once (on PostgreSQL from two replicas): 12 distinct
    /// manifests to a tag whose rules allow creating it but not moving it,
    /// and 12 to tags of their own. One of the 12 creates the tag, the
    /// other 11 are refused with the rules' reason and store nothing; every
    /// own tag is listed. Then 11 moves with no rules: each manifest the tag
    /// moved away from is queued for review.
    async fn concurrent_puts_apply_the_tag_rules_once(backend: crate::metadata::Backend) {
        let (config, _dir) = testing::config_on(backend).await;
        let first = Arc::new(crate::metadata::open(&config).await.unwrap());
        let second = match backend {
            crate::metadata::Backend::Postgres => {
                Arc::new(crate::metadata::open(&config).await.unwrap())
            }
            crate::metadata::Backend::Sqlite => first.clone(),
        };
        let repo = "r";
        for name in ["config", "layer"] {
            first.link_blob(repo, &digest(name), 10).await.unwrap();
        }
        let put = |meta: Arc<Metadata>, n: usize, tag: String, rules: bool| async move {
            let blob = |name: &str| json!({"mediaType": "application/octet-stream", "digest": digest(name).to_string(), "size": 10});
            let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blob("config"),
                "layers": [blob("layer")], "annotations": {"n": n.to_string()}});
            let payload = serde_json::to_vec(&m).unwrap();
            let d = Digest::sha256_of(&payload);
            let parsed = parse(Some(OCI_MANIFEST), &payload).unwrap();
            let check = move |_: &str, op: TagOp| match op {
                TagOp::Move if rules => Err("tag latest is immutable".to_string()),
                _ => Ok(()),
            };
            meta.put_manifest(repo, &d, &parsed, &payload, Some(&tag), &check)
                .await
        };
        let mut tasks = Vec::new();
        for n in 0..24 {
            let meta = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            let tag = if n < 12 {
                "latest".to_string()
            } else {
                format!("own-{n}")
            };
            tasks.push(tokio::spawn(put(meta, n, tag, true)));
        }
        let (mut stored, mut refused) = (0, 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => stored += 1,
                Err(MetadataError::TagRefused(why)) => {
                    assert_eq!(why, "tag latest is immutable");
                    refused += 1;
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        assert_eq!((stored, refused), (13, 11));
        let count = |sql: &'static str| {
            let meta = second.clone();
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(&meta.read)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            count("SELECT count(*) FROM manifests").await,
            13,
            "a refused PUT stored its manifest"
        );
        assert_eq!(count("SELECT count(*) FROM manifest_blobs").await, 26);
        let id = testing::repo_id(&second, repo).await;
        assert_eq!(second.tags(id, None, None).await.unwrap().len(), 13);

        let mut tasks = Vec::new();
        for n in 100..111 {
            let meta = if n % 2 == 0 {
                first.clone()
            } else {
                second.clone()
            };
            tasks.push(tokio::spawn(put(meta, n, "latest".to_string(), false)));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        assert_eq!(
            count("SELECT count(*) FROM gc_manifest_reviews WHERE event = 'tag_switch'").await,
            11
        );
    }

    /// PostgreSQL: PUTs that arrive together go in one batch, and one
    /// refused in the middle of it takes nothing of the others with it.
    #[tokio::test]
    async fn puts_arriving_together_share_a_batch_and_fail_alone() {
        let (meta, _dir) = testing::db_on(crate::metadata::Backend::Postgres).await;
        let meta = Arc::new(meta);
        for name in ["config", "layer"] {
            meta.link_blob("r", &digest(name), 1).await.unwrap();
        }
        let before = meta.puts.as_ref().unwrap().batches();
        let mut tasks = Vec::new();
        for (n, layer) in ["layer", "missing", "layer"].into_iter().enumerate() {
            let meta = meta.clone();
            tasks.push(tokio::spawn(async move {
                let blob = |name: &str| json!({"mediaType": "application/octet-stream", "digest": digest(name).to_string(), "size": 1});
                let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blob("config"),
                    "layers": [blob(layer)], "annotations": {"n": n.to_string()}});
                let payload = serde_json::to_vec(&m).unwrap();
                let d = Digest::sha256_of(&payload);
                let parsed = parse(Some(OCI_MANIFEST), &payload).unwrap();
                let tag = format!("t{n}");
                meta.put_manifest("r", &d, &parsed, &payload, Some(&tag), &crate::metadata::any_tag_write)
                    .await
                    .map(|()| d)
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(
            meta.puts.as_ref().unwrap().batches() - before,
            1,
            "not one batch"
        );
        assert!(
            matches!(&results[1], Err(MetadataError::BlobUnknown(b)) if *b == digest("missing")),
            "{:?}",
            results[1]
        );
        for i in [0, 2] {
            let d = results[i].as_ref().unwrap();
            let stored = meta
                .manifest("r", &Reference::Tag(format!("t{i}")))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&stored.digest, d);
        }
        assert!(
            meta.manifest("r", &Reference::Tag("t1".into()))
                .await
                .unwrap()
                .is_none()
        );
    }

    /// A batch the database fails as a whole (here: a tag holding a NUL,
    /// which PostgreSQL's JSON refuses) stores nothing; its PUTs then run one
    /// by one, so only the bad one fails.
    #[tokio::test]
    async fn a_failed_batch_runs_again_one_put_at_a_time() {
        let (meta, _dir) = testing::db_on(crate::metadata::Backend::Postgres).await;
        let meta = Arc::new(meta);
        for name in ["config", "layer"] {
            meta.link_blob("r", &digest(name), 1).await.unwrap();
        }
        let before = meta.puts.as_ref().unwrap().batches();
        let mut tasks = Vec::new();
        for (n, tag) in ["t0", "t\0bad", "t2"].into_iter().enumerate() {
            let meta = meta.clone();
            tasks.push(tokio::spawn(async move {
                let blob = |name: &str| json!({"mediaType": "application/octet-stream", "digest": digest(name).to_string(), "size": 1});
                let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": blob("config"),
                    "layers": [blob("layer")], "annotations": {"n": n.to_string()}});
                let payload = serde_json::to_vec(&m).unwrap();
                let d = Digest::sha256_of(&payload);
                let parsed = parse(Some(OCI_MANIFEST), &payload).unwrap();
                meta.put_manifest("r", &d, &parsed, &payload, Some(tag), &crate::metadata::any_tag_write)
                    .await
                    .map(|()| d)
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        assert_eq!(
            meta.puts.as_ref().unwrap().batches() - before,
            1,
            "not one batch"
        );
        assert!(
            matches!(&results[1], Err(MetadataError::Database(_))),
            "{:?}",
            results[1]
        );
        for (i, tag) in [(0, "t0"), (2, "t2")] {
            let d = results[i].as_ref().unwrap();
            let stored = meta
                .manifest("r", &Reference::Tag(tag.into()))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&stored.digest, d);
        }
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
        concurrent_puts_apply_the_tag_rules_once => super::concurrent_puts_apply_the_tag_rules_once;
    }
}
