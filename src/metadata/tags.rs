//! Tags: the rules hook a tag write passes, the tag list of the
//! distribution API, pages of tags with their details for the management
//! API, the tags a cleanup policy evaluates, and deleting tags (one, or a
//! cleanup run's plan measured for the bytes it leaves to garbage
//! collection).

use sqlx::{AssertSqlSafe, Row};

use super::db;
use super::live;
use super::{Metadata, MetadataError, Result};

/// What a write does to a tag, for protected and immutable tag rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOp {
    /// The tag does not exist yet.
    Create,
    /// The tag exists and would point at another manifest.
    Move,
    Delete,
}

/// Decides whether a tag write may happen (`Err`: why not), from the tag and
/// the change alone (a pure function: it may be asked about a change that
/// then does not happen). Its answer is applied inside the writing
/// transaction, to the tags as they are there, so no concurrent write can
/// slip between the decision and the write. (A manifest PUT on PostgreSQL
/// asks it about both a create and a move beforehand, and the database
/// applies the answer that fits: see `Dialect::put_manifests`.)
pub type TagCheck<'a> = &'a (dyn Fn(&str, TagOp) -> std::result::Result<(), String> + Send + Sync);

/// A [`TagCheck`] that allows everything (no tag rules).
pub fn any_tag_write(_: &str, _: TagOp) -> std::result::Result<(), String> {
    Ok(())
}

/// Identifies one state of a repository's tag set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagsVersion {
    pub repository_id: i64,
    pub version: i64,
}

/// How a page of tags is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOrder {
    Name,
    /// When the tag last got its manifest.
    PublishedAt,
    /// When the tag's manifest was pushed.
    CreatedAt,
    /// By total size (see `usage`): stored with each tag (a copy of its
    /// manifest's), read in the order of an index like the others.
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

const SELECT_TAG: &str = "SELECT t.name, t.manifest_id, t.updated_at, t.total_size, m.digest,
        m.media_type, m.config_digest, m.created_at
   FROM tags t JOIN manifests m ON m.id = t.manifest_id";

fn tag_detail(row: &db::DbRow) -> Result<TagDetail> {
    Ok(TagDetail {
        name: row.try_get("name")?,
        manifest_id: row.try_get("manifest_id")?,
        digest: row.try_get("digest")?,
        media_type: row.try_get("media_type")?,
        config_digest: row.try_get("config_digest")?,
        created_at: row.try_get("created_at")?,
        published_at: row.try_get("updated_at")?,
        total_size: row.try_get::<i64, _>("total_size")? as u64,
    })
}

impl Metadata {
    /// Deletes a tag (not the manifest it points at); `false` when absent.
    pub async fn delete_tag(&self, repo: &str, tag: &str, check: TagCheck<'_>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM tags t JOIN repositories r ON r.id = t.repository_id
              WHERE r.name = $1 AND t.name = $2",
        )
        .bind(repo)
        .bind(tag)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Ok(false);
        }
        check(tag, TagOp::Delete).map_err(MetadataError::TagRefused)?;
        sqlx::query(
            "DELETE FROM tags
              WHERE name = $1 AND repository_id = (SELECT id FROM repositories WHERE name = $2)",
        )
        .bind(tag)
        .bind(repo)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The repository's id and tag version (see the `tags_version` migration),
    /// or `None` when it does not exist.
    pub async fn tags_version(&self, repo: &str) -> Result<Option<TagsVersion>> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT id, tags_version FROM repositories WHERE name = $1")
                .bind(repo)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|(repository_id, version)| TagsVersion {
            repository_id,
            version,
        }))
    }

    /// Tag names of a repository in lexical order after `last`, at most
    /// `limit` (all when `None`).
    pub async fn tags(
        &self,
        repository_id: i64,
        limit: Option<u32>,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        let joined: Option<String> = sqlx::query_scalar(self.dialect.tag_names_page)
            .bind(repository_id)
            .bind(last.unwrap_or(""))
            .bind(limit.map(i64::from).unwrap_or(db::NO_LIMIT))
            .fetch_one(&self.read)
            .await?;
        Ok(db::split_names(joined))
    }

    /// How many tags of the repository contain `name_contains` (and are of
    /// `kind`).
    pub async fn count_tags(
        &self,
        repository_id: i64,
        name_contains: Option<&str>,
        kind: Option<TagKind>,
    ) -> Result<u64> {
        let contains = self.dialect.tag_name_contains;
        let sql = if kind.is_none() {
            format!("SELECT count(*) FROM tags t WHERE t.repository_id = $1 AND {contains}")
        } else {
            format!(
                "SELECT count(*) FROM tags t JOIN manifests m ON m.id = t.manifest_id
                  WHERE t.repository_id = $1 AND {contains} AND {}",
                TagKind::condition(kind)
            )
        };
        let n: i64 = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(repository_id)
            .bind(name_contains)
            .fetch_one(&self.read)
            .await?;
        Ok(n as u64)
    }

    /// One page of a repository's tags, sorted, filtered and cut by the
    /// database (every order follows an index, so a page costs about the
    /// same at any offset of a repository of any size). Ties are broken by
    /// name, in the same direction.
    pub async fn tag_page(&self, repository_id: i64, q: &TagQuery<'_>) -> Result<Vec<TagDetail>> {
        let rows = sqlx::query(AssertSqlSafe(self.tag_page_sql(q)))
            .bind(repository_id)
            .bind(q.name_contains)
            .bind(i64::from(q.limit))
            .bind(i64::try_from(q.offset).unwrap_or(i64::MAX))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(tag_detail).collect()
    }

    /// The statement of [`Metadata::tag_page`]; binds: the repository's id,
    /// the name filter, the limit and the offset.
    fn tag_page_sql(&self, q: &TagQuery<'_>) -> String {
        let dir = if q.descending { "DESC" } else { "ASC" };
        let key = match q.order {
            TagOrder::Name => "",
            TagOrder::PublishedAt => "t.updated_at",
            TagOrder::CreatedAt => "m.created_at",
            TagOrder::Size => "t.total_size",
        };
        let order = if key.is_empty() {
            format!("t.name {dir}")
        } else {
            format!("{key} {dir}, t.name {dir}")
        };
        format!(
            "{SELECT_TAG}
              WHERE t.repository_id = $1 AND {} AND {}
              ORDER BY {order} LIMIT $3 OFFSET $4",
            self.dialect.tag_name_contains,
            TagKind::condition(q.kind)
        )
    }

    /// One tag with its details, or `None`.
    pub async fn tag_detail(&self, repository_id: i64, name: &str) -> Result<Option<TagDetail>> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "{SELECT_TAG} WHERE t.repository_id = $1 AND t.name = $2"
        )))
        .bind(repository_id)
        .bind(name)
        .fetch_optional(&self.read)
        .await?;
        row.as_ref().map(tag_detail).transpose()
    }

    /// Every tag of a repository with its manifest, in name order.
    pub async fn policy_tags(&self, repository_id: i64) -> Result<Vec<PolicyTag>> {
        let rows: Vec<(String, String, i64, i64)> = sqlx::query_as(
            "SELECT t.name, m.digest, t.manifest_id, t.updated_at
               FROM tags t JOIN manifests m ON m.id = t.manifest_id
              WHERE t.repository_id = $1 ORDER BY t.name",
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
        let mut tx = self.begin_write().await?;
        let mut outcomes = Vec::with_capacity(plans.len());
        for plan in plans {
            let mut outcome = DeletionOutcome::default();
            let mut roots = Vec::new();
            for tag in &plan.tags {
                let now: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT manifest_id, updated_at FROM tags WHERE repository_id = $1 AND name = $2",
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
                sqlx::query("DELETE FROM tags WHERE repository_id = $1 AND name = $2")
                    .bind(plan.repository_id)
                    .bind(&tag.name)
                    .execute(&mut *tx)
                    .await?;
                outcome.deleted.push(tag.name.clone());
                roots.push(tag.manifest_id);
            }
            outcome.bytes_reclaimable = live::reclaimable(&mut tx, &roots).await?;
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

#[cfg(test)]
mod tests {
    use crate::metadata::Backend;
    use std::collections::HashSet;

    use super::*;
    use crate::metadata::any_tag_write;
    use crate::metadata::testing::{
        db_on, digest, image, index, on_both_backends, plan, point_tag, repo_id,
    };
    async fn stale_or_refused_deletions_fail_and_dry_runs_roll_back(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
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

    async fn pages_sizes_and_usage(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
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
        // A tag moved to another manifest takes that one's size; a tag put
        // on a manifest already stored, its stored size.
        point_tag(&meta, "r", &idx.0, "b").await;
        point_tag(&meta, "r", &img1.0, "new").await;
        let sizes: Vec<(String, u64)> = meta
            .tag_page(r, &page(None, TagOrder::Size, false, 10, 0))
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.total_size))
            .collect();
        let (s1, s2, s_idx) = (all[2].total_size, all[0].total_size, all[1].total_size);
        assert_eq!(
            sizes,
            [
                ("new".to_string(), s1),
                ("a".to_string(), s2),
                ("ab".to_string(), s_idx),
                ("b".to_string(), s_idx)
            ]
        );
        meta.delete_tag("r", "new", &any_tag_write).await.unwrap();
        point_tag(&meta, "r", &img1.0, "b").await;
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

    /// Migration 0010 gives the manifests and tags stored before it their
    /// total sizes, as they are computed for new ones. (The database is
    /// taken back to 0009 by hand: the columns and index dropped, the
    /// migration forgotten; opening it again runs 0010.)
    async fn sizes_stored_before_0010_are_filled_in(backend: Backend) {
        let (config, _dir) = crate::metadata::testing::config_on(backend).await;
        let meta = crate::metadata::open(&config).await.unwrap();
        let img1 = image(&meta, "r", Some("b"), &[("c1", 1), ("l", 100)], None).await;
        let img2 = image(&meta, "r", Some("a"), &[("c2", 2), ("l", 100)], None).await;
        index(&meta, "r", Some("ab"), &[&img1, &img2]).await;
        let r = repo_id(&meta, "r").await;
        let sizes = |meta: Metadata| async move {
            let tags = meta
                .tag_page(
                    r,
                    &TagQuery {
                        name_contains: None,
                        kind: None,
                        order: TagOrder::Size,
                        descending: true,
                        limit: 10,
                        offset: 0,
                    },
                )
                .await
                .unwrap();
            let ids: Vec<i64> = tags.iter().map(|t| t.manifest_id).collect();
            let stored = meta.manifest_total_sizes(&ids).await.unwrap();
            tags.into_iter()
                .map(|t| (t.name, t.total_size, stored[&t.manifest_id]))
                .collect::<Vec<_>>()
        };
        let before = sizes(meta.clone()).await;
        assert_eq!(before[0].0, "ab");
        assert!(
            before
                .iter()
                .all(|(_, tag, manifest)| tag == manifest && *tag > 0)
        );
        for statement in [
            "DROP INDEX tags_by_size",
            "ALTER TABLE tags DROP COLUMN total_size",
            "ALTER TABLE manifests DROP COLUMN total_size",
            "DELETE FROM _sqlx_migrations WHERE version = 10",
        ] {
            sqlx::query(statement).execute(&meta.write).await.unwrap();
        }
        meta.write.close().await;
        meta.read.close().await;
        let meta = crate::metadata::open(&config).await.unwrap();
        assert_eq!(sizes(meta).await, before, "{backend:?}");
    }

    /// Pages sorted by name, publication or size are read in the order of an
    /// index and cut there: no sort of every matching tag (SQLite's plan; the
    /// benchmark bench/tags.sh shows both backends at 1,000,000 tags).
    #[tokio::test]
    async fn pages_follow_an_index() {
        let (meta, _dir) = db_on(Backend::Sqlite).await;
        for order in [TagOrder::Name, TagOrder::PublishedAt, TagOrder::Size] {
            for descending in [false, true] {
                let q = TagQuery {
                    name_contains: None,
                    kind: None,
                    order,
                    descending,
                    limit: 10,
                    offset: 0,
                };
                let sql = format!("EXPLAIN QUERY PLAN {}", meta.tag_page_sql(&q));
                let plan: Vec<String> = sqlx::query(AssertSqlSafe(sql))
                    .bind(1_i64)
                    .bind(None::<&str>)
                    .bind(10_i64)
                    .bind(0_i64)
                    .fetch_all(&meta.read)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get::<String, _>("detail"))
                    .collect();
                assert!(
                    !plan.iter().any(|step| step.contains("TEMP B-TREE")),
                    "{order:?} descending {descending}: {plan:?}"
                );
            }
        }
    }

    on_both_backends! {
        stale_or_refused_deletions_fail_and_dry_runs_roll_back => super::stale_or_refused_deletions_fail_and_dry_runs_roll_back;
        pages_sizes_and_usage => super::pages_sizes_and_usage;
        sizes_stored_before_0010_are_filled_in => super::sizes_stored_before_0010_are_filled_in;
    }
}
