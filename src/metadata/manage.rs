//! The management API's and cleanup runs' queries: a project's repositories
//! with tag counts and sizes, pages of tags with sizes (sorted, filtered and
//! cut in SQL), the tags a policy evaluates, and tag deletions measured for
//! the bytes they leave to garbage collection. Part of the metadata layer;
//! knows nothing of HTTP, access rules or policies.
//!
//! Sizes:
//! - a repository's `size` is the bytes of the distinct blobs its manifests
//!   reference;
//! - a tag's `total_size` is the payload of its manifest and of every
//!   manifest it lists (an index's children, at any depth) plus the distinct
//!   blobs all of them reference;
//! - `bytes_reclaimable` of a deletion is what garbage collection frees
//!   because of it: the payloads of the manifests and the sizes of the blobs
//!   that were live before and no longer are. Live means reachable from a tag
//!   (anywhere, any repository for blobs) through index entries and referrers
//!   (`subject`), which is exactly what the sweep keeps (see
//!   `Metadata::gc_review_manifest` and `gc_review_blob`).

use std::collections::{HashMap, HashSet};

// Dynamic SQL here is built only from constants and `?` placeholders.
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};

use super::{Metadata, Result, TagCheck, TagOp};

/// A repository row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryRow {
    pub id: i64,
    pub name: String,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// A repository with what its listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    pub row: RepositoryRow,
    pub tags: u64,
    /// Bytes of the distinct blobs its manifests reference.
    pub size: u64,
    /// When a tag last changed (Unix milliseconds); `None` without tags.
    pub last_update: Option<i64>,
}

/// How a page of tags is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOrder {
    Name,
    /// When the tag last got its manifest.
    PublishedAt,
    /// When the tag's manifest was pushed.
    CreatedAt,
    /// By total size (see the module documentation). The sizes of every
    /// matching tag's manifest are computed, then sorted: one query per 500
    /// distinct manifests.
    Size,
}

/// What kind of manifest a tag points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    /// An image manifest whose config is an image config.
    Image,
    /// An image index or Docker manifest list (multi-platform).
    Index,
    /// Any other manifest: signatures, SBOMs, attestations, Helm charts...
    Artifact,
}

impl TagKind {
    /// The SQL condition on `m` (the manifest) selecting this kind; built
    /// from constants only.
    fn condition(kind: Option<TagKind>) -> &'static str {
        const INDEX: &str = "m.media_type IN ('application/vnd.oci.image.index.v1+json', \
                             'application/vnd.docker.distribution.manifest.list.v2+json')";
        match kind {
            None => "1 = 1",
            Some(TagKind::Index) => INDEX,
            Some(TagKind::Image) => {
                "m.media_type NOT IN ('application/vnd.oci.image.index.v1+json', \
                                      'application/vnd.docker.distribution.manifest.list.v2+json') \
                 AND (m.artifact_type IS NULL OR m.artifact_type IN \
                      ('application/vnd.oci.image.config.v1+json', \
                       'application/vnd.docker.container.image.v1+json'))"
            }
            Some(TagKind::Artifact) => {
                "m.media_type NOT IN ('application/vnd.oci.image.index.v1+json', \
                                      'application/vnd.docker.distribution.manifest.list.v2+json') \
                 AND m.artifact_type IS NOT NULL AND m.artifact_type NOT IN \
                      ('application/vnd.oci.image.config.v1+json', \
                       'application/vnd.docker.container.image.v1+json')"
            }
        }
    }
}

/// Which tags, in what order, which page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagQuery<'a> {
    /// Only names containing this (case-sensitive).
    pub name_contains: Option<&'a str>,
    /// Only tags of this kind.
    pub kind: Option<TagKind>,
    pub order: TagOrder,
    pub descending: bool,
    pub limit: u32,
    pub offset: u64,
}

/// A tag with its manifest's details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagDetail {
    pub name: String,
    pub manifest_id: i64,
    pub digest: String,
    pub media_type: String,
    pub config_digest: Option<String>,
    /// When the manifest was pushed (Unix milliseconds).
    pub created_at: i64,
    /// When the tag last got its manifest (Unix milliseconds).
    pub published_at: i64,
    pub total_size: u64,
}

/// A tag as a cleanup policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyTag {
    pub name: String,
    pub digest: String,
    pub manifest_id: i64,
    /// When the tag last got its manifest (Unix milliseconds).
    pub updated_at: i64,
}

/// A tag to delete, as it was when the decision was made: deleted only if
/// it still points at `manifest_id` since `updated_at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDeletion {
    pub name: String,
    pub manifest_id: i64,
    pub updated_at: i64,
}

/// The tags to delete in one repository, and the tag rules to re-check.
pub struct RepositoryDeletions<'a> {
    pub repository_id: i64,
    pub tags: Vec<PlannedDeletion>,
    pub check: TagCheck<'a>,
}

/// What happened to one repository's planned deletions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeletionOutcome {
    /// In the order planned.
    pub deleted: Vec<String>,
    /// Tags not deleted, with why.
    pub failed: Vec<(String, String)>,
    /// See the module documentation.
    pub bytes_reclaimable: u64,
}

const SELECT_TAG: &str = "SELECT t.name, t.manifest_id, t.updated_at, m.digest, m.media_type,
        m.config_digest, m.created_at
   FROM tags t JOIN manifests m ON m.id = t.manifest_id";

/// `?, ?, ...` for `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

fn tag_detail(row: &sqlx::sqlite::SqliteRow) -> Result<TagDetail> {
    Ok(TagDetail {
        name: row.try_get("name")?,
        manifest_id: row.try_get("manifest_id")?,
        digest: row.try_get("digest")?,
        media_type: row.try_get("media_type")?,
        config_digest: row.try_get("config_digest")?,
        created_at: row.try_get("created_at")?,
        published_at: row.try_get("updated_at")?,
        total_size: 0,
    })
}

impl Metadata {
    /// Repositories named `path` or below `path/`, in name order. The range
    /// `(path/, path0)` holds exactly the names starting with `path/` (`0`
    /// follows `/`), uses the name index and needs no LIKE escaping
    /// (PostgreSQL: compare with `COLLATE "C"`).
    pub async fn repositories_under(&self, path: &str) -> Result<Vec<RepositoryRow>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, name, created_at FROM repositories
              WHERE name = ? OR (name > ? AND name < ?) ORDER BY name",
        )
        .bind(path)
        .bind(format!("{path}/"))
        .bind(format!("{path}0"))
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, name, created_at)| RepositoryRow {
                id,
                name,
                created_at,
            })
            .collect())
    }

    pub async fn repository_by_id(&self, id: i64) -> Result<Option<RepositoryRow>> {
        let row: Option<(i64, String, i64)> =
            sqlx::query_as("SELECT id, name, created_at FROM repositories WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|(id, name, created_at)| RepositoryRow {
            id,
            name,
            created_at,
        }))
    }

    /// A repository's tag count and size (the distinct blobs its manifests
    /// reference).
    pub async fn repository_usage(&self, id: i64) -> Result<(u64, u64)> {
        let (tags, size): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM tags WHERE repository_id = ?),
                    (SELECT COALESCE(SUM(b.size), 0) FROM blobs b
                      WHERE b.digest IN (SELECT mb.digest FROM manifest_blobs mb
                                           JOIN manifests m ON m.id = mb.manifest_id
                                          WHERE m.repository_id = ?))",
        )
        .bind(id)
        .bind(id)
        .fetch_one(&self.read)
        .await?;
        Ok((tags as u64, size as u64))
    }

    /// Every repository named `path` or below `path/` with its tag count,
    /// size and last tag change, in name order, in one query.
    pub async fn repository_summaries(&self, path: &str) -> Result<Vec<RepositorySummary>> {
        let rows: Vec<(i64, String, i64, i64, i64, Option<i64>)> = sqlx::query_as(
            "SELECT r.id, r.name, r.created_at,
                    (SELECT count(*) FROM tags t WHERE t.repository_id = r.id),
                    (SELECT COALESCE(SUM(b.size), 0) FROM blobs b
                      WHERE b.digest IN (SELECT mb.digest FROM manifest_blobs mb
                                           JOIN manifests m ON m.id = mb.manifest_id
                                          WHERE m.repository_id = r.id)),
                    (SELECT max(t.updated_at) FROM tags t WHERE t.repository_id = r.id)
               FROM repositories r
              WHERE r.name = ? OR (r.name > ? AND r.name < ?) ORDER BY r.name",
        )
        .bind(path)
        .bind(format!("{path}/"))
        .bind(format!("{path}0"))
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, name, created_at, tags, size, last_update)| RepositorySummary {
                    row: RepositoryRow {
                        id,
                        name,
                        created_at,
                    },
                    tags: tags as u64,
                    size: size as u64,
                    last_update,
                },
            )
            .collect())
    }

    /// Every repository's name (for grouping them when no projects are declared).
    pub async fn repository_names(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM repositories ORDER BY name")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// The manifests an index lists (its direct children): id and digest.
    pub async fn child_manifests(&self, parent_id: i64) -> Result<Vec<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT m.id, m.digest FROM manifest_references r
               JOIN manifests m ON m.id = r.child_id WHERE r.parent_id = ?",
        )
        .bind(parent_id)
        .fetch_all(&self.read)
        .await?)
    }

    /// The stored payload of a manifest, by id.
    pub async fn manifest_payload(&self, id: i64) -> Result<Option<Vec<u8>>> {
        Ok(
            sqlx::query_scalar("SELECT payload FROM manifests WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.read)
                .await?,
        )
    }

    /// How many tags of the repository contain `name_contains` (and are of
    /// `kind`).
    pub async fn count_tags(
        &self,
        repository_id: i64,
        name_contains: Option<&str>,
        kind: Option<TagKind>,
    ) -> Result<u64> {
        // instr is case-sensitive (SQLite's LIKE is not); PostgreSQL: strpos.
        let sql = if kind.is_none() {
            "SELECT count(*) FROM tags t
              WHERE t.repository_id = ? AND (? IS NULL OR instr(t.name, ?) > 0)"
                .to_string()
        } else {
            format!(
                "SELECT count(*) FROM tags t JOIN manifests m ON m.id = t.manifest_id
                  WHERE t.repository_id = ? AND (? IS NULL OR instr(t.name, ?) > 0) AND {}",
                TagKind::condition(kind)
            )
        };
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(repository_id)
            .bind(name_contains)
            .bind(name_contains)
            .fetch_one(&self.read)
            .await?;
        Ok(n as u64)
    }

    /// One page of a repository's tags, sorted, filtered and cut by the
    /// database; total sizes are computed for the page's rows only (except
    /// when sorting by size). Ties are broken by name, in the same direction.
    pub async fn tag_page(&self, repository_id: i64, q: &TagQuery<'_>) -> Result<Vec<TagDetail>> {
        let dir = if q.descending { "DESC" } else { "ASC" };
        let key = match q.order {
            TagOrder::Name | TagOrder::Size => "",
            TagOrder::PublishedAt => "t.updated_at",
            TagOrder::CreatedAt => "m.created_at",
        };
        let order = if key.is_empty() {
            format!("t.name {dir}")
        } else {
            format!("{key} {dir}, t.name {dir}")
        };
        let (limit, offset) = if q.order == TagOrder::Size {
            (-1, 0)
        } else {
            (
                i64::from(q.limit),
                i64::try_from(q.offset).unwrap_or(i64::MAX),
            )
        };
        let sql = format!(
            "{SELECT_TAG}
              WHERE t.repository_id = ? AND (? IS NULL OR instr(t.name, ?) > 0) AND {}
              ORDER BY {order} LIMIT ? OFFSET ?",
            TagKind::condition(q.kind)
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(repository_id)
            .bind(q.name_contains)
            .bind(q.name_contains)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.read)
            .await?;
        let mut tags = rows.iter().map(tag_detail).collect::<Result<Vec<_>>>()?;
        self.fill_total_sizes(&mut tags).await?;
        if q.order == TagOrder::Size {
            // Rows come in name order; a stable sort keeps it among equals.
            if q.descending {
                tags.reverse();
                tags.sort_by_key(|t| std::cmp::Reverse(t.total_size));
            } else {
                tags.sort_by_key(|t| t.total_size);
            }
            let start = usize::try_from(q.offset).unwrap_or(usize::MAX);
            tags = tags
                .into_iter()
                .skip(start)
                .take(q.limit as usize)
                .collect();
        }
        Ok(tags)
    }

    /// One tag with its details, or `None`.
    pub async fn tag_detail(&self, repository_id: i64, name: &str) -> Result<Option<TagDetail>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{SELECT_TAG} WHERE t.repository_id = ? AND t.name = ?"
        )))
        .bind(repository_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut tags = vec![tag_detail(&row)?];
        self.fill_total_sizes(&mut tags).await?;
        Ok(tags.pop())
    }

    async fn fill_total_sizes(&self, tags: &mut [TagDetail]) -> Result<()> {
        let ids: Vec<i64> = tags
            .iter()
            .map(|t| t.manifest_id)
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let sizes = self.manifest_total_sizes(&ids).await?;
        for t in tags {
            t.total_size = sizes.get(&t.manifest_id).copied().unwrap_or(0);
        }
        Ok(())
    }

    /// Total size of each manifest (see the module documentation), in one
    /// query per 500 manifests.
    pub async fn manifest_total_sizes(&self, ids: &[i64]) -> Result<HashMap<i64, u64>> {
        let mut sizes = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "WITH RECURSIVE tree(root, id) AS (
                     SELECT id, id FROM manifests WHERE id IN ({})
                     UNION
                     SELECT tree.root, r.child_id FROM manifest_references r
                       JOIN tree ON r.parent_id = tree.id
                 ),
                 parts(root, bytes) AS (
                     SELECT tree.root, m.size FROM tree JOIN manifests m ON m.id = tree.id
                     UNION ALL
                     SELECT used.root, b.size
                       FROM (SELECT DISTINCT tree.root, mb.digest FROM tree
                               JOIN manifest_blobs mb ON mb.manifest_id = tree.id) used
                       JOIN blobs b ON b.digest = used.digest
                 )
                 SELECT root, SUM(bytes) FROM parts GROUP BY root",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query_as::<_, (i64, i64)>(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id);
            }
            for (id, bytes) in query.fetch_all(&self.read).await? {
                sizes.insert(id, bytes as u64);
            }
        }
        Ok(sizes)
    }

    /// Every tag of a repository with its manifest, in name order.
    pub async fn policy_tags(&self, repository_id: i64) -> Result<Vec<PolicyTag>> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT t.name, m.digest, t.manifest_id, t.updated_at
               FROM tags t JOIN manifests m ON m.id = t.manifest_id
              WHERE t.repository_id = ? ORDER BY t.name",
        )
        .bind(repository_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, digest, manifest_id, updated_at)| PolicyTag {
                name,
                digest,
                manifest_id,
                updated_at,
            })
            .collect())
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
                     SELECT id FROM manifests WHERE repository_id = ? AND digest IN ({})
                     UNION
                     SELECT r.parent_id FROM manifest_references r JOIN up ON r.child_id = up.id
                 )
                 SELECT m.digest FROM manifests m JOIN up ON m.id = up.id",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql)).bind(repository_id);
            for digest in chunk {
                query = query.bind(digest);
            }
            in_use.extend(query.fetch_all(&self.read).await?);
        }
        Ok(in_use)
    }

    /// Deletes the planned tags of every repository in one write
    /// transaction, re-checking each tag there: a tag that vanished, moved or
    /// was re-pushed since it was planned, or that `check` refuses, is not
    /// deleted but reported in `failed`. After each repository's deletions,
    /// measures the bytes they made reclaimable (so the figures add up across
    /// repositories, each byte counted where it died). Commits when `commit`
    /// is set, otherwise rolls everything back: a dry run reports exactly
    /// what a real run would have done at this moment.
    pub async fn delete_tags_measured(
        &self,
        plans: &[RepositoryDeletions<'_>],
        commit: bool,
    ) -> Result<Vec<DeletionOutcome>> {
        let mut tx = self.write.begin().await?;
        let mut outcomes = Vec::with_capacity(plans.len());
        for plan in plans {
            let mut outcome = DeletionOutcome::default();
            let mut roots = Vec::new();
            for tag in &plan.tags {
                let now: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT manifest_id, updated_at FROM tags WHERE repository_id = ? AND name = ?",
                )
                .bind(plan.repository_id)
                .bind(&tag.name)
                .fetch_optional(&mut *tx)
                .await?;
                let refusal = match now {
                    None => Some("the tag no longer exists".to_string()),
                    Some(state) if state != (tag.manifest_id, tag.updated_at) => {
                        Some("the tag was pushed again since it was chosen".to_string())
                    }
                    Some(_) => (plan.check)(&tag.name, TagOp::Delete).err(),
                };
                if let Some(why) = refusal {
                    outcome.failed.push((tag.name.clone(), why));
                    continue;
                }
                sqlx::query("DELETE FROM tags WHERE repository_id = ? AND name = ?")
                    .bind(plan.repository_id)
                    .bind(&tag.name)
                    .execute(&mut *tx)
                    .await?;
                outcome.deleted.push(tag.name.clone());
                roots.push(tag.manifest_id);
            }
            outcome.bytes_reclaimable = reclaimable(&mut tx, &roots).await?;
            outcomes.push(outcome);
        }
        if commit {
            tx.commit().await?;
        } else {
            tx.rollback().await?;
        }
        Ok(outcomes)
    }
}

/// Bytes made reclaimable by deleting tags that pointed at `roots`: the
/// manifests reachable from them (index entries, referrers) that are no
/// longer live, and the blobs those reference that no live manifest does.
async fn reclaimable(tx: &mut Transaction<'_, Sqlite>, roots: &[i64]) -> Result<u64> {
    let mut live = Liveness::default();
    let mut bytes: u64 = 0;
    let mut stack: Vec<i64> = roots.to_vec();
    let mut seen: HashSet<i64> = roots.iter().copied().collect();
    let mut blobs: HashSet<String> = HashSet::new();
    while let Some(id) = stack.pop() {
        // What a live manifest reaches is live too.
        if live.is_live(tx, id).await? {
            continue;
        }
        let size: i64 = sqlx::query_scalar("SELECT size FROM manifests WHERE id = ?")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
        bytes += size as u64;
        blobs.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT digest FROM manifest_blobs WHERE manifest_id = ?",
            )
            .bind(id)
            .fetch_all(&mut **tx)
            .await?,
        );
        let below: Vec<i64> = sqlx::query_scalar(
            "SELECT child_id FROM manifest_references WHERE parent_id = ?
             UNION
             SELECT r.id FROM manifests m
               JOIN manifests r ON r.repository_id = m.repository_id AND r.subject_digest = m.digest
              WHERE m.id = ?",
        )
        .bind(id)
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
        for b in below {
            if seen.insert(b) {
                stack.push(b);
            }
        }
    }
    for digest in blobs {
        // Most shared blobs (base layers) are used by a tagged manifest.
        let tagged_user: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM manifest_blobs mb JOIN tags t ON t.manifest_id = mb.manifest_id
              WHERE mb.digest = ? LIMIT 1",
        )
        .bind(&digest)
        .fetch_optional(&mut **tx)
        .await?;
        if tagged_user.is_some() {
            continue;
        }
        let users: Vec<i64> =
            sqlx::query_scalar("SELECT manifest_id FROM manifest_blobs WHERE digest = ?")
                .bind(&digest)
                .fetch_all(&mut **tx)
                .await?;
        let mut used = false;
        for user in users {
            if live.is_live(tx, user).await? {
                used = true;
                break;
            }
        }
        if !used {
            let size: i64 = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = ?")
                .bind(&digest)
                .fetch_one(&mut **tx)
                .await?;
            bytes += size as u64;
        }
    }
    Ok(bytes)
}

/// Which manifests are live (reachable from a tag through index entries and
/// `subject` links), asked one at a time and remembered.
#[derive(Default)]
struct Liveness {
    known: HashMap<i64, bool>,
}

impl Liveness {
    /// Searches upwards from `id` (to the indexes listing it and the manifest
    /// it refers to) for a tagged manifest.
    async fn is_live(&mut self, tx: &mut Transaction<'_, Sqlite>, id: i64) -> Result<bool> {
        if let Some(&known) = self.known.get(&id) {
            return Ok(known);
        }
        let mut stack = vec![id];
        let mut seen = HashSet::from([id]);
        let mut live = false;
        while let Some(x) = stack.pop() {
            match self.known.get(&x) {
                Some(true) => {
                    live = true;
                    break;
                }
                Some(false) => continue,
                None => {}
            }
            let tagged: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM tags WHERE manifest_id = ? LIMIT 1")
                    .bind(x)
                    .fetch_optional(&mut **tx)
                    .await?;
            if tagged.is_some() {
                self.known.insert(x, true);
                live = true;
                break;
            }
            let above: Vec<i64> = sqlx::query_scalar(
                "SELECT parent_id FROM manifest_references WHERE child_id = ?
                 UNION
                 SELECT s.id FROM manifests m
                   JOIN manifests s ON s.repository_id = m.repository_id AND s.digest = m.subject_digest
                  WHERE m.id = ?",
            )
            .bind(x)
            .bind(x)
            .fetch_all(&mut **tx)
            .await?;
            for a in above {
                if seen.insert(a) {
                    stack.push(a);
                }
            }
        }
        if live {
            self.known.insert(id, true);
        } else {
            // Every ancestor of every node seen was seen: none is tagged.
            for x in seen {
                self.known.insert(x, false);
            }
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::any_tag_write;
    use crate::oci::Digest;
    use crate::oci::manifest::{OCI_INDEX, OCI_MANIFEST, parse};
    use serde_json::json;

    async fn db() -> (Metadata, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let meta = Metadata::open_sqlite(&dir.path().join("t.db"))
            .await
            .unwrap();
        (meta, dir)
    }

    fn digest(name: &str) -> Digest {
        Digest::sha256_of(name.as_bytes())
    }

    /// Stores an image manifest over blobs `(name, size)` (the first is the
    /// config), maybe referring to `subject`; returns its digest and size.
    async fn image(
        meta: &Metadata,
        repo: &str,
        tag: Option<&str>,
        blobs: &[(&str, u64)],
        subject: Option<&(Digest, u64)>,
    ) -> (Digest, u64) {
        for (name, size) in blobs {
            meta.link_blob(repo, &digest(name), *size).await.unwrap();
        }
        let d = |(name, size): &(&str, u64)| json!({"mediaType": "application/octet-stream", "digest": digest(name).to_string(), "size": size});
        let mut m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": d(&blobs[0]), "layers": blobs[1..].iter().map(d).collect::<Vec<_>>()});
        if let Some((s, size)) = subject {
            m["subject"] =
                json!({"mediaType": OCI_MANIFEST, "digest": s.to_string(), "size": size});
        }
        store(meta, repo, tag, OCI_MANIFEST, &m).await
    }

    async fn index(
        meta: &Metadata,
        repo: &str,
        tag: Option<&str>,
        children: &[&(Digest, u64)],
    ) -> (Digest, u64) {
        let m = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children.iter()
            .map(|(d, s)| json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": s}))
            .collect::<Vec<_>>()});
        store(meta, repo, tag, OCI_INDEX, &m).await
    }

    async fn store(
        meta: &Metadata,
        repo: &str,
        tag: Option<&str>,
        media_type: &str,
        m: &serde_json::Value,
    ) -> (Digest, u64) {
        let payload = serde_json::to_vec(m).unwrap();
        let d = Digest::sha256_of(&payload);
        let parsed = parse(Some(media_type), &payload).unwrap();
        meta.put_manifest(repo, &d, &parsed, &payload, tag, &any_tag_write)
            .await
            .unwrap();
        (d, payload.len() as u64)
    }

    async fn repo_id(meta: &Metadata, repo: &str) -> i64 {
        meta.tags_version(repo)
            .await
            .unwrap()
            .unwrap()
            .repository_id
    }

    /// A plan deleting `tags` of `repo` as they are now.
    async fn plan(meta: &Metadata, repo: &str, tags: &[&str]) -> (i64, Vec<PlannedDeletion>) {
        let id = repo_id(meta, repo).await;
        let planned = meta
            .policy_tags(id)
            .await
            .unwrap()
            .into_iter()
            .filter(|t| tags.contains(&t.name.as_str()))
            .map(|t| PlannedDeletion {
                name: t.name,
                manifest_id: t.manifest_id,
                updated_at: t.updated_at,
            })
            .collect();
        (id, planned)
    }

    #[tokio::test]
    async fn stale_or_refused_deletions_fail_and_dry_runs_roll_back() {
        let (meta, _dir) = db().await;
        for tag in ["a", "b", "c"] {
            image(&meta, "r", Some(tag), &[("cfg", 1), ("x", 100)], None).await;
        }
        let (id, mut tags) = plan(&meta, "r", &["a", "b", "c"]).await;
        tags[1].updated_at -= 1; // b changed since it was chosen
        tags.push(PlannedDeletion {
            name: "gone".into(),
            manifest_id: tags[0].manifest_id,
            updated_at: 0,
        });
        let refuse_c = |t: &str, op: TagOp| {
            assert_eq!(op, TagOp::Delete);
            if t == "c" {
                Err("c is kept".to_string())
            } else {
                Ok(())
            }
        };
        let plans = [RepositoryDeletions {
            repository_id: id,
            tags,
            check: &refuse_c,
        }];
        for commit in [false, true] {
            let outcome = meta.delete_tags_measured(&plans, commit).await.unwrap();
            assert_eq!(outcome.len(), 1);
            assert_eq!(outcome[0].deleted, ["a"]);
            let failed: Vec<&str> = outcome[0].failed.iter().map(|(t, _)| t.as_str()).collect();
            assert_eq!(failed, ["b", "c", "gone"]);
            assert!(outcome[0].failed[0].1.contains("pushed again"));
            assert_eq!(outcome[0].failed[1].1, "c is kept");
            assert!(outcome[0].failed[2].1.contains("no longer exists"));
            // The manifest is still tagged (b, c): nothing to reclaim.
            assert_eq!(outcome[0].bytes_reclaimable, 0);
            let left: Vec<String> = meta
                .policy_tags(id)
                .await
                .unwrap()
                .into_iter()
                .map(|t| t.name)
                .collect();
            let want: &[&str] = if commit {
                &["b", "c"]
            } else {
                &["a", "b", "c"]
            };
            assert_eq!(left, want, "commit {commit}");
        }
    }

    #[tokio::test]
    async fn reclaimable_bytes_follow_indexes_referrers_and_shared_blobs() {
        let (meta, _dir) = db().await;
        // r: one (img1) and idx (index of img1 and the untagged img3), a
        // signature of img1, keep (img2) sharing a layer with img1.
        let img1 = image(
            &meta,
            "r",
            Some("one"),
            &[("c1", 1), ("shared", 1000), ("own1", 10)],
            None,
        )
        .await;
        image(
            &meta,
            "r",
            Some("keep"),
            &[("c2", 2), ("shared", 1000), ("own2", 20)],
            None,
        )
        .await;
        let img3 = image(&meta, "r", None, &[("c3", 3), ("own3", 30)], None).await;
        let sig = image(
            &meta,
            "r",
            None,
            &[("csig", 4), ("sigblob", 5)],
            Some(&img1),
        )
        .await;
        let idx = index(&meta, "r", Some("idx"), &[&img1, &img3]).await;
        // other: x (img4) also uses own1.
        let img4 = image(&meta, "other", Some("x"), &[("c4", 6), ("own1", 10)], None).await;
        let r = repo_id(&meta, "r").await;

        // Deleting `one` alone: img1 lives on in idx.
        let (_, tags) = plan(&meta, "r", &["one"]).await;
        let plans = [RepositoryDeletions {
            repository_id: r,
            tags,
            check: &any_tag_write,
        }];
        let out = meta.delete_tags_measured(&plans, false).await.unwrap();
        assert_eq!((out[0].deleted.len(), out[0].bytes_reclaimable), (1, 0));

        // `one` and `idx`: img1, img3, idx and the signature die with what
        // only they use; own1 lives on in other, shared in keep.
        let (_, tags) = plan(&meta, "r", &["one", "idx"]).await;
        let plans = [RepositoryDeletions {
            repository_id: r,
            tags,
            check: &any_tag_write,
        }];
        let out = meta.delete_tags_measured(&plans, false).await.unwrap();
        let manifests = img1.1 + img3.1 + idx.1 + sig.1;
        assert_eq!(out[0].bytes_reclaimable, manifests + 1 + 3 + 30 + 4 + 5);

        // other first, then r, in one transaction: own1 dies with r's step,
        // and each byte is counted once, where it died.
        let (o, other_tags) = plan(&meta, "other", &["x"]).await;
        let (_, r_tags) = plan(&meta, "r", &["one", "idx"]).await;
        let plans = [
            RepositoryDeletions {
                repository_id: o,
                tags: other_tags,
                check: &any_tag_write,
            },
            RepositoryDeletions {
                repository_id: r,
                tags: r_tags,
                check: &any_tag_write,
            },
        ];
        let out = meta.delete_tags_measured(&plans, true).await.unwrap();
        assert_eq!(out[0].bytes_reclaimable, img4.1 + 6);
        assert_eq!(
            out[1].bytes_reclaimable,
            manifests + 1 + 3 + 30 + 4 + 5 + 10
        );
        let left: Vec<String> = meta
            .policy_tags(r)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(left, ["keep"]);
    }

    #[tokio::test]
    async fn pages_sizes_and_usage() {
        let (meta, _dir) = db().await;
        let img1 = image(&meta, "r", Some("b"), &[("c1", 1), ("l", 100)], None).await;
        let img2 = image(
            &meta,
            "r",
            Some("a"),
            &[("c2", 2), ("l", 100), ("m", 50)],
            None,
        )
        .await;
        let idx = index(&meta, "r", Some("ab"), &[&img1, &img2]).await;
        let r = repo_id(&meta, "r").await;
        assert_eq!(
            meta.repository_usage(r).await.unwrap(),
            (3, 1 + 2 + 100 + 50)
        );
        let page = |name, order, descending, limit, offset| TagQuery {
            name_contains: name,
            kind: None,
            order,
            descending,
            limit,
            offset,
        };
        let names = |tags: Vec<TagDetail>| tags.into_iter().map(|t| t.name).collect::<Vec<_>>();
        let all = meta
            .tag_page(r, &page(None, TagOrder::Name, false, 10, 0))
            .await
            .unwrap();
        assert_eq!(names(all.clone()), ["a", "ab", "b"]);
        assert_eq!(all[0].total_size, img2.1 + 2 + 100 + 50);
        assert_eq!(
            all[1].total_size,
            idx.1 + img1.1 + img2.1 + 1 + 2 + 100 + 50
        );
        assert_eq!(all[2].total_size, img1.1 + 1 + 100);
        assert_eq!(all[1].config_digest, None);
        assert_eq!(all[2].config_digest, Some(digest("c1").to_string()));
        let got = meta
            .tag_page(r, &page(Some("a"), TagOrder::Name, true, 1, 1))
            .await
            .unwrap();
        assert_eq!(names(got), ["a"]);
        assert_eq!(meta.count_tags(r, Some("a"), None).await.unwrap(), 2);
        assert_eq!(meta.count_tags(r, Some("A"), None).await.unwrap(), 0);
        // By size, biggest first, paged after sorting.
        let mut by_size = all.clone();
        by_size.sort_by(|x, y| y.total_size.cmp(&x.total_size).then(y.name.cmp(&x.name)));
        let got = meta
            .tag_page(r, &page(None, TagOrder::Size, true, 2, 0))
            .await
            .unwrap();
        assert_eq!(names(got), names(by_size[..2].to_vec()));
        let got = meta
            .tag_page(r, &page(None, TagOrder::Size, false, 1, 0))
            .await
            .unwrap();
        assert_eq!(names(got), names(by_size[2..].to_vec()));
        // Kinds: the index; the manifests' configs are application/octet-stream,
        // so they are artifacts, not images.
        for (kind, want) in [
            (TagKind::Index, vec!["ab"]),
            (TagKind::Image, vec![]),
            (TagKind::Artifact, vec!["a", "b"]),
        ] {
            let q = TagQuery {
                kind: Some(kind),
                ..page(None, TagOrder::Name, false, 10, 0)
            };
            assert_eq!(names(meta.tag_page(r, &q).await.unwrap()), want, "{kind:?}");
            assert_eq!(
                meta.count_tags(r, None, Some(kind)).await.unwrap(),
                want.len() as u64
            );
        }
        let summaries = meta.repository_summaries("r").await.unwrap();
        assert_eq!(summaries.len(), 1);
        assert_eq!(summaries[0].tags, 3);
        assert_eq!(
            (summaries[0].tags, summaries[0].size),
            meta.repository_usage(r).await.unwrap()
        );
        assert!(summaries[0].last_update.is_some());
        let children = meta.child_manifests(all[1].manifest_id).await.unwrap();
        let mut child_digests: Vec<String> = children.into_iter().map(|(_, d)| d).collect();
        child_digests.sort();
        let mut want = vec![img1.0.to_string(), img2.0.to_string()];
        want.sort();
        assert_eq!(child_digests, want);
        assert_eq!(
            meta.tag_detail(r, "ab")
                .await
                .unwrap()
                .map(|t| t.total_size),
            Some(all[1].total_size)
        );
        assert_eq!(meta.tag_detail(r, "zz").await.unwrap(), None);
        let in_use = meta
            .manifests_in_use(r, &[img1.0.to_string()])
            .await
            .unwrap();
        assert_eq!(
            in_use,
            HashSet::from([img1.0.to_string(), idx.0.to_string()])
        );
        let under: Vec<String> = meta
            .repositories_under("r")
            .await
            .unwrap()
            .into_iter()
            .map(|x| x.name)
            .collect();
        assert_eq!(under, ["r"]);
    }
}
