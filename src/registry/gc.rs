//! Online garbage collection. Database triggers queue reviews when something
//! may have become dangling (see `migrations/sqlite/0003_gc.sql`); a sweep
//! takes the due reviews and deletes, each in its own transaction that
//! re-checks the references, manifests that are untagged and unreferenced and
//! blobs that no manifest references. The registry never goes read-only:
//! pushes race the sweep safely because
//! - manifest writes and sweep deletions are serialized by the database, and
//!   a manifest can only reference blobs linked in the same transaction;
//! - making a blob visible (file renamed into place, rows written) and
//!   collecting it (rows deleted, file deleted) hold the same per-digest lock;
//! - a blob's review is dropped only after its file is gone, so a crash mid-
//!   sweep leaves work for the next sweep, never a row without its file.
//!
//! Abandoned upload sessions older than the upload expiry are removed too.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::metadata::{BlobVerdict, now_ms};
use crate::oci::Digest;
use crate::registry::Registry;
use crate::registry::api::SweepCounts;

pub use crate::config::GcSettings;

const BATCH: i64 = 500;

/// Runs one sweep to the end of what is due now. Only one runs at a time.
pub async fn sweep(
    reg: &Registry,
    upload_expiry: Duration,
) -> crate::registry::Result<SweepCounts> {
    let _one = reg.sweeping.lock().await;
    let started = std::time::Instant::now();
    let now = now_ms();
    let mut counts = SweepCounts::default();
    // Manifests first: deleting them queues their blobs (due at once only
    // with a zero review delay; otherwise a later sweep takes them).
    let mut handled = HashSet::new();
    loop {
        let due = reg.meta.gc_due_manifests(now, BATCH).await?;
        let Some(due) = not_yet_handled(due, &mut handled, "manifest") else {
            break;
        };
        let mut batch = SweepCounts::default();
        for id in due {
            if let Some(bytes) = busy_retry(|| reg.meta.gc_review_manifest(id, now)).await? {
                batch.manifests_deleted += 1;
                batch.bytes_deleted += bytes as i64;
            }
        }
        record(reg, &mut counts, batch).await?;
    }
    // The manifests just deleted may have queued blobs due now.
    let now = now_ms().max(now);
    let mut handled = HashSet::new();
    let mut skipped = HashSet::new();
    loop {
        let mut due = reg.meta.gc_due_blobs(now, BATCH).await?;
        due.retain(|d| !skipped.contains(d));
        let Some(due) = not_yet_handled(due, &mut handled, "blob") else {
            break;
        };
        let mut batch = SweepCounts::default();
        for digest in due {
            // Another sweeper (this replica's or another's) or an upload
            // making it visible is at work on this digest: skip it, as
            // `FOR UPDATE SKIP LOCKED` would; a later sweep reviews it if
            // it is still due.
            let Some(_locked) = reg.try_lock_blob(&digest).await? else {
                handled.remove(&digest);
                skipped.insert(digest);
                continue;
            };
            let verdict = busy_retry(|| reg.meta.gc_review_blob(&digest, now)).await?;
            if verdict != BlobVerdict::NotDue {
                batch.blob_reviews += 1;
            }
            match verdict {
                BlobVerdict::NotDue | BlobVerdict::Kept => {}
                BlobVerdict::Deleted { size } => {
                    delete_file(reg, &digest).await?;
                    busy_retry(|| reg.meta.gc_forget_blob_review(&digest)).await?;
                    batch.blobs_deleted += 1;
                    batch.bytes_deleted += size as i64;
                }
                BlobVerdict::AlreadyGone => {
                    delete_file(reg, &digest).await?;
                    busy_retry(|| reg.meta.gc_forget_blob_review(&digest)).await?;
                }
            }
        }
        // Every review taken is either dropped or re-queued for later
        // (then no longer due), so this loop ends.
        record(reg, &mut counts, batch).await?;
    }
    let before = now - upload_expiry.as_millis() as i64;
    let mut batch = SweepCounts::default();
    for id in reg.meta.gc_expired_uploads(before).await? {
        if let Some(upload) = crate::storage::UploadId::parse(&id) {
            reg.blobs.abort_upload(&upload).await?;
        }
        reg.meta.delete_upload(&id).await?;
        batch.uploads_expired += 1;
    }
    record(reg, &mut counts, batch).await?;
    reg.meta.gc_finish_sweep(now_ms()).await?;
    let took_ms = started.elapsed().as_millis() as u64;
    if counts != SweepCounts::default() {
        tracing::info!(
            manifests = counts.manifests_deleted,
            blobs = counts.blobs_deleted,
            bytes = counts.bytes_deleted,
            uploads = counts.uploads_expired,
            took_ms,
            "garbage collection sweep"
        );
    } else {
        tracing::debug!(took_ms, "garbage collection sweep: nothing to delete");
    }
    Ok(counts)
}

/// The due reviews this sweep has not handled yet, or `None` when the sweep
/// must stop: nothing is due, or a review it already handled is due again.
/// Handling a review always drops it or moves it later, so one that is still
/// due means its transaction did not take (a failing disk, a database error
/// swallowed somewhere): going round again would spin, so the sweep ends and
/// the next one retries.
fn not_yet_handled<T: Clone + Eq + std::hash::Hash + std::fmt::Debug>(
    due: Vec<T>,
    handled: &mut HashSet<T>,
    kind: &str,
) -> Option<Vec<T>> {
    if due.is_empty() {
        return None;
    }
    if let Some(again) = due.iter().find(|r| handled.contains(*r)) {
        tracing::error!(
            review = ?again,
            "garbage collection: a {kind} review handled in this sweep is still due; stopping the sweep (the next one retries)"
        );
        return None;
    }
    handled.extend(due.iter().cloned());
    Some(due)
}

/// Runs one review transaction, retrying a few times when SQLite reports the
/// database busy (seen once in about two dozen benchmark sweeps), so one
/// transient lock does not end the whole sweep.
async fn busy_retry<T, F, Fut>(mut op: F) -> crate::metadata::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = crate::metadata::Result<T>>,
{
    let mut wait = Duration::from_millis(20);
    for _ in 0..5 {
        match op().await {
            Err(e) if e.is_busy() => {
                tracing::warn!("garbage collection: database busy, retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    op().await
}

/// Adds a batch to this sweep's counts. The stored totals of manifests and
/// blobs are kept by the deleting transactions themselves (exact even when a
/// sweep is killed); expired uploads are added here.
async fn record(
    reg: &Registry,
    counts: &mut SweepCounts,
    batch: SweepCounts,
) -> crate::registry::Result<()> {
    if batch != SweepCounts::default() {
        if batch.uploads_expired > 0 {
            reg.meta
                .gc_add_expired_uploads(batch.uploads_expired)
                .await?;
        }
        counts.manifests_deleted += batch.manifests_deleted;
        counts.blobs_deleted += batch.blobs_deleted;
        counts.bytes_deleted += batch.bytes_deleted;
        counts.uploads_expired += batch.uploads_expired;
        counts.blob_reviews += batch.blob_reviews;
    }
    Ok(())
}

async fn delete_file(reg: &Registry, digest: &str) -> crate::registry::Result<()> {
    match digest.parse::<Digest>() {
        Ok(d) => {
            reg.blobs.delete(&d).await?;
            Ok(())
        }
        Err(e) => {
            tracing::error!(digest, "a blob review names no valid digest: {e}");
            Ok(())
        }
    }
}

/// Sweeps every `sweep_interval` until the registry is dropped.
pub fn spawn(reg: &Arc<Registry>, settings: GcSettings) {
    let weak = Arc::downgrade(reg);
    tokio::spawn(async move {
        // The first sweep comes one interval after the start.
        let first = tokio::time::Instant::now() + settings.sweep_interval;
        let mut tick = tokio::time::interval_at(first, settings.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(reg) = weak.upgrade() else { return };
            if let Err(e) = sweep(&reg, settings.upload_expiry).await {
                tracing::error!("garbage collection sweep failed (will retry): {e:?}");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_due_again_stops_the_sweep() {
        let mut handled = HashSet::new();
        assert_eq!(
            not_yet_handled(Vec::<i64>::new(), &mut handled, "manifest"),
            None
        );
        assert_eq!(
            not_yet_handled(vec![1, 2], &mut handled, "manifest"),
            Some(vec![1, 2])
        );
        assert_eq!(
            not_yet_handled(vec![3], &mut handled, "manifest"),
            Some(vec![3])
        );
        // Review 2 was handled and is due again: stop rather than spin.
        assert_eq!(not_yet_handled(vec![2, 4], &mut handled, "manifest"), None);
    }
}
