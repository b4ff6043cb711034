//! Repositories: existence, the catalog, listings by path, and deleting a
//! repository with everything it holds (blobs stay for garbage collection).

use super::db::{self, Tx};
use super::{Metadata, MetadataError, Result, TagCheck, TagOp, now_ms};

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

impl Metadata {
    pub async fn repository_exists(&self, repo: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM repositories WHERE name = $1")
            .bind(repo)
            .fetch_optional(&self.read)
            .await?
            .is_some())
    }

    pub(super) async fn ensure_repository(tx: &mut Tx<'_>, repo: &str) -> Result<i64> {
        // Usually there: one statement (a round trip on PostgreSQL).
        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(id) = id {
            return Ok(id);
        }
        sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(repo)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
                .bind(repo)
                .fetch_one(&mut **tx)
                .await?,
        )
    }

    /// Repository names in lexical order after `last`, at most `limit`.
    pub async fn repositories(
        &self,
        limit: Option<u32>,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        let joined: Option<String> = sqlx::query_scalar(self.dialect.repository_names_page)
            .bind(last.unwrap_or(""))
            .bind(limit.map(i64::from).unwrap_or(db::NO_LIMIT))
            .fetch_one(&self.read)
            .await?;
        Ok(db::split_names(joined))
    }

    /// Repositories named `path` or below `path/`, in name order. The range
    /// `(path/, path0)` holds exactly the names starting with `path/` (`0`
    /// follows `/`), uses the name index and needs no LIKE escaping
    /// (PostgreSQL: compare with `COLLATE "C"`).
    pub async fn repositories_under(&self, path: &str) -> Result<Vec<RepositoryRow>> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT id, name, created_at FROM repositories
              WHERE name = $1 OR (name > $2 AND name < $3) ORDER BY name",
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
            sqlx::query_as("SELECT id, name, created_at FROM repositories WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|(id, name, created_at)| RepositoryRow {
            id,
            name,
            created_at,
        }))
    }

    /// Every repository's name (for grouping them when no projects are declared).
    pub async fn repository_names(&self) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT name FROM repositories ORDER BY name")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Deletes a repository with its tags, manifests, blob links and uploads;
    /// `false` when absent. Blobs stay for garbage collection. `check` is
    /// asked about every tag first.
    pub async fn delete_repository(&self, repo: &str, check: TagCheck<'_>) -> Result<bool> {
        Ok(self
            .delete_repository_and_uploads(repo, check)
            .await?
            .is_some())
    }

    /// [`Self::delete_repository`], returning the ids of the upload sessions
    /// it dropped (their files are the caller's to remove), or `None` when
    /// the repository was absent.
    pub async fn delete_repository_and_uploads(
        &self,
        repo: &str,
        check: TagCheck<'_>,
    ) -> Result<Option<Vec<String>>> {
        let mut tx = self.begin_write().await?;
        let tags: Vec<String> = sqlx::query_scalar(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = $1",
        )
        .bind(repo)
        .fetch_all(&mut *tx)
        .await?;
        for tag in &tags {
            check(tag, TagOp::Delete).map_err(MetadataError::TagRefused)?;
        }
        let uploads: Vec<String> = sqlx::query_scalar(
            "SELECT u.id FROM uploads u JOIN repositories r ON r.id = u.repository_id WHERE r.name = $1",
        )
        .bind(repo)
        .fetch_all(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM repositories WHERE name = $1")
            .bind(repo)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((done.rows_affected() > 0).then_some(uploads))
    }
}
