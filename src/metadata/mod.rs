//! Registry metadata: repositories, manifests and their references, tags,
//! per-repository blob links and uploads in progress, and garbage
//! collection's review queues. All SQL of berth lives in this module; it
//! knows nothing of HTTP, access rules or policies, and imports nothing of
//! `registry` (which is above it).
//!
//! One file per resource, each adding its methods to [`Metadata`]:
//! - `repositories`: existence, the catalog, listings by path, deletion;
//! - `blobs`: blob rows, repository links, upload sessions;
//! - `manifests`: storing, serving and deleting manifests (on PostgreSQL
//!   PUTs go in batches, `put_batch`);
//! - `tags`: tag rules hook, tag lists and pages, cleanup deletions;
//! - `referrers`: manifests whose `subject` is a given manifest;
//! - `gc`: the review queues and sweeps' transactions;
//! - `usage`: repository and manifest sizes;
//! - `live`: what is live (kept by garbage collection), defined once;
//! - `holders`: what a delete would take away from whom (refusals).
//!
//! The backend is chosen in one place, [`open`], from a [`DatabaseConfig`]:
//! SQLite (`sqlite`, the embedded default) or PostgreSQL (`postgres`). The
//! statements are written once for both; `db` names the driver types and
//! holds the few fragments each dialect spells its own way.

mod blobs;
mod db;
mod gc;
mod holders;
mod live;
mod locks;
mod manifests;
mod postgres;
mod put_batch;
mod referrers;
mod repositories;
mod sqlite;
mod tags;
mod ui_sessions;
mod usage;

#[cfg(test)]
pub(crate) mod testing;

pub use db::Backend;
pub use gc::{BlobVerdict, Due, GcState};
pub use locks::{Held, Lease, Lock};
pub use manifests::StoredManifest;
pub use postgres::{Probed, probe, redact_url};
pub use referrers::Referrer;
pub use repositories::{RepositoryRow, RepositorySummary};
pub use tags::{
    DeletionOutcome, PlannedDeletion, PolicyTag, RepositoryDeletions, TagCheck, TagDetail, TagKind,
    TagOp, TagOrder, TagQuery, TagsVersion, any_tag_write,
};
pub use ui_sessions::SessionRow;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::oci::Digest;

pub type Result<T, E = MetadataError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The configuration names a database that cannot be used (the message
    /// names the key; passwords are redacted).
    #[error("{0}")]
    Config(String),
    /// The database was migrated by a newer berth.
    #[error(
        "the database schema is at version {found}, newer than this berth knows (up to \
         {known}): run a berth at least as new as the one that migrated it"
    )]
    SchemaTooNew { found: i64, known: i64 },
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
    /// The upload session is not (or no longer) in progress.
    #[error("upload {0} is not in progress")]
    UploadUnknown(String),
    /// Another request held the upload session's lease for longer than a
    /// request waits for it.
    #[error("upload {0} is in use by another request, try again later")]
    UploadBusy(String),
}

impl MetadataError {
    /// The database is busy (SQLite: "database is locked"; PostgreSQL: a
    /// serialization failure or deadlock): worth a retry.
    pub fn is_busy(&self) -> bool {
        match self {
            MetadataError::Database(e) => sqlite::is_busy(e) || postgres::is_busy(e),
            _ => false,
        }
    }

    /// The database cannot be reached right now (connection lost or
    /// refused, server shutting down, no connection free in time): the
    /// request may succeed later (503), nothing was written.
    pub fn is_unavailable(&self) -> bool {
        match self {
            MetadataError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                // Connection exceptions (08...), the server shutting down or
                // starting (57P01-57P03), too many connections (53300).
                sqlx::Error::Database(d) => d.code().is_some_and(|c| {
                    c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
                }),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Where the metadata lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseConfig {
    /// An embedded SQLite database file (created if missing).
    Sqlite { path: PathBuf },
    /// A PostgreSQL database (migrated at start; shared by replicas).
    Postgres(PostgresConfig),
}

/// How to reach PostgreSQL.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`.
    pub url: String,
    /// Connections in this process's pool.
    pub max_connections: u32,
    /// Longest a statement may run (PostgreSQL's `statement_timeout`).
    pub statement_timeout: Duration,
    /// Longest to wait for a connection (at start and from the pool).
    pub connect_timeout: Duration,
    /// `sslmode` (disable, prefer, require, verify-ca, verify-full) unless
    /// the URL has one.
    pub ssl_mode: Option<String>,
}

impl PostgresConfig {
    pub fn new(url: &str) -> PostgresConfig {
        PostgresConfig {
            url: url.to_string(),
            max_connections: 16,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: postgres::CONNECT_TIMEOUT,
            ssl_mode: None,
        }
    }
}

/// Never shows the password.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

impl DatabaseConfig {
    /// The embedded database of a data directory: `<data_dir>/berth.db`.
    pub fn in_data_dir(data_dir: &Path) -> DatabaseConfig {
        DatabaseConfig::Sqlite {
            path: data_dir.join("berth.db"),
        }
    }
}

impl DatabaseConfig {
    /// The backend `settings` (the `database` configuration) names: the
    /// embedded SQLite file in `data_dir`, or PostgreSQL.
    pub fn from_settings(
        settings: &crate::config::DatabaseConfig,
        data_dir: &Path,
    ) -> std::result::Result<DatabaseConfig, String> {
        use crate::config::DatabaseKind;
        match settings.kind {
            DatabaseKind::Sqlite => Ok(DatabaseConfig::in_data_dir(data_dir)),
            DatabaseKind::Postgres => {
                let url = settings.url.as_deref().ok_or(
                    "database.url: required when database.kind is postgres \
                     (set it, or --database-url, or BERTH_DATABASE_URL)",
                )?;
                let timeouts = settings
                    .timeouts()
                    .map_err(|(key, message)| format!("{key}: {message}"))?;
                Ok(DatabaseConfig::Postgres(PostgresConfig {
                    url: url.to_string(),
                    max_connections: settings.max_connections,
                    statement_timeout: timeouts.statement,
                    connect_timeout: timeouts.connect,
                    ssl_mode: settings.ssl_mode.map(|m| m.as_str().to_string()),
                }))
            }
        }
    }
}

/// Opens the configured backend, creating and migrating the database if
/// needed: the one place that picks a backend.
pub async fn open(config: &DatabaseConfig) -> Result<Metadata> {
    match config {
        DatabaseConfig::Sqlite { path } => {
            let (read, write) = sqlite::open(path).await?;
            Ok(Metadata {
                read,
                write,
                dialect: &db::SQLITE,
                backend: Backend::Sqlite,
                locks: None,
                lease_wait: Duration::ZERO,
                puts: None,
            })
        }
        DatabaseConfig::Postgres(pg) => {
            let (pool, locks) = postgres::open(pg).await?;
            let puts = db::POSTGRES
                .put_manifests
                .map(|call| put_batch::PutBatcher::start(pool.clone(), call));
            Ok(Metadata {
                read: pool.clone(),
                write: pool,
                dialect: &db::POSTGRES,
                backend: Backend::Postgres,
                locks: Some(locks),
                lease_wait: locks::lease_wait(pg.statement_timeout),
                puts,
            })
        }
    }
}

/// Runs `migrator` on `conn` unless the database was migrated by a newer
/// berth (a migration this binary does not know was applied).
async fn migrate(migrator: &sqlx::migrate::Migrator, conn: &mut sqlx::AnyConnection) -> Result<()> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    // Absent before the first migration: nothing to compare.
    let found: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
        .await
        .ok()
        .flatten();
    if let Some(found) = found
        && found > known
    {
        return Err(MetadataError::SchemaTooNew { found, known });
    }
    migrator.run(conn).await?;
    Ok(())
}

/// The registry's metadata store: a pool of readers and one of writers
/// (SQLite: one connection; PostgreSQL: the same pool).
#[derive(Clone)]
pub struct Metadata {
    read: db::Pool,
    write: db::Pool,
    dialect: &'static db::Dialect,
    backend: Backend,
    /// PostgreSQL: the connections that hold [`locks`] (none on SQLite).
    locks: Option<db::Pool>,
    /// How long a request waits for an upload lease another holds.
    lease_wait: Duration,
    /// PostgreSQL: the batcher manifest PUTs go through.
    puts: Option<put_batch::PutBatcher>,
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
    /// The reading pool, for tests elsewhere in the crate that look at rows.
    #[cfg(test)]
    pub(crate) fn read_pool(&self) -> sqlx::AnyPool {
        self.read.clone()
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    /// Each connection pool's size, idle connections and limit (`read`,
    /// `write`, and on PostgreSQL `locks`; one pool on PostgreSQL serves
    /// both reads and writes and is named `main`).
    pub fn pool_figures(&self) -> Vec<PoolFigures> {
        let figures = |name, pool: &db::Pool| PoolFigures {
            name,
            size: pool.size(),
            idle: pool.num_idle() as u32,
            max: pool.options().get_max_connections(),
        };
        let mut out = match self.backend {
            Backend::Postgres => vec![figures("main", &self.write)],
            _ => vec![figures("read", &self.read), figures("write", &self.write)],
        };
        if let Some(locks) = &self.locks {
            out.push(figures("locks", locks));
        }
        out
    }
}

/// One connection pool's figures, for `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolFigures {
    pub name: &'static str,
    pub size: u32,
    pub idle: u32,
    pub max: u32,
}
