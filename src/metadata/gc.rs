//! Garbage collection's side of the database: the review queues the
//! triggers fill (migration 0003), reviewing one manifest or blob in the
//! deleting transaction, expired uploads, and the totals.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};

use super::{Metadata, Result};
use super::{db, live};

/// Which reviews a sweep takes: those due at `at`, less those an upload
/// queued (`blob_upload`, `manifest_upload`) of what was uploaded after
/// `uploaded_by` (the sweep takes those one at a time, see
/// `registry::gc::Round`). `Due::from(now)`: every review due at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub at: i64,
    pub uploaded_by: i64,
}

impl From<i64> for Due {
    fn from(at: i64) -> Self {
        Due {
            at,
            uploaded_by: at,
        }
    }
}

/// An SQL condition on review `r` (of either queue): due by [`Due`] bound
/// as `$1` (at) and `$2` (uploaded_by).
const DUE: &str = "r.review_after <= $1
    AND (r.event NOT IN ('blob_upload', 'manifest_upload')
         OR r.review_after - (SELECT review_delay_ms FROM gc_settings WHERE id = 1) <= $2)";

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

    /// Manifest reviews due (see [`Due`]), oldest first.
    pub async fn gc_due_manifests(&self, due: impl Into<Due>, limit: i64) -> Result<Vec<i64>> {
        let due = due.into();
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT r.manifest_id FROM gc_manifest_reviews r WHERE {DUE}
              ORDER BY r.review_after LIMIT $3"
        )))
        .bind(due.at)
        .bind(due.uploaded_by)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Reviews one manifest: [`Metadata::gc_review_manifests`] of one.
    /// Returns the bytes freed (its payload) if it was deleted.
    pub async fn gc_review_manifest(&self, id: i64, now: i64) -> Result<Option<u64>> {
        let deleted = self.gc_review_manifests(&[id], now).await?;
        Ok(deleted.first().map(|&(_, size)| size))
    }

    /// Reviews a batch of manifests in one transaction: each one still due,
    /// untagged and held by no manifest (not listed by an index, not a
    /// referrer of a manifest still there; see `live`) is deleted, all
    /// checked in the deleting transaction. The reviews of the batch are
    /// dropped first, so the reviews the deletions queue (of the children
    /// and referrers of what goes, kept in this batch because it still held
    /// them) stay. Returns the deleted manifests with their payload sizes.
    pub async fn gc_review_manifests(
        &self,
        ids: &[i64],
        due: impl Into<Due>,
    ) -> Result<Vec<(i64, u64)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let due = due.into();
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT r.manifest_id FROM gc_manifest_reviews r
              WHERE {DUE} AND r.manifest_id IN ({})",
            db::placeholders(3, ids.len())
        );
        let query = sqlx::query_as::<_, (i64,)>(AssertSqlSafe(sql))
            .bind(due.at)
            .bind(due.uploaded_by);
        let taken: Vec<i64> = bind_all_as(query, ids)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .map(|(id,)| id)
            .collect();
        if taken.is_empty() {
            return Ok(Vec::new()); // re-queued for later, or already reviewed
        }
        let list = db::placeholders(1, taken.len());
        let sql = live::sizes_if_unheld(&list);
        let unheld = bind_all_as(sqlx::query_as::<_, (i64, i64)>(AssertSqlSafe(sql)), &taken)
            .fetch_all(&mut *tx)
            .await?;
        let sql = format!("DELETE FROM gc_manifest_reviews WHERE manifest_id IN ({list})");
        bind_all(sqlx::query(AssertSqlSafe(sql)), &taken)
            .execute(&mut *tx)
            .await?;
        if !unheld.is_empty() {
            let gone: Vec<i64> = unheld.iter().map(|&(id, _)| id).collect();
            // Cascades queue their blobs, their children and their referrers.
            let sql = format!(
                "DELETE FROM manifests WHERE id IN ({})",
                db::placeholders(1, gone.len())
            );
            bind_all(sqlx::query(AssertSqlSafe(sql)), &gone)
                .execute(&mut *tx)
                .await?;
            // Counted in the deleting transaction: the totals stay exact
            // even when a sweep is killed.
            sqlx::query(
                "UPDATE gc_stats SET manifests_deleted = manifests_deleted + $1,
                        bytes_deleted = bytes_deleted + $2 WHERE id = 1",
            )
            .bind(gone.len() as i64)
            .bind(unheld.iter().map(|&(_, size)| size).sum::<i64>())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(unheld
            .into_iter()
            .map(|(id, size)| (id, size as u64))
            .collect())
    }

    /// Blob reviews due (see [`Due`]) of blobs no upload has pinned, oldest
    /// first.
    pub async fn gc_due_blobs(&self, due: impl Into<Due>, limit: i64) -> Result<Vec<String>> {
        let due = due.into();
        Ok(sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT r.digest FROM gc_blob_reviews r WHERE {DUE} AND {NOT_PINNED}
              ORDER BY r.review_after LIMIT $3"
        )))
        .bind(due.at)
        .bind(due.uploaded_by)
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
        due: impl Into<Due>,
    ) -> Result<Vec<(String, BlobVerdict)>> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let due = due.into();
        let now = due.at;
        let mut tx = self.begin_write().await?;
        let list = db::placeholders(3, digests.len());
        let sql = format!(
            "SELECT r.digest, b.size, CAST(CASE WHEN {} THEN 1 ELSE 0 END AS BIGINT)
               FROM gc_blob_reviews r LEFT JOIN blobs b ON b.digest = r.digest
              WHERE {DUE} AND {NOT_PINNED} AND r.digest IN ({list})",
            live::BLOB_REFERENCED
        );
        let query = sqlx::query_as::<_, (String, Option<i64>, i64)>(AssertSqlSafe(sql))
            .bind(due.at)
            .bind(due.uploaded_by);
        let due = bind_all_as(query, digests).fetch_all(&mut *tx).await?;
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

type Args = <db::Db as sqlx::Database>::Arguments;

/// Binds every one of `values`, in order, after what `query` has bound.
fn bind_all<'q, T>(
    mut query: sqlx::query::Query<'q, db::Db, Args>,
    values: &'q [T],
) -> sqlx::query::Query<'q, db::Db, Args>
where
    T: sqlx::Encode<'q, db::Db> + sqlx::Type<db::Db> + Sync,
{
    for v in values {
        query = query.bind(v);
    }
    query
}

/// [`bind_all`] for a query reading rows as `O`.
fn bind_all_as<'q, O, T>(
    mut query: sqlx::query::QueryAs<'q, db::Db, O, Args>,
    values: &'q [T],
) -> sqlx::query::QueryAs<'q, db::Db, O, Args>
where
    T: sqlx::Encode<'q, db::Db> + sqlx::Type<db::Db> + Sync,
{
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

    async fn manifest_id(meta: &Metadata, d: &crate::oci::Digest) -> i64 {
        sqlx::query_scalar("SELECT id FROM manifests WHERE digest = $1")
            .bind(d.to_string())
            .fetch_one(&meta.read)
            .await
            .unwrap()
    }

    async fn manifest_reviews(meta: &Metadata) -> Vec<i64> {
        sqlx::query_scalar("SELECT manifest_id FROM gc_manifest_reviews ORDER BY manifest_id")
            .fetch_all(&meta.read)
            .await
            .unwrap()
    }

    /// One batch of manifest reviews: the loose manifest and the untagged
    /// index go; what is tagged, and the index's child (held by the index
    /// when the batch is checked), stay, and the child is queued again by
    /// the index's deletion (its review survives the batch); a review of a
    /// manifest already gone is dropped. The next batch takes the child.
    async fn manifest_reviews_in_a_batch(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
        meta.gc_set_review_delay(Duration::ZERO).await.unwrap();
        let tagged = image(&meta, "r", Some("t"), &[("c1", 1), ("l1", 10)], None).await;
        let loose = image(&meta, "r", None, &[("c2", 2), ("l2", 20)], None).await;
        let child = image(&meta, "r", None, &[("c3", 3), ("l3", 30)], None).await;
        let index = crate::metadata::testing::index(&meta, "r", None, &[&child]).await;
        let (t, l, c, i) = (
            manifest_id(&meta, &tagged.0).await,
            manifest_id(&meta, &loose.0).await,
            manifest_id(&meta, &child.0).await,
            manifest_id(&meta, &index.0).await,
        );
        let gone = i + 1000;
        sqlx::query(
            "INSERT INTO gc_manifest_reviews (manifest_id, review_after, event)
             VALUES ($1, 0, 'tag_delete')",
        )
        .bind(gone)
        .execute(&meta.write)
        .await
        .unwrap();
        let later = i64::MAX;
        let mut deleted = meta
            .gc_review_manifests(&[t, l, c, i, gone], later)
            .await
            .unwrap();
        deleted.sort();
        assert_eq!(deleted, vec![(l, loose.1), (i, index.1)]);
        assert_eq!(manifest_reviews(&meta).await, vec![c]);
        let state = meta.gc_status(later).await.unwrap();
        assert_eq!(
            (state.manifests_deleted, state.bytes_deleted),
            (2, (loose.1 + index.1) as i64)
        );
        assert_eq!(
            meta.gc_review_manifests(&[c], later).await.unwrap(),
            vec![(c, child.1)]
        );
        assert_eq!(meta.gc_review_manifest(t, later).await.unwrap(), None);
    }

    /// Reviews an upload queued are taken only of uploads as old as
    /// `uploaded_by`; reviews of other events whenever due.
    async fn reviews_of_young_uploads_wait(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
        meta.gc_set_review_delay(Duration::ZERO).await.unwrap();
        let now = crate::metadata::now_ms();
        for name in ["old", "young", "unlinked"] {
            meta.link_blob("r", &digest(name), 1).await.unwrap();
        }
        let set = |name: &str, at: i64, event: &str| {
            let meta = meta.clone();
            let (d, event) = (digest(name).to_string(), event.to_string());
            async move {
                sqlx::query(
                    "UPDATE gc_blob_reviews SET review_after = $1, event = $2 WHERE digest = $3",
                )
                .bind(at)
                .bind(event)
                .bind(d)
                .execute(&meta.write)
                .await
                .unwrap();
            }
        };
        set("old", now - 10_000, "blob_upload").await;
        set("young", now - 100, "blob_upload").await;
        set("unlinked", now - 100, "blob_unlink").await;
        let graced = Due {
            at: now,
            uploaded_by: now - 1_000,
        };
        let mut due = meta.gc_due_blobs(graced, 10).await.unwrap();
        due.sort();
        let mut want = vec![digest("old").to_string(), digest("unlinked").to_string()];
        want.sort();
        assert_eq!(due, want);
        assert_eq!(meta.gc_due_blobs(now, 10).await.unwrap().len(), 3);
        let young = digest("young").to_string();
        assert_eq!(
            meta.gc_review_blobs(std::slice::from_ref(&young), graced)
                .await
                .unwrap(),
            vec![(young.clone(), BlobVerdict::NotDue)]
        );
        assert_eq!(
            meta.gc_review_blobs(std::slice::from_ref(&young), now)
                .await
                .unwrap(),
            vec![(young, BlobVerdict::Deleted { size: 1 })]
        );

        // Manifests: a young upload waits, a young tag deletion does not.
        let pushed = image(&meta, "r", None, &[("c", 1)], None).await;
        let untagged = image(&meta, "r", Some("x"), &[("c", 1), ("l", 2)], None).await;
        let (p, u) = (
            manifest_id(&meta, &pushed.0).await,
            manifest_id(&meta, &untagged.0).await,
        );
        assert!(
            meta.delete_tag("r", "x", &crate::metadata::any_tag_write)
                .await
                .unwrap()
        );
        let now = crate::metadata::now_ms();
        let graced = Due {
            at: now,
            uploaded_by: now - 60_000,
        };
        assert_eq!(meta.gc_due_manifests(graced, 10).await.unwrap(), vec![u]);
        assert_eq!(
            meta.gc_review_manifests(&[p, u], graced).await.unwrap(),
            vec![(u, untagged.1)]
        );
        assert_eq!(
            meta.gc_review_manifests(&[p], now).await.unwrap(),
            vec![(p, pushed.1)]
        );
    }

    on_both_backends! {
        manifest_reviews_in_a_batch => super::manifest_reviews_in_a_batch;
        reviews_of_young_uploads_wait => super::reviews_of_young_uploads_wait;
        blob_reviews_in_a_batch => super::blob_reviews_in_a_batch;
        pinned_blobs_are_passed_over => super::pinned_blobs_are_passed_over;
    }
}
