//! Garbage collection's side of the database: the review queues the
//! triggers fill (migration 0003), reviewing one manifest or blob in the
//! deleting transaction, expired uploads, and the totals.

use std::time::Duration;

use sqlx::Row;

use super::live;
use super::{Metadata, Result};

/// What a blob review decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobVerdict {
    /// No review of it is due (another sweeper took it, or it was
    /// re-queued for later): nothing done.
    NotDue,
    /// Still referenced: kept, its review dropped.
    Kept,
    /// Its rows are deleted; the caller deletes the file, then
    /// [`Metadata::gc_forget_blob_review`].
    Deleted { size: u64 },
    /// Its rows were already gone (a sweep stopped between the commit and
    /// the file deletion): the caller deletes the file if present, then forgets.
    AlreadyGone,
}

/// Garbage collection's queues and totals as the database holds them
/// (`registry::api::GcStatus` is what the API answers with them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcState {
    pub pending_manifest_reviews: i64,
    pub pending_blob_reviews: i64,
    pub due_manifest_reviews: i64,
    pub due_blob_reviews: i64,
    pub review_delay_ms: i64,
    pub last_sweep_at_ms: Option<i64>,
    pub sweeps: i64,
    pub manifests_deleted: i64,
    pub blobs_deleted: i64,
    pub bytes_deleted: i64,
    pub uploads_expired: i64,
}

impl Metadata {
    /// Sets the delay between an event and the review it queues.
    pub async fn gc_set_review_delay(&self, delay: Duration) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE gc_settings SET review_delay_ms = $1 WHERE id = 1")
            .bind(delay.as_millis() as i64)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Manifest reviews due at `now`, oldest first.
    pub async fn gc_due_manifests(&self, now: i64, limit: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT manifest_id FROM gc_manifest_reviews WHERE review_after <= $1
              ORDER BY review_after LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Reviews one manifest: deletes it if it is still due, untagged and held
    /// by no manifest (not listed by an index, not a referrer of a manifest
    /// still there; see `live`), all checked in the deleting transaction.
    /// Returns the bytes freed (its payload).
    pub async fn gc_review_manifest(&self, id: i64, now: i64) -> Result<Option<u64>> {
        let mut tx = self.begin_write().await?;
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM gc_manifest_reviews WHERE manifest_id = $1 AND review_after <= $2",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if due.is_none() {
            return Ok(None); // re-queued for later, or already reviewed
        }
        let dangling: Option<i64> = sqlx::query_scalar(live::SIZE_IF_UNHELD)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(size) = dangling {
            // Cascades queue its blobs, its children and its referrers.
            sqlx::query("DELETE FROM manifests WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            // Counted in the deleting transaction: the totals stay exact
            // even when a sweep is killed.
            sqlx::query(
                "UPDATE gc_stats SET manifests_deleted = manifests_deleted + 1,
                        bytes_deleted = bytes_deleted + $1 WHERE id = 1",
            )
            .bind(size)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM gc_manifest_reviews WHERE manifest_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(dangling.map(|s| s as u64))
    }

    /// Blob reviews due at `now`, oldest first.
    pub async fn gc_due_blobs(&self, now: i64, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT digest FROM gc_blob_reviews WHERE review_after <= $1
              ORDER BY review_after LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Reviews one blob: if it is still due and no manifest references it,
    /// deletes its rows (links and the blob) in one transaction. The review
    /// stays until the caller has deleted the file, so a crash in between
    /// leaves work for the next sweep, never a row without a file.
    pub async fn gc_review_blob(&self, digest: &str, now: i64) -> Result<BlobVerdict> {
        let mut tx = self.begin_write().await?;
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM gc_blob_reviews WHERE digest = $1 AND review_after <= $2",
        )
        .bind(digest)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if due.is_none() {
            return Ok(BlobVerdict::NotDue);
        }
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
            .bind(digest)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(size) = size else {
            return Ok(BlobVerdict::AlreadyGone);
        };
        let referenced: Option<i64> = sqlx::query_scalar(live::BLOB_REFERENCED)
            .bind(digest)
            .fetch_optional(&mut *tx)
            .await?;
        if referenced.is_some() {
            sqlx::query("DELETE FROM gc_blob_reviews WHERE digest = $1")
                .bind(digest)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(BlobVerdict::Kept);
        }
        sqlx::query("DELETE FROM repository_blobs WHERE digest = $1")
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM blobs WHERE digest = $1")
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE gc_stats SET blobs_deleted = blobs_deleted + 1,
                    bytes_deleted = bytes_deleted + $1 WHERE id = 1",
        )
        .bind(size)
        .execute(&mut *tx)
        .await?;
        // The unlink trigger re-queued it: keep one review, due now, marked.
        sqlx::query(
            "INSERT INTO gc_blob_reviews (digest, review_after, event) VALUES ($1, $2, 'deleting')
             ON CONFLICT (digest) DO UPDATE
                SET review_after = excluded.review_after, event = excluded.event",
        )
        .bind(digest)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(BlobVerdict::Deleted { size: size as u64 })
    }

    /// Drops a blob review once its file is gone (if the blob still has no row).
    pub async fn gc_forget_blob_review(&self, digest: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "DELETE FROM gc_blob_reviews
              WHERE digest = $1 AND NOT EXISTS (SELECT 1 FROM blobs WHERE digest = $2)",
        )
        .bind(digest)
        .bind(digest)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Uploads started before `before` (abandoned).
    pub async fn gc_expired_uploads(&self, before: i64) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM uploads WHERE created_at < $1 LIMIT 1000")
                .bind(before)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Marks a sweep finished at `at`.
    pub async fn gc_finish_sweep(&self, at: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE gc_stats SET last_sweep_at = $1, sweeps = sweeps + 1 WHERE id = 1")
            .bind(at)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds expired upload sessions to the totals (manifests and blobs are
    /// counted in their deleting transactions).
    pub async fn gc_add_expired_uploads(&self, n: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("UPDATE gc_stats SET uploads_expired = uploads_expired + $1 WHERE id = 1")
            .bind(n)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn gc_status(&self, now: i64) -> Result<GcState> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM gc_manifest_reviews) AS pm,
                    (SELECT count(*) FROM gc_blob_reviews) AS pb,
                    (SELECT count(*) FROM gc_manifest_reviews WHERE review_after <= $1) AS dm,
                    (SELECT count(*) FROM gc_blob_reviews WHERE review_after <= $2) AS db,
                    (SELECT review_delay_ms FROM gc_settings) AS delay,
                    s.last_sweep_at, s.sweeps, s.manifests_deleted, s.blobs_deleted,
                    s.bytes_deleted, s.uploads_expired
               FROM gc_stats s WHERE s.id = 1",
        )
        .bind(now)
        .bind(now)
        .fetch_one(&self.read)
        .await?;
        Ok(GcState {
            pending_manifest_reviews: row.try_get("pm")?,
            pending_blob_reviews: row.try_get("pb")?,
            due_manifest_reviews: row.try_get("dm")?,
            due_blob_reviews: row.try_get("db")?,
            review_delay_ms: row.try_get("delay")?,
            last_sweep_at_ms: row.try_get("last_sweep_at")?,
            sweeps: row.try_get("sweeps")?,
            manifests_deleted: row.try_get("manifests_deleted")?,
            blobs_deleted: row.try_get("blobs_deleted")?,
            bytes_deleted: row.try_get("bytes_deleted")?,
            uploads_expired: row.try_get("uploads_expired")?,
        })
    }
}
