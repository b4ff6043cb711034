//! The SQLite backend: opening the embedded database (pools, pragmas,
//! migrations), recognising "database is locked", and keeping pooled
//! connections clean. What SQLite spells its own way in statements is
//! [`super::db::SQLITE`].

use std::path::Path;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;

use super::db::Pool;
use super::{MetadataError, Result};

/// The schema migrations of this backend.
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Set on every connection: wait for a busy database rather than fail at
/// once, full durability, foreign keys, a 16 MB page cache.
const PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA synchronous = FULL; \
                       PRAGMA foreign_keys = ON; PRAGMA cache_size = -16000;";

/// `sqlite:///<absolute path>?mode=...`: how the Any driver is told to open
/// the file (percent-encoded where the path has `%`, `?` or `#`).
fn url(path: &Path, mode: &str) -> Result<String> {
    let absolute = std::path::absolute(path)
        .map_err(|e| MetadataError::Config(format!("database path {}: {e}", path.display())))?;
    let text = absolute.to_str().ok_or_else(|| {
        MetadataError::Config(format!("database path {} is not UTF-8", absolute.display()))
    })?;
    let encoded = text
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    Ok(format!("sqlite://{encoded}?mode={mode}"))
}

/// Opens (creating and migrating if needed) the database at `path`: a single
/// writer connection (SQLite serialises writers anyway; one connection avoids
/// busy/upgrade deadlocks) and a small pool of readers in WAL mode. Returns
/// (readers, writer).
pub(super) async fn open(path: &Path) -> Result<(Pool, Pool)> {
    sqlx::any::install_default_drivers();
    let write = AnyPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql(PRAGMAS).execute(&mut *conn).await?;
                sqlx::raw_sql("PRAGMA journal_mode = WAL")
                    .execute(conn)
                    .await?;
                Ok(())
            })
        })
        .after_release(|conn, _| Box::pin(async move { clean_after_use(conn).await }))
        .connect(&url(path, "rwc")?)
        .await?;
    super::migrate(&MIGRATOR, &mut *write.acquire().await?).await?;
    let read = AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(30))
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::raw_sql(PRAGMAS).execute(conn).await?;
                Ok(())
            })
        })
        .after_release(|conn, _| Box::pin(async move { clean_after_use(conn).await }))
        .connect(&url(path, "ro")?)
        .await?;
    Ok((read, write))
}

/// SQLite's "database is locked" (SQLITE_BUSY): worth a retry.
pub(super) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        // Primary code 5, whatever the extended bits.
        sqlx::Error::Database(e) if e.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
            e.code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| c & 0xff == 5)
        }
        _ => false,
    }
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
async fn clean_after_use(conn: &mut sqlx::AnyConnection) -> sqlx::Result<bool> {
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
