//! Docker token authentication: the scope grammar, and JWTs signed with the
//! registry's key (ES256 or RS256) and verified locally by the data plane.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// One entry of a token's `access` claim (and of a requested scope).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

/// Parses `repository:group/app:pull,push` (or `registry:catalog:*`).
pub fn parse_scope(scope: &str) -> Option<Access> {
    let (rest, actions) = scope.rsplit_once(':')?;
    let (kind, name) = rest.split_once(':')?;
    // `repository(plugin)` is an old Docker variant of `repository`.
    let kind = kind.split('(').next().unwrap_or(kind);
    if kind.is_empty() || name.is_empty() {
        return None;
    }
    Some(Access {
        kind: kind.to_string(),
        name: name.to_string(),
        actions: actions
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect(),
    })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub nbf: u64,
    pub iat: u64,
    pub jti: String,
    #[serde(default)]
    pub access: Vec<Access>,
}

impl Claims {
    /// Whether the token grants `action` on repository `name`.
    pub fn allows(&self, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| {
            a.kind == "repository"
                && a.name == name
                && a.actions.iter().any(|x| x == action || x == "*")
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read signing key {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write signing key {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("signing key {path} is neither an EC P-256 nor an RSA private key in PEM: {message}")]
    Parse { path: String, message: String },
}

pub struct TokenService {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    pub issuer: String,
    pub service: String,
    pub ttl: Duration,
    /// Verified tokens, so each is checked cryptographically once.
    verified: Mutex<VerifiedCache>,
}

/// Most scopes one token request may ask for. Clients ask for a handful (a
/// push with mounts: the target and a few sources); thousands only make a
/// token, and every cache entry of it, large.
pub const MAX_SCOPES: usize = 100;

/// Verified tokens and their claims, bounded by entries and by bytes (the
/// token text and the claims' strings), so callers cannot make it large.
#[derive(Default)]
struct VerifiedCache {
    entries: HashMap<String, (Arc<Claims>, usize)>,
    bytes: usize,
}

impl VerifiedCache {
    const ENTRIES: usize = 10_000;
    const BYTES: usize = 32 << 20;
    /// A token larger than this is verified on every use, never kept.
    const LARGEST: usize = Self::BYTES / 256;

    fn get(&self, token: &str, now: u64) -> Option<Arc<Claims>> {
        self.entries
            .get(token)
            .filter(|(c, _)| c.exp > now)
            .map(|(c, _)| Arc::clone(c))
    }

    fn insert(&mut self, token: &str, claims: &Arc<Claims>, now: u64) {
        let size = footprint(token, claims);
        if size > Self::LARGEST {
            return;
        }
        if self.entries.len() >= Self::ENTRIES || self.bytes + size > Self::BYTES {
            self.entries.retain(|_, (c, _)| c.exp > now);
            self.bytes = self.entries.values().map(|(_, s)| s).sum();
            if self.entries.len() >= Self::ENTRIES || self.bytes + size > Self::BYTES {
                self.entries.clear();
                self.bytes = 0;
            }
        }
        if let Some((_, old)) = self
            .entries
            .insert(token.to_string(), (Arc::clone(claims), size))
        {
            self.bytes -= old;
        }
        self.bytes += size;
    }
}

/// The bytes a cached token holds: its text, the claims and their strings.
fn footprint(token: &str, claims: &Claims) -> usize {
    use std::mem::size_of;
    let strings = [&claims.iss, &claims.sub, &claims.aud, &claims.jti]
        .iter()
        .map(|s| s.len())
        .sum::<usize>();
    let access = claims
        .access
        .iter()
        .map(|a| {
            size_of::<Access>()
                + a.kind.len()
                + a.name.len()
                + a.actions
                    .iter()
                    .map(|x| size_of::<String>() + x.len())
                    .sum::<usize>()
        })
        .sum::<usize>();
    // The map's key and slot, the Arc's counts.
    token.len() * 2 + size_of::<Claims>() + 64 + strings + access
}

impl TokenService {
    /// Loads the PEM key at `path`, generating an EC P-256 key there first
    /// when `generate` is set and the file does not exist.
    pub fn from_key_file(
        path: &Path,
        generate: bool,
        issuer: &str,
        service: &str,
        ttl: Duration,
    ) -> Result<TokenService, KeyError> {
        let shown = path.display().to_string();
        if generate && !path.exists() {
            write_new_key(path).map_err(|source| KeyError::Write {
                path: shown.clone(),
                source,
            })?;
        }
        let pem = std::fs::read(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        TokenService::from_pem(&pem, issuer, service, ttl).map_err(|message| KeyError::Parse {
            path: shown,
            message,
        })
    }

    pub fn from_pem(
        pem: &[u8],
        issuer: &str,
        service: &str,
        ttl: Duration,
    ) -> Result<TokenService, String> {
        let text = std::str::from_utf8(pem).map_err(|e| e.to_string())?;
        let (algorithm, encoding, decoding) = if let Ok(enc) = EncodingKey::from_ec_pem(pem) {
            use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
            let secret = p256::SecretKey::from_pkcs8_pem(text).map_err(|e| e.to_string())?;
            let public = secret
                .public_key()
                .to_public_key_pem(p256::pkcs8::LineEnding::LF)
                .map_err(|e| e.to_string())?;
            let dec = DecodingKey::from_ec_pem(public.as_bytes()).map_err(|e| e.to_string())?;
            (Algorithm::ES256, enc, dec)
        } else {
            let enc = EncodingKey::from_rsa_pem(pem).map_err(|e| e.to_string())?;
            let dec = rsa_public_from_private(text)?;
            (Algorithm::RS256, enc, dec)
        };
        Ok(TokenService {
            algorithm,
            encoding,
            decoding,
            issuer: issuer.to_string(),
            service: service.to_string(),
            ttl,
            verified: Mutex::new(VerifiedCache::default()),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Signs a token for `sub` granting `access`.
    pub fn issue(&self, sub: &str, access: Vec<Access>) -> Result<(String, Claims), String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let claims = Claims {
            iss: self.issuer.clone(),
            sub: sub.to_string(),
            aud: self.service.clone(),
            exp: now + self.ttl.as_secs(),
            nbf: now.saturating_sub(5),
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        };
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .map_err(|e| e.to_string())?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm, issuer, audience and time window.
    /// Verified tokens are kept (until they expire), so each is checked
    /// cryptographically once and then shared, not copied, per request.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if let Some(c) = self
            .verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token, now)
        {
            return Ok(c);
        }
        let mut validation = Validation::new(self.algorithm);
        validation.set_audience(&[&self.service]);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_nbf = true;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let claims = Arc::new(
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
                .map_err(|e| e.to_string())?
                .claims,
        );
        self.verified
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token, &claims, now);
        Ok(claims)
    }

    /// Tokens kept verified, and the bytes they are accounted at.
    pub fn cached(&self) -> (usize, usize) {
        let cache = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        (cache.entries.len(), cache.bytes)
    }
}

/// A fresh EC P-256 private key, PKCS#8 PEM.
pub fn new_key_pem() -> Result<String, String> {
    use p256::pkcs8::EncodePrivateKey;
    let secret = p256::SecretKey::random(&mut rand_core::OsRng);
    let pem = secret
        .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    Ok(pem.to_string())
}

/// Writes a new key to `path` unless another process (a replica sharing the
/// data directory) wrote one first: then that one is everyone's.
fn write_new_key(path: &Path) -> std::io::Result<()> {
    let pem = new_key_pem().map_err(std::io::Error::other)?;
    crate::storage::durable::create_file_once(path, pem.as_bytes(), 0o600).map(|_| ())
}

fn rsa_public_from_private(pem: &str) -> Result<DecodingKey, String> {
    use rsa::pkcs1::DecodeRsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|e| e.to_string())?;
    let public = key
        .to_public_key()
        .to_public_key_pem(rsa::pkcs8::LineEnding::LF)
        .map_err(|e| e.to_string())?;
    DecodingKey::from_rsa_pem(public.as_bytes()).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_grammar() {
        assert_eq!(
            parse_scope("repository:group/app:pull,push"),
            Some(Access {
                kind: "repository".into(),
                name: "group/app".into(),
                actions: vec!["pull".into(), "push".into()]
            })
        );
        assert_eq!(
            parse_scope("registry:catalog:*").unwrap().actions,
            vec!["*"]
        );
        assert_eq!(
            parse_scope("repository(plugin):a/b:pull").unwrap().kind,
            "repository"
        );
        assert_eq!(
            parse_scope("repository:a:").unwrap().actions,
            Vec::<String>::new()
        );
        for bad in [
            "",
            "repository",
            "repository:a",
            ":a:pull",
            "repository::pull",
        ] {
            assert_eq!(parse_scope(bad), None, "{bad}");
        }
    }

    /// Replicas starting together on one fresh data directory end up with
    /// one key: a token any of them issues verifies on every other.
    #[test]
    fn replicas_starting_together_share_one_generated_key() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let key = dir.path().join("auth/signing-key.pem");
            let start = Arc::new(std::sync::Barrier::new(6));
            let replicas: Vec<TokenService> = (0..6)
                .map(|_| {
                    let (key, start) = (key.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        TokenService::from_key_file(&key, true, "b", "r", Duration::from_secs(300))
                            .unwrap()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            for issuer in &replicas {
                let (token, _) = issuer.issue("user:alice", vec![]).unwrap();
                for verifier in &replicas {
                    verifier.verify(&token).unwrap();
                }
            }
        }
    }

    #[test]
    fn issue_and_verify_with_a_generated_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("auth/signing-key.pem");
        let svc =
            TokenService::from_key_file(&key, true, "berth", "registry", Duration::from_secs(300))
                .unwrap();
        assert_eq!(svc.algorithm(), Algorithm::ES256);
        let first = std::fs::read(&key).unwrap();
        // A second start reuses the same key.
        let again =
            TokenService::from_key_file(&key, true, "berth", "registry", Duration::from_secs(300))
                .unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), first);
        let access = vec![parse_scope("repository:a/b:pull").unwrap()];
        let (token, claims) = svc.issue("user:alice", access).unwrap();
        let verified = again.verify(&token).unwrap();
        assert_eq!(*verified, claims);
        assert!(verified.allows("a/b", "pull"));
        assert!(!verified.allows("a/b", "push"));
        assert!(!verified.allows("a/c", "pull"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    /// The verified-token cache is bounded by bytes as well as entries: a
    /// huge token is never kept, and many large ones stay under the budget.
    #[test]
    fn verified_cache_is_bounded_by_bytes() {
        let claims = |names: usize, len: usize| {
            Arc::new(Claims {
                iss: "berth".into(),
                sub: "admin".into(),
                aud: "registry".into(),
                exp: u64::MAX,
                nbf: 0,
                iat: 0,
                jti: String::new(),
                access: (0..names)
                    .map(|i| Access {
                        kind: "repository".into(),
                        name: format!("{i:0len$}"),
                        actions: vec!["pull".into()],
                    })
                    .collect(),
            })
        };
        let mut cache = VerifiedCache::default();
        let huge = claims(1000, 200);
        cache.insert("huge", &huge, 0);
        assert_eq!(cache.entries.len(), 0, "a huge token is not kept");
        let large = claims(100, 1000);
        let size = footprint("t-00000", &large);
        assert!(size <= VerifiedCache::LARGEST, "{size}");
        for i in 0..2000 {
            cache.insert(&format!("t-{i:05}"), &large, 0);
            assert!(cache.bytes <= VerifiedCache::BYTES, "{}", cache.bytes);
        }
        let accounted: usize = cache.entries.values().map(|(_, s)| s).sum();
        assert_eq!(cache.bytes, accounted);
        assert!(cache.get("t-01999", 0).is_some());
    }

    #[test]
    fn rs256_from_an_rsa_key_file() {
        use rsa::pkcs8::EncodePrivateKey;
        let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, 2048).unwrap();
        let pem = key.to_pkcs8_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rsa.pem");
        std::fs::write(&path, pem.as_bytes()).unwrap();
        let svc =
            TokenService::from_key_file(&path, false, "berth", "registry", Duration::from_secs(60))
                .unwrap();
        assert_eq!(svc.algorithm(), Algorithm::RS256);
        let (token, claims) = svc.issue("admin", vec![]).unwrap();
        assert_eq!(*svc.verify(&token).unwrap(), claims);
        // A key file that is neither kind is refused with its path named.
        std::fs::write(&path, "not a key").unwrap();
        let err =
            TokenService::from_key_file(&path, false, "berth", "registry", Duration::from_secs(60))
                .err()
                .unwrap()
                .to_string();
        assert!(err.contains("rsa.pem"), "{err}");
        // A configured key file is never generated.
        let missing = dir.path().join("missing.pem");
        assert!(
            TokenService::from_key_file(&missing, false, "b", "r", Duration::from_secs(60))
                .is_err()
        );
        assert!(!missing.exists());
    }
}
