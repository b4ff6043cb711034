//! Locks that hold across replicas. One berth process on SQLite needs none
//! beyond its own (the callers' in-process locks); replicas sharing a
//! PostgreSQL database take them in the database: a transaction-scoped
//! advisory lock on a connection of the lock pool, released when the
//! [`Held`] guard is dropped (its transaction rolls back), or by the server
//! when the replica dies (its connection closes). Keys are two 32-bit
//! numbers, a class and a hash of the name, a key space apart from the
//! single 64-bit key of the write lock (`db::Dialect::write_lock`).
//!
//! The statement timeout bounds a wait: a lock not had within it is an
//! error (503 to a client), never an endless wait.

use sha2::{Digest as _, Sha256};

use super::{Metadata, Result, db};

/// What a lock guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock<'a> {
    /// A blob digest: making it visible (file in place, rows written) and
    /// collecting it (rows deleted, file deleted) never interleave.
    Blob(&'a str),
    /// An upload session: one request at a time appends to it or completes
    /// it, whichever replica it reaches.
    Upload(&'a str),
    /// The standalone cleanup policies: one replica runs them at a time.
    CleanupPolicies,
}

/// The advisory-lock key of `lock`: (class, hash of the name).
fn key(lock: Lock<'_>) -> (i32, i32) {
    let (class, name) = match lock {
        Lock::Blob(digest) => (1, digest),
        Lock::Upload(id) => (2, id),
        Lock::CleanupPolicies => (3, ""),
    };
    let hash = Sha256::digest(name.as_bytes());
    (
        class,
        i32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]),
    )
}

/// A lock held until dropped.
#[must_use = "the lock is released when this is dropped"]
pub struct Held {
    /// `None` on SQLite (one process: the in-process locks suffice).
    _tx: Option<db::Tx<'static>>,
}

impl Metadata {
    /// Takes `lock`, waiting for another replica that holds it (at most the
    /// statement timeout).
    pub async fn lock(&self, lock: Lock<'_>) -> Result<Held> {
        let Some(pool) = &self.locks else {
            return Ok(Held { _tx: None });
        };
        let (class, hash) = key(lock);
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(class)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        Ok(Held { _tx: Some(tx) })
    }

    /// Takes `lock` if no other replica holds it (`None` if one does).
    pub async fn try_lock(&self, lock: Lock<'_>) -> Result<Option<Held>> {
        let Some(pool) = &self.locks else {
            return Ok(Some(Held { _tx: None }));
        };
        let (class, hash) = key(lock);
        let mut tx = pool.begin().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(class)
            .bind(hash)
            .fetch_one(&mut *tx)
            .await?;
        Ok(got.then_some(Held { _tx: Some(tx) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::{DatabaseConfig, PostgresConfig, testing};

    #[test]
    fn keys_separate_classes_and_names() {
        let cases = [
            (Lock::Blob("sha256:aa"), Lock::Upload("sha256:aa")),
            (Lock::Blob("sha256:aa"), Lock::Blob("sha256:ab")),
            (Lock::Upload("u1"), Lock::CleanupPolicies),
        ];
        for (a, b) in cases {
            assert_ne!(key(a), key(b), "{a:?} {b:?}");
        }
        assert_eq!(key(Lock::Blob("sha256:aa")), key(Lock::Blob("sha256:aa")));
        assert_eq!(key(Lock::Blob("x")).0, 1);
        assert_eq!(key(Lock::Upload("x")).0, 2);
        assert_eq!(key(Lock::CleanupPolicies).0, 3);
    }

    /// Two replicas (two `Metadata` on one database): a lock one holds is
    /// not had by the other until released, whatever else is locked.
    #[tokio::test]
    async fn a_lock_held_by_one_replica_waits_on_the_other() {
        let url = testing::postgres::fresh_database().await;
        let config = DatabaseConfig::Postgres(PostgresConfig::new(&url));
        let a = crate::metadata::open(&config).await.unwrap();
        let b = crate::metadata::open(&config).await.unwrap();
        let held = a.lock(Lock::Blob("sha256:1")).await.unwrap();
        assert!(b.try_lock(Lock::Blob("sha256:1")).await.unwrap().is_none());
        // Other keys are free.
        assert!(b.try_lock(Lock::Blob("sha256:2")).await.unwrap().is_some());
        assert!(
            b.try_lock(Lock::Upload("sha256:1"))
                .await
                .unwrap()
                .is_some()
        );
        let waiting = tokio::spawn(async move {
            let _got = b.lock(Lock::Blob("sha256:1")).await.unwrap();
            std::time::Instant::now()
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "the second replica did not wait");
        let released = std::time::Instant::now();
        drop(held);
        let got = waiting.await.unwrap();
        assert!(got >= released);
    }

    #[tokio::test]
    async fn on_sqlite_locks_are_the_callers_own() {
        let (meta, _dir) = testing::db_on(crate::metadata::Backend::Sqlite).await;
        let _held = meta.lock(Lock::CleanupPolicies).await.unwrap();
        assert!(
            meta.try_lock(Lock::CleanupPolicies)
                .await
                .unwrap()
                .is_some()
        );
    }
}
