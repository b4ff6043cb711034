//! The PostgreSQL backend: connecting (pool size, statement timeout,
//! sslmode), migrating under sqlx's advisory lock (replicas starting together
//! take turns; the later ones find nothing to do), and recognising errors
//! worth a retry. What PostgreSQL spells its own way in statements is
//! [`super::db::POSTGRES`].

use std::time::Duration;

use sqlx::any::AnyPoolOptions;

use super::db::Pool;
use super::{MetadataError, PostgresConfig, Result};

/// The schema migrations of this backend: the same versions as SQLite's,
/// the same tables, columns, constraints and indexes, triggers in PL/pgSQL
/// (`tests` below checks the two schemas stay equivalent).
pub(super) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// `url` with its password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if !u.cannot_be_a_base() => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        // Not a URL with a host: it may hold a password anywhere.
        _ => "(not a valid URL)".to_string(),
    }
}

/// The connection URL with the configured sslmode added (a mode already in
/// the URL wins).
fn connect_url(config: &PostgresConfig) -> Result<String> {
    let mut u = url::Url::parse(&config.url).map_err(|e| {
        MetadataError::Config(format!("database.url {}: {e}", redact_url(&config.url)))
    })?;
    if !matches!(u.scheme(), "postgres" | "postgresql") {
        return Err(MetadataError::Config(format!(
            "database.url {}: the scheme must be postgres:// or postgresql://",
            redact_url(&config.url)
        )));
    }
    if let Some(mode) = &config.ssl_mode
        && !u.query_pairs().any(|(k, _)| k == "sslmode")
    {
        u.query_pairs_mut().append_pair("sslmode", mode);
    }
    Ok(u.to_string())
}

/// Connects a pool of `config.max_connections` and migrates the schema;
/// returns it and a second pool of as many connections, connected as
/// needed, that holds the locks of [`super::locks`] (a lock holder then
/// never waits for a connection another lock holder has: no deadlock).
/// Every connection gets the statement timeout.
pub(super) async fn open(config: &PostgresConfig) -> Result<(Pool, Pool)> {
    sqlx::any::install_default_drivers();
    let url = connect_url(config)?;
    let timeout_ms = config.statement_timeout.as_millis();
    let options = || {
        AnyPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.connect_timeout)
            // sqlx pings every connection it hands out (a round trip) and
            // again when it comes back (a broken one is closed then). A
            // connection used within the last second needs only the
            // second: ping only those idle for longer (after a quiet spell
            // or the database's restart).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "SET statement_timeout = {timeout_ms}"
                    )))
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            })
    };
    let pool = options().connect(&url).await.map_err(|e| {
        MetadataError::Config(format!(
            "database.url {}: cannot connect: {e}",
            redact_url(&config.url)
        ))
    })?;
    // Migrations may rewrite every row of a large registry (0010 sizes every
    // manifest): they run on a connection of their own without the statement
    // timeout, closed afterwards.
    let mut conn = pool.acquire().await?.detach();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut conn)
        .await?;
    super::migrate(&MIGRATOR, &mut conn).await?;
    sqlx::Connection::close(conn).await?;
    let locks = options().connect_lazy(&url)?;
    Ok((pool, locks))
}

/// Connects once, without migrating, and asks the server for its schema
/// version: what a check from outside the registry (the operator's
/// `DatabaseReady`) needs. Errors name the URL with its password redacted.
pub async fn probe(config: &PostgresConfig) -> Result<Probed> {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let url = connect_url(config)?;
    let failed = |e: &dyn std::fmt::Display| {
        MetadataError::Config(format!(
            "database.url {}: cannot connect: {e}",
            redact_url(&config.url)
        ))
    };
    let mut conn = tokio::time::timeout(config.connect_timeout, sqlx::AnyConnection::connect(&url))
        .await
        .map_err(|_| failed(&format!("no answer within {:?}", config.connect_timeout)))?
        .map_err(|e| failed(&e))?;
    // Absent before the first registry pod migrated the database.
    let schema: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&mut conn)
        .await
        .ok()
        .flatten();
    let _ = conn.close().await;
    Ok(Probed {
        schema,
        known: MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0),
    })
}

/// What [`probe`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probed {
    /// The newest migration applied (`None`: not migrated yet).
    pub schema: Option<i64>,
    /// The newest migration this berth knows.
    pub known: i64,
}

/// A pooled connection idle for longer is pinged before it is handed out.
const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// A default for [`PostgresConfig::connect_timeout`].
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// PostgreSQL's serialization failure, deadlock or lock timeout: the
/// transaction was rolled back and is worth a retry.
pub(super) fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(e)
            if e.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some() =>
        {
            matches!(e.code().as_deref(), Some("40001" | "40P01" | "55P03"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://berth:s3cret@db:5432/berth"),
            "postgres://berth:***@db:5432/berth"
        );
        assert_eq!(redact_url("postgres://db/berth"), "postgres://db/berth");
        assert_eq!(redact_url("berth:s3cret@db"), "(not a valid URL)");
    }

    #[test]
    fn sslmode_is_added_unless_the_url_has_one() {
        let mut c = PostgresConfig::new("postgres://u:p@db/berth");
        c.ssl_mode = Some("require".into());
        assert_eq!(
            connect_url(&c).unwrap(),
            "postgres://u:p@db/berth?sslmode=require"
        );
        c.url = "postgres://u:p@db/berth?sslmode=disable".into();
        assert_eq!(
            connect_url(&c).unwrap(),
            "postgres://u:p@db/berth?sslmode=disable"
        );
        c.url = "mysql://u:p@db/berth".into();
        let e = connect_url(&c).unwrap_err().to_string();
        assert!(e.contains("database.url mysql://u:***@db/berth"), "{e}");
        assert!(!e.contains(":p@"), "{e}");
    }
}
