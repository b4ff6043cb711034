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
//!
//! An upload session is held longer than a lock should hold a connection:
//! for as long as a client takes to send its body, and a hundred stalled
//! clients must not take every connection. Its [`Lease`] is a row value
//! instead (`uploads.lease_owner`, `lease_until` on the database clock),
//! taken by one request, renewed while it streams, cleared when it is done,
//! and free once expired when its replica died.

use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

use super::{Metadata, MetadataError, Result, db};

/// How long an upload lease lasts unless renewed (renewed every third of it).
const LEASE: Duration = Duration::from_secs(30);

/// How long a request waits for an upload session another request holds:
/// the statement timeout; when that is as long as a lease's term (the
/// default, 30 s), the term and a little more. A session whose holder died
/// (a killed replica) is then always taken over by the next request for it,
/// which waits out the dead lease: with a wait equal to the term, a request
/// that arrived just after the kill gave up a moment before the lease
/// expired (503 instead of the resumed upload: seen once in crash_safety on
/// PostgreSQL). A shorter statement timeout is kept as it is: whoever sets
/// it prefers a quick 503 (clients retry it) to a long wait.
pub(super) fn lease_wait(statement_timeout: Duration) -> Duration {
    if statement_timeout >= LEASE {
        statement_timeout.max(LEASE + Duration::from_secs(2))
    } else {
        statement_timeout
    }
}
/// The database clock, in milliseconds since the epoch.
const DB_NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

/// What a lock guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock<'a> {
    /// A blob digest: making it visible (file in place, rows written) and
    /// collecting it (rows deleted, file deleted) never interleave.
    Blob(&'a str),
    /// The standalone cleanup policies: one replica runs them at a time.
    CleanupPolicies,
}

/// The advisory-lock key of `lock`: (class, hash of the name).
fn key(lock: Lock<'_>) -> (i32, i32) {
    let (class, name) = match lock {
        Lock::Blob(digest) => (1, digest),
        Lock::CleanupPolicies => (3, ""),
    };
    let hash = Sha256::digest(name.as_bytes());
    (
        class,
        i32::from_be_bytes([hash[0], hash[1], hash[2], hash[3]]),
    )
}

/// A lock held until dropped or released. Dropped, a PostgreSQL lock goes
/// a moment later (its transaction is rolled back when sqlx returns the
/// connection to the pool); [`Held::release`] lets it go before returning.
#[must_use = "the lock is released when this is dropped"]
pub struct Held {
    /// `None` on SQLite (one process: the in-process locks suffice).
    tx: Option<db::Tx<'static>>,
}

impl Held {
    /// Releases the lock now: another replica (or this one) can take it as
    /// soon as this returns.
    pub async fn release(self) {
        if let Some(tx) = self.tx
            && let Err(e) = tx.rollback().await
        {
            // The connection is gone: so is its lock.
            tracing::debug!("releasing a database lock: {e}");
        }
    }
}

impl Metadata {
    /// Takes `lock`, waiting for another replica that holds it (at most the
    /// statement timeout).
    pub async fn lock(&self, lock: Lock<'_>) -> Result<Held> {
        let Some(pool) = &self.locks else {
            return Ok(Held { tx: None });
        };
        let (class, hash) = key(lock);
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(class)
            .bind(hash)
            .execute(&mut *tx)
            .await?;
        Ok(Held { tx: Some(tx) })
    }

    /// Takes `lock` if no other replica holds it (`None` if one does).
    pub async fn try_lock(&self, lock: Lock<'_>) -> Result<Option<Held>> {
        let Some(pool) = &self.locks else {
            return Ok(Some(Held { tx: None }));
        };
        let (class, hash) = key(lock);
        let mut tx = pool.begin().await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1, $2)")
            .bind(class)
            .bind(hash)
            .fetch_one(&mut *tx)
            .await?;
        Ok(got.then_some(Held { tx: Some(tx) }))
    }

    /// [`Metadata::try_lock`] for many locks at once, in one round trip:
    /// whether each was had (in the order given), all held until the one
    /// guard is dropped. A lock named twice is had twice (they are the
    /// caller's own).
    pub async fn try_lock_many(&self, locks: &[Lock<'_>]) -> Result<(Held, Vec<bool>)> {
        let Some(pool) = &self.locks else {
            return Ok((Held { tx: None }, vec![true; locks.len()]));
        };
        if locks.is_empty() {
            return Ok((Held { tx: None }, Vec::new()));
        }
        // The keys as JSON text: the Any driver binds no arrays.
        let keys: Vec<(usize, i32, i32)> = locks
            .iter()
            .enumerate()
            .map(|(n, lock)| {
                let (class, hash) = key(*lock);
                (n, class, hash)
            })
            .collect();
        let keys = serde_json::to_string(&keys).expect("numbers serialize");
        let mut tx = pool.begin().await?;
        let rows: Vec<(i64, bool)> = sqlx::query_as(
            "SELECT (k->>0)::bigint, pg_try_advisory_xact_lock((k->>1)::int, (k->>2)::int)
               FROM json_array_elements($1::json) AS k",
        )
        .bind(keys)
        .fetch_all(&mut *tx)
        .await?;
        let mut got = vec![false; locks.len()];
        for (n, had) in rows {
            if let Some(slot) = got.get_mut(n as usize) {
                *slot = had;
            }
        }
        Ok((Held { tx: Some(tx) }, got))
    }
}

/// An upload session leased to one request until [`Lease::release`] (or,
/// if dropped unreleased, released in the background).
#[must_use = "the lease is released when this is dropped"]
pub struct Lease {
    /// `None` on SQLite (one process: the in-process lock suffices).
    held: Option<Leased>,
}

struct Leased {
    pool: db::Pool,
    id: String,
    owner: String,
    renew: tokio::task::JoinHandle<()>,
}

impl Lease {
    /// Clears the lease, so that the session's next request, on any
    /// replica, takes it at once.
    pub async fn release(mut self) {
        if let Some(held) = self.held.take() {
            held.release().await;
        }
    }
}

impl Lease {
    /// The session is gone (completed or discarded): nothing to release.
    pub fn ended(mut self) {
        if let Some(held) = self.held.take() {
            held.renew.abort();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.renew.abort();
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(held.release());
            }
        }
    }
}

impl Leased {
    async fn release(self) {
        self.renew.abort();
        // A failure leaves the lease to expire.
        let _ = sqlx::query(
            "UPDATE uploads SET lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2",
        )
        .bind(&self.id)
        .bind(&self.owner)
        .execute(&self.pool)
        .await;
    }
}

impl Metadata {
    /// Leases upload session `id` to the caller, waiting (at most
    /// [`lease_wait`]) while another request, on any replica, holds it.
    pub async fn lease_upload(&self, id: &str) -> Result<Lease> {
        if self.locks.is_none() {
            return Ok(Lease { held: None });
        }
        let owner = uuid::Uuid::new_v4().to_string();
        let deadline = Instant::now() + self.lease_wait;
        let mut pause = Duration::from_millis(10);
        loop {
            if self.take_lease(id, &owner).await? {
                break;
            }
            let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM uploads WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.write)
                .await?;
            if exists.is_none() {
                return Err(MetadataError::UploadUnknown(id.to_owned()));
            }
            if Instant::now() + pause > deadline {
                return Err(MetadataError::UploadBusy(id.to_owned()));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
        let renew = tokio::spawn({
            let (meta, id, owner) = (self.clone(), id.to_owned(), owner.clone());
            async move {
                loop {
                    tokio::time::sleep(LEASE / 3).await;
                    // A failed renewal is tried again; a lease lost anyway
                    // (the database away for the whole term) costs nothing
                    // worse than a digest mismatch at completion, which
                    // discards the session: content is never taken unverified.
                    let _ = meta.take_lease(&id, &owner).await;
                }
            }
        });
        Ok(Lease {
            held: Some(Leased {
                pool: self.write.clone(),
                id: id.to_owned(),
                owner,
                renew,
            }),
        })
    }

    /// Takes or renews the lease of `id` for `owner`: true if it is theirs.
    async fn take_lease(&self, id: &str, owner: &str) -> Result<bool> {
        let done = sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE uploads SET lease_owner = $1, lease_until = {DB_NOW_MS} + $2 \
             WHERE id = $3 AND (lease_owner = $1 OR lease_until IS NULL \
             OR lease_until < {DB_NOW_MS})"
        )))
        .bind(owner)
        .bind(LEASE.as_millis() as i64)
        .bind(id)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::lease_wait;

    /// With the default statement timeout (the lease's term) and longer, a
    /// dead holder's lease always expires within one request's wait (the
    /// wait loop may stop up to 250 ms early); shorter timeouts are kept.
    #[test]
    fn a_request_outwaits_a_dead_lease() {
        for (statement_timeout_ms, want_ms) in [
            (600, 600),
            (5_000, 5_000),
            (30_000, 32_000),
            (32_000, 32_000),
            (60_000, 60_000),
        ] {
            let got = lease_wait(Duration::from_millis(statement_timeout_ms));
            assert_eq!(
                got,
                Duration::from_millis(want_ms),
                "{statement_timeout_ms}"
            );
            if statement_timeout_ms >= 30_000 {
                assert!(got > super::LEASE + Duration::from_millis(250));
            }
        }
    }

    use super::*;
    use crate::metadata::{DatabaseConfig, PostgresConfig, testing};

    #[test]
    fn keys_separate_classes_and_names() {
        let cases = [
            (Lock::Blob("sha256:aa"), Lock::Blob("sha256:ab")),
            (Lock::Blob(""), Lock::CleanupPolicies),
        ];
        for (a, b) in cases {
            assert_ne!(key(a), key(b), "{a:?} {b:?}");
        }
        assert_eq!(key(Lock::Blob("sha256:aa")), key(Lock::Blob("sha256:aa")));
        assert_eq!(key(Lock::Blob("x")).0, 1);
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
        assert!(b.try_lock(Lock::CleanupPolicies).await.unwrap().is_some());
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

    /// Many locks in one round trip: each had unless the other replica
    /// holds it, a lock named twice had twice, all held until the guard is
    /// released.
    #[tokio::test]
    async fn many_locks_at_once_skip_those_held_elsewhere() {
        let url = testing::postgres::fresh_database().await;
        let config = DatabaseConfig::Postgres(PostgresConfig::new(&url));
        let a = crate::metadata::open(&config).await.unwrap();
        let b = crate::metadata::open(&config).await.unwrap();
        let held = a.lock(Lock::Blob("sha256:1")).await.unwrap();
        let wanted = [
            Lock::Blob("sha256:1"),
            Lock::Blob("sha256:2"),
            Lock::Blob("sha256:2"),
            Lock::CleanupPolicies,
        ];
        let (many, got) = b.try_lock_many(&wanted).await.unwrap();
        assert_eq!(got, vec![false, true, true, true]);
        assert!(a.try_lock(Lock::Blob("sha256:2")).await.unwrap().is_none());
        assert!(a.try_lock(Lock::CleanupPolicies).await.unwrap().is_none());
        many.release().await;
        held.release().await;
        // Released guards are free at once, every time (dropped ones go a
        // moment later, when sqlx rolls their transaction back).
        for _ in 0..20 {
            let (all, got) = b.try_lock_many(&wanted).await.unwrap();
            assert_eq!(got, vec![true; 4]);
            all.release().await;
            let one = a.try_lock(Lock::CleanupPolicies).await.unwrap();
            one.expect("released a moment ago").release().await;
        }
        let (_none, got) = b.try_lock_many(&[]).await.unwrap();
        assert!(got.is_empty());
    }

    /// Two replicas on one upload session: one request at a time holds it,
    /// the other waits for the release, gives up after the statement
    /// timeout (busy), takes over a lease whose holder died (expired), and
    /// learns that a session that is gone is unknown. No connection is held
    /// while a lease is.
    #[tokio::test]
    async fn an_upload_lease_is_one_requests_at_a_time() {
        let url = testing::postgres::fresh_database().await;
        let mut config = PostgresConfig::new(&url);
        config.statement_timeout = std::time::Duration::from_millis(600);
        config.max_connections = 2;
        let config = DatabaseConfig::Postgres(config);
        let a = crate::metadata::open(&config).await.unwrap();
        let b = crate::metadata::open(&config).await.unwrap();
        a.create_upload("r", "u1").await.unwrap();

        // More leases than connections: none holds one.
        a.create_upload("r", "u2").await.unwrap();
        a.create_upload("r", "u3").await.unwrap();
        let held = a.lease_upload("u1").await.unwrap();
        let two = a.lease_upload("u2").await.unwrap();
        let three = a.lease_upload("u3").await.unwrap();
        two.release().await;
        three.release().await;

        let started = Instant::now();
        match b.lease_upload("u1").await {
            Err(MetadataError::UploadBusy(id)) => assert_eq!(id, "u1"),
            other => panic!("expected busy, got {:?}", other.map(|_| ())),
        }
        assert!(started.elapsed() >= std::time::Duration::from_millis(300));

        let waiting = tokio::spawn({
            let b = b.clone();
            async move { b.lease_upload("u1").await.map(|l| (l, Instant::now())) }
        });
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        let released = Instant::now();
        held.release().await;
        let (taken, at) = waiting.await.unwrap().unwrap();
        assert!(at >= released);

        // The holder dies: its lease expires and is free.
        taken.ended();
        sqlx::query("UPDATE uploads SET lease_until = lease_until - 60000 WHERE id = 'u1'")
            .execute(&a.write)
            .await
            .unwrap();
        a.lease_upload("u1").await.unwrap().release().await;

        a.delete_upload("u1").await.unwrap();
        match b.lease_upload("u1").await {
            Err(MetadataError::UploadUnknown(id)) => assert_eq!(id, "u1"),
            other => panic!("expected unknown, got {:?}", other.map(|_| ())),
        }
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
