//! The Project reconciler: a `kubernetes.io/dockerconfigjson` Secret per
//! deploy/access token (its value generated once and kept), status, and a
//! finalizer that deletes the project's images when the Project goes
//! (unless `deletionPolicy: Retain`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};

use super::apply::{apply, delete_if_present, patch_status};
use super::children::{self, MANAGED_BY};
use super::status::{Cond, conditions, same};
use super::{Context, Error, now};
use crate::auth::model::DeletionPolicy;
use crate::kubernetes::crd::{Project, ProjectStatus, Registry};

pub const FINALIZER: &str = "berth.dev/project-images";
/// Label on token Secrets: the Registry that reads them.
pub const REGISTRY_LABEL: &str = "berth.dev/registry";
/// Label on token Secrets: the Project (object name) they belong to.
pub const PROJECT_LABEL: &str = "berth.dev/project-name";
pub const DOCKERCONFIGJSON: &str = ".dockerconfigjson";

pub async fn reconcile(project: Arc<Project>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = project.namespace().unwrap_or_default();
    let api: Api<Project> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, project, |event| async {
        match event {
            Finalizer::Apply(p) => apply_project(&p, &ctx).await,
            Finalizer::Cleanup(p) => cleanup(&p, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The effective path: `spec.path`, else `<namespace>/<name>`.
pub fn path_of(p: &Project) -> String {
    if p.spec.path.is_empty() {
        format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())
    } else {
        p.spec.path.clone()
    }
}

pub fn secret_name(p: &Project, token: &str) -> String {
    format!("{}-{token}", p.name_any())
}

/// The docker config JSON for one registry host.
pub fn dockerconfigjson(host: &str, user: &str, password: &str) -> String {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    serde_json::json!({
        "auths": {host: {"username": user, "password": password, "auth": auth}}
    })
    .to_string()
}

/// The password inside a dockerconfigjson Secret (any host).
pub fn password_in(secret: &Secret) -> Option<String> {
    let raw = secret.data.as_ref()?.get(DOCKERCONFIGJSON)?;
    let json: serde_json::Value = serde_json::from_slice(&raw.0).ok()?;
    json.get("auths")?
        .as_object()?
        .values()
        .find_map(|a| a.get("password")?.as_str().map(String::from))
}

fn new_password() -> String {
    let mut raw = [0u8; 24];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    format!("berth_{}", hex::encode(raw))
}

/// The Secret for one of the project's tokens.
pub fn token_secret(p: &Project, registry: &Registry, token: &str, password: &str) -> Secret {
    let host = children::endpoint(registry);
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(p, token)),
            namespace: p.namespace(),
            labels: Some(BTreeMap::from([
                (REGISTRY_LABEL.to_string(), registry.name_any()),
                (PROJECT_LABEL.to_string(), p.name_any()),
                (
                    "app.kubernetes.io/managed-by".to_string(),
                    MANAGED_BY.to_string(),
                ),
            ])),
            annotations: Some(BTreeMap::from([
                ("berth.dev/project".to_string(), path_of(p)),
                ("berth.dev/token".to_string(), token.to_string()),
            ])),
            owner_references: Some(vec![
                p.controller_owner_ref(&())
                    .expect("a Project read from the API server has a uid"),
            ]),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            DOCKERCONFIGJSON.to_string(),
            ByteString(dockerconfigjson(&host, token, password).into_bytes()),
        )])),
        ..Default::default()
    }
}

async fn apply_project(p: &Project, ctx: &Context) -> Result<Action, Error> {
    let ns = p.namespace().unwrap_or_default();
    let path = path_of(p);
    let registry = match &p.spec.registry_ref {
        Some(r) => Api::<Registry>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await?
            .ok_or_else(|| format!("Registry {:?} not found in namespace {ns}", r.name)),
        None => Err("spec.registryRef is not set".to_string()),
    };
    let conflict = match &registry {
        Ok(reg) => path_conflict(p, &path, reg, ctx).await?,
        Err(_) => None,
    };
    let (outcome, secrets) = match (&registry, conflict) {
        (Err(message), _) => (Err(("RegistryNotFound", message.clone())), Vec::new()),
        (Ok(_), Some(other)) => (
            Err((
                "PathConflict",
                format!("path {path:?} is already served for Project {other}"),
            )),
            Vec::new(),
        ),
        (Ok(reg), None) => match write_token_secrets(p, reg, ctx).await {
            Ok((secrets, written)) => {
                if !written.is_empty() {
                    ctx.event(
                        p,
                        EventType::Normal,
                        "TokenSecretsWritten",
                        format!("wrote {}", written.join(", ")),
                    )
                    .await;
                }
                (Ok(()), secrets)
            }
            Err(e) => (Err(("ReconcileFailed", e.to_string())), Vec::new()),
        },
    };
    if let Err((reason, message)) = &outcome {
        ctx.event(p, EventType::Warning, reason, message.clone())
            .await;
    }
    let old = p.status.clone().unwrap_or_default();
    let generation = p.metadata.generation;
    let conds = match &outcome {
        Ok(()) => vec![
            Cond {
                type_: "Ready",
                ok: true,
                reason: "Serving",
                message: format!("served at {path}"),
            },
            Cond {
                type_: "Degraded",
                ok: false,
                reason: "AsExpected",
                message: String::new(),
            },
        ],
        Err((reason, message)) => vec![
            Cond {
                type_: "Ready",
                ok: false,
                reason,
                message: message.clone(),
            },
            Cond {
                type_: "Degraded",
                ok: true,
                reason,
                message: message.clone(),
            },
        ],
    };
    let status = ProjectStatus {
        observed_generation: generation,
        path: Some(path),
        token_secrets: secrets,
        conditions: conditions(&old.conditions, conds, generation, &now()),
    };
    if !p.status.as_ref().is_some_and(|s| same(s, &status)) {
        patch_status(
            &Api::<Project>::namespaced(ctx.client.clone(), &ns),
            p,
            &status,
        )
        .await?;
    }
    match outcome {
        Ok(()) => Ok(Action::requeue(Duration::from_secs(600))),
        Err(("ReconcileFailed", m)) => Err(Error::Reconcile(m)),
        // Waits for the Registry (watched) or another Project to change.
        Err(_) => Ok(Action::requeue(Duration::from_secs(60))),
    }
}

/// Another, older Project of the same Registry with the same path.
async fn path_conflict(
    p: &Project,
    path: &str,
    reg: &Registry,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let ns = p.namespace().unwrap_or_default();
    let all = Api::<Project>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?;
    let key = |q: &Project| (q.creation_timestamp().map(|t| t.0), q.name_any());
    Ok(all
        .items
        .iter()
        .filter(|q| q.name_any() != p.name_any())
        .filter(|q| q.spec.registry_ref.as_ref().map(|r| &r.name) == Some(&reg.name_any()))
        .filter(|q| path_of(q) == path && q.metadata.deletion_timestamp.is_none())
        .find(|q| key(q) < key(p))
        .map(|q| q.name_any()))
}

/// Applies one Secret per token and deletes Secrets of removed tokens.
/// Returns (secret names, what was written).
async fn write_token_secrets(
    p: &Project,
    reg: &Registry,
    ctx: &Context,
) -> Result<(Vec<String>, Vec<String>), Error> {
    let ns = p.namespace().unwrap_or_default();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &ns);
    let existing = api
        .list(&ListParams::default().labels(&format!("{PROJECT_LABEL}={}", p.name_any())))
        .await?;
    let mut names = Vec::new();
    let mut written = Vec::new();
    let tokens = p.spec.deploy_tokens.iter().chain(&p.spec.access_tokens);
    for t in tokens {
        let name = secret_name(p, &t.name);
        let password = existing
            .items
            .iter()
            .find(|s| s.name_any() == name)
            .and_then(password_in)
            .unwrap_or_else(new_password);
        if apply(&api, token_secret(p, reg, &t.name, &password)).await? {
            written.push(format!("Secret {name}"));
        }
        names.push(name);
    }
    for s in &existing.items {
        if !names.contains(&s.name_any()) && delete_if_present(&api, &s.name_any()).await? {
            written.push(format!("Secret {} (deleted)", s.name_any()));
        }
    }
    Ok((names, written))
}

/// Deletes the project's repositories through the registry's API, except
/// those of other Projects nested below it.
async fn cleanup(p: &Project, ctx: &Context) -> Result<Action, Error> {
    if p.spec.deletion_policy == DeletionPolicy::Retain {
        return Ok(Action::await_change());
    }
    let ns = p.namespace().unwrap_or_default();
    let Some(reg_ref) = &p.spec.registry_ref else {
        return Ok(Action::await_change());
    };
    let Some(reg) = Api::<Registry>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&reg_ref.name)
        .await?
    else {
        tracing::info!(project = %p.name_any(), "its Registry is gone: nothing to delete");
        return Ok(Action::await_change());
    };
    if reg.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let path = path_of(p);
    let others: Vec<String> = Api::<Project>::namespaced(ctx.client.clone(), &ns)
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|q| q.name_any() != p.name_any())
        .filter(|q| q.spec.registry_ref.as_ref().map(|r| &r.name) == Some(&reg_ref.name))
        .map(path_of)
        .filter(|o| o.len() > path.len() && o.starts_with(&format!("{path}/")))
        .collect();
    let client = super::client::RegistryClient::new(&reg, ctx).await?;
    let repos = client.catalog().await?;
    let mine: Vec<&String> = repos
        .iter()
        .filter(|r| *r == &path || r.starts_with(&format!("{path}/")))
        .filter(|r| {
            !others
                .iter()
                .any(|o| *r == o || r.starts_with(&format!("{o}/")))
        })
        .collect();
    for repo in &mine {
        client.delete_repository(repo).await?;
    }
    ctx.event(
        p,
        EventType::Normal,
        "ImagesDeleted",
        format!("deleted {} repositories under {path}", mine.len()),
    )
    .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(spec: serde_json::Value) -> Project {
        let mut p = Project::new("app", serde_json::from_value(spec).unwrap());
        p.metadata.namespace = Some("team".into());
        p.metadata.uid = Some("p-1".into());
        p
    }

    #[test]
    fn token_secrets_are_pull_secrets_the_registry_can_read() {
        let p = project(
            serde_json::json!({"registryRef": {"name": "reg"}, "deployTokens": [{"name": "ci", "scopes": ["read_registry"]}]}),
        );
        let mut reg = Registry::new(
            "reg",
            serde_json::from_value(serde_json::json!({"publicHost": "127.0.0.1:5000"})).unwrap(),
        );
        reg.metadata.namespace = Some("team".into());
        let s = token_secret(&p, &reg, "ci", "pw");
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        assert_eq!(s.metadata.name.as_deref(), Some("app-ci"));
        assert_eq!(s.metadata.labels.as_ref().unwrap()[REGISTRY_LABEL], "reg");
        assert_eq!(
            s.metadata.annotations.as_ref().unwrap()["berth.dev/project"],
            "team/app"
        );
        assert_eq!(
            s.metadata.owner_references.as_ref().unwrap()[0].kind,
            "Project"
        );
        let json: serde_json::Value =
            serde_json::from_slice(&s.data.as_ref().unwrap()[DOCKERCONFIGJSON].0).unwrap();
        let entry = &json["auths"]["127.0.0.1:5000"];
        assert_eq!(entry["username"], "ci");
        assert_eq!(
            entry["auth"],
            base64::engine::general_purpose::STANDARD.encode("ci:pw")
        );
        assert_eq!(password_in(&s).as_deref(), Some("pw"));
    }

    #[test]
    fn the_default_path_is_namespace_and_name() {
        assert_eq!(path_of(&project(serde_json::json!({}))), "team/app");
        assert_eq!(path_of(&project(serde_json::json!({"path": "g/x"}))), "g/x");
        assert!(new_password().starts_with("berth_") && new_password() != new_password());
    }
}
