//! Web UI sign-in sessions and CSRF tokens.
//!
//! A session is a random 256-bit id in the `berth_session` cookie. The
//! database holds it (so every replica knows it), keyed by the SHA-256 of
//! the id, with the user name and what was kept of the sign-in instead of
//! the secret (the token's SHA-256, never the token: see [`Remembered`]).
//! The token is checked again, by its hash, on every request, so removing or
//! expiring a token ends its sessions at once. Sessions expire after a fixed
//! time (cookie `Max-Age` and server side alike); a copy of the table yields
//! no usable cookie.
//!
//! Every form that changes something carries a CSRF token: the HMAC-SHA256,
//! under a key made once and kept in the database (the same on every
//! replica), of an anchor that only this browser has in an HttpOnly cookie:
//! the session id when signed in, else a random `berth_csrf` cookie
//! (SameSite=Strict). Another site can make the browser send the cookie but
//! can neither read it nor compute the token.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::auth::Remembered;
use crate::metadata::{Metadata, MetadataError, SessionRow, now_ms};

/// The cookie holding the session id.
pub(super) const SESSION_COOKIE: &str = "berth_session";
/// The cookie anchoring the CSRF token of visitors not signed in.
pub(super) const CSRF_COOKIE: &str = "berth_csrf";
/// How long a sign-in lasts by default.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// The name of the CSRF key in the database.
const CSRF_KEY: &str = "ui-csrf";

/// A signed-in browser.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) user: String,
    pub(super) proof: Remembered,
}

/// The web UI's sessions: their lifetime here, their rows in the database.
pub struct Sessions {
    /// Seconds.
    ttl: AtomicU64,
    /// The CSRF key, read from the database once.
    key: tokio::sync::OnceCell<CsrfKey>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(DEFAULT_SESSION_TTL)
    }
}

/// 32 random bytes, URL-safe base64 (43 characters).
pub(super) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes())
}

fn random_bytes() -> [u8; 32] {
    let mut raw = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    raw
}

fn id_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl: AtomicU64::new(ttl.as_secs()),
            key: tokio::sync::OnceCell::new(),
        }
    }

    pub(super) fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl.load(Ordering::Relaxed))
    }

    /// Sets how long new sessions last (`ui.sessionTimeout`).
    pub fn set_ttl(&self, ttl: Duration) {
        self.ttl.store(ttl.as_secs(), Ordering::Relaxed);
    }

    /// How long a session on `proof` lasts.
    pub(super) fn ttl_of(&self, proof: &Remembered) -> Duration {
        match proof {
            Remembered::Hash(_) => self.ttl(),
            Remembered::External(_) => self.ttl().min(Remembered::EXTERNAL_TTL),
        }
    }

    /// Opens a session; returns its id (the cookie value).
    pub(super) async fn create(
        &self,
        meta: &Metadata,
        user: &str,
        proof: Remembered,
    ) -> Result<String, MetadataError> {
        let id = random_token();
        let now = now_ms();
        let row = SessionRow {
            user: user.to_string(),
            proof: serde_json::to_string(&proof)
                .map_err(|e| MetadataError::Corrupt(e.to_string()))?,
            expires_at: now + self.ttl_of(&proof).as_millis() as i64,
        };
        meta.insert_ui_session(&id_key(&id), &row, now).await?;
        Ok(id)
    }

    /// The live session with this id.
    pub(super) async fn get(
        &self,
        meta: &Metadata,
        id: &str,
    ) -> Result<Option<Session>, MetadataError> {
        let Some(row) = meta.ui_session(&id_key(id), now_ms()).await? else {
            return Ok(None);
        };
        match serde_json::from_str(&row.proof) {
            Ok(proof) => Ok(Some(Session {
                user: row.user,
                proof,
            })),
            Err(e) => {
                tracing::warn!(user = %row.user, "web UI: a session's proof does not read back, the session ends: {e}");
                Ok(None)
            }
        }
    }

    pub(super) async fn remove(&self, meta: &Metadata, id: &str) -> Result<(), MetadataError> {
        meta.delete_ui_session(&id_key(id)).await
    }

    /// The key of the CSRF tokens (made by the first replica that needed it).
    pub(super) async fn csrf_key(&self, meta: &Metadata) -> Result<CsrfKey, MetadataError> {
        self.key
            .get_or_try_init(|| async {
                let stored = meta.ui_key(CSRF_KEY, &random_bytes()).await?;
                let key: [u8; 32] = stored.try_into().map_err(|_| {
                    MetadataError::Corrupt("the web UI's CSRF key is not 32 bytes".into())
                })?;
                Ok(CsrfKey(key))
            })
            .await
            .cloned()
    }
}

/// The key CSRF tokens are made and checked with.
#[derive(Clone)]
pub(super) struct CsrfKey([u8; 32]);

impl CsrfKey {
    fn mac(&self, anchor: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes keys of any length");
        mac.update(b"berth-ui-csrf\0");
        mac.update(anchor.as_bytes());
        mac
    }

    /// The CSRF token of forms shown to the holder of `anchor`.
    pub(super) fn token(&self, anchor: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(anchor).finalize().into_bytes())
    }

    /// Is `token` the CSRF token of `anchor`? (Constant-time.)
    pub(super) fn valid(&self, anchor: &str, token: &str) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token.as_bytes()) else {
            return false;
        };
        !anchor.is_empty() && self.mac(anchor).verify_slice(&raw).is_ok()
    }
}

/// The value of cookie `name` in a `Cookie` request header.
pub(super) fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// A `Set-Cookie` value for the UI's cookies: HttpOnly, path `/ui`, and
/// `Secure` when the browser reached us over HTTPS. `max_age` zero deletes.
pub(super) fn set_cookie(
    name: &str,
    value: &str,
    same_site: &str,
    max_age: Duration,
    secure: bool,
) -> String {
    format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite={same_site}; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open() -> (Metadata, tempfile::TempDir) {
        crate::metadata::testing::db_on(crate::metadata::Backend::Sqlite).await
    }

    #[tokio::test]
    async fn sessions_live_and_die() {
        let (meta, _dir) = open().await;
        let s = Sessions::new(Duration::from_secs(60));
        let hash = crate::auth::directory::hash_secret("pat");
        let id = s
            .create(&meta, "alice", Remembered::Hash(hash))
            .await
            .unwrap();
        assert_eq!(id.len(), 43);
        let got = s.get(&meta, &id).await.unwrap().expect("live session");
        assert_eq!(got.user, "alice");
        assert_eq!(got.proof, Remembered::Hash(hash), "the hash, not the token");
        // Another replica (another Sessions on the same database) knows it.
        let other = Sessions::new(Duration::from_secs(60));
        assert_eq!(other.get(&meta, &id).await.unwrap().unwrap().user, "alice");
        // Nothing the table holds spells the token or the id (issue 12, 7(v)).
        let rows: Vec<(Vec<u8>, String)> = sqlx::query_as("SELECT id_hash, proof FROM ui_sessions")
            .fetch_all(&meta.read_pool())
            .await
            .unwrap();
        let held = format!("{rows:?}");
        assert!(!held.contains("pat\"") && !held.contains(&id), "{held}");
        assert!(s.get(&meta, "nope").await.unwrap().is_none());
        s.remove(&meta, &id).await.unwrap();
        assert!(s.get(&meta, &id).await.unwrap().is_none());

        let short = Sessions::new(Duration::ZERO);
        let id = short
            .create(&meta, "bob", Remembered::Hash([0; 32]))
            .await
            .unwrap();
        assert!(
            short.get(&meta, &id).await.unwrap().is_none(),
            "an expired session is gone"
        );
    }

    #[tokio::test]
    async fn csrf_tokens_bind_to_their_anchor_and_database() {
        let (meta, _dir) = open().await;
        let s = Sessions::new(Duration::from_secs(60))
            .csrf_key(&meta)
            .await
            .unwrap();
        let t = s.token("anchor-1");
        assert!(s.valid("anchor-1", &t));
        assert!(!s.valid("anchor-2", &t));
        assert!(!s.valid("anchor-1", ""));
        assert!(!s.valid("anchor-1", "forged"));
        assert!(!s.valid("", &s.token("")));
        // Another replica on the same database: the same key.
        let replica = Sessions::new(Duration::from_secs(60))
            .csrf_key(&meta)
            .await
            .unwrap();
        assert!(replica.valid("anchor-1", &t));
        // Another database: another key.
        let (elsewhere, _dir2) = open().await;
        let other = Sessions::new(Duration::from_secs(60))
            .csrf_key(&elsewhere)
            .await
            .unwrap();
        assert!(!other.valid("anchor-1", &t), "another registry's key");
    }

    #[test]
    fn cookies() {
        let h = "a=1; berth_session=abc; berth_csrf=\"q\"";
        assert_eq!(cookie(h, "berth_session"), Some("abc"));
        assert_eq!(cookie(h, "berth_csrf"), Some("q"));
        assert_eq!(cookie(h, "b"), None);
        assert_eq!(
            set_cookie("n", "v", "Lax", Duration::from_secs(5), true),
            "n=v; Path=/ui; HttpOnly; SameSite=Lax; Max-Age=5; Secure"
        );
    }
}
