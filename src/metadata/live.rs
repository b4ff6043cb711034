//! What is live.

use std::collections::{HashMap, HashSet};

use super::Result;
use super::sqlite::Tx;

/// Bytes made reclaimable by deleting tags that pointed at `roots`: the
/// manifests reachable from them (index entries, referrers) that are no
/// longer live, and the blobs those reference that no live manifest does.
pub(super) async fn reclaimable(tx: &mut Tx<'_>, roots: &[i64]) -> Result<u64> {
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
    async fn is_live(&mut self, tx: &mut Tx<'_>, id: i64) -> Result<bool> {
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
    use crate::metadata::testing::{db, image, index, plan, repo_id};
    use crate::metadata::{RepositoryDeletions, any_tag_write};
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
}
