//! Shared helpers of the metadata unit tests: a fresh database on either
//! backend (PostgreSQL: a real server, see `tests/common/postgres.rs`), a
//! macro running a test on both, and manifests stored from JSON.

use serde_json::json;

use super::tags::PlannedDeletion;
use super::{Backend, DatabaseConfig, Metadata, PostgresConfig, any_tag_write, open};
use crate::oci::Digest;
use crate::oci::manifest::{self, OCI_INDEX, OCI_MANIFEST, parse};

#[path = "../../tests/common/postgres.rs"]
pub(crate) mod postgres;

/// A fresh, migrated database on `backend` (the directory holds SQLite's file).
pub(crate) async fn db_on(backend: Backend) -> (Metadata, tempfile::TempDir) {
    let (config, dir) = config_on(backend).await;
    (open(&config).await.unwrap(), dir)
}

/// Where a fresh database on `backend` is (not yet created or migrated).
pub(crate) async fn config_on(backend: Backend) -> (DatabaseConfig, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = match backend {
        Backend::Sqlite => DatabaseConfig::Sqlite {
            path: dir.path().join("t.db"),
        },
        Backend::Postgres => {
            DatabaseConfig::Postgres(PostgresConfig::new(&postgres::fresh_database().await))
        }
    };
    (config, dir)
}

/// Runs the async test function `$body(backend: Backend)` once per backend:
/// tests `$name::sqlite` and `$name::postgres`.
macro_rules! on_both_backends {
    ($($name:ident => $body:path;)+) => {$(
        mod $name {
            use crate::metadata::Backend;
            #[tokio::test]
            async fn sqlite() {
                $body(Backend::Sqlite).await
            }
            #[tokio::test]
            async fn postgres() {
                $body(Backend::Postgres).await
            }
        }
    )+};
}
pub(crate) use on_both_backends;

pub(crate) fn digest(name: &str) -> Digest {
    Digest::sha256_of(name.as_bytes())
}

/// Stores an image manifest over blobs `(name, size)` (the first is the
/// config), maybe referring to `subject`; returns its digest and size.
pub(crate) async fn image(
    meta: &Metadata,
    repo: &str,
    tag: Option<&str>,
    blobs: &[(&str, u64)],
    subject: Option<&(Digest, u64)>,
) -> (Digest, u64) {
    for (name, size) in blobs {
        meta.link_blob(repo, &digest(name), *size).await.unwrap();
    }
    let d = |(name, size): &(&str, u64)| json!({"mediaType": "application/octet-stream", "digest": digest(name).to_string(), "size": size});
    let mut m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": d(&blobs[0]), "layers": blobs[1..].iter().map(d).collect::<Vec<_>>()});
    if let Some((s, size)) = subject {
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": s.to_string(), "size": size});
    }
    store(meta, repo, tag, OCI_MANIFEST, &m).await
}

pub(crate) async fn index(
    meta: &Metadata,
    repo: &str,
    tag: Option<&str>,
    children: &[&(Digest, u64)],
) -> (Digest, u64) {
    let m = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children.iter()
        .map(|(d, s)| json!({"mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": s}))
        .collect::<Vec<_>>()});
    store(meta, repo, tag, OCI_INDEX, &m).await
}

pub(crate) async fn store(
    meta: &Metadata,
    repo: &str,
    tag: Option<&str>,
    media_type: &str,
    m: &serde_json::Value,
) -> (Digest, u64) {
    let payload = serde_json::to_vec(m).unwrap();
    let d = Digest::sha256_of(&payload);
    let parsed = parse(Some(media_type), &payload).unwrap();
    meta.put_manifest(repo, &d, &parsed, &payload, tag, &any_tag_write)
        .await
        .unwrap();
    (d, payload.len() as u64)
}

/// Points `tag` of `repo` at the stored manifest `target` (a PUT of its
/// payload by tag).
pub(crate) async fn point_tag(meta: &Metadata, repo: &str, target: &Digest, tag: &str) {
    let payload = meta
        .manifest(repo, &crate::oci::Reference::Digest(target.clone()))
        .await
        .unwrap()
        .unwrap()
        .payload;
    let parsed = parse(None, &payload).unwrap();
    meta.put_manifest(repo, target, &parsed, &payload, Some(tag), &any_tag_write)
        .await
        .unwrap();
}

pub(crate) async fn repo_id(meta: &Metadata, repo: &str) -> i64 {
    meta.tags_version(repo)
        .await
        .unwrap()
        .unwrap()
        .repository_id
}

/// A plan deleting `tags` of `repo` as they are now.
pub(crate) async fn plan(
    meta: &Metadata,
    repo: &str,
    tags: &[&str],
) -> (i64, Vec<PlannedDeletion>) {
    let id = repo_id(meta, repo).await;
    let planned = meta
        .policy_tags(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| tags.contains(&t.name.as_str()))
        .map(|t| PlannedDeletion {
            name: t.name,
            manifest_id: t.manifest_id,
            updated_at: t.updated_at,
        })
        .collect();
    (id, planned)
}

pub(crate) async fn put(
    meta: &Metadata,
    repo: &str,
    json: serde_json::Value,
    tag: Option<&str>,
) -> Digest {
    let payload = serde_json::to_vec(&json).unwrap();
    let digest = Digest::sha256_of(&payload);
    let parsed = manifest::parse(None, &payload).unwrap();
    meta.put_manifest(repo, &digest, &parsed, &payload, tag, &any_tag_write)
        .await
        .unwrap();
    digest
}
