//! Web UI sign-in sessions and CSRF tokens.
//!
//! A session is a random 256-bit id in the `berth_session` cookie, mapped in
//! memory to the user name and the SHA-256 of the token it was opened with
//! (never the token: see [`Remembered`]). The token is checked again, by its
//! hash, on every request, so removing or expiring a token ends its sessions
//! at once. Sessions expire after a fixed time (cookie `Max-Age` and server
//! side alike) and are lost on restart. The map is keyed by the SHA-256 of the
//! id, so a copy of memory yields no usable cookie.
//!
//! Every form that changes something carries a CSRF token: the HMAC-SHA256,
//! under a per-process key, of an anchor that only this browser has in an
//! HttpOnly cookie: the session id when signed in, else a random
//! `berth_csrf` cookie (SameSite=Strict). Another site can make the browser
//! send the cookie but can neither read it nor compute the token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::auth::Remembered;

/// The cookie holding the session id.
pub(super) const SESSION_COOKIE: &str = "berth_session";
/// The cookie anchoring the CSRF token of visitors not signed in.
pub(super) const CSRF_COOKIE: &str = "berth_csrf";
/// Sessions kept at most; the oldest go first when full.
const MAX_SESSIONS: usize = 10_000;
/// How long a sign-in lasts by default.
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// A signed-in browser.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) user: String,
    pub(super) proof: Remembered,
    pub(super) expires: SystemTime,
}

/// The sessions of one registry process.
pub struct Sessions {
    key: [u8; 32],
    /// Seconds.
    ttl: AtomicU64,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new(DEFAULT_SESSION_TTL)
    }
}

/// 32 random bytes, URL-safe base64 (43 characters).
pub(super) fn random_token() -> String {
    let mut raw = [0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

fn id_key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Sessions {
        let mut key = [0u8; 32];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut key);
        Sessions {
            key,
            ttl: AtomicU64::new(ttl.as_secs()),
            map: Mutex::new(HashMap::new()),
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
    pub(super) fn create(&self, user: &str, proof: Remembered) -> String {
        let id = random_token();
        let now = SystemTime::now();
        let expires = now + self.ttl_of(&proof);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(
            id_key(&id),
            Session {
                user: user.to_string(),
                proof,
                expires,
            },
        );
        id
    }

    /// The live session with this id.
    pub(super) fn get(&self, id: &str) -> Option<Session> {
        let key = id_key(id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            Some(s) if s.expires > SystemTime::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    pub(super) fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id_key(id));
    }

    fn mac(&self, anchor: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key)
            .expect("HMAC takes keys of any length");
        mac.update(b"berth-ui-csrf\0");
        mac.update(anchor.as_bytes());
        mac
    }

    /// The CSRF token of forms shown to the holder of `anchor`.
    pub(super) fn csrf_token(&self, anchor: &str) -> String {
        URL_SAFE_NO_PAD.encode(self.mac(anchor).finalize().into_bytes())
    }

    /// Is `token` the CSRF token of `anchor`? (Constant-time.)
    pub(super) fn csrf_valid(&self, anchor: &str, token: &str) -> bool {
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

    #[test]
    fn sessions_live_and_die() {
        let s = Sessions::new(Duration::from_secs(60));
        let hash = crate::auth::directory::hash_secret("pat");
        let id = s.create("alice", Remembered::Hash(hash));
        assert_eq!(id.len(), 43);
        let got = s.get(&id).expect("live session");
        assert_eq!(got.user, "alice");
        assert_eq!(got.proof, Remembered::Hash(hash), "the hash, not the token");
        // Nothing the session map holds spells the token (issue 12, 7(v)).
        let held = format!("{:?}", s.map.lock().unwrap());
        assert!(
            !held.contains("pat\"") && !held.contains(&hex::encode(hash)),
            "{held}"
        );
        assert!(s.get("nope").is_none());
        s.remove(&id);
        assert!(s.get(&id).is_none());

        let short = Sessions::new(Duration::ZERO);
        let id = short.create("bob", Remembered::Hash([0; 32]));
        assert!(short.get(&id).is_none(), "an expired session is gone");
    }

    #[test]
    fn csrf_tokens_bind_to_their_anchor_and_process() {
        let s = Sessions::new(Duration::from_secs(60));
        let t = s.csrf_token("anchor-1");
        assert!(s.csrf_valid("anchor-1", &t));
        assert!(!s.csrf_valid("anchor-2", &t));
        assert!(!s.csrf_valid("anchor-1", ""));
        assert!(!s.csrf_valid("anchor-1", "forged"));
        assert!(!s.csrf_valid("", &s.csrf_token("")));
        let other = Sessions::new(Duration::from_secs(60));
        assert!(!other.csrf_valid("anchor-1", &t), "another process's key");
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
