//! Who is calling and what they may do: identities (personal access tokens,
//! project deploy and access tokens, the instance admin), the project access
//! model, Docker token authentication. Pure decisions live in [`policy`];
//! this module adds authentication, the live model (reloaded from a manifest
//! directory when it changes) and token issuing. Nothing here knows HTTP.

pub mod directory;
pub mod model;
pub mod policy;
pub mod tags;
pub mod token;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use subtle::ConstantTimeEq;

use directory::{Declared, SecretHash, hash_secret};
use model::{ProjectSpec, Role, TokenSpec};
use policy::{Actions, Scopes, Standing, permitted};
use token::{Access, TokenService};

/// Deepest a repository may sit below its project: `<project>/<a>/<b>`.
pub const MAX_LEVELS_BELOW_PROJECT: usize = 2;

/// An authenticated (or anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Identity {
    Anonymous,
    Admin,
    User {
        name: String,
        scopes: Scopes,
    },
    DeployToken {
        project: String,
        name: String,
    },
    AccessToken {
        project: String,
        name: String,
    },
    /// A Kubernetes ServiceAccount, proven by a TokenReview of its token.
    ServiceAccount {
        namespace: String,
        name: String,
    },
}

impl Identity {
    /// The token subject that names this identity.
    pub fn subject(&self) -> String {
        match self {
            Identity::Anonymous => "anonymous".into(),
            Identity::Admin => "admin".into(),
            Identity::User { name, scopes } => {
                let s = match (scopes.read, scopes.write) {
                    (true, true) => "rw",
                    (true, false) => "r",
                    (false, true) => "w",
                    (false, false) => "-",
                };
                format!("user:{s}:{name}")
            }
            Identity::DeployToken { project, name } => format!("deploy:{name}:{project}"),
            Identity::AccessToken { project, name } => format!("access:{name}:{project}"),
            Identity::ServiceAccount { namespace, name } => format!("sa:{namespace}:{name}"),
        }
    }

    pub fn from_subject(sub: &str) -> Option<Identity> {
        if sub == "anonymous" {
            return Some(Identity::Anonymous);
        }
        if sub == "admin" {
            return Some(Identity::Admin);
        }
        let (kind, rest) = sub.split_once(':')?;
        let (first, second) = rest.split_once(':')?;
        Some(match kind {
            "user" => Identity::User {
                name: second.to_string(),
                scopes: Scopes {
                    read: first.contains('r'),
                    write: first.contains('w'),
                },
            },
            "deploy" => Identity::DeployToken {
                project: second.into(),
                name: first.into(),
            },
            "access" => Identity::AccessToken {
                project: second.into(),
                name: first.into(),
            },
            "sa" => Identity::ServiceAccount {
                namespace: first.into(),
                name: second.into(),
            },
            _ => return None,
        })
    }
}

/// Where a repository name falls among the declared projects.
#[derive(Debug, PartialEq)]
pub enum Location<'a> {
    InProject(&'a ProjectSpec),
    /// Below a project, but more than [`MAX_LEVELS_BELOW_PROJECT`] deep.
    TooDeep {
        project: &'a str,
        levels: usize,
    },
    /// In no project: only the admin may use it.
    Outside,
}

/// One consistent view of projects and credentials.
#[derive(Debug, Default)]
pub struct AccessModel {
    declared: Declared,
    admin: Option<SecretHash>,
}

fn matches(a: &SecretHash, b: &SecretHash) -> bool {
    a.ct_eq(b).into()
}

fn live(expires_at: Option<SystemTime>, now: SystemTime) -> bool {
    expires_at.is_none_or(|t| t > now)
}

impl AccessModel {
    pub fn new(declared: Declared, admin: Option<SecretHash>) -> AccessModel {
        AccessModel { declared, admin }
    }

    pub fn has_identities(&self) -> bool {
        !self.declared.personal_tokens.is_empty() || !self.declared.project_token_values.is_empty()
    }

    pub fn projects(&self) -> &[ProjectSpec] {
        &self.declared.projects
    }

    /// The project a repository belongs to: the longest declared project path
    /// that is a whole-component prefix of `repo`.
    pub fn locate(&self, repo: &str) -> Location<'_> {
        let best = self
            .declared
            .projects
            .iter()
            .filter(|p| {
                repo.strip_prefix(p.path.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|p| p.path.len());
        match best {
            None => Location::Outside,
            Some(p) => {
                let levels = repo[p.path.len()..]
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .count();
                if levels > MAX_LEVELS_BELOW_PROJECT {
                    Location::TooDeep {
                        project: &p.path,
                        levels,
                    }
                } else {
                    Location::InProject(p)
                }
            }
        }
    }

    /// Checks a user name and secret; `None` for anything unknown, wrong or expired.
    pub fn authenticate(&self, user: &str, secret: &str, now: SystemTime) -> Option<Identity> {
        self.authenticate_hash(user, &hash_secret(secret), now)
    }

    /// [`AccessModel::authenticate`] from the SHA-256 of the secret (as
    /// tokens are stored), for who keeps only that hash.
    pub fn authenticate_hash(
        &self,
        user: &str,
        hash: &SecretHash,
        now: SystemTime,
    ) -> Option<Identity> {
        let hash = *hash;
        if user == "admin" && self.admin.as_ref().is_some_and(|a| matches(a, &hash)) {
            return Some(Identity::Admin);
        }
        if let Some(tokens) = self.declared.personal_tokens.get(user) {
            for t in tokens {
                if matches(&t.hash, &hash) && live(t.expires_at, now) {
                    return Some(Identity::User {
                        name: user.to_string(),
                        scopes: Scopes::of(&t.scopes),
                    });
                }
            }
        }
        for p in &self.declared.projects {
            let check = |t: &TokenSpec| {
                t.name == user
                    && live(t.expires_at, now)
                    && self
                        .declared
                        .project_token_values
                        .get(&(p.path.clone(), t.name.clone()))
                        .is_some_and(|h| matches(h, &hash))
            };
            if p.deploy_tokens.iter().any(check) {
                return Some(Identity::DeployToken {
                    project: p.path.clone(),
                    name: user.to_string(),
                });
            }
            if p.access_tokens.iter().any(check) {
                return Some(Identity::AccessToken {
                    project: p.path.clone(),
                    name: user.to_string(),
                });
            }
        }
        None
    }

    fn token_spec<'a>(tokens: &'a [TokenSpec], name: &str) -> Option<&'a TokenSpec> {
        tokens.iter().find(|t| t.name == name)
    }

    /// What `identity` is with respect to `project`.
    pub fn standing(&self, identity: &Identity, project: &ProjectSpec) -> Standing {
        match identity {
            Identity::Anonymous => Standing::Anonymous,
            Identity::Admin => Standing::Admin,
            Identity::User { name, scopes } => Standing::Authenticated {
                role: project.user_role(name),
                scopes: Some(*scopes),
            },
            Identity::DeployToken { project: p, name } if *p == project.path => {
                match Self::token_spec(&project.deploy_tokens, name) {
                    Some(t) => Standing::DeployToken(Scopes::of(&t.scopes)),
                    None => Standing::Anonymous,
                }
            }
            Identity::AccessToken { project: p, name } if *p == project.path => {
                match Self::token_spec(&project.access_tokens, name) {
                    Some(t) => Standing::Authenticated {
                        role: Some(t.role.unwrap_or(Role::Guest)),
                        scopes: Some(Scopes::of(&t.scopes)),
                    },
                    None => Standing::Anonymous,
                }
            }
            Identity::ServiceAccount { namespace, name } => Standing::Authenticated {
                role: project.service_account_role(namespace, name),
                scopes: None,
            },
            // Project tokens count for nothing outside their project.
            Identity::DeployToken { .. } | Identity::AccessToken { .. } => Standing::Anonymous,
        }
    }

    /// What `identity` may do on repository `repo`. The depth rule stops
    /// new repositories (push) too deep below a project; one pushed before
    /// its project was declared stays readable and deletable by the admin.
    pub fn actions(&self, identity: &Identity, repo: &str) -> Actions {
        match self.locate(repo) {
            Location::InProject(p) => permitted(p, self.standing(identity, p)),
            Location::Outside if *identity == Identity::Admin => Actions::ALL,
            Location::TooDeep { .. } if *identity == Identity::Admin => Actions {
                push: false,
                ..Actions::ALL
            },
            Location::Outside | Location::TooDeep { .. } => Actions::NONE,
        }
    }

    /// The part of the requested scopes that `identity` may have: one entry
    /// per repository (repeated asks merged), none for a repository where
    /// nothing asked for is granted, so a token carries only what it grants.
    pub fn grant(&self, identity: &Identity, requested: &[Access]) -> Vec<Access> {
        let mut granted: Vec<Access> = Vec::new();
        for want in requested {
            match want.kind.as_str() {
                "repository" => {
                    let can = self.actions(identity, &want.name);
                    let mut actions: Vec<String> = Vec::new();
                    for a in &want.actions {
                        let expanded: &[&str] = if a == "*" {
                            &["pull", "push", "delete"]
                        } else {
                            &[a.as_str()]
                        };
                        for &x in expanded {
                            let ok = match x {
                                "pull" => can.pull,
                                "push" => can.push,
                                "delete" => can.delete,
                                _ => false,
                            };
                            if ok && !actions.iter().any(|y| y == x) {
                                actions.push(x.to_string());
                            }
                        }
                    }
                    if actions.is_empty() {
                        continue;
                    }
                    match granted
                        .iter_mut()
                        .find(|g| g.kind == want.kind && g.name == want.name)
                    {
                        Some(g) => {
                            for x in actions {
                                if !g.actions.contains(&x) {
                                    g.actions.push(x);
                                }
                            }
                        }
                        None => granted.push(Access {
                            kind: want.kind.clone(),
                            name: want.name.clone(),
                            actions,
                        }),
                    }
                }
                // Everyone may ask for the catalog; it lists only what they may pull.
                "registry"
                    if want.name == "catalog"
                        && !granted
                            .iter()
                            .any(|g| g.kind == "registry" && g.name == "catalog") =>
                {
                    granted.push(Access {
                        kind: want.kind.clone(),
                        name: want.name.clone(),
                        actions: vec!["*".into()],
                    })
                }
                _ => {}
            }
        }
        granted
    }
}

/// What a web UI session keeps of a sign-in instead of the secret (stored
/// as JSON in the session's row).
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Remembered {
    /// The SHA-256 of a token the access model holds (as it stores them).
    Hash(SecretHash),
    /// An identity proven by an external source (a ServiceAccount token
    /// through TokenReview), which cannot be re-proven from a hash.
    External(Identity),
}

impl Remembered {
    /// The longest a session on an external identity lasts: it is not
    /// re-proven per request, so its token being revoked ends it this late.
    pub const EXTERNAL_TTL: Duration = Duration::from_secs(10 * 60);
}

impl std::fmt::Debug for Remembered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Remembered::Hash(_) => f.write_str("Hash(..)"),
            Remembered::External(id) => write!(f, "External({})", id.subject()),
        }
    }
}

/// Settings for [`Auth::open`].
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub data_dir: PathBuf,
    pub manifest_dir: Option<PathBuf>,
    pub signing_key_file: Option<PathBuf>,
    pub issuer: String,
    pub service: String,
    pub token_ttl: Duration,
    pub realm: Option<String>,
    /// Honour `X-Forwarded-Proto`/`-Host` (`auth.trustForwardedHeaders`).
    pub trust_forwarded: bool,
    /// `berth serve` speaks HTTPS itself (`tls.certFile`): the default realm
    /// is https.
    pub https: bool,
    /// Create an admin token on a first run with no identities (standalone).
    pub first_run_admin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Key(#[from] token::KeyError),
    #[error("manifest directory: {0}")]
    Manifests(#[from] directory::ManifestError),
    #[error("admin token file {path}: {source}")]
    AdminToken {
        path: String,
        source: std::io::Error,
    },
}

/// The live authentication state shared by the data plane and token endpoint.
pub struct Auth {
    pub tokens: TokenService,
    pub realm: Option<String>,
    /// Honour `X-Forwarded-Proto`/`-Host` (`auth.trustForwardedHeaders`).
    pub trust_forwarded: bool,
    /// Served over HTTPS by berth itself.
    pub https: bool,
    model: RwLock<Arc<AccessModel>>,
    admin: Option<SecretHash>,
    manifest_dir: Option<PathBuf>,
    /// Identities proven elsewhere (Kubernetes ServiceAccount tokens).
    external: RwLock<Option<Arc<dyn ExternalIdentities>>>,
    /// False until the first complete model is loaded (in-cluster mode).
    synced: std::sync::atomic::AtomicBool,
}

/// A source of identities beyond the model's tokens, such as Kubernetes
/// TokenReview for ServiceAccount tokens.
#[async_trait::async_trait]
pub trait ExternalIdentities: Send + Sync {
    /// The identity a secret proves, if it is one of this source's.
    async fn authenticate(&self, secret: &str) -> Option<Identity>;
}

impl Auth {
    /// Loads keys, manifests and the admin token. Returns the admin token's
    /// value when it was created by this call (first run with no identities),
    /// so the caller can show it once.
    pub fn open(settings: &AuthSettings) -> Result<(Auth, Option<String>), AuthError> {
        let (key_file, generate) = match &settings.signing_key_file {
            Some(f) => (f.clone(), false),
            None => (settings.data_dir.join("auth").join("signing-key.pem"), true),
        };
        let tokens = TokenService::from_key_file(
            &key_file,
            generate,
            &settings.issuer,
            &settings.service,
            settings.token_ttl,
        )?;
        let declared = match &settings.manifest_dir {
            Some(dir) => directory::load_dir(dir)?,
            None => Declared::default(),
        };
        let probe = AccessModel::new(declared.clone(), None);
        let (admin, created) = admin_token(
            &settings.data_dir,
            settings.first_run_admin && !probe.has_identities(),
        )?;
        Ok((
            Auth {
                tokens,
                realm: settings.realm.clone(),
                trust_forwarded: settings.trust_forwarded,
                https: settings.https,
                model: RwLock::new(Arc::new(AccessModel::new(declared, admin))),
                admin,
                manifest_dir: settings.manifest_dir.clone(),
                external: RwLock::new(None),
                synced: std::sync::atomic::AtomicBool::new(true),
            },
            created,
        ))
    }

    pub fn model(&self) -> Arc<AccessModel> {
        self.model.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the model with what another source declared (in-cluster).
    pub fn set_declared(&self, declared: Declared) {
        *self.model.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(AccessModel::new(declared, self.admin));
        self.synced
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// Marks the model as not yet loaded: `/readyz` fails until
    /// [`Auth::set_declared`] is called.
    pub fn expect_sync(&self) {
        self.synced
            .store(false, std::sync::atomic::Ordering::Release);
    }

    pub fn synced(&self) -> bool {
        self.synced.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn set_external(&self, source: Arc<dyn ExternalIdentities>) {
        *self.external.write().unwrap_or_else(|e| e.into_inner()) = Some(source);
    }

    /// Checks a user name and secret against the model, then against the
    /// external source (which ignores the user name: the secret says who).
    pub async fn authenticate(&self, user: &str, secret: &str) -> Option<Identity> {
        if let Some(id) = self.model().authenticate(user, secret, SystemTime::now()) {
            return Some(id);
        }
        let external = self
            .external
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        external?.authenticate(secret).await
    }

    /// Signs a user in for a session that must re-prove itself on every
    /// request without keeping the secret: answers the identity and what to
    /// remember instead of the secret (see [`Remembered`]).
    pub async fn sign_in(&self, user: &str, secret: &str) -> Option<(Identity, Remembered)> {
        let hash = hash_secret(secret);
        if let Some(id) = self
            .model()
            .authenticate_hash(user, &hash, SystemTime::now())
        {
            return Some((id, Remembered::Hash(hash)));
        }
        let external = self
            .external
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let id = external?.authenticate(secret).await?;
        Some((id.clone(), Remembered::External(id)))
    }

    /// Checks a remembered sign-in again: a token the model holds is looked
    /// up by its hash (so a removed or expired token fails at once); an
    /// identity proven elsewhere stands until its session ends (such
    /// sessions are short: [`Remembered::EXTERNAL_TTL`]).
    pub fn recheck(&self, user: &str, remembered: &Remembered) -> Option<Identity> {
        match remembered {
            Remembered::Hash(hash) => self
                .model()
                .authenticate_hash(user, hash, SystemTime::now()),
            Remembered::External(id) => Some(id.clone()),
        }
    }

    /// Re-reads the manifest directory; on error the current model stays.
    pub fn reload(&self) -> Result<(), directory::ManifestError> {
        let Some(dir) = &self.manifest_dir else {
            return Ok(());
        };
        let declared = directory::load_dir(dir)?;
        *self.model.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(AccessModel::new(declared, self.admin));
        Ok(())
    }

    /// Polls the manifest directory and reloads when a file changes.
    pub fn watch(self: &Arc<Self>, every: Duration) {
        let Some(dir) = self.manifest_dir.clone() else {
            return;
        };
        let auth = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last = fingerprint(&dir);
            loop {
                tokio::time::sleep(every).await;
                let Some(auth) = auth.upgrade() else { return };
                let now = fingerprint(&dir);
                if now == last {
                    continue;
                }
                match auth.reload() {
                    Ok(()) => {
                        let m = auth.model();
                        tracing::info!(
                            projects = m.projects().len(),
                            "reloaded manifests from {}",
                            dir.display()
                        );
                        last = now;
                    }
                    // Try again at the next change; keep serving the old model.
                    Err(e) => {
                        tracing::error!(
                            "manifest directory not reloaded, keeping the previous model: {e}"
                        );
                        last = now;
                    }
                }
            }
        });
    }
}

fn fingerprint(dir: &Path) -> Option<directory::Fingerprint> {
    directory::manifest_files(dir).ok().map(|(_, f)| f)
}

/// Loads the admin token's hash, creating the token first when `create` is
/// set and none exists yet. Only the hash is ever written.
fn admin_token(
    data_dir: &Path,
    create: bool,
) -> Result<(Option<SecretHash>, Option<String>), AuthError> {
    let path = data_dir.join("auth").join("admin-token.sha256");
    let err = |source| AuthError::AdminToken {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).map_err(|e| err(std::io::Error::other(e)))?;
            let hash: SecretHash = bytes
                .try_into()
                .map_err(|_| err(std::io::Error::other("not a SHA-256 hex digest")))?;
            Ok((Some(hash), None))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let mut raw = [0u8; 24];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
            let token = format!("berth_{}", hex::encode(raw));
            let hash = hash_secret(&token);
            // Durable before the token is shown: the file synced, and the
            // directories and the link synced into their parents. A replica
            // sharing the data directory that made one first wins: its token
            // is the admin's, and this one is never shown.
            let created = crate::storage::durable::create_file_once(
                &path,
                hex::encode(hash).as_bytes(),
                0o600,
            )
            .map_err(err)?;
            if created {
                Ok((Some(hash), Some(token)))
            } else {
                admin_token(data_dir, false)
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((None, None)),
        Err(e) => Err(err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::Visibility;

    fn model() -> AccessModel {
        let mut d = Declared::default();
        directory::load_text(
            r#"
kind: Project
metadata: {name: p}
spec:
  path: g/p
  visibility: private
  members: [{user: dev, role: Developer}, {user: guest, role: Guest}]
  deployTokens: [{name: ro, scopes: [read_registry]}, {name: old, scopes: [read_registry], expiresAt: "2001-01-01T00:00:00Z"}]
  accessTokens: [{name: bot, role: Maintainer, scopes: [read_registry, write_registry]}]
---
kind: Project
metadata: {name: sub}
spec: {path: g/p/sub, visibility: public}
---
kind: Secret
metadata: {name: dev, labels: {berth.dev/user: dev}}
stringData: {token: dev-secret}
---
kind: Secret
metadata: {name: ro, annotations: {berth.dev/project: g/p, berth.dev/token: ro}}
stringData: {token: ro-secret}
---
kind: Secret
metadata: {name: old, annotations: {berth.dev/project: g/p, berth.dev/token: old}}
stringData: {token: old-secret}
---
kind: Secret
metadata: {name: bot, annotations: {berth.dev/project: g/p, berth.dev/token: bot}}
stringData: {token: bot-secret}
"#,
            &mut d,
        )
        .unwrap();
        AccessModel::new(d, Some(hash_secret("admin-secret")))
    }

    #[test]
    fn locates_repositories_in_projects() {
        let m = model();
        let path = |r: &str| match m.locate(r) {
            Location::InProject(p) => p.path.clone(),
            other => format!("{other:?}"),
        };
        assert_eq!(path("g/p"), "g/p");
        assert_eq!(path("g/p/app"), "g/p");
        assert_eq!(path("g/p/a/b"), "g/p");
        assert_eq!(path("g/p/sub/x"), "g/p/sub");
        assert_eq!(path("g/px"), "Outside");
        assert_eq!(
            m.locate("g/p/a/b/c"),
            Location::TooDeep {
                project: "g/p",
                levels: 3
            }
        );
        assert_eq!(m.projects()[1].visibility, Visibility::Public);
    }

    #[test]
    fn too_deep_repositories_are_the_admins_to_read_and_delete_only() {
        let m = model();
        let dev = m
            .authenticate("dev", "dev-secret", SystemTime::now())
            .unwrap();
        let cases = [
            (Identity::Admin, "g/p/a/b/c", (true, false, true)),
            (Identity::Admin, "g/p/a/b", (true, true, true)),
            (Identity::Admin, "elsewhere/a/b/c/d", (true, true, true)),
            (dev.clone(), "g/p/a/b/c", (false, false, false)),
            (dev, "g/p/a/b", (true, true, true)),
            (Identity::Anonymous, "g/p/sub/a/b/c", (false, false, false)),
        ];
        for (who, repo, (pull, push, delete)) in cases {
            assert_eq!(
                m.actions(&who, repo),
                Actions { pull, push, delete },
                "{who:?} {repo}"
            );
        }
    }

    #[test]
    fn authenticates_each_kind_of_credential() {
        let m = model();
        let now = SystemTime::now();
        assert_eq!(
            m.authenticate("admin", "admin-secret", now),
            Some(Identity::Admin)
        );
        assert_eq!(
            m.authenticate("dev", "dev-secret", now),
            Some(Identity::User {
                name: "dev".into(),
                scopes: Scopes::ALL
            })
        );
        assert_eq!(
            m.authenticate("ro", "ro-secret", now),
            Some(Identity::DeployToken {
                project: "g/p".into(),
                name: "ro".into()
            })
        );
        assert_eq!(
            m.authenticate("bot", "bot-secret", now),
            Some(Identity::AccessToken {
                project: "g/p".into(),
                name: "bot".into()
            })
        );
        for (u, s) in [
            ("dev", "wrong"),
            ("guest", "dev-secret"),
            ("admin", "dev-secret"),
            ("old", "old-secret"),
            ("nobody", ""),
        ] {
            assert_eq!(m.authenticate(u, s, now), None, "{u}");
        }
    }

    #[test]
    fn grants_the_permitted_subset() {
        let m = model();
        let ask = |s: &str| vec![token::parse_scope(s).unwrap()];
        let dev = m
            .authenticate("dev", "dev-secret", SystemTime::now())
            .unwrap();
        assert_eq!(
            m.grant(&dev, &ask("repository:g/p/app:pull,push,delete"))[0].actions,
            ["pull", "push", "delete"]
        );
        let ro = m
            .authenticate("ro", "ro-secret", SystemTime::now())
            .unwrap();
        assert_eq!(
            m.grant(&ro, &ask("repository:g/p/app:*"))[0].actions,
            ["pull"]
        );
        assert!(m.grant(&ro, &ask("repository:other/x:pull")).is_empty());
        assert!(
            m.grant(&Identity::Anonymous, &ask("repository:g/p/app:pull"))
                .is_empty()
        );
        assert_eq!(
            m.grant(&Identity::Anonymous, &ask("repository:g/p/sub/x:pull,push"))[0].actions,
            ["pull"]
        );
        assert_eq!(
            m.grant(&Identity::Admin, &ask("repository:unowned/x:push"))[0].actions,
            ["push"]
        );
        assert!(m.grant(&dev, &ask("repository:unowned/x:pull")).is_empty());
        assert_eq!(
            m.grant(&Identity::Anonymous, &ask("registry:catalog:*"))[0].actions,
            ["*"]
        );
    }

    /// Scopes that grant nothing leave no entry; repeated asks for one
    /// repository make one entry.
    #[test]
    fn grants_carry_only_what_they_grant() {
        let m = model();
        let dev = m
            .authenticate("dev", "dev-secret", SystemTime::now())
            .unwrap();
        let mut asked: Vec<Access> = (0..50)
            .map(|i| token::parse_scope(&format!("repository:other/x{i}:pull")).unwrap())
            .collect();
        for s in [
            "repository:g/p/app:pull",
            "repository:g/p/app:push",
            "repository:g/p/app:pull,delete",
            "registry:catalog:*",
            "registry:catalog:*",
            "unknown:kind:x",
        ] {
            asked.push(token::parse_scope(s).unwrap());
        }
        let granted = m.grant(&dev, &asked);
        assert_eq!(
            granted,
            vec![
                Access {
                    kind: "repository".into(),
                    name: "g/p/app".into(),
                    actions: vec!["pull".into(), "push".into(), "delete".into()],
                },
                Access {
                    kind: "registry".into(),
                    name: "catalog".into(),
                    actions: vec!["*".into()],
                },
            ]
        );
    }

    /// A token is found by its hash alone as by its text (web UI sessions
    /// keep only the hash), and not once it is wrong.
    #[test]
    fn authenticates_by_hash() {
        let m = model();
        let now = SystemTime::now();
        for (user, secret) in [
            ("admin", "admin-secret"),
            ("dev", "dev-secret"),
            ("bot", "bot-secret"),
        ] {
            assert_eq!(
                m.authenticate_hash(user, &hash_secret(secret), now),
                m.authenticate(user, secret, now),
                "{user}"
            );
            assert!(
                m.authenticate_hash(user, &hash_secret(secret), now)
                    .is_some()
            );
            assert!(
                m.authenticate_hash(user, &hash_secret("wrong"), now)
                    .is_none()
            );
        }
    }

    #[test]
    fn subjects_round_trip() {
        for id in [
            Identity::Anonymous,
            Identity::Admin,
            Identity::User {
                name: "a".into(),
                scopes: Scopes {
                    read: true,
                    write: false,
                },
            },
            Identity::DeployToken {
                project: "g/p".into(),
                name: "d".into(),
            },
            Identity::AccessToken {
                project: "g/p/q".into(),
                name: "t".into(),
            },
        ] {
            assert_eq!(Identity::from_subject(&id.subject()), Some(id));
        }
    }

    #[test]
    fn first_run_creates_the_admin_token_once() {
        let dir = tempfile::tempdir().unwrap();
        let (hash, token) = admin_token(dir.path(), true).unwrap();
        let token = token.unwrap();
        assert_eq!(hash, Some(hash_secret(&token)));
        let stored = std::fs::read_to_string(dir.path().join("auth/admin-token.sha256")).unwrap();
        assert!(!stored.contains(&token) && stored.len() == 64);
        let (again, shown) = admin_token(dir.path(), true).unwrap();
        assert_eq!((again, shown), (hash, None));
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(admin_token(empty.path(), false).unwrap(), (None, None));
    }

    /// Replicas starting together on one fresh data directory: one token is
    /// shown, by one of them, and it is the one every replica accepts.
    #[test]
    fn replicas_starting_together_show_one_admin_token() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let got: Vec<_> = (0..6)
                .map(|_| {
                    let (data, start) = (dir.path().to_path_buf(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        admin_token(&data, true).unwrap()
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            let shown: Vec<&String> = got.iter().filter_map(|(_, t)| t.as_ref()).collect();
            assert_eq!(shown.len(), 1, "{got:?}");
            for (hash, _) in &got {
                assert_eq!(*hash, Some(hash_secret(shown[0])));
            }
        }
    }
}
