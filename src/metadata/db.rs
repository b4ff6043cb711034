//! The database as the resource modules see it: one driver type for both
//! backends (sqlx's Any driver: the same statements, binds and rows on SQLite
//! and PostgreSQL), and the few SQL fragments each dialect spells its own way.
//!
//! Statements are written once, in the SQL both backends accept:
//! numbered placeholders (`$1`, `$2`, ...; SQLite reads `$N` as the N-th
//! bind), `ON CONFLICT ... DO NOTHING/UPDATE`, `RETURNING`, `WITH RECURSIVE`,
//! subqueries with an alias, integers as `BIGINT` (sums cast back with
//! `CAST(... AS BIGINT)`). What differs is a field of [`Dialect`]; opening a
//! backend (pools, pragmas or session settings, migrations) is in `sqlite`
//! and `postgres`.

use super::{Metadata, Result};

/// The database driver.
pub(super) type Db = sqlx::Any;
/// A pool of connections.
pub(super) type Pool = sqlx::AnyPool;
/// A transaction.
pub(super) type Tx<'c> = sqlx::Transaction<'c, Db>;
/// A row read back.
pub(super) type DbRow = sqlx::any::AnyRow;

/// Which backend holds the metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The SQL that differs between the backends.
#[derive(Debug)]
pub(super) struct Dialect {
    /// The names of a repository's tags in lexical order after a name, at
    /// most a number, joined by newlines into one string: one row to decode
    /// instead of thousands (names cannot contain a newline). Binds:
    /// repository id, last name (`""` for the first page), limit
    /// ([`NO_LIMIT`] for all).
    pub tag_names_page: &'static str,
    /// [`Dialect::tag_names_page`] for repository names. Binds: last name,
    /// limit.
    pub repository_names_page: &'static str,
    /// The tag `t`'s name contains the text bound as `$2`, or `$2` is NULL
    /// (case-sensitive; SQLite's LIKE is not).
    pub tag_name_contains: &'static str,
    /// Run first in every write transaction. SQLite has one writer
    /// connection, so writes are serialised already; on PostgreSQL a
    /// transaction-scoped advisory lock gives every replica's writes the same
    /// order, so the checks each write makes in its transaction (tag rules,
    /// holders, "still due") hold when it commits, as on SQLite.
    pub write_lock: Option<&'static str>,
    /// Manifest PUTs in batches, one statement each (a function of the
    /// schema, taking the write lock itself), where each statement is a
    /// round trip and each commit a WAL flush; `None`: the statements of
    /// `Metadata::put_manifest`, one by one. Bind: the batch as JSON text
    /// (see migrations/postgres/0008_put_manifest_checks_first.sql and
    /// `put_batch`).
    pub put_manifests: Option<&'static str>,
}

pub(super) const SQLITE: Dialect = Dialect {
    tag_names_page: "SELECT group_concat(name, char(10)) FROM
       (SELECT name FROM tags WHERE repository_id = $1 AND name > $2 ORDER BY name LIMIT $3) AS page",
    repository_names_page: "SELECT group_concat(name, char(10)) FROM
       (SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2) AS page",
    tag_name_contains: "($2 IS NULL OR instr(t.name, $2) > 0)",
    write_lock: None,
    put_manifests: None,
};

pub(super) const POSTGRES: Dialect = Dialect {
    tag_names_page: "SELECT string_agg(name, chr(10) ORDER BY name) FROM
       (SELECT name FROM tags WHERE repository_id = $1 AND name > $2 ORDER BY name LIMIT $3) AS page",
    repository_names_page: "SELECT string_agg(name, chr(10) ORDER BY name) FROM
       (SELECT name FROM repositories WHERE name > $1 ORDER BY name LIMIT $2) AS page",
    tag_name_contains: "($2::text IS NULL OR strpos(t.name, $2) > 0)",
    // The key is "berth" in ASCII; any fixed number would do.
    write_lock: Some("SELECT pg_advisory_xact_lock(6450407435064930418)"),
    put_manifests: Some("SELECT berth_put_manifests($1)"),
};

/// A `LIMIT` that does not limit (both accept it; SQLite's `-1` is not SQL).
pub(super) const NO_LIMIT: i64 = i64::MAX;

/// `$first, $first+1, ...` for `n` values.
pub(super) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits what [`Dialect::tag_names_page`] and
/// [`Dialect::repository_names_page`] joined.
pub(super) fn split_names(joined: Option<String>) -> Vec<String> {
    joined
        .map(|j| j.split('\n').map(str::to_string).collect())
        .unwrap_or_default()
}

impl Metadata {
    /// Begins a write transaction: on the writer pool, in the order every
    /// writer (of every replica) follows.
    pub(super) async fn begin_write(&self) -> Result<Tx<'static>> {
        let mut tx = self.write.begin().await?;
        if let Some(lock) = self.dialect.write_lock {
            sqlx::query(lock).execute(&mut *tx).await?;
        }
        Ok(tx)
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::metadata::any_tag_write;
    use crate::metadata::testing::{db_on, digest, image, index, on_both_backends};

    #[test]
    fn placeholders_are_numbered_from_the_first() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 1), "$1");
        assert_eq!(placeholders(5, 0), "");
    }

    /// A table as both backends describe it, in common terms.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Table {
        /// name -> (integer/text/blob, NOT NULL)
        columns: BTreeMap<String, (String, bool)>,
        primary_key: Vec<String>,
        uniques: BTreeSet<Vec<String>>,
        /// Named secondary indexes: name -> columns.
        indexes: BTreeMap<String, Vec<String>>,
        /// (columns, referenced table, referenced columns, on delete)
        foreign_keys: BTreeSet<(Vec<String>, String, Vec<String>, String)>,
        checks: usize,
    }

    fn kind(declared: &str) -> String {
        match declared.to_ascii_lowercase().as_str() {
            "integer" | "bigint" => "integer",
            "text" => "text",
            "blob" | "bytea" => "blob",
            other => panic!("unexpected column type {other}"),
        }
        .to_string()
    }

    fn cols(joined: &str) -> Vec<String> {
        joined.split(',').map(str::to_string).collect()
    }

    async fn strings(meta: &Metadata, sql: &str, bind: &str) -> Vec<Vec<String>> {
        use sqlx::Row;
        sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(bind)
            .fetch_all(&meta.read)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| r.try_get::<String, _>(i).unwrap())
                    .collect()
            })
            .collect()
    }

    async fn sqlite_schema(meta: &Metadata) -> BTreeMap<String, Table> {
        let mut out = BTreeMap::new();
        let tables = strings(
            meta,
            "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND $1 = $1
               AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'",
            "",
        )
        .await;
        for t in tables {
            let (name, sql) = (&t[0], &t[1]);
            let mut table = Table {
                checks: sql.matches("CHECK").count(),
                ..Table::default()
            };
            let mut pk: Vec<(String, String)> = Vec::new();
            for c in strings(
                meta,
                "SELECT name, type, CAST(\"notnull\" AS TEXT), CAST(pk AS TEXT) FROM pragma_table_info($1)",
                name,
            )
            .await
            {
                let in_pk = c[3] != "0";
                if in_pk {
                    pk.push((c[3].clone(), c[0].clone()));
                }
                table
                    .columns
                    .insert(c[0].clone(), (kind(&c[1]), c[2] == "1" || in_pk));
            }
            pk.sort_by_key(|(n, _)| n.parse::<u32>().unwrap());
            table.primary_key = pk.into_iter().map(|(_, c)| c).collect();
            for i in strings(
                meta,
                "SELECT l.name, CAST(l.\"unique\" AS TEXT), l.origin,
                        (SELECT group_concat(name, ',') FROM
                            (SELECT name FROM pragma_index_info(l.name) ORDER BY seqno))
                   FROM pragma_index_list($1) l",
                name,
            )
            .await
            {
                match i[2].as_str() {
                    "pk" => {}
                    "u" => {
                        table.uniques.insert(cols(&i[3]));
                    }
                    _ if i[1] == "1" => {
                        table.uniques.insert(cols(&i[3]));
                    }
                    _ => {
                        table.indexes.insert(i[0].clone(), cols(&i[3]));
                    }
                }
            }
            for f in strings(
                meta,
                "SELECT CAST(id AS TEXT), \"table\", group_concat(\"from\", ','),
                        group_concat(\"to\", ','), on_delete
                   FROM pragma_foreign_key_list($1) GROUP BY id",
                name,
            )
            .await
            {
                table.foreign_keys.insert((
                    cols(&f[2]),
                    f[1].clone(),
                    cols(&f[3]),
                    f[4].to_ascii_lowercase(),
                ));
            }
            out.insert(name.clone(), table);
        }
        out
    }

    async fn postgres_schema(meta: &Metadata) -> BTreeMap<String, Table> {
        let mut out = BTreeMap::new();
        let tables = strings(
            meta,
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables
              WHERE table_schema = 'public' AND table_type = 'BASE TABLE'
                AND table_name <> '_sqlx_migrations' AND $1 = $1",
            "",
        )
        .await;
        for t in tables {
            let name = &t[0];
            let mut table = Table::default();
            for c in strings(
                meta,
                "SELECT CAST(column_name AS TEXT), CAST(data_type AS TEXT), CAST(is_nullable AS TEXT)
                   FROM information_schema.columns WHERE table_schema = 'public' AND table_name = $1",
                name,
            )
            .await
            {
                table.columns.insert(c[0].clone(), (kind(&c[1]), c[2] == "NO"));
            }
            for i in strings(
                meta,
                "SELECT CAST(c.relname AS TEXT), CAST(ix.indisunique AS TEXT), CAST(ix.indisprimary AS TEXT),
                        (SELECT string_agg(CAST(a.attname AS TEXT), ',' ORDER BY k.n)
                           FROM unnest(ix.indkey) WITH ORDINALITY AS k(attnum, n)
                           JOIN pg_attribute a ON a.attrelid = ix.indrelid AND a.attnum = k.attnum)
                   FROM pg_index ix JOIN pg_class c ON c.oid = ix.indexrelid
                  WHERE ix.indrelid = CAST($1 AS regclass)",
                name,
            )
            .await
            {
                if i[2] == "true" {
                    table.primary_key = cols(&i[3]);
                } else if i[1] == "true" {
                    table.uniques.insert(cols(&i[3]));
                } else {
                    table.indexes.insert(i[0].clone(), cols(&i[3]));
                }
            }
            for f in strings(
                meta,
                "SELECT CAST(con.conname AS TEXT), CAST(ref.relname AS TEXT),
                        (SELECT string_agg(CAST(a.attname AS TEXT), ',' ORDER BY k.n)
                           FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
                           JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum),
                        (SELECT string_agg(CAST(a.attname AS TEXT), ',' ORDER BY k.n)
                           FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n)
                           JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum),
                        CASE con.confdeltype WHEN 'c' THEN 'cascade' WHEN 'a' THEN 'no action'
                             WHEN 'r' THEN 'restrict' WHEN 'n' THEN 'set null' ELSE 'set default' END
                   FROM pg_constraint con JOIN pg_class ref ON ref.oid = con.confrelid
                  WHERE con.contype = 'f' AND con.conrelid = CAST($1 AS regclass)",
                name,
            )
            .await
            {
                table
                    .foreign_keys
                    .insert((cols(&f[2]), f[1].clone(), cols(&f[3]), f[4].clone()));
            }
            table.checks = strings(
                meta,
                "SELECT CAST(conname AS TEXT) FROM pg_constraint
                  WHERE contype = 'c' AND conrelid = CAST($1 AS regclass)",
                name,
            )
            .await
            .len();
            out.insert(name.clone(), table);
        }
        out
    }

    /// The two migration sets build the same schema: tables, columns (type
    /// family and NOT NULL), primary keys, unique constraints, named indexes,
    /// foreign keys with their ON DELETE, and CHECK constraints.
    #[tokio::test]
    async fn both_backends_have_the_same_schema() {
        let (sqlite, _d1) = db_on(Backend::Sqlite).await;
        let (postgres, _d2) = db_on(Backend::Postgres).await;
        let a = sqlite_schema(&sqlite).await;
        let b = postgres_schema(&postgres).await;
        assert!(a.len() >= 12, "{:?}", a.keys());
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, table) in &a {
            assert_eq!(
                table, &b[name],
                "table {name}: SQLite left, PostgreSQL right"
            );
        }
        // Both know the same migration versions.
        let versions =
            |m: &'static sqlx::migrate::Migrator| m.iter().map(|m| m.version).collect::<Vec<_>>();
        assert_eq!(
            versions(&crate::metadata::sqlite::MIGRATOR),
            versions(&crate::metadata::postgres::MIGRATOR)
        );
    }

    /// What the triggers queue for garbage collection, and the tag version
    /// they bump, after a sequence of writes: the same on both backends.
    async fn triggers_queue_the_same_reviews(backend: Backend) {
        use sqlx::Row;
        let (meta, _dir) = db_on(backend).await;
        // Each queue as "<kind> <name> <event>" lines, digests shown by the
        // names given.
        let reviews = |meta: Metadata, names: Vec<(&'static str, crate::oci::Digest)>| async move {
            let mut out = Vec::new();
            for (kind, sql) in [
                (
                    "manifest",
                    "SELECT m.digest, r.event FROM gc_manifest_reviews r
                       JOIN manifests m ON m.id = r.manifest_id",
                ),
                ("blob", "SELECT digest, event FROM gc_blob_reviews"),
            ] {
                for row in sqlx::query(sql).fetch_all(&meta.read).await.unwrap() {
                    let d: String = row.get(0);
                    let name = names
                        .iter()
                        .find(|(_, x)| x.to_string() == d)
                        .map_or(d.clone(), |(n, _)| n.to_string());
                    out.push(format!("{kind} {name} {}", row.get::<String, _>(1)));
                }
            }
            out.sort();
            out
        };
        let (m1, s1) = image(&meta, "r", Some("t1"), &[("cfg", 1), ("layer", 10)], None).await;
        let (m2, _) = image(&meta, "r", None, &[("cfg", 1), ("other", 5)], None).await;
        let (sig, _) = image(&meta, "r", None, &[("sigcfg", 1)], Some(&(m1.clone(), s1))).await;
        let (i1, _) = index(&meta, "r", Some("t2"), &[&(m1.clone(), s1)]).await;
        meta.link_blob("r", &digest("loose"), 3).await.unwrap();
        let names = vec![
            ("m1", m1.clone()),
            ("m2", m2.clone()),
            ("sig", sig.clone()),
            ("i1", i1.clone()),
            ("cfg", digest("cfg")),
            ("layer", digest("layer")),
            ("other", digest("other")),
            ("sigcfg", digest("sigcfg")),
            ("loose", digest("loose")),
        ];
        let version =
            |meta: Metadata| async move { meta.tags_version("r").await.unwrap().unwrap().version };
        assert_eq!(version(meta.clone()).await, 2, "{backend:?}");
        assert_eq!(
            reviews(meta.clone(), names.clone()).await,
            [
                "blob cfg blob_upload",
                "blob layer blob_upload",
                "blob loose blob_upload",
                "blob other blob_upload",
                "blob sigcfg blob_upload",
                "manifest i1 manifest_upload",
                "manifest m1 manifest_upload",
                "manifest m2 manifest_upload",
                "manifest sig manifest_upload",
            ],
            "{backend:?}"
        );
        // Move t1 to m2, delete t2, delete the index, unlink a blob, delete
        // m1 (its referrer and blobs are queued).
        crate::metadata::testing::point_tag(&meta, "r", &m2, "t1").await;
        assert!(meta.delete_tag("r", "t2", &any_tag_write).await.unwrap());
        assert!(
            meta.delete_manifest("r", &i1, &any_tag_write)
                .await
                .unwrap()
        );
        assert!(meta.unlink_blob("r", &digest("loose")).await.unwrap());
        assert!(
            meta.delete_manifest("r", &m1, &any_tag_write)
                .await
                .unwrap()
        );
        assert_eq!(version(meta.clone()).await, 4, "{backend:?}");
        assert_eq!(
            reviews(meta.clone(), names).await,
            [
                "blob cfg manifest_delete",
                "blob layer manifest_delete",
                "blob loose blob_unlink",
                "blob other blob_upload",
                "blob sigcfg blob_upload",
                "manifest m2 manifest_upload",
                "manifest sig subject_delete",
            ],
            "{backend:?}"
        );
    }

    /// A database migrated by a newer berth is refused, saying so; opening
    /// again migrates nothing twice.
    async fn a_newer_schema_is_refused(backend: Backend) {
        use crate::metadata::testing::config_on;
        use crate::metadata::{MetadataError, open};
        let (config, _dir) = config_on(backend).await;
        let meta = open(&config).await.unwrap();
        drop(meta);
        let meta = open(&config)
            .await
            .expect("a second start migrates nothing");
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES ($1, 'from a newer berth', $2, $3, 0)",
        )
        .bind(9999_i64)
        .bind(true)
        .bind(vec![0_u8])
        .execute(&meta.write)
        .await
        .unwrap();
        meta.write.close().await;
        meta.read.close().await;
        match open(&config).await {
            Err(e @ MetadataError::SchemaTooNew { found: 9999, .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("version 9999, newer than this berth knows (up to 10)"),
                    "{text}"
                );
            }
            Err(e) => panic!("{backend:?}: wrong error {e}"),
            Ok(_) => panic!("{backend:?}: a newer schema was accepted"),
        }
    }

    /// Migrations are not cut short by the statement timeout (a large
    /// registry's 0010 sizes every manifest): with a timeout of 1 ms a fresh
    /// PostgreSQL database is still migrated, and the timeout holds for the
    /// connections the registry then uses.
    #[tokio::test]
    async fn migrations_run_without_the_statement_timeout() {
        use crate::metadata::testing::postgres::fresh_database;
        let mut config = crate::metadata::PostgresConfig::new(&fresh_database().await);
        config.statement_timeout = std::time::Duration::from_millis(1);
        let meta = crate::metadata::open(&crate::metadata::DatabaseConfig::Postgres(config))
            .await
            .expect("migrated despite a 1 ms statement timeout");
        let slow = sqlx::query("SELECT pg_sleep(0.05)")
            .execute(&meta.read)
            .await
            .expect_err("the statement timeout holds after the migrations");
        assert!(slow.to_string().contains("statement timeout"), "{slow}");
    }

    on_both_backends! {
        triggers_queue_the_same_reviews_and_versions => super::triggers_queue_the_same_reviews;
        a_newer_schema_is_refused => super::a_newer_schema_is_refused;
    }
}
