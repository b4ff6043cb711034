//! Registry metadata: repositories, manifests and their references, tags,
//! per-repository blob links and uploads in progress, and garbage
//! collection's review queues. All SQL of berth lives in this module; it
//! knows nothing of HTTP, access rules or policies, and imports nothing of
//! `registry` (which is above it).
//!
//! One file per resource, each adding its methods to [`Metadata`]:
//! - `repositories`: existence, the catalog, listings by path, deletion;
//! - `blobs`: blob rows, repository links, upload sessions;
//! - `manifests`: storing, serving and deleting manifests;
//! - `tags`: tag rules hook, tag lists and pages, cleanup deletions;
//! - `referrers`: manifests whose `subject` is a given manifest;
//! - `gc`: the review queues and sweeps' transactions;
//! - `usage`: repository and manifest sizes;
//! - `live`: what is live (kept by garbage collection), defined once;
//! - `holders`: what a delete would take away from whom (refusals).
//!
//! The backend is chosen in one place, [`open`], from a [`DatabaseConfig`].
//! SQLite is the embedded default; what only SQLite accepts is in `sqlite`
//! (see its documentation), so a second dialect slots in beside it.

mod blobs;
mod gc;
mod holders;
mod live;
mod manifests;
mod referrers;
mod repositories;
mod sqlite;
mod tags;
mod usage;

#[cfg(test)]
mod testing;

pub use gc::{BlobVerdict, GcState};
pub use manifests::StoredManifest;
pub use referrers::Referrer;
pub use repositories::{RepositoryRow, RepositorySummary};
pub use tags::{
    DeletionOutcome, PlannedDeletion, PolicyTag, RepositoryDeletions, TagCheck, TagDetail, TagKind,
    TagOp, TagOrder, TagQuery, TagsVersion, any_tag_write,
};

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::oci::Digest;

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
    /// The database is busy (SQLite: "database is locked"): worth a retry.
    pub fn is_busy(&self) -> bool {
        match self {
            MetadataError::Database(e) => sqlite::is_busy(e),
            _ => false,
        }
    }
}

/// Where the metadata lives. Today only SQLite; PostgreSQL joins as a second
/// variant (a connection URL and pool size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// An embedded SQLite database file (created if missing).
    Sqlite { path: PathBuf },
}

impl DatabaseConfig {
    /// The embedded database of a data directory: `<data_dir>/berth.db`.
    pub fn in_data_dir(data_dir: &Path) -> DatabaseConfig {
        DatabaseConfig::Sqlite {
            path: data_dir.join("berth.db"),
        }
    }
}

/// Opens the configured backend, creating and migrating the database if
/// needed: the one place that picks a backend.
pub async fn open(config: &DatabaseConfig) -> Result<Metadata> {
    match config {
        DatabaseConfig::Sqlite { path } => {
            let (read, write) = sqlite::open(path).await?;
            Ok(Metadata { read, write })
        }
    }
}

/// The registry's metadata store: a pool of readers and the one writer.
#[derive(Clone)]
pub struct Metadata {
    read: sqlite::Pool,
    write: sqlite::Pool,
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn parse_digest(s: String) -> Result<Digest> {
    Digest::from_str(&s).map_err(|e| MetadataError::Corrupt(e.to_string()))
}

impl Metadata {
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}
