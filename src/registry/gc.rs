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

use crate::metadata::{BlobVerdict, Due, now_ms};
use crate::oci::Digest;
use crate::registry::Registry;
use crate::registry::api::SweepCounts;

pub use crate::config::GcSettings;

/// Reviews listed per query.
const BATCH: i64 = 500;
/// Blob reviews taken in one transaction, their digests locked together.
const BLOB_BATCH: usize = 100;
/// How old an upload must be before its review is taken in a batch (see
/// [`Round`]); reviews of uploads are `blob_upload` and `manifest_upload`
/// events.
pub const UPLOAD_GRACE: Duration = Duration::from_secs(1);

/// Runs one sweep to the end of what is due now. Only one runs at a time.
///
/// Reviews are taken a batch per transaction (manifests up to [`BATCH`],
/// blobs [`BLOB_BATCH`] under their digests' locks), each batch checked in
/// the transaction that deletes, as one review was; the reviews of uploads
/// younger than [`UPLOAD_GRACE`] one at a time (see [`Round`]).
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
    for round in [Round::Grown, Round::Young] {
        loop {
            let due = round.due(now);
            let ids = reg.meta.gc_due_manifests(due, BATCH).await?;
            let Some(ids) = not_yet_handled(ids, &mut handled, "manifest") else {
                break;
            };
            for some in ids.chunks(round.batch(BATCH as usize)) {
                let deleted = busy_retry(|| reg.meta.gc_review_manifests(some, due)).await?;
                let batch = SweepCounts {
                    manifests_deleted: deleted.len() as i64,
                    bytes_deleted: deleted.iter().map(|&(_, size)| size as i64).sum(),
                    ..SweepCounts::default()
                };
                record(reg, &mut counts, batch).await?;
            }
        }
    }
    // The manifests just deleted may have queued blobs due now.
    let now = now_ms().max(now);
    let mut handled = HashSet::new();
    let mut skipped = HashSet::new();
    for round in [Round::Grown, Round::Young] {
        loop {
            let due = round.due(now);
            let mut digests = reg.meta.gc_due_blobs(due, BATCH).await?;
            digests.retain(|d| !skipped.contains(d));
            let Some(digests) = not_yet_handled(digests, &mut handled, "blob") else {
                break;
            };
            for some in digests.chunks(round.batch(BLOB_BATCH)) {
                let batch = review_blobs(reg, some, due, &mut handled, &mut skipped).await?;
                // Every review taken is either dropped or re-queued for
                // later (then no longer due), so this loop ends.
                record(reg, &mut counts, batch).await?;
            }
        }
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
            blob_reviews = counts.blob_reviews,
            took_ms,
            "garbage collection sweep"
        );
    } else {
        tracing::debug!(took_ms, "garbage collection sweep: nothing to delete");
    }
    Ok(counts)
}

/// A phase of a sweep goes in two rounds: first, in batches, what is due
/// and, if it was uploaded, at least [`UPLOAD_GRACE`] old; then one review
/// per transaction, oldest first, the reviews of younger uploads, as every
/// review was taken before batches. A client pushing an image uploads its
/// layers, then its manifest: with a review delay of 0 (tests, benchmarks;
/// the default is 24 h) a batch would collect the layers of a push under
/// way in the moment between, and these reviews are left the time one
/// review at a time takes. Nothing but the review delay guarantees a push
/// its blobs: pushes racing sweeps at delay 0 may see BLOB_UNKNOWN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Grown,
    Young,
}

impl Round {
    fn due(self, at: i64) -> Due {
        match self {
            Round::Grown => Due {
                at,
                uploaded_by: (now_ms() - UPLOAD_GRACE.as_millis() as i64).min(at),
            },
            Round::Young => Due::from(at),
        }
    }

    /// Reviews per transaction.
    fn batch(self, batch: usize) -> usize {
        match self {
            Round::Grown => batch,
            Round::Young => 1,
        }
    }
}

/// Reviews a batch of blobs under their digests' locks: those deleted (or
/// whose rows were already gone) lose their files, then their reviews.
async fn review_blobs(
    reg: &Registry,
    digests: &[String],
    due: Due,
    handled: &mut HashSet<String>,
    skipped: &mut HashSet<String>,
) -> crate::registry::Result<SweepCounts> {
    // Another replica (its sweep, or an upload making the blob visible) is
    // at work on a busy digest: skip it, as `FOR UPDATE SKIP LOCKED` would;
    // a later sweep reviews it if it is still due.
    let (locks, locked, busy) = reg.try_lock_blobs(digests).await?;
    for digest in busy {
        handled.remove(&digest);
        skipped.insert(digest);
    }
    let verdicts = busy_retry(|| reg.meta.gc_review_blobs(&locked, due)).await?;
    let mut batch = SweepCounts::default();
    let mut gone = Vec::new();
    for (digest, verdict) in verdicts {
        if verdict != BlobVerdict::NotDue {
            batch.blob_reviews += 1;
        }
        match verdict {
            BlobVerdict::NotDue | BlobVerdict::Kept => {}
            BlobVerdict::Deleted { size } => {
                batch.blobs_deleted += 1;
                batch.bytes_deleted += size as i64;
                gone.push(digest);
            }
            BlobVerdict::AlreadyGone => gone.push(digest),
        }
    }
    delete_files(reg, &gone).await?;
    busy_retry(|| reg.meta.gc_forget_blob_reviews(&gone)).await?;
    drop(locks);
    Ok(batch)
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

async fn delete_files(reg: &Registry, digests: &[String]) -> crate::registry::Result<()> {
    let mut valid = Vec::with_capacity(digests.len());
    for digest in digests {
        match digest.parse::<Digest>() {
            Ok(d) => valid.push(d),
            Err(e) => tracing::error!(digest, "a blob review names no valid digest: {e}"),
        }
    }
    reg.blobs.delete_many(&valid).await?;
    Ok(())
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
