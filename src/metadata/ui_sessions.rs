//! Web UI sign-in sessions and the UI's keys (migration 0005): shared by
//! every replica on the database. What a session row holds is decided by
//! `registry::ui::session`; here it is stored and found.

use super::{Metadata, Result};

/// A session row: the user name, what was kept of the proof (JSON), and
/// when it expires (Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub user: String,
    pub proof: String,
    pub expires_at: i64,
}

impl Metadata {
    /// Stores a session under the hash of its id, and removes the sessions
    /// expired at `now`.
    pub async fn insert_ui_session(
        &self,
        id_hash: &[u8],
        row: &SessionRow,
        now: i64,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM ui_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO ui_sessions (id_hash, user_name, proof, expires_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id_hash.to_vec())
        .bind(&row.user)
        .bind(&row.proof)
        .bind(row.expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The session stored under `id_hash`, if it has not expired at `now`.
    pub async fn ui_session(&self, id_hash: &[u8], now: i64) -> Result<Option<SessionRow>> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT user_name, proof, expires_at FROM ui_sessions
              WHERE id_hash = $1 AND expires_at > $2",
        )
        .bind(id_hash.to_vec())
        .bind(now)
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|(user, proof, expires_at)| SessionRow {
            user,
            proof,
            expires_at,
        }))
    }

    pub async fn delete_ui_session(&self, id_hash: &[u8]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM ui_sessions WHERE id_hash = $1")
            .bind(id_hash.to_vec())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The key named `name`: the one stored, or else `candidate`, stored
    /// now (the first replica to ask decides it for all).
    pub async fn ui_key(&self, name: &str, candidate: &[u8]) -> Result<Vec<u8>> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO ui_keys (name, key) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(candidate.to_vec())
        .execute(&mut *tx)
        .await?;
        let key: Vec<u8> = sqlx::query_scalar("SELECT key FROM ui_keys WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Backend;
    use crate::metadata::testing::{db_on, on_both_backends};

    async fn sessions_are_stored_found_and_expire(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
        let row = SessionRow {
            user: "alice".into(),
            proof: "{\"Hash\":[1]}".into(),
            expires_at: 1_000,
        };
        meta.insert_ui_session(b"id-1", &row, 0).await.unwrap();
        assert_eq!(
            meta.ui_session(b"id-1", 999).await.unwrap(),
            Some(row.clone())
        );
        assert_eq!(
            meta.ui_session(b"id-1", 1_000).await.unwrap(),
            None,
            "expired"
        );
        assert_eq!(meta.ui_session(b"id-2", 0).await.unwrap(), None);
        // A later sign-in removes the expired ones.
        let later = SessionRow {
            expires_at: 5_000,
            ..row.clone()
        };
        meta.insert_ui_session(b"id-2", &later, 2_000)
            .await
            .unwrap();
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ui_sessions")
            .fetch_one(&meta.read)
            .await
            .unwrap();
        assert_eq!(left, 1);
        meta.delete_ui_session(b"id-2").await.unwrap();
        assert_eq!(meta.ui_session(b"id-2", 0).await.unwrap(), None);
    }

    async fn the_first_key_stored_is_everyones(backend: Backend) {
        let (meta, _dir) = db_on(backend).await;
        let first = meta.ui_key("csrf", b"first").await.unwrap();
        assert_eq!(first, b"first");
        assert_eq!(meta.ui_key("csrf", b"second").await.unwrap(), b"first");
        assert_eq!(meta.ui_key("other", b"x").await.unwrap(), b"x");
    }

    on_both_backends! {
        sessions_are_stored_found_and_expire => super::sessions_are_stored_found_and_expire;
        the_first_key_stored_is_everyones => super::the_first_key_stored_is_everyones;
    }
}
