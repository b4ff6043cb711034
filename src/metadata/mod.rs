//! Registry metadata: repositories, manifests and their references, tags,
//! per-repository blob links and uploads in progress. All SQL lives here
//! (the management API's queries in `manage.rs`).
//!
//! SQLite is the embedded default: a single writer connection (SQLite
//! serialises writers anyway; one connection avoids busy/upgrade deadlocks) and
//! a small pool of readers in WAL mode. The statements stay within what
//! PostgreSQL also accepts, so a PostgreSQL backend can follow behind the same
//! methods.

mod manage;

pub use manage::{
    DeletionOutcome, PlannedDeletion, PolicyTag, RepositoryDeletions, RepositoryRow,
    RepositorySummary, TagDetail, TagKind, TagOrder, TagQuery,
};

use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::oci::{Digest, Manifest, Reference};

pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("blob {0} is not in the repository")]
    BlobUnknown(Digest),
    #[error("manifest {0} is not in the repository")]
    ManifestUnknown(Digest),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    /// A protected or immutable tag rule forbids the write.
    #[error("{0}")]
    TagRefused(String),
    /// The delete would take away what another manifest in the repository
    /// still references; the message says what holds it.
    #[error("{0}")]
    Referenced(String),
}

impl MetadataError {
    /// SQLite's "database is locked" (SQLITE_BUSY): worth a retry.
    pub fn is_busy(&self) -> bool {
        match self {
            MetadataError::Database(sqlx::Error::Database(e)) => {
                // Primary code 5, whatever the extended bits.
                e.code()
                    .and_then(|c| c.parse::<i32>().ok())
                    .is_some_and(|c| c & 0xff == 5)
            }
            _ => false,
        }
    }
}

/// What a write does to a tag, for protected and immutable tag rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagOp {
    /// The tag does not exist yet.
    Create,
    /// The tag exists and would point at another manifest.
    Move,
    Delete,
}

/// Decides whether a tag write may happen (`Err`: why not). Called inside the
/// writing transaction, on the tags as they are there, so no concurrent write
/// can slip between the decision and the write.
pub type TagCheck<'a> = &'a (dyn Fn(&str, TagOp) -> std::result::Result<(), String> + Send + Sync);

/// A [`TagCheck`] that allows everything (no tag rules).
pub fn any_tag_write(_: &str, _: TagOp) -> std::result::Result<(), String> {
    Ok(())
}

/// How many holders and tags a refusal names before "and N more".
const HOLDERS_SHOWN: usize = 2;
const TAGS_SHOWN: usize = 3;

/// The queries that find what holds an object, built around one `seed`
/// query of manifest ids (binding the object's digest and a repository id):
/// the first holders' digests, their count, and the tags on them or on any
/// index above them (indexes listing them, and so on up), which are what
/// keeps the object in use.
struct HolderQueries {
    digests: &'static str,
    count: &'static str,
    tags: &'static str,
}

macro_rules! holder_queries {
    ($seed:literal) => {
        HolderQueries {
            digests: concat!(
                "SELECT digest FROM manifests WHERE id IN (",
                $seed,
                ") ORDER BY id LIMIT ?"
            ),
            count: concat!("SELECT count(*) FROM (", $seed, ")"),
            tags: concat!(
                "WITH RECURSIVE up(id) AS (",
                $seed,
                " UNION SELECT r.parent_id FROM manifest_references r JOIN up ON r.child_id = up.id)
                 SELECT DISTINCT t.name FROM tags t JOIN up ON t.manifest_id = up.id
                  ORDER BY t.name LIMIT ?"
            ),
        }
    };
}

/// Manifests of the repository that reference a blob (config or layer).
const BLOB_HOLDERS: HolderQueries = holder_queries!(
    "SELECT mb.manifest_id FROM manifest_blobs mb JOIN manifests m ON m.id = mb.manifest_id
      WHERE mb.digest = ? AND m.repository_id = ?"
);

/// Indexes (and manifest lists) of the repository that list a manifest.
const MANIFEST_HOLDERS: HolderQueries = holder_queries!(
    "SELECT r.parent_id FROM manifest_references r JOIN manifests c ON c.id = r.child_id
      WHERE c.digest = ? AND c.repository_id = ?"
);

/// What still references an object that a delete would take away: the
/// first few referencing manifests (at most `HOLDERS_SHOWN + 1`), how many
/// there are, and the first few tags (at most `TAGS_SHOWN + 1`) on them or on
/// an index above them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holders {
    digests: Vec<String>,
    count: i64,
    tags: Vec<String>,
}

/// The refusal a client reads, e.g. "manifest sha256:c… is referenced by
/// index sha256:i… (tag v1); delete the index first".
fn referenced_message(object: &str, holder_kind: &str, h: &Holders) -> String {
    let shown = &h.digests[..h.digests.len().min(HOLDERS_SHOWN)];
    let mut by = format!("{holder_kind} {}", shown.join(&format!(", {holder_kind} ")));
    let more = h.count - shown.len() as i64;
    if more > 0 {
        by.push_str(&format!(" and {more} more"));
    }
    let tags = match h.tags.len() {
        0 => "untagged".to_string(),
        1 => format!("tag {}", h.tags[0]),
        n if n <= TAGS_SHOWN => format!("tags {}", h.tags.join(", ")),
        _ => format!("tags {}, …", h.tags[..TAGS_SHOWN].join(", ")),
    };
    let them = match (h.count, holder_kind) {
        (1, kind) => format!("the {kind}"),
        (_, "index") => "those indexes".to_string(),
        (_, kind) => format!("those {kind}s"),
    };
    format!("{object} is referenced by {by} ({tags}); delete {them} first")
}

/// Identifies one state of a repository's tag set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagsVersion {
    pub repository_id: i64,
    pub version: i64,
}

/// A manifest as served to clients.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    pub digest: Digest,
    pub media_type: String,
    pub payload: Vec<u8>,
}

/// A manifest whose `subject` is some other manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Referrer {
    pub digest: String,
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub size: i64,
    pub annotations: Option<String>,
}

#[derive(Clone)]
pub struct Metadata {
    read: SqlitePool,
    write: SqlitePool,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn split_lines(joined: Option<String>) -> Vec<String> {
    joined
        .map(|j| j.split('\n').map(str::to_string).collect())
        .unwrap_or_default()
}

fn parse_digest(s: String) -> Result<Digest> {
    Digest::from_str(&s).map_err(|e| MetadataError::Corrupt(e.to_string()))
}

/// Whether a connection handed back to its pool may be used again: only when
/// no transaction is left open on it. When a COMMIT fails (for example with
/// "database or disk is full") SQLite may already have rolled the transaction
/// back, the ROLLBACK that follows then fails too, and sqlx's count of open
/// transactions stays raised: every later `begin` on that connection would
/// open a savepoint inside a transaction that is never committed, and writes
/// would be acknowledged and then lost. Such a connection is closed instead
/// (the pool opens a fresh one). The ping first lets the rollback queued by a
/// dropped transaction run before the check.
async fn clean_after_use(conn: &mut sqlx::SqliteConnection) -> sqlx::Result<bool> {
    use sqlx::{Connection as _, Executor as _};
    conn.ping().await?;
    if conn.is_in_transaction() {
        tracing::error!(
            "closing a database connection left inside a transaction (a commit or rollback failed)"
        );
        return Ok(false);
    }
    // SQLite's own view: BEGIN fails inside a transaction.
    match conn.execute("BEGIN").await {
        Ok(_) => {
            conn.execute("ROLLBACK").await?;
        }
        Err(e) => {
            tracing::error!("closing a database connection SQLite keeps inside a transaction: {e}");
            return Ok(false);
        }
    }
    Ok(true)
}

impl Metadata {
    /// Opens (creating and migrating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path) -> Result<Metadata> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-16000");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .after_release(|conn, _| Box::pin(async move { clean_after_use(conn).await }))
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .after_release(|conn, _| Box::pin(async move { clean_after_use(conn).await }))
            .connect_with(options.read_only(true))
            .await?;
        Ok(Metadata { read, write })
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    pub async fn repository_exists(&self, repo: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM repositories WHERE name = ?")
            .bind(repo)
            .fetch_optional(&self.read)
            .await?
            .is_some())
    }

    async fn ensure_repository(tx: &mut Transaction<'_, Sqlite>, repo: &str) -> Result<i64> {
        sqlx::query("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING")
            .bind(repo)
            .bind(now_ms())
            .execute(&mut **tx)
            .await?;
        Ok(
            sqlx::query_scalar("SELECT id FROM repositories WHERE name = ?")
                .bind(repo)
                .fetch_one(&mut **tx)
                .await?,
        )
    }

    /// The size of `digest` if the repository may see it.
    pub async fn blob_in_repository(&self, repo: &str, digest: &Digest) -> Result<Option<u64>> {
        let size: Option<i64> = sqlx::query_scalar(
            "SELECT b.size FROM repository_blobs rb
               JOIN repositories r ON r.id = rb.repository_id
               JOIN blobs b ON b.digest = rb.digest
              WHERE r.name = ? AND rb.digest = ?",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&self.read)
        .await?;
        Ok(size.map(|s| s as u64))
    }

    /// Records a committed blob and makes it visible in `repo`.
    pub async fn link_blob(&self, repo: &str, digest: &Digest, size: u64) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let repo_id = Self::ensure_repository(&mut tx, repo).await?;
        let now = now_ms();
        sqlx::query("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT (digest) DO NOTHING")
            .bind(digest.to_string())
            .bind(size as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO repository_blobs (repository_id, digest, linked_at) VALUES (?, ?, ?)
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
        let mut tx = self.write.begin().await?;
        let repo_id: Option<i64> = sqlx::query_scalar(
            "SELECT r.id FROM repository_blobs rb JOIN repositories r ON r.id = rb.repository_id
              WHERE r.name = ? AND rb.digest = ?",
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
        sqlx::query("DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?")
            .bind(repo_id)
            .bind(digest.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The manifests that `q.seed` selects (binding a digest and a
    /// repository id), and the tags on them or on any index above them;
    /// `None` when it selects none.
    async fn holders(
        tx: &mut Transaction<'_, Sqlite>,
        q: &HolderQueries,
        digest: &Digest,
        repo_id: i64,
    ) -> Result<Option<Holders>> {
        let digests: Vec<String> = sqlx::query_scalar(q.digests)
            .bind(digest.to_string())
            .bind(repo_id)
            .bind(HOLDERS_SHOWN as i64 + 1)
            .fetch_all(&mut **tx)
            .await?;
        if digests.is_empty() {
            return Ok(None);
        }
        let count: i64 = if digests.len() > HOLDERS_SHOWN {
            sqlx::query_scalar(q.count)
                .bind(digest.to_string())
                .bind(repo_id)
                .fetch_one(&mut **tx)
                .await?
        } else {
            digests.len() as i64
        };
        let tags: Vec<String> = sqlx::query_scalar(q.tags)
            .bind(digest.to_string())
            .bind(repo_id)
            .bind(TAGS_SHOWN as i64 + 1)
            .fetch_all(&mut **tx)
            .await?;
        Ok(Some(Holders {
            digests,
            count,
            tags,
        }))
    }

    pub async fn create_upload(&self, repo: &str, id: &str) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let repo_id = Self::ensure_repository(&mut tx, repo).await?;
        sqlx::query("INSERT INTO uploads (id, repository_id, created_at) VALUES (?, ?, ?)")
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
              WHERE u.id = ? AND r.name = ?",
        )
        .bind(id)
        .bind(repo)
        .fetch_optional(&self.read)
        .await?
        .is_some())
    }

    pub async fn delete_upload(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM uploads WHERE id = ?")
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Stores a manifest (idempotently) and, if given, points `tag` at it, in
    /// one transaction. Every referenced blob and child manifest must already
    /// be in the repository.
    pub async fn put_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        manifest: &Manifest,
        payload: &[u8],
        tag: Option<&str>,
        check: TagCheck<'_>,
    ) -> Result<()> {
        let mut tx = self.write.begin().await?;
        let repo_id = Self::ensure_repository(&mut tx, repo).await?;
        for blob in &manifest.blobs {
            let linked = sqlx::query(
                "SELECT 1 FROM repository_blobs WHERE repository_id = ? AND digest = ?",
            )
            .bind(repo_id)
            .bind(blob.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if linked.is_none() {
                return Err(MetadataError::BlobUnknown(blob.clone()));
            }
        }
        let mut child_ids = Vec::with_capacity(manifest.children.len());
        for child in &manifest.children {
            let id: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM manifests WHERE repository_id = ? AND digest = ?",
            )
            .bind(repo_id)
            .bind(child.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            child_ids.push(id.ok_or_else(|| MetadataError::ManifestUnknown(child.clone()))?);
        }
        let now = now_ms();
        let annotations = manifest
            .annotations
            .as_ref()
            .filter(|a| !a.is_empty())
            .map(|a| serde_json::to_string(a).unwrap_or_default());
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size, config_digest,
                                    subject_digest, annotations, payload, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (repository_id, digest) DO NOTHING
             RETURNING id",
        )
        .bind(repo_id)
        .bind(digest.to_string())
        .bind(manifest.kind.media_type())
        .bind(&manifest.artifact_type)
        .bind(payload.len() as i64)
        .bind(manifest.config.as_ref().map(Digest::to_string))
        .bind(manifest.subject.as_ref().map(Digest::to_string))
        .bind(annotations)
        .bind(payload)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let manifest_id = match inserted {
            Some(id) => {
                for blob in &manifest.blobs {
                    sqlx::query("INSERT INTO manifest_blobs (manifest_id, digest) VALUES (?, ?) ON CONFLICT DO NOTHING")
                        .bind(id)
                        .bind(blob.to_string())
                        .execute(&mut *tx)
                        .await?;
                }
                for child in child_ids {
                    sqlx::query("INSERT INTO manifest_references (parent_id, child_id) VALUES (?, ?) ON CONFLICT DO NOTHING")
                        .bind(id)
                        .bind(child)
                        .execute(&mut *tx)
                        .await?;
                }
                id
            }
            None => {
                sqlx::query_scalar(
                    "SELECT id FROM manifests WHERE repository_id = ? AND digest = ?",
                )
                .bind(repo_id)
                .bind(digest.to_string())
                .fetch_one(&mut *tx)
                .await?
            }
        };
        if let Some(tag) = tag {
            let current: Option<i64> = sqlx::query_scalar(
                "SELECT manifest_id FROM tags WHERE repository_id = ? AND name = ?",
            )
            .bind(repo_id)
            .bind(tag)
            .fetch_optional(&mut *tx)
            .await?;
            let op = match current {
                None => Some(TagOp::Create),
                Some(id) if id != manifest_id => Some(TagOp::Move),
                Some(_) => None,
            };
            if let Some(op) = op {
                check(tag, op).map_err(MetadataError::TagRefused)?;
            }
            sqlx::query(
                "INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (repository_id, name) DO UPDATE
                    SET manifest_id = excluded.manifest_id, updated_at = excluded.updated_at
                  WHERE tags.manifest_id <> excluded.manifest_id",
            )
            .bind(repo_id)
            .bind(tag)
            .bind(manifest_id)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &Reference,
    ) -> Result<Option<StoredManifest>> {
        let row = match reference {
            Reference::Tag(tag) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.payload FROM tags t
                       JOIN repositories r ON r.id = t.repository_id
                       JOIN manifests m ON m.id = t.manifest_id
                      WHERE r.name = ? AND t.name = ?",
                )
                .bind(repo)
                .bind(tag)
                .fetch_optional(&self.read)
                .await?
            }
            Reference::Digest(digest) => {
                sqlx::query(
                    "SELECT m.digest, m.media_type, m.payload FROM manifests m
                       JOIN repositories r ON r.id = m.repository_id
                      WHERE r.name = ? AND m.digest = ?",
                )
                .bind(repo)
                .bind(digest.to_string())
                .fetch_optional(&self.read)
                .await?
            }
        };
        row.map(|row| {
            Ok(StoredManifest {
                digest: parse_digest(row.try_get("digest")?)?,
                media_type: row.try_get("media_type")?,
                payload: row.try_get("payload")?,
            })
        })
        .transpose()
    }

    /// Deletes a manifest and every tag pointing at it; `false` when absent.
    /// Refused ([`MetadataError::Referenced`]) while an index of the
    /// repository lists it; `check` is asked about each of its tags. Both are
    /// decided in the deleting transaction.
    pub async fn delete_manifest(
        &self,
        repo: &str,
        digest: &Digest,
        check: TagCheck<'_>,
    ) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let found: Option<(i64, i64)> = sqlx::query_as(
            "SELECT m.id, m.repository_id FROM manifests m JOIN repositories r ON r.id = m.repository_id
              WHERE r.name = ? AND m.digest = ?",
        )
        .bind(repo)
        .bind(digest.to_string())
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, repo_id)) = found else {
            return Ok(false);
        };
        // An index (or manifest list) of the repository still lists it:
        // deleting it would leave that index, and every tag above it, broken.
        // Referrers (`subject`) do not hold their subject: OCI lets a subject
        // go, and garbage collection then reviews its referrers.
        let holders = Self::holders(&mut tx, &MANIFEST_HOLDERS, digest, repo_id).await?;
        if let Some(holders) = holders {
            return Err(MetadataError::Referenced(referenced_message(
                &format!("manifest {digest}"),
                "index",
                &holders,
            )));
        }
        let tags: Vec<String> = sqlx::query_scalar("SELECT name FROM tags WHERE manifest_id = ?")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
        for tag in &tags {
            check(tag, TagOp::Delete).map_err(MetadataError::TagRefused)?;
        }
        sqlx::query("DELETE FROM manifests WHERE id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
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
        let mut tx = self.write.begin().await?;
        let tags: Vec<String> = sqlx::query_scalar(
            "SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id WHERE r.name = ?",
        )
        .bind(repo)
        .fetch_all(&mut *tx)
        .await?;
        for tag in &tags {
            check(tag, TagOp::Delete).map_err(MetadataError::TagRefused)?;
        }
        let uploads: Vec<String> = sqlx::query_scalar(
            "SELECT u.id FROM uploads u JOIN repositories r ON r.id = u.repository_id WHERE r.name = ?",
        )
        .bind(repo)
        .fetch_all(&mut *tx)
        .await?;
        let done = sqlx::query("DELETE FROM repositories WHERE name = ?")
            .bind(repo)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok((done.rows_affected() > 0).then_some(uploads))
    }

    /// Deletes a tag (not the manifest it points at); `false` when absent.
    pub async fn delete_tag(&self, repo: &str, tag: &str, check: TagCheck<'_>) -> Result<bool> {
        let mut tx = self.write.begin().await?;
        let exists: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM tags t JOIN repositories r ON r.id = t.repository_id
              WHERE r.name = ? AND t.name = ?",
        )
        .bind(repo)
        .bind(tag)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Ok(false);
        }
        check(tag, TagOp::Delete).map_err(MetadataError::TagRefused)?;
        sqlx::query(
            "DELETE FROM tags
              WHERE name = ? AND repository_id = (SELECT id FROM repositories WHERE name = ?)",
        )
        .bind(tag)
        .bind(repo)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The repository's id and tag version (see the `tags_version` migration),
    /// or `None` when it does not exist.
    pub async fn tags_version(&self, repo: &str) -> Result<Option<TagsVersion>> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT id, tags_version FROM repositories WHERE name = ?")
                .bind(repo)
                .fetch_optional(&self.read)
                .await?;
        Ok(row.map(|(repository_id, version)| TagsVersion {
            repository_id,
            version,
        }))
    }

    /// Tag names of a repository in lexical order after `last`, at most
    /// `limit` (all when `None`).
    pub async fn tags(
        &self,
        repository_id: i64,
        limit: Option<u32>,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        // SQLite joins the page into one string: one row to decode instead of
        // thousands (names cannot contain a newline). PostgreSQL: string_agg.
        let joined: Option<String> = sqlx::query_scalar(
            "SELECT group_concat(name, char(10)) FROM
               (SELECT name FROM tags WHERE repository_id = ? AND name > ? ORDER BY name LIMIT ?)",
        )
        .bind(repository_id)
        .bind(last.unwrap_or(""))
        .bind(limit.map(i64::from).unwrap_or(-1))
        .fetch_one(&self.read)
        .await?;
        Ok(split_lines(joined))
    }

    /// Repository names in lexical order after `last`, at most `limit`.
    pub async fn repositories(
        &self,
        limit: Option<u32>,
        last: Option<&str>,
    ) -> Result<Vec<String>> {
        let joined: Option<String> = sqlx::query_scalar(
            "SELECT group_concat(name, char(10)) FROM
               (SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?)",
        )
        .bind(last.unwrap_or(""))
        .bind(limit.map(i64::from).unwrap_or(-1))
        .fetch_one(&self.read)
        .await?;
        Ok(split_lines(joined))
    }

    /// Manifests in `repo` whose subject is `subject`, optionally only those
    /// of one artifact type, oldest first.
    pub async fn referrers(
        &self,
        repo: &str,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Referrer>> {
        let rows = sqlx::query(
            "SELECT m.digest, m.media_type, m.artifact_type, m.size, m.annotations FROM manifests m
               JOIN repositories r ON r.id = m.repository_id
              WHERE r.name = ? AND m.subject_digest = ? AND (? IS NULL OR m.artifact_type = ?)
              ORDER BY m.id",
        )
        .bind(repo)
        .bind(subject.to_string())
        .bind(artifact_type)
        .bind(artifact_type)
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|row| {
                Ok(Referrer {
                    digest: row.try_get("digest")?,
                    media_type: row.try_get("media_type")?,
                    artifact_type: row.try_get("artifact_type")?,
                    size: row.try_get("size")?,
                    annotations: row.try_get("annotations")?,
                })
            })
            .collect()
    }
}

/// What a blob review decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobVerdict {
    /// Still referenced (or re-queued for later): kept.
    Kept,
    /// Its rows are deleted; the caller deletes the file, then
    /// [`Metadata::gc_forget_blob_review`].
    Deleted { size: u64 },
    /// Its rows were already gone (a sweep stopped between the commit and
    /// the file deletion): the caller deletes the file if present, then forgets.
    AlreadyGone,
}

/// Garbage collection figures (the JSON of `GET /api/v1/gc`, which the
/// operator reads back).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GcStatus {
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

/// What one sweep did (the JSON of `POST /api/v1/gc/sweep`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SweepCounts {
    pub manifests_deleted: i64,
    pub blobs_deleted: i64,
    pub bytes_deleted: i64,
    pub uploads_expired: i64,
}

impl Metadata {
    /// Sets the delay between an event and the review it queues.
    pub async fn gc_set_review_delay(&self, delay: Duration) -> Result<()> {
        sqlx::query("UPDATE gc_settings SET review_delay_ms = ? WHERE id = 1")
            .bind(delay.as_millis() as i64)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Manifest reviews due at `now`, oldest first.
    pub async fn gc_due_manifests(&self, now: i64, limit: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query_scalar(
            "SELECT manifest_id FROM gc_manifest_reviews WHERE review_after <= ?
              ORDER BY review_after LIMIT ?",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.read)
        .await?)
    }

    /// Reviews one manifest: deletes it if it is still due, untagged, not
    /// listed by an index and not a referrer of a live manifest, all checked
    /// in the deleting transaction. Returns the bytes freed (its payload).
    pub async fn gc_review_manifest(&self, id: i64, now: i64) -> Result<Option<u64>> {
        let mut tx = self.write.begin().await?;
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM gc_manifest_reviews WHERE manifest_id = ? AND review_after <= ?",
        )
        .bind(id)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if due.is_none() {
            return Ok(None); // re-queued for later, or already reviewed
        }
        let dangling: Option<i64> = sqlx::query_scalar(
            "SELECT m.size FROM manifests m
              WHERE m.id = ?
                AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.manifest_id = m.id)
                AND NOT EXISTS (SELECT 1 FROM manifest_references r WHERE r.child_id = m.id)
                AND NOT EXISTS (SELECT 1 FROM manifests s
                                 WHERE m.subject_digest IS NOT NULL
                                   AND s.repository_id = m.repository_id
                                   AND s.digest = m.subject_digest)",
        )
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(size) = dangling {
            // Cascades queue its blobs, its children and its referrers.
            sqlx::query("DELETE FROM manifests WHERE id = ?")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            // Counted in the deleting transaction: the totals stay exact
            // even when a sweep is killed.
            sqlx::query(
                "UPDATE gc_stats SET manifests_deleted = manifests_deleted + 1,
                        bytes_deleted = bytes_deleted + ? WHERE id = 1",
            )
            .bind(size)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("DELETE FROM gc_manifest_reviews WHERE manifest_id = ?")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(dangling.map(|s| s as u64))
    }

    /// Blob reviews due at `now`, oldest first.
    pub async fn gc_due_blobs(&self, now: i64, limit: i64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT digest FROM gc_blob_reviews WHERE review_after <= ?
              ORDER BY review_after LIMIT ?",
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
        let mut tx = self.write.begin().await?;
        let due: Option<i64> = sqlx::query_scalar(
            "SELECT 1 FROM gc_blob_reviews WHERE digest = ? AND review_after <= ?",
        )
        .bind(digest)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        if due.is_none() {
            return Ok(BlobVerdict::Kept);
        }
        let size: Option<i64> = sqlx::query_scalar("SELECT size FROM blobs WHERE digest = ?")
            .bind(digest)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(size) = size else {
            return Ok(BlobVerdict::AlreadyGone);
        };
        let referenced: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM manifest_blobs WHERE digest = ? LIMIT 1")
                .bind(digest)
                .fetch_optional(&mut *tx)
                .await?;
        if referenced.is_some() {
            sqlx::query("DELETE FROM gc_blob_reviews WHERE digest = ?")
                .bind(digest)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(BlobVerdict::Kept);
        }
        sqlx::query("DELETE FROM repository_blobs WHERE digest = ?")
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM blobs WHERE digest = ?")
            .bind(digest)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE gc_stats SET blobs_deleted = blobs_deleted + 1,
                    bytes_deleted = bytes_deleted + ? WHERE id = 1",
        )
        .bind(size)
        .execute(&mut *tx)
        .await?;
        // The unlink trigger re-queued it: keep one review, due now, marked.
        sqlx::query(
            "INSERT OR REPLACE INTO gc_blob_reviews (digest, review_after, event) VALUES (?, ?, 'deleting')",
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
        sqlx::query(
            "DELETE FROM gc_blob_reviews
              WHERE digest = ? AND NOT EXISTS (SELECT 1 FROM blobs WHERE digest = ?)",
        )
        .bind(digest)
        .bind(digest)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    /// Uploads started before `before` (abandoned).
    pub async fn gc_expired_uploads(&self, before: i64) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar("SELECT id FROM uploads WHERE created_at < ? LIMIT 1000")
                .bind(before)
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Marks a sweep finished at `at`.
    pub async fn gc_finish_sweep(&self, at: i64) -> Result<()> {
        sqlx::query("UPDATE gc_stats SET last_sweep_at = ?, sweeps = sweeps + 1 WHERE id = 1")
            .bind(at)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    /// Adds expired upload sessions to the totals (manifests and blobs are
    /// counted in their deleting transactions).
    pub async fn gc_add_expired_uploads(&self, n: i64) -> Result<()> {
        sqlx::query("UPDATE gc_stats SET uploads_expired = uploads_expired + ? WHERE id = 1")
            .bind(n)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    pub async fn gc_status(&self, now: i64) -> Result<GcStatus> {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM gc_manifest_reviews) AS pm,
                    (SELECT count(*) FROM gc_blob_reviews) AS pb,
                    (SELECT count(*) FROM gc_manifest_reviews WHERE review_after <= ?) AS dm,
                    (SELECT count(*) FROM gc_blob_reviews WHERE review_after <= ?) AS db,
                    (SELECT review_delay_ms FROM gc_settings) AS delay,
                    s.last_sweep_at, s.sweeps, s.manifests_deleted, s.blobs_deleted,
                    s.bytes_deleted, s.uploads_expired
               FROM gc_stats s WHERE s.id = 1",
        )
        .bind(now)
        .bind(now)
        .fetch_one(&self.read)
        .await?;
        Ok(GcStatus {
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

    /// Every blob row (digest, size), for fsck.
    pub async fn all_blobs(&self) -> Result<Vec<(String, i64)>> {
        Ok(
            sqlx::query_as("SELECT digest, size FROM blobs ORDER BY digest")
                .fetch_all(&self.read)
                .await?,
        )
    }

    /// Every manifest (id, repository, digest, media type, payload), for fsck.
    pub async fn all_manifests(&self) -> Result<Vec<(i64, String, String, String, Vec<u8>)>> {
        Ok(sqlx::query_as(
            "SELECT m.id, r.name, m.digest, m.media_type, m.payload
               FROM manifests m JOIN repositories r ON r.id = m.repository_id ORDER BY m.id",
        )
        .fetch_all(&self.read)
        .await?)
    }

    /// Every upload id, for fsck.
    pub async fn all_uploads(&self) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM uploads")
            .fetch_all(&self.read)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::manifest;

    fn holders(digests: &[&str], count: i64, tags: &[&str]) -> Holders {
        Holders {
            digests: digests.iter().map(|s| s.to_string()).collect(),
            count,
            tags: tags.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn referenced_messages_name_the_holders_and_their_tags() {
        let cases = [
            (
                "index",
                holders(&["sha256:i"], 1, &["v1"]),
                "manifest sha256:c is referenced by index sha256:i (tag v1); delete the index first",
            ),
            (
                "manifest",
                holders(&["sha256:m"], 1, &[]),
                "manifest sha256:c is referenced by manifest sha256:m (untagged); delete the manifest first",
            ),
            (
                "index",
                holders(&["sha256:a", "sha256:b"], 2, &["a", "b", "c"]),
                "manifest sha256:c is referenced by index sha256:a, index sha256:b (tags a, b, c); delete those indexes first",
            ),
            (
                "manifest",
                holders(
                    &["sha256:a", "sha256:b", "sha256:x"],
                    7,
                    &["a", "b", "c", "d"],
                ),
                "manifest sha256:c is referenced by manifest sha256:a, manifest sha256:b and 5 more (tags a, b, c, …); delete those manifests first",
            ),
        ];
        for (kind, h, want) in cases {
            assert_eq!(referenced_message("manifest sha256:c", kind, &h), want);
        }
    }

    async fn put(
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

    fn image(config: &Digest, layer: &Digest) -> serde_json::Value {
        serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer.to_string(), "size": 5}],
        })
    }

    /// The reference checks of the delete paths, on the database alone: what
    /// an index lists and what a manifest references stay until their holder
    /// is gone; a subject does not hold its referrers' deletion back.
    #[tokio::test]
    async fn deletes_refuse_what_is_still_referenced() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Metadata::open_sqlite(&dir.path().join("t.db"))
            .await
            .unwrap();
        let config = Digest::sha256_of(b"{}");
        let layer = Digest::sha256_of(b"layer");
        for (d, n) in [(&config, 2), (&layer, 5)] {
            meta.link_blob("r", d, n).await.unwrap();
            meta.link_blob("other", d, n).await.unwrap();
        }
        let child = put(&meta, "r", image(&config, &layer), None).await;
        let index = put(
            &meta,
            "r",
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "digest": child.to_string(), "size": 1}],
            }),
            Some("v1"),
        )
        .await;
        let referrer = put(
            &meta,
            "r",
            serde_json::json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": "application/x-sig",
                "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": config.to_string(), "size": 2},
                "layers": [],
                "subject": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": index.to_string(), "size": 1},
            }),
            None,
        )
        .await;

        let refused = |r: Result<bool>| match r {
            Err(MetadataError::Referenced(m)) => m,
            other => panic!("not refused: {other:?}"),
        };
        let m = refused(meta.delete_manifest("r", &child, &any_tag_write).await);
        assert_eq!(
            m,
            format!(
                "manifest {child} is referenced by index {index} (tag v1); delete the index first"
            )
        );
        let m = refused(meta.unlink_blob("r", &layer).await);
        assert_eq!(
            m,
            format!(
                "blob {layer} is referenced by manifest {child} (tag v1); delete the manifest first"
            )
        );
        let m = refused(meta.unlink_blob("r", &config).await);
        assert!(m.contains(&format!("manifest {child}")), "{m}");
        assert!(m.contains(&format!("manifest {referrer}")), "{m}");
        // Another repository's links are its own.
        assert!(meta.unlink_blob("other", &layer).await.unwrap());

        // The subject may go before its referrer; then the index, the child,
        // and the blobs once nothing references them.
        assert!(
            meta.delete_manifest("r", &index, &any_tag_write)
                .await
                .unwrap()
        );
        assert!(
            meta.delete_manifest("r", &child, &any_tag_write)
                .await
                .unwrap()
        );
        assert!(meta.unlink_blob("r", &layer).await.unwrap());
        let m = refused(meta.unlink_blob("r", &config).await);
        assert_eq!(
            m,
            format!(
                "blob {config} is referenced by manifest {referrer} (untagged); delete the manifest first"
            )
        );
        assert!(
            meta.delete_manifest("r", &referrer, &any_tag_write)
                .await
                .unwrap()
        );
        assert!(meta.unlink_blob("r", &config).await.unwrap());
        assert!(!meta.unlink_blob("r", &config).await.unwrap());
    }
}
