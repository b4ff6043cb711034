//! The access model as loaded from a directory of Kubernetes-style YAML
//! manifests (standalone mode): `kind: Project` objects and token `Secret`s.
//! Token values are hashed as they are read; only hashes are kept.
//!
//! Secrets understood (values in `stringData.token`, base64 `data.token`, or
//! a hex SHA-256 in `stringData.tokenSha256` so no plain value is on disk):
//! - personal access token: label `berth.dev/user: <name>`; annotations
//!   `berth.dev/scopes: read_registry,write_registry` (default both) and
//!   optional `berth.dev/expires-at: <RFC 3339>`;
//! - a project's deploy or access token value: annotations
//!   `berth.dev/project: <path>` and `berth.dev/token: <token name>` (scopes,
//!   role and expiry come from the Project's spec).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use serde::Deserialize;
use sha2::Digest as _;

use super::model::{ProjectSpec, Scope};
use crate::oci::validate_repository;

pub type SecretHash = [u8; 32];

pub fn hash_secret(secret: &str) -> SecretHash {
    sha2::Sha256::digest(secret.as_bytes()).into()
}

#[derive(Debug, Clone)]
pub struct PersonalToken {
    pub secret_name: String,
    pub hash: SecretHash,
    pub scopes: Vec<Scope>,
    pub expires_at: Option<SystemTime>,
}

/// Everything the directory declares.
#[derive(Debug, Clone, Default)]
pub struct Declared {
    pub projects: Vec<ProjectSpec>,
    /// User name -> personal access tokens.
    pub personal_tokens: HashMap<String, Vec<PersonalToken>>,
    /// (project path, token name) -> hash of the token's value.
    pub project_token_values: HashMap<(String, String), SecretHash>,
}

#[derive(Debug, thiserror::Error)]
#[error("{file}: document {document}: {message}")]
pub struct ManifestError {
    pub file: PathBuf,
    pub document: usize,
    pub message: String,
}

#[derive(Deserialize, Default)]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProjectManifest {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: ProjectSpec,
}

/// A Secret as written in YAML: `data` values are base64.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretManifest {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub data: HashMap<String, String>,
    #[serde(default)]
    pub string_data: HashMap<String, String>,
}

/// Name, size and modification time of each manifest file.
pub type Fingerprint = Vec<(PathBuf, u64, SystemTime)>;

/// The `*.yaml`/`*.yml` files of `dir`, sorted, with a fingerprint of their
/// names, sizes and modification times (to notice changes cheaply).
pub fn manifest_files(dir: &Path) -> std::io::Result<(Vec<PathBuf>, Fingerprint)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) && path.is_file()
        {
            files.push(path);
        }
    }
    files.sort();
    let mut fingerprint = Vec::with_capacity(files.len());
    for f in &files {
        let m = std::fs::metadata(f)?;
        fingerprint.push((
            f.clone(),
            m.len(),
            m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        ));
    }
    Ok((files, fingerprint))
}

/// Reads every manifest in `dir`. Any bad document fails the whole load, so a
/// half-read directory never replaces a good model.
pub fn load_dir(dir: &Path) -> Result<Declared, ManifestError> {
    let (files, _) = manifest_files(dir).map_err(|e| ManifestError {
        file: dir.to_path_buf(),
        document: 0,
        message: e.to_string(),
    })?;
    let mut declared = Declared::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| ManifestError {
            file: file.clone(),
            document: 0,
            message: e.to_string(),
        })?;
        load_text(&text, &mut declared).map_err(|(document, message)| ManifestError {
            file: file.clone(),
            document,
            message,
        })?;
    }
    let mut seen = std::collections::HashSet::new();
    for p in &declared.projects {
        if !seen.insert(p.path.clone()) {
            return Err(ManifestError {
                file: dir.to_path_buf(),
                document: 0,
                message: format!("project path {:?} is declared twice", p.path),
            });
        }
    }
    Ok(declared)
}

/// Adds the documents of one YAML text; errors carry the document number.
pub fn load_text(text: &str, declared: &mut Declared) -> Result<(), (usize, String)> {
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value = serde_yaml_ng::Value::deserialize(doc).map_err(|e| (n, e.to_string()))?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_string();
        match kind.as_str() {
            "Project" => {
                let m: ProjectManifest = serde_path_to_error::deserialize(value)
                    .map_err(|e| (n, format!("Project: key `{}`: {}", e.path(), e.inner())))?;
                declared.projects.push(project(m).map_err(|e| (n, e))?);
            }
            "Secret" => {
                let m: SecretManifest =
                    serde_yaml_ng::from_value(value).map_err(|e| (n, format!("Secret: {e}")))?;
                secret(m, declared).map_err(|e| (n, e))?;
            }
            // Other kinds (CleanupPolicy, ...) belong to other readers.
            _ => {}
        }
    }
    Ok(())
}

/// Checks a Project and fills in its default path.
pub fn project(m: ProjectManifest) -> Result<ProjectSpec, String> {
    let mut spec = m.spec;
    if spec.path.is_empty() {
        spec.path = match m.metadata.namespace {
            Some(ns) => format!("{ns}/{}", m.metadata.name),
            None => m.metadata.name.clone(),
        };
    }
    validate_repository(&spec.path)
        .map_err(|e| format!("Project {:?}: path: {e}", m.metadata.name))?;
    for member in &spec.members {
        if member.user.is_some() == member.service_account.is_some() {
            return Err(format!(
                "Project {:?}: each member needs exactly one of `user` or `serviceAccount`",
                spec.path
            ));
        }
    }
    for t in spec.access_tokens.iter() {
        if t.role.is_none() {
            return Err(format!(
                "Project {:?}: access token {:?} needs a role",
                spec.path, t.name
            ));
        }
    }
    Ok(spec)
}

/// Adds a token Secret (personal or a project token's value) to `declared`;
/// other Secrets are ignored.
pub fn secret(m: SecretManifest, declared: &mut Declared) -> Result<(), String> {
    let meta = &m.metadata;
    let user = meta.labels.get("berth.dev/user");
    let project = meta.annotations.get("berth.dev/project");
    if user.is_none() && project.is_none() {
        return Ok(()); // not a berth token
    }
    let what = format!("Secret {:?}", meta.name);
    let hash = if let Some(hex_hash) = m.string_data.get("tokenSha256") {
        let bytes =
            hex::decode(hex_hash.trim()).map_err(|e| format!("{what}: tokenSha256: {e}"))?;
        bytes
            .try_into()
            .map_err(|_| format!("{what}: tokenSha256 must be 32 bytes of hex"))?
    } else if let Some(token) = m.string_data.get("token") {
        hash_secret(token)
    } else if let Some(b64) = m.data.get("token") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("{what}: data.token is not base64: {e}"))?;
        hash_secret(
            &String::from_utf8(raw).map_err(|_| format!("{what}: data.token is not UTF-8"))?,
        )
    } else if let Some(b64) = m.data.get(".dockerconfigjson") {
        // The operator's pull secrets: the password of the (one) registry entry.
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("{what}: data..dockerconfigjson is not base64: {e}"))?;
        let json: serde_json::Value = serde_json::from_slice(&raw)
            .map_err(|e| format!("{what}: .dockerconfigjson is not JSON: {e}"))?;
        let password = json["auths"]
            .as_object()
            .and_then(|a| a.values().find_map(|v| v["password"].as_str()))
            .ok_or_else(|| {
                format!("{what}: .dockerconfigjson has no auths entry with a password")
            })?;
        hash_secret(password)
    } else {
        return Err(format!(
            "{what}: no token (stringData.token, data.token, data..dockerconfigjson or stringData.tokenSha256)"
        ));
    };
    if let Some(user) = user {
        let scopes = match meta.annotations.get("berth.dev/scopes") {
            None => vec![Scope::ReadRegistry, Scope::WriteRegistry],
            Some(list) => list
                .split(',')
                .map(|s| match s.trim() {
                    "read_registry" => Ok(Scope::ReadRegistry),
                    "write_registry" => Ok(Scope::WriteRegistry),
                    other => Err(format!(
                        "{what}: unknown scope {other:?} (read_registry, write_registry)"
                    )),
                })
                .collect::<Result<_, _>>()?,
        };
        let expires_at = match meta.annotations.get("berth.dev/expires-at") {
            None => None,
            Some(t) => Some(
                humantime::parse_rfc3339_weak(t)
                    .map_err(|e| format!("{what}: berth.dev/expires-at: {e}"))?,
            ),
        };
        declared
            .personal_tokens
            .entry(user.clone())
            .or_default()
            .push(PersonalToken {
                secret_name: meta.name.clone(),
                hash,
                scopes,
                expires_at,
            });
    } else if let Some(project) = project {
        let token = meta.annotations.get("berth.dev/token").ok_or_else(|| {
            format!("{what}: annotation berth.dev/token names the project's token")
        })?;
        declared
            .project_token_values
            .insert((project.clone(), token.clone()), hash);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::model::{Role, Visibility};

    const DIR: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: app, namespace: group}
spec:
  visibility: internal
  members:
    - {user: alice, role: Developer}
    - serviceAccount: {namespace: ci, name: builder}
      role: Maintainer
  deployTokens:
    - {name: deployer, scopes: [read_registry], expiresAt: "2030-01-01T00:00:00Z"}
---
apiVersion: v1
kind: Secret
metadata:
  name: alice-pat
  labels: {berth.dev/user: alice}
  annotations: {berth.dev/scopes: read_registry}
stringData: {token: s3cret}
---
apiVersion: v1
kind: Secret
metadata:
  name: deployer
  annotations: {berth.dev/project: group/app, berth.dev/token: deployer}
data: {token: ZGVwbG95}
---
apiVersion: berth.dev/v1alpha1
kind: CleanupPolicy
metadata: {name: ignored}
"#;

    #[test]
    fn reads_projects_and_token_secrets() {
        let mut d = Declared::default();
        load_text(DIR, &mut d).unwrap();
        assert_eq!(d.projects.len(), 1);
        let p = &d.projects[0];
        assert_eq!(p.path, "group/app");
        assert_eq!(p.visibility, Visibility::Internal);
        assert_eq!(p.user_role("alice"), Some(Role::Developer));
        assert_eq!(p.user_role("bob"), None);
        let alice = &d.personal_tokens["alice"][0];
        assert_eq!(alice.hash, hash_secret("s3cret"));
        assert_eq!(alice.scopes, vec![Scope::ReadRegistry]);
        assert_eq!(
            d.project_token_values[&("group/app".to_string(), "deployer".to_string())],
            hash_secret("deploy")
        );
    }

    #[test]
    fn bad_documents_name_the_problem() {
        let cases = [
            (
                "kind: Project\nmetadata: {name: x}\nspec: {path: Bad/Path}\n",
                "lower case",
            ),
            (
                "kind: Project\nmetadata: {name: x}\nspec: {path: a/b, visibility: secret}\n",
                "visibility",
            ),
            (
                "kind: Project\nmetadata: {name: x}\nspec: {path: a/b, members: [{user: u, role: Boss}]}\n",
                "members",
            ),
            (
                "kind: Project\nmetadata: {name: x}\nspec: {path: a/b, colour: red}\n",
                "colour",
            ),
            (
                "kind: Project\nmetadata: {name: x}\nspec: {path: a/b, accessTokens: [{name: t, scopes: [read_registry]}]}\n",
                "needs a role",
            ),
            (
                "kind: Secret\nmetadata: {name: s, labels: {berth.dev/user: u}}\n",
                "no token",
            ),
            (
                "kind: Secret\nmetadata: {name: s, labels: {berth.dev/user: u}, annotations: {berth.dev/scopes: admin}}\nstringData: {token: x}\n",
                "unknown scope",
            ),
            (
                "---\nkind: Project\nmetadata: {name: x}\nspec: {path: a/b}\n---\nkind: Project\nspec: {}\n",
                "document 2",
            ),
        ];
        for (yaml, want) in cases {
            let mut d = Declared::default();
            let (n, msg) = load_text(yaml, &mut d).unwrap_err();
            let full = format!("document {n}: {msg}");
            assert!(full.contains(want), "{yaml:?}: {full}");
        }
    }
}
