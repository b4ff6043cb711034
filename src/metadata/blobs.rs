//! Blobs and uploads: the global blob rows, each repository's links to
//! them, and upload sessions in progress.

use super::holders::{BLOB_HOLDERS, referenced_message};
use super::{Metadata, MetadataError, Result, now_ms};
use crate::oci::Digest;

impl Metadata {
    /// The size of `digest` if the repository may see it.
    pub async fn blob_in_repository(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repository_blobs rb
               JOIN repositories r ON r.id = rb.repository_id
               JOIN blobs b ON b.digest = rb.digest
              WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    /// Records a committed blob and makes it visible in `repo`.
    pub async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let repo_id = Self::ensure_repository(&mut tx, repo).await?;
        let now = now_ms();
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES ($1, $2, $3) ON CONFLICT (digest) DO NOTHING")
            .bind(digest.to_string())
            .bind(size as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES ($1, $2, $3)
             ON CONFLICT (repository_id, digest) DO NOTHING",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Removes a blob from a repository's view; `false` when it was not linked.
    /// Refused ([`MetadataError::Referenced`]) while a manifest of the
    /// repository references it, checked in the deleting transaction so no
    /// manifest PUT can slip in between (a PUT needs the link, and writes are
    /// serialised on the one writer connection).
    pub async fn unlink_blob(&self, repo: &str, digest: &Digest) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let repo_id: Option<i64> = sqlx::query_scalar(
            "SELECT r.id FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
              WHERE r.name = $1 AND rb.digest = $2",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(repo_id) = repo_id else {
            return Ok(false);
        };
        let holders = Self::holders(&mut tx, &BLOB_HOLDERS, digest, repo_id).await?;
        if let Some(holders) = holders {
            return Err(MetadataError::Referenced(referenced_message(
                &format!("blob {digest}"),
                "manifest",
                &holders,
            )));
        }
        sqlx::query("DELETE FROM repository_blobs WHERE repository_id = $1 AND digest = $2")
            .bind(repo_id)
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn create_upload(&self, repo: &str, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let repo_id = Self::ensure_repository(&mut tx, repo).await?;
        sqlx::query("INSERT INTO uploads (id, repository_id, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(repo_id)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether upload `id` exists and belongs to `repo`.
    pub async fn upload_in_repository(&self, repo: &str, id: &str) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 FROM uploads u JOIN repositories r ON r.id = u.repository_id
              WHERE u.id = $1 AND r.name = $2",
        )
        .bind(id)
        .bind(repo)
        .fetch_optional(&self.read)
        .await?
        .is_some())
    }

    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM uploads WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every blob row (digest, size), for fsck.
    pub async fn all_blobs(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT digest, size FROM blobs ORDER BY digest")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Every upload id, for fsck.
    pub async fn all_uploads(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM uploads")
            .fetch_all(&self.read)
            .await?)
    }
}
