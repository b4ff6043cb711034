//! The SQLite dialect: everything in `metadata` that only SQLite accepts or
//! needs. Opening the database (pools, pragmas, migrations), recognising
//! "database is locked", keeping pooled connections clean, and the few SQL
//! fragments SQLite spells its own way.
//!
//! The statements in the resource modules are written in the SQL both SQLite
//! and PostgreSQL accept (`ON CONFLICT ... DO NOTHING/UPDATE`, `RETURNING`,
//! `WITH RECURSIVE`), with two exceptions a second dialect handles beside
//! this one:
//! - what is here: `group_concat` ([`TAG_NAMES_PAGE`],
//!   [`REPOSITORY_NAMES_PAGE`]; PostgreSQL: `string_agg`), `instr`
//!   ([`TAG_NAME_CONTAINS`]; PostgreSQL: `strpos`), `LIMIT -1`
//!   ([`NO_LIMIT`]; PostgreSQL: `LIMIT NULL`), lists of placeholders
//!   ([`placeholders`]; PostgreSQL: `= ANY($n)` with one array);
//! - `?` placeholders in every statement (PostgreSQL numbers them: `$1`,
//!   `$2`, ...). Each statement binds its values in the order they appear,
//!   so they can be numbered mechanically.
//!
//! The types (`Db`, `Pool`, `Tx`) are named here once, so the resource
//! modules do not spell `Sqlite`.

use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::Result;

/// The database driver.
pub(super) type Db = sqlx::Sqlite;
/// A pool of connections.
pub(super) type Pool = sqlx::Pool<Db>;
/// A transaction on the writer connection.
pub(super) type Tx<'c> = sqlx::Transaction<'c, Db>;
/// A row read back.
pub(super) type DbRow = sqlx::sqlite::SqliteRow;

/// The names of a repository's tags in lexical order after a name, at most a
/// number, joined by newlines into one string: one row to decode instead of
/// thousands (names cannot contain a newline). Binds: repository id, last
/// name (`""` for the first page), limit ([`NO_LIMIT`] for all).
pub(super) const TAG_NAMES_PAGE: &str = "SELECT group_concat(name, char(10)) FROM
   (SELECT name FROM tags WHERE repository_id = ? AND name > ? ORDER BY name LIMIT ?)";

/// [`TAG_NAMES_PAGE`] for repository names. Binds: last name, limit.
pub(super) const REPOSITORY_NAMES_PAGE: &str = "SELECT group_concat(name, char(10)) FROM
   (SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?)";

/// The tag `t`'s name contains the bound text, or the text is NULL. Binds:
/// the text, twice. `instr` is case-sensitive (SQLite's LIKE is not).
pub(super) const TAG_NAME_CONTAINS: &str = "(? IS NULL OR instr(t.name, ?) > 0)";

/// A `LIMIT` that does not limit.
pub(super) const NO_LIMIT: i64 = -1;

/// `?, ?, ...` for `n` values.
pub(super) fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Splits what [`TAG_NAMES_PAGE`] and [`REPOSITORY_NAMES_PAGE`] joined.
pub(super) fn split_names(joined: Option<String>) -> Vec<String> {
    joined
        .map(|j| j.split('\n').map(str::to_string).collect())
        .unwrap_or_default()
}

/// Opens (creating and migrating if needed) the database at `path`: a single
/// writer connection (SQLite serialises writers anyway; one connection avoids
/// busy/upgrade deadlocks) and a small pool of readers in WAL mode. Returns
/// (readers, writer).
pub(super) async fn open(path: &Path) -> Result<(Pool, Pool)> {
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
    Ok((read, write))
}

/// SQLite's "database is locked" (SQLITE_BUSY): worth a retry.
pub(super) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        // Primary code 5, whatever the extended bits.
        sqlx::Error::Database(e) => e
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .is_some_and(|c| c & 0xff == 5),
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
