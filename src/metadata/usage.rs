//! Usage: the sizes of repositories and of manifests with everything they
//! list and reference.
//!
//! - a repository's `size` is the bytes of the distinct blobs its manifests
//!   reference;
//! - a manifest's `total_size` is its payload and that of every manifest it
//!   lists (an index's children, at any depth) plus the distinct blobs all of
//!   them reference. It is stored with the manifest ([`TOTAL_SIZE`]; it
//!   never changes: blobs and children are fixed when a manifest is stored,
//!   and a listed manifest is not deleted before its lister), and a tag keeps
//!   a copy of its manifest's, so tags sort by size through an index.

use std::collections::HashMap;

use sqlx::AssertSqlSafe;

use super::db;
use super::repositories::{RepositoryRow, RepositorySummary};
use super::{Metadata, Result};

impl Metadata {
    /// A repository's tag count and size (the distinct blobs its manifests
    /// reference).
    pub async fn repository_usage(&self, id: i64) -> Result<(u64, u64)> {
        let (tags, size): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM tags WHERE repository_id = $1),
                    (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blobs b
                      WHERE b.digest IN (SELECT mb.digest FROM manifest_blobs mb
                                           JOIN manifests m ON m.id = mb.manifest_id
                                          WHERE m.repository_id = $2))",
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
                    (SELECT CAST(COALESCE(SUM(b.size), 0) AS BIGINT) FROM blobs b
                      WHERE b.digest IN (SELECT mb.digest FROM manifest_blobs mb
                                           JOIN manifests m ON m.id = mb.manifest_id
                                          WHERE m.repository_id = r.id)),
                    (SELECT max(t.updated_at) FROM tags t WHERE t.repository_id = r.id)
               FROM repositories r
              WHERE r.name = $1 OR (r.name > $2 AND r.name < $3) ORDER BY r.name",
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

    /// The stored total size of each manifest (see the module documentation).
    pub async fn manifest_total_sizes(&self, ids: &[i64]) -> Result<HashMap<i64, u64>> {
        let mut sizes = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let sql = format!(
                "SELECT id, total_size FROM manifests WHERE id IN ({})",
                db::placeholders(1, chunk.len())
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
}

/// The total size of manifest `$1`, from its payload, the manifests it lists
/// and their blobs: computed once, when the manifest is stored (on
/// PostgreSQL by `berth_put_manifest`, migration 0010, which says the same in
/// PL/pgSQL).
pub(super) const TOTAL_SIZE: &str = "WITH RECURSIVE tree(id) AS (
        SELECT id FROM manifests WHERE id = $1
        UNION
        SELECT r.child_id FROM manifest_references r JOIN tree ON r.parent_id = tree.id
    )
    SELECT CAST((SELECT SUM(m.size) FROM tree JOIN manifests m ON m.id = tree.id)
                + COALESCE((SELECT SUM(b.size) FROM blobs b
                             WHERE b.digest IN (SELECT mb.digest FROM tree
                                                  JOIN manifest_blobs mb ON mb.manifest_id = tree.id)), 0)
                AS BIGINT)";
