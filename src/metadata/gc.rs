//! Garbage collection's side of the database: the review queues the
//! triggers fill (migration 0003), reviewing one manifest or blob in the
//! deleting transaction, expired uploads, and the totals.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};

use super::{Metadata, Result};
use super::{db, live};

/// An SQL condition on review `r`: no upload has its blob pinned.
const NOT_PINNED: &str = "NOT EXISTS (SELECT 1 FROM gc_blob_pins p
                                      WHERE p.digest = r.digest AND p.until_ms > $1)";

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

    /// Blob reviews due at `now` (of blobs no upload has pinned), oldest first.
    pub async fn gc_due_blobs(&self, now: i64, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT r.digest FROM gc_blob_reviews r WHERE r.review_after <= $1 AND {NOT_PINNED}
              ORDER BY r.review_after LIMIT $2"
        )))
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Reviews one blob: [`Metadata::gc_review_blobs`] of one.
    pub async fn gc_review_blob(&self, digest: &str, now: i64) -> Result<BlobVerdict> {
        let verdicts = self.gc_review_blobs(&[digest.to_string()], now).await?;
        Ok(verdicts
            .into_iter()
            .next()
            .map_or(BlobVerdict::NotDue, |(_, v)| v))
    }

    /// Reviews a batch of blobs in one transaction: each one still due that
    /// no manifest references has its rows (links and the blob) deleted;
    /// each one still referenced has its review dropped. The review of a
    /// deleted blob stays (due now, marked `deleting`) until the caller has
    /// deleted the file, so a crash in between leaves work for the next
    /// sweep, never a row without a file. The verdicts come in no
    /// particular order; a digest not due is `NotDue`.
    ///
    /// The same checks and deletions as one transaction per blob, done for
    /// the batch at once (a statement each, not a statement per blob): what
    /// a review decides is still checked in the transaction that deletes.
    pub async fn gc_review_blobs(
        &self,
        digests: &[String],
        now: i64,
    ) -> Result<Vec<(String, BlobVerdict)>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let list = db::placeholders(2, digests.len());
        let sql = format!(
            "SELECT r.digest, b.size, CAST(CASE WHEN {} THEN 1 ELSE 0 END AS BIGINT)
               FROM gc_blob_reviews r LEFT JOIN blobs b ON b.digest = r.digest
              WHERE r.review_after <= $1 AND {NOT_PINNED} AND r.digest IN ({list})",
            live::BLOB_REFERENCED
        );
        let mut query =
            sqlx::query_as::<_, (String, Option<i64>, i64)>(AssertSqlSafe(sql)).bind(now);
        for d in digests {
            query = query.bind(d);
        }
        let due = query.fetch_all(&mut *tx).await?;
        let mut verdicts: Vec<(String, BlobVerdict)> = Vec::with_capacity(digests.len());
        let (mut kept, mut deleted) = (Vec::new(), Vec::new());
        let mut bytes = 0i64;
        for (digest, size, referenced) in due {
            let verdict = match (size, referenced != 0) {
                (None, _) => BlobVerdict::AlreadyGone,
                (Some(_), true) => {
                    kept.push(digest.clone());
                    BlobVerdict::Kept
                }
                (Some(size), false) => {
                    deleted.push(digest.clone());
                    bytes += size;
                    BlobVerdict::Deleted { size: size as u64 }
                }
            };
            verdicts.push((digest, verdict));
        }
        let reviewed: std::collections::HashSet<&str> =
            verdicts.iter().map(|(d, _)| d.as_str()).collect();
        let not_due: Vec<(String, BlobVerdict)> = digests
            .iter()
            .filter(|d| !reviewed.contains(d.as_str()))
            .map(|d| (d.clone(), BlobVerdict::NotDue))
            .collect();
        drop(reviewed);
        if !kept.is_empty() {
            let sql = format!(
                "DELETE FROM gc_blob_reviews WHERE digest IN ({})",
                db::placeholders(1, kept.len())
            );
            bind_all(sqlx::query(AssertSqlSafe(sql)), &kept)
                .execute(&mut *tx)
                .await?;
        }
        if !deleted.is_empty() {
            let list = db::placeholders(1, deleted.len());
            for table in ["repository_blobs", "blobs"] {
                let sql = format!("DELETE FROM {table} WHERE digest IN ({list})");
                bind_all(sqlx::query(AssertSqlSafe(sql)), &deleted)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query(
                "UPDATE gc_stats SET blobs_deleted = blobs_deleted + $1,
                        bytes_deleted = bytes_deleted + $2 WHERE id = 1",
            )
            .bind(deleted.len() as i64)
            .bind(bytes)
            .execute(&mut *tx)
            .await?;
            // The unlink trigger re-queued them: keep one review each, due
            // now, marked.
            let rows = (0..deleted.len())
                .map(|i| format!("(${}, $1, 'deleting')", i + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO gc_blob_reviews (digest, review_after, event) VALUES {rows}
                 ON CONFLICT (digest) DO UPDATE
                    SET review_after = excluded.review_after, event = excluded.event"
            );
            bind_all(sqlx::query(AssertSqlSafe(sql)).bind(now), &deleted)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        verdicts.extend(not_due);
        Ok(verdicts)
    }

    /// Pins blob `digest` until `until_ms` (or [`Metadata::gc_unpin_blob`]):
    /// an upload is verifying a body against it, and reviews pass it over.
    pub async fn gc_pin_blob(&self, id: &str, digest: &str, until_ms: i64) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO gc_blob_pins (id, digest, until_ms) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(digest)
            .bind(until_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn gc_unpin_blob(&self, id: &str) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM gc_blob_pins WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Drops a blob review once its file is gone (if the blob still has no row).
    pub async fn gc_forget_blob_review(&self, digest: &str) -> Result<()> {
        self.gc_forget_blob_reviews(&[digest.to_string()]).await
    }

    /// [`Metadata::gc_forget_blob_review`] for a batch, in one transaction.
    pub async fn gc_forget_blob_reviews(&self, digests: &[String]) -> Result<()> {
        if digests.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "DELETE FROM gc_blob_reviews
              WHERE digest IN ({})
                AND NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = gc_blob_reviews.digest)",
            db::placeholders(1, digests.len())
        );
        bind_all(sqlx::query(AssertSqlSafe(sql)), digests)
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
        // Pins of uploads whose replica died.
        sqlx::query("DELETE FROM gc_blob_pins WHERE until_ms <= $1")
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

/// Binds every one of `values`, in order, after what `query` has bound.
fn bind_all<'q>(
    mut query: sqlx::query::Query<'q, db::Db, <db::Db as sqlx::Database>::Arguments>,
    values: &'q [String],
) -> sqlx::query::Query<'q, db::Db, <db::Db as sqlx::Database>::Arguments> {
    for v in values {
        query = query.bind(v);
    }
    query
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::metadata::Backend;
    use crate::metadata::testing::{db_on, digest, image, on_both_backends};

    /// One batch holds every verdict: referenced blobs are kept, loose ones
    /// deleted (their review kept, due, until the file is gone), a deleted
    /// one reviewed again is already gone, a digest without a review is not
    /// due; forgetting drops the reviews of blobs without a row only.
    async fn blob_reviews_in_a_batch(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
        image(&meta, "r", Some("t"), &[("cfg", 1), ("used", 10)], None).await;
        meta.link_blob("r", &digest("loose"), 20).await.unwrap();
        meta.link_blob("r", &digest("gone"), 30).await.unwrap();
        let later = i64::MAX;
        let d = |n: &str| digest(n).to_string();
        assert_eq!(
            meta.gc_review_blob(&d("gone"), later).await.unwrap(),
            BlobVerdict::Deleted { size: 30 }
        );

        let names = ["used", "loose", "gone", "cfg", "never"];
        let batch: Vec<String> = names.iter().map(|n| d(n)).collect();
        let got: HashMap<String, BlobVerdict> = meta
            .gc_review_blobs(&batch, later)
            .await
            .unwrap()
            .into_iter()
            .collect();
        let want = [
            ("used", BlobVerdict::Kept),
            ("loose", BlobVerdict::Deleted { size: 20 }),
            ("gone", BlobVerdict::AlreadyGone),
            ("cfg", BlobVerdict::Kept),
            ("never", BlobVerdict::NotDue),
        ];
        assert_eq!(got.len(), want.len());
        for (name, verdict) in want {
            assert_eq!(got[&d(name)], verdict, "{name}");
        }
        let state = meta.gc_status(later).await.unwrap();
        assert_eq!((state.blobs_deleted, state.bytes_deleted), (2, 50));
        // Kept reviews are dropped; the deleted ones wait for their files.
        let mut left: Vec<String> = sqlx::query_scalar("SELECT digest FROM gc_blob_reviews")
            .fetch_all(&meta.read)
            .await
            .unwrap();
        left.sort();
        let mut want_left = vec![d("loose"), d("gone")];
        want_left.sort();
        assert_eq!(left, want_left);
        assert!(
            meta.blob_in_repository("r", &digest("loose"))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            meta.blob_in_repository("r", &digest("used")).await.unwrap(),
            Some(10)
        );

        // A blob linked again before its review is forgotten keeps it.
        meta.link_blob("r", &digest("gone"), 30).await.unwrap();
        meta.gc_forget_blob_reviews(&[d("loose"), d("gone")])
            .await
            .unwrap();
        let left: Vec<String> = sqlx::query_scalar("SELECT digest FROM gc_blob_reviews")
            .fetch_all(&meta.read)
            .await
            .unwrap();
        assert_eq!(left, vec![d("gone")]);
    }

    /// A pinned blob is neither listed as due nor reviewed until its pin
    /// goes (unpinned, or expired and swept away).
    async fn pinned_blobs_are_passed_over(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
        meta.gc_set_review_delay(Duration::ZERO).await.unwrap();
        meta.link_blob("r", &digest("loose"), 20).await.unwrap();
        let d = digest("loose").to_string();
        let now = crate::metadata::now_ms() + 1000;
        meta.gc_pin_blob("upload-1", &d, now + 60_000)
            .await
            .unwrap();
        assert!(meta.gc_due_blobs(now, 10).await.unwrap().is_empty());
        assert_eq!(
            meta.gc_review_blobs(std::slice::from_ref(&d), now)
                .await
                .unwrap(),
            vec![(d.clone(), BlobVerdict::NotDue)]
        );
        // An expired pin counts for nothing, and the sweep's end removes it.
        assert_eq!(
            meta.gc_due_blobs(now + 60_000, 10).await.unwrap(),
            vec![d.clone()]
        );
        meta.gc_finish_sweep(now + 60_000).await.unwrap();
        let pins: i64 = sqlx::query_scalar("SELECT count(*) FROM gc_blob_pins")
            .fetch_one(&meta.read)
            .await
            .unwrap();
        assert_eq!(pins, 0);
        meta.gc_pin_blob("upload-2", &d, now + 60_000)
            .await
            .unwrap();
        meta.gc_unpin_blob("upload-2").await.unwrap();
        assert_eq!(
            meta.gc_review_blobs(std::slice::from_ref(&d), now)
                .await
                .unwrap(),
            vec![(d.clone(), BlobVerdict::Deleted { size: 20 })]
        );
    }

    on_both_backends! {
        blob_reviews_in_a_batch => super::blob_reviews_in_a_batch;
        pinned_blobs_are_passed_over => super::pinned_blobs_are_passed_over;
    }
}
