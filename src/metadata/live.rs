//! What is live: the one rule garbage collection keeps by and cleanup runs
//! measure by. Defined here once, as SQL, and used three ways: the sweep's
//! manifest review ([`sizes_if_unheld`], in `gc`), the upward walk asking
//! whether a manifest is live ([`Liveness`]), and the downward walk measuring
//! what deleting tags makes reclaimable ([`reclaimable`]).
//!
//! - A tagged manifest is live (the roots: [`IS_TAGGED`]).
//! - A manifest *holds* another of its repository when it lists it (an
//!   index's entry) or when it is the other's `subject` (a referrer is kept
//!   by what it refers to, not the other way round): [`holds!`]. What a live
//!   manifest holds is live.
//! - A blob is live when a live manifest references it (config or layer):
//!   [`BLOB_REFERENCED`], [`BLOB_USERS`]. Repository links do not keep a blob.
//!
//! The sweep applies the rule one manifest at a time: a manifest neither
//! tagged nor held by any manifest goes, and deleting it queues what it held
//! for review (migration 0003's triggers), so what is left at the end is
//! what the walks call live. The table test below checks the three agree.
//! They part only on a holding cycle, which content addressing allows in one
//! shape: an index listing the very manifest that is its `subject`. The
//! sweep keeps such a pair (each holds the other); the walks count it
//! reclaimable when no tag reaches it.

use std::collections::{HashMap, HashSet};

use super::Result;
use super::db::Tx;

/// The holding relation as a table of `(holder, held)` manifest ids: index
/// entries (`manifest_references`), and each referrer held by its subject in
/// the same repository. Filtered on either column, SQLite pushes the filter
/// into both halves and uses an index for each.
macro_rules! holds {
    () => {
        "(SELECT parent_id AS holder, child_id AS held FROM manifest_references
          UNION ALL
          SELECT subject.id, referrer.id FROM manifests referrer
            JOIN manifests subject ON subject.repository_id = referrer.repository_id
                                  AND subject.digest = referrer.subject_digest)"
    };
}

/// Whether manifest `?` is tagged (a root): a row when it is.
pub(super) const IS_TAGGED: &str = "SELECT 1 FROM tags WHERE manifest_id = $1 LIMIT 1";

/// The manifests holding manifest `?` (upwards).
const HOLDERS_OF: &str = concat!("SELECT holder FROM ", holds!(), " AS h WHERE held = $1");

/// The manifests manifest `?` holds (downwards).
const HELD_BY: &str = concat!("SELECT held FROM ", holds!(), " AS h WHERE holder = $1");

/// The manifests among `list` (placeholders of ids) that nothing keeps,
/// with their payload sizes: not tagged, and no manifest holds them. The
/// sweep's manifest review.
pub(super) fn sizes_if_unheld(list: &str) -> String {
    format!(
        "SELECT m.id, m.size FROM manifests m
          WHERE m.id IN ({list})
            AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
            AND NOT EXISTS (SELECT 1 FROM {} h WHERE h.held = m.id)",
        holds!()
    )
}

/// Whether the blob of a review (`gc_blob_reviews` row `r`) is referenced
/// by a manifest: an SQL condition. The sweep's blob reviews (they run after
/// the unheld manifests are gone).
pub(super) const BLOB_REFERENCED: &str =
    "EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.digest = r.digest)";

/// The manifests referencing blob `?`.
const BLOB_USERS: &str = "SELECT manifest_id FROM manifest_blobs WHERE digest = $1";

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
        let size: i64 = sqlx::query_scalar("SELECT size FROM manifests WHERE id = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
        bytes += size as u64;
        blobs.extend(
            sqlx::query_scalar::<_, String>(
                "SELECT digest FROM manifest_blobs WHERE manifest_id = $1",
            )
            .bind(id)
            .fetch_all(&mut **tx)
            .await?,
        );
        let below: Vec<i64> = sqlx::query_scalar(HELD_BY)
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
        // A shortcut, not a second rule: most shared blobs (base layers) are
        // used by a tagged manifest, which is live.
        let tagged_user: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM manifest_blobs mb JOIN tags t ON t.manifest_id = mb.manifest_id
              WHERE mb.digest = $1 LIMIT 1",
        )
        .bind(&digest)
        .fetch_optional(&mut **tx)
        .await?;
        if tagged_user.is_some() {
            continue;
        }
        let users: Vec<i64> = sqlx::query_scalar(BLOB_USERS)
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
            let size: i64 = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = $1")
                .bind(&digest)
                .fetch_one(&mut **tx)
                .await?;
            bytes += size as u64;
        }
    }
    Ok(bytes)
}

/// Which manifests are live (reachable from a tag through what holds them),
/// asked one at a time and remembered.
#[derive(Default)]
pub(super) struct Liveness {
    known: HashMap<i64, bool>,
}

impl Liveness {
    /// Searches upwards from `id` (to the manifests holding it) for a tagged
    /// manifest.
    pub(super) async fn is_live(&mut self, tx: &mut Tx<'_>, id: i64) -> Result<bool> {
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
            let tagged: Option<i64> = sqlx::query_scalar(IS_TAGGED)
                .bind(x)
                .fetch_optional(&mut **tx)
                .await?;
            if tagged.is_some() {
                self.known.insert(x, true);
                live = true;
                break;
            }
            let above: Vec<i64> = sqlx::query_scalar(HOLDERS_OF)
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
    use crate::metadata::Backend;
    use crate::metadata::testing::{db_on, image, index, on_both_backends, plan, repo_id};
    use crate::metadata::{RepositoryDeletions, any_tag_write};
    async fn reclaimable_bytes_follow_indexes_referrers_and_shared_blobs(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
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

    on_both_backends! {
        reclaimable_bytes_follow_indexes_referrers_and_shared_blobs => super::reclaimable_bytes_follow_indexes_referrers_and_shared_blobs;
    }
}

/// The three uses of the rule on the same graphs: the upward walk, the
/// downward walk's measure, and the sweep run to its end.
#[cfg(test)]
mod agreement {
    use std::collections::{BTreeSet, HashMap};

    use super::{Liveness, reclaimable};
    use crate::metadata::testing::{db_on, digest, image, index, on_both_backends};
    use crate::metadata::{Backend, BlobVerdict, Metadata};
    use crate::oci::Digest;

    /// A manifest of a case: an image over its own config and layer and the
    /// shared `base` layer, maybe referring to an earlier one (or to a digest
    /// that is nowhere); or an index of earlier ones.
    enum Node {
        Image {
            name: &'static str,
            repo: &'static str,
            tag: Option<&'static str>,
            subject: Option<&'static str>,
        },
        Index {
            name: &'static str,
            repo: &'static str,
            tag: Option<&'static str>,
            children: &'static [&'static str],
        },
    }
    use Node::{Image, Index};

    fn img(name: &'static str, tag: Option<&'static str>) -> Node {
        Image {
            name,
            repo: "r",
            tag,
            subject: None,
        }
    }
    fn referrer(name: &'static str, subject: &'static str) -> Node {
        Image {
            name,
            repo: "r",
            tag: None,
            subject: Some(subject),
        }
    }
    fn idx(
        name: &'static str,
        tag: Option<&'static str>,
        children: &'static [&'static str],
    ) -> Node {
        Index {
            name,
            repo: "r",
            tag,
            children,
        }
    }

    /// Description, graph, the manifests that are live.
    fn cases() -> Vec<(&'static str, Vec<Node>, &'static [&'static str])> {
        vec![
            ("a tagged image", vec![img("a", Some("t"))], &["a"]),
            ("an untagged image", vec![img("a", None)], &[]),
            (
                "a tagged index keeps its children, tagged or not",
                vec![
                    img("a", None),
                    img("b", Some("b")),
                    idx("i", Some("t"), &["a", "b"]),
                ],
                &["a", "b", "i"],
            ),
            (
                "an untagged index keeps nothing",
                vec![
                    img("a", None),
                    img("b", Some("b")),
                    idx("i", None, &["a", "b"]),
                ],
                &["b"],
            ),
            (
                "nested indexes",
                vec![
                    img("a", None),
                    idx("mid", None, &["a"]),
                    idx("top", Some("t"), &["mid"]),
                ],
                &["a", "mid", "top"],
            ),
            (
                "referrers of a live manifest, at any depth",
                vec![
                    img("a", Some("t")),
                    referrer("sig", "a"),
                    referrer("sig2", "sig"),
                ],
                &["a", "sig", "sig2"],
            ),
            (
                "referrers of an untagged manifest",
                vec![
                    img("a", None),
                    referrer("sig", "a"),
                    referrer("sig2", "sig"),
                ],
                &[],
            ),
            (
                "a referrer of a child of a tagged index",
                vec![
                    img("a", None),
                    idx("i", Some("t"), &["a"]),
                    referrer("sig", "a"),
                ],
                &["a", "i", "sig"],
            ),
            (
                "a referrer whose subject is nowhere",
                vec![referrer("sig", "missing")],
                &[],
            ),
            (
                "a tagged referrer does not keep its subject",
                vec![
                    img("a", None),
                    Image {
                        name: "sig",
                        repo: "r",
                        tag: Some("sig"),
                        subject: Some("a"),
                    },
                ],
                &["sig"],
            ),
            (
                "a subject in another repository does not hold",
                vec![
                    Image {
                        name: "a",
                        repo: "other",
                        tag: Some("t"),
                        subject: None,
                    },
                    referrer("sig", "a"),
                ],
                &["a"],
            ),
            (
                "an index in another repository does not hold",
                vec![
                    img("a", None),
                    Index {
                        name: "i",
                        repo: "other",
                        tag: Some("t"),
                        children: &[],
                    },
                ],
                &["i"],
            ),
        ]
    }

    /// A manifest's blobs: name and size.
    type Blobs = Vec<(String, u64)>;

    /// Builds a case: each manifest's id, payload size and blobs.
    async fn build(meta: &Metadata, nodes: &[Node]) -> HashMap<&'static str, (i64, u64, Blobs)> {
        let mut built: HashMap<&str, (Digest, u64, Blobs)> = HashMap::new();
        for node in nodes {
            let (name, repo, made) = match node {
                Image {
                    name,
                    repo,
                    tag,
                    subject,
                } => {
                    let blobs = vec![
                        (format!("{name}-config"), 1),
                        (format!("{name}-layer"), 10),
                        ("base".to_string(), 1000),
                    ];
                    let refs: Vec<(&str, u64)> =
                        blobs.iter().map(|(b, s)| (b.as_str(), *s)).collect();
                    let subject = subject.map(|s| match built.get(s) {
                        Some((d, size, _)) => (d.clone(), *size),
                        None => (digest(s), 1),
                    });
                    let (d, size) = image(meta, repo, *tag, &refs, subject.as_ref()).await;
                    (*name, *repo, (d, size, blobs))
                }
                Index {
                    name,
                    repo,
                    tag,
                    children,
                } => {
                    let children: Vec<(Digest, u64)> = children
                        .iter()
                        .map(|c| (built[c].0.clone(), built[c].1))
                        .collect();
                    let refs: Vec<&(Digest, u64)> = children.iter().collect();
                    let (d, size) = index(meta, repo, *tag, &refs).await;
                    (*name, *repo, (d, size, Vec::new()))
                }
            };
            let _ = repo;
            built.insert(name, made);
        }
        let mut out = HashMap::new();
        for (name, (d, size, blobs)) in built {
            let id: i64 = sqlx::query_scalar("SELECT id FROM manifests WHERE digest = $1")
                .bind(d.to_string())
                .fetch_one(&meta.read)
                .await
                .unwrap();
            out.insert(name, (id, size, blobs));
        }
        out
    }

    /// Runs garbage collection until nothing is due.
    async fn sweep_to_the_end(meta: &Metadata) {
        let later = i64::MAX;
        loop {
            let manifests = meta.gc_due_manifests(later, 1000).await.unwrap();
            for id in &manifests {
                meta.gc_review_manifest(*id, later).await.unwrap();
            }
            let blobs = meta.gc_due_blobs(later, 1000).await.unwrap();
            for d in &blobs {
                if !matches!(
                    meta.gc_review_blob(d, later).await.unwrap(),
                    BlobVerdict::Kept | BlobVerdict::NotDue
                ) {
                    meta.gc_forget_blob_review(d).await.unwrap();
                }
            }
            if manifests.is_empty() && blobs.is_empty() {
                break;
            }
        }
    }

    async fn the_sweep_and_both_walks_agree_on_what_is_live(backend: Backend) {
        for (case, nodes, want_live) in cases() {
            let (meta, _dir) = db_on(backend).await;
            let built = build(&meta, &nodes).await;
            let want_live: BTreeSet<&str> = want_live.iter().copied().collect();

            // The oracle: the dead manifests' payloads, and the blobs no live
            // manifest references.
            let live_blobs: BTreeSet<&str> = built
                .iter()
                .filter(|(n, _)| want_live.contains(*n))
                .flat_map(|(_, (_, _, blobs))| blobs.iter().map(|(b, _)| b.as_str()))
                .collect();
            let mut dead_blobs: HashMap<&str, u64> = HashMap::new();
            let mut want_bytes = 0;
            for (name, (_, size, blobs)) in &built {
                if want_live.contains(name) {
                    continue;
                }
                want_bytes += size;
                for (b, s) in blobs {
                    if !live_blobs.contains(b.as_str()) {
                        dead_blobs.insert(b, *s);
                    }
                }
            }
            want_bytes += dead_blobs.values().sum::<u64>();

            // 1. The upward walk, asked about each manifest.
            let mut tx = meta.begin_write().await.unwrap();
            let mut walked = BTreeSet::new();
            for (name, (id, _, _)) in &built {
                if Liveness::default().is_live(&mut tx, *id).await.unwrap() {
                    walked.insert(*name);
                }
            }
            assert_eq!(walked, want_live, "upward walk: {case}");

            // 2. The downward walk, measuring from every manifest.
            let all: Vec<i64> = built.values().map(|(id, _, _)| *id).collect();
            let measured = reclaimable(&mut tx, &all).await.unwrap();
            assert_eq!(measured, want_bytes, "reclaimable bytes: {case}");
            tx.rollback().await.unwrap();

            // 3. The sweep, run until nothing is due.
            sweep_to_the_end(&meta).await;
            let mut kept = BTreeSet::new();
            for (name, (id, _, _)) in &built {
                let there: Option<i64> =
                    sqlx::query_scalar("SELECT 1 FROM manifests WHERE id = $1")
                        .bind(id)
                        .fetch_optional(&meta.read)
                        .await
                        .unwrap();
                if there.is_some() {
                    kept.insert(*name);
                }
            }
            assert_eq!(kept, want_live, "sweep: {case}");
            let status = meta.gc_status(0).await.unwrap();
            assert_eq!(
                status.bytes_deleted as u64, want_bytes,
                "bytes swept: {case}"
            );
        }
    }

    /// The one shape where they part (see the module documentation): an
    /// index listing the manifest that is its subject. Nothing tags either;
    /// the walks count both reclaimable, the sweep keeps both.
    async fn a_holding_cycle_is_kept_by_the_sweep_but_measured_reclaimable(backend: Backend) {
        use crate::metadata::testing::store;
        use crate::oci::manifest::{OCI_INDEX, OCI_MANIFEST};
        let (meta, _dir) = db_on(backend).await;
        let (a, a_size) = image(&meta, "r", None, &[("cfg", 1)], None).await;
        let entry =
            serde_json::json!({"mediaType": OCI_MANIFEST, "digest": a.to_string(), "size": a_size});
        let cycle = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [entry.clone()], "subject": entry});
        let (x, x_size) = store(&meta, "r", None, OCI_INDEX, &cycle).await;
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM manifests ORDER BY id")
            .fetch_all(&meta.read)
            .await
            .unwrap();
        let mut tx = meta.begin_write().await.unwrap();
        for id in &ids {
            assert!(!Liveness::default().is_live(&mut tx, *id).await.unwrap());
        }
        assert_eq!(
            reclaimable(&mut tx, &ids).await.unwrap(),
            a_size + x_size + 1
        );
        tx.rollback().await.unwrap();
        sweep_to_the_end(&meta).await;
        for d in [&a, &x] {
            let there: Option<i64> =
                sqlx::query_scalar("SELECT 1 FROM manifests WHERE digest = $1")
                    .bind(d.to_string())
                    .fetch_optional(&meta.read)
                    .await
                    .unwrap();
            assert!(there.is_some(), "{d} swept");
        }
    }

    on_both_backends! {
        the_sweep_and_both_walks_agree_on_what_is_live => super::the_sweep_and_both_walks_agree_on_what_is_live;
        a_holding_cycle_is_kept_by_the_sweep_but_measured_reclaimable => super::a_holding_cycle_is_kept_by_the_sweep_but_measured_reclaimable;
    }
}
