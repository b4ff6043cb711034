//! The Registry reconciler: children applied, signing key made once,
//! status from the Deployment, Events on changes and failures.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};

use super::apply::{apply, delete_if_present, patch_status};
use super::children::{self, Names};
use super::client::RegistryClient;
use super::status::{
    DatabaseSeen, RegistryObserved, TlsSeen, database_condition, gc_figures, registry_status, same,
    tls_condition,
};
use super::{Context, Error, now};
use crate::kubernetes::crd::{DatabaseKind, GcFigures, Registry};
use crate::registry::api::SweepCounts;

pub const FINALIZER: &str = "berth.dev/cluster-objects";

pub async fn reconcile(reg: Arc<Registry>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = reg.namespace().unwrap_or_default();
    let api: Api<Registry> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, reg, |event| async {
        match event {
            Finalizer::Apply(reg) => apply_registry(&reg, &ctx).await,
            Finalizer::Cleanup(reg) => cleanup(&reg, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn apply_registry(reg: &Registry, ctx: &Context) -> Result<Action, Error> {
    let ns = reg.namespace().unwrap_or_default();
    let names = Names::of(reg);
    let mut problem: Option<(&str, String)> = None;
    let (database, database_hash) = check_database(reg, ctx, &ns).await;
    let tls = match check_tls(reg, ctx, &ns).await {
        Ok(seen) => seen,
        Err(e) => {
            problem = Some(("ReconcileFailed", e.to_string()));
            None
        }
    };
    let applied = if problem.is_none() {
        match apply_children(reg, ctx, &ns, database_hash.as_deref()).await {
            Ok(written) => written,
            Err(e) => {
                problem = Some(("ReconcileFailed", e.to_string()));
                Vec::new()
            }
        }
    } else {
        Vec::new()
    };
    if !applied.is_empty() {
        ctx.event(
            reg,
            EventType::Normal,
            "Applied",
            format!("applied {}", applied.join(", ")),
        )
        .await;
    }
    if let Some((reason, message)) = &problem {
        ctx.event(reg, EventType::Warning, reason, message.clone())
            .await;
    }
    let deployment = Api::<Deployment>::namespaced(ctx.client.clone(), &ns)
        .get_opt(&names.base)
        .await?;
    let mut status = registry_status(
        reg,
        &RegistryObserved {
            deployment: deployment.as_ref(),
            problem: problem.clone(),
            signing_key_secret: Some(names.signing_key.clone()),
            database: database.clone(),
            tls: tls.clone(),
        },
        &now(),
    );
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    if ready {
        match garbage_collection(reg, ctx).await {
            Ok(figures) => status.garbage_collection = Some(figures),
            Err(e) => {
                ctx.event(
                    reg,
                    EventType::Warning,
                    "GarbageCollectionUnavailable",
                    e.to_string(),
                )
                .await
            }
        }
    }
    if !reg.status.as_ref().is_some_and(|s| same(s, &status)) {
        let api: Api<Registry> = Api::namespaced(ctx.client.clone(), &ns);
        patch_status(&api, reg, &status).await?;
    }
    match problem {
        Some(("ReconcileFailed", message)) => Err(Error::Reconcile(message)),
        // Nothing changes until the spec does.
        Some(_) => Ok(Action::await_change()),
        None if ready => Ok(Action::requeue(gc_refresh(reg))),
        // Looked at again soon: the database, or its Secret, may be fixed;
        // a certificate may be issued.
        None if !database_condition(&database).0
            || tls.as_ref().is_some_and(|t| !tls_condition(t).0) =>
        {
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        None => Ok(Action::requeue(Duration::from_secs(300))),
    }
}

/// How often the garbage collection figures of a Ready Registry are
/// refreshed (and due reviews swept): every 30 s, or every sweep interval
/// if that is shorter, but not more often than every 5 s.
pub fn gc_refresh(reg: &Registry) -> Duration {
    let every = Duration::from_secs(30);
    humantime::parse_duration(&reg.spec.garbage_collection.sweep_interval)
        .map_or(every, |d| d.min(every))
        .max(Duration::from_secs(5))
}

/// Reads the registry's garbage collection figures; when reviews are due,
/// runs a sweep first (the registry pods' own timer sweeps are the
/// fallback) and reads them again.
async fn garbage_collection(reg: &Registry, ctx: &Context) -> Result<GcFigures, Error> {
    let client = RegistryClient::new(reg, ctx).await?;
    let mut gc = client.gc_status().await?;
    if gc.due_manifest_reviews + gc.due_blob_reviews > 0 {
        let swept = client.gc_sweep().await?;
        ctx.metrics.gc_sweep();
        if swept != SweepCounts::default() {
            ctx.event(
                reg,
                EventType::Normal,
                "GarbageCollected",
                format!(
                    "swept {} manifests and {} blobs ({}), {} expired uploads",
                    swept.manifests_deleted,
                    swept.blobs_deleted,
                    super::cleanup::mib(swept.bytes_deleted),
                    swept.uploads_expired
                ),
            )
            .await;
        }
        gc = client.gc_status().await?;
    }
    Ok(gc_figures(&gc))
}

/// Checks the Registry's database as its pods will reach it: the connection
/// Secret's `url`, then one connection (no migration: the pods migrate).
/// Returns what was found and a hash of the URL (a changed URL rolls the
/// pods, which read it at start).
async fn check_database(reg: &Registry, ctx: &Context, ns: &str) -> (DatabaseSeen, Option<String>) {
    let d = &reg.spec.database;
    if d.kind == DatabaseKind::Sqlite {
        return (DatabaseSeen::Embedded, None);
    }
    let Some(secret) = &d.connection_secret else {
        return (
            DatabaseSeen::NoSecret("database.connectionSecret is not set".into()),
            None,
        );
    };
    let name = &secret.name;
    let found = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(name)
        .await;
    let url = match found {
        Err(e) => {
            return (
                DatabaseSeen::NoSecret(format!("cannot read Secret {name}: {e}")),
                None,
            );
        }
        Ok(None) => {
            return (
                DatabaseSeen::NoSecret(format!(
                    "Secret {name} (database.connectionSecret) not found"
                )),
                None,
            );
        }
        Ok(Some(s)) => s
            .data
            .and_then(|d| d.get(children::DATABASE_URL_KEY).cloned())
            .and_then(|v| String::from_utf8(v.0).ok()),
    };
    let Some(url) = url else {
        return (
            DatabaseSeen::NoSecret(format!(
                "Secret {name} has no key `{}` (the PostgreSQL URL)",
                children::DATABASE_URL_KEY
            )),
            None,
        );
    };
    let hash = children::hash_of(&url);
    let mut config = children::serve_config(reg);
    config.database.url = Some(url);
    let pg =
        match crate::metadata::DatabaseConfig::from_settings(&config.database, &config.data_dir) {
            Ok(crate::metadata::DatabaseConfig::Postgres(pg)) => pg,
            Ok(_) => unreachable!("database.kind is postgres"),
            Err(e) => {
                return (
                    DatabaseSeen::NoSecret(format!("Secret {name}: {e}")),
                    Some(hash),
                );
            }
        };
    let seen = match crate::metadata::probe(&pg).await {
        Ok(p) => DatabaseSeen::Connected {
            schema: p.schema,
            known: p.known,
        },
        Err(e) => DatabaseSeen::Unreachable(e.to_string()),
    };
    (seen, Some(hash))
}

/// Applies every child; returns the kinds that were written.
async fn apply_children(
    reg: &Registry,
    ctx: &Context,
    ns: &str,
    database_hash: Option<&str>,
) -> Result<Vec<String>, Error> {
    let c = &ctx.client;
    let names = Names::of(reg);
    let mut written = Vec::new();
    let mut note = |wrote: bool, what: &str| {
        if wrote {
            written.push(what.to_string());
        }
    };
    if ensure_signing_key(reg, ctx, ns).await? {
        note(true, "Secret (signing key, generated)");
    }
    note(
        apply(
            &Api::<ServiceAccount>::namespaced(c.clone(), ns),
            children::service_account(reg),
        )
        .await?,
        "ServiceAccount",
    );
    note(
        apply(&Api::<Role>::namespaced(c.clone(), ns), children::role(reg)).await?,
        "Role",
    );
    note(
        apply(
            &Api::<RoleBinding>::namespaced(c.clone(), ns),
            children::role_binding(reg),
        )
        .await?,
        "RoleBinding",
    );
    note(
        apply(
            &Api::<ClusterRoleBinding>::all(c.clone()),
            children::token_review_binding(reg),
        )
        .await?,
        "ClusterRoleBinding",
    );
    note(
        apply(
            &Api::<ConfigMap>::namespaced(c.clone(), ns),
            children::config_map(reg),
        )
        .await?,
        "ConfigMap",
    );
    if let Some(pvc) = children::data_claim(reg) {
        note(
            apply(
                &Api::<PersistentVolumeClaim>::namespaced(c.clone(), ns),
                pvc,
            )
            .await?,
            "PersistentVolumeClaim",
        );
    }
    note(
        apply(
            &Api::<Service>::namespaced(c.clone(), ns),
            children::service(reg),
        )
        .await?,
        "Service",
    );
    note(
        apply(
            &Api::<Deployment>::namespaced(c.clone(), ns),
            children::deployment(reg, &ctx.settings.registry_image, database_hash),
        )
        .await?,
        "Deployment",
    );
    let pdbs = Api::<PodDisruptionBudget>::namespaced(c.clone(), ns);
    match children::disruption_budget(reg) {
        Some(pdb) => note(apply(&pdbs, pdb).await?, "PodDisruptionBudget"),
        None => note(
            delete_if_present(&pdbs, &names.base).await?,
            "PodDisruptionBudget (deleted)",
        ),
    }
    let ingresses = Api::<Ingress>::namespaced(c.clone(), ns);
    match children::ingress(reg) {
        Some(i) => note(apply(&ingresses, i).await?, "Ingress"),
        None => note(
            delete_if_present(&ingresses, &names.base).await?,
            "Ingress (deleted)",
        ),
    }
    Ok(written)
}

/// With `spec.tls`: applies the cert-manager `Certificate` (`issuerRef`; a
/// missing Certificate resource is reported, not an error) and looks at the
/// Secret the pods will mount.
async fn check_tls(reg: &Registry, ctx: &Context, ns: &str) -> Result<Option<TlsSeen>, Error> {
    let Some(secret) = children::tls_secret(reg) else {
        return Ok(None);
    };
    let certificate = children::certificate(reg);
    let issued = certificate.is_some();
    if let Some(cert) = certificate {
        let api = Api::<DynamicObject>::namespaced_with(
            ctx.client.clone(),
            ns,
            &children::certificate_resource(),
        );
        match apply(&api, cert).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {
                return Ok(Some(TlsSeen::CertManagerMissing));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let found = Api::<Secret>::namespaced(ctx.client.clone(), ns)
        .get_opt(&secret)
        .await?;
    let has = |k: &str| {
        found
            .as_ref()
            .and_then(|s| s.data.as_ref())
            .is_some_and(|d| d.get(k).is_some_and(|v| !v.0.is_empty()))
    };
    Ok(Some(match (&found, has("tls.crt") && has("tls.key")) {
        (_, true) => TlsSeen::Present { secret },
        (None, false) if issued => TlsSeen::Issuing { secret },
        (None, false) => TlsSeen::SecretInvalid {
            secret,
            why: "not found".into(),
        },
        (Some(_), false) => TlsSeen::SecretInvalid {
            secret,
            why: "no tls.crt or no tls.key".into(),
        },
    }))
}

/// Creates the signing key Secret if it does not exist; never rewrites it.
async fn ensure_signing_key(reg: &Registry, ctx: &Context, ns: &str) -> Result<bool, Error> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), ns);
    let name = Names::of(reg).signing_key;
    if api.get_opt(&name).await?.is_some() {
        return Ok(false);
    }
    let pem = crate::auth::token::new_key_pem().map_err(Error::Reconcile)?;
    match api
        .create(
            &PostParams::default(),
            &children::signing_key_secret(reg, pem),
        )
        .await
    {
        Ok(_) => Ok(true),
        // Another operator instance made it first: keep theirs.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The Registry is being deleted: its namespaced children go with it by
/// owner reference; the cluster-scoped binding is ours to delete.
async fn cleanup(reg: &Registry, ctx: &Context) -> Result<Action, Error> {
    let api = Api::<ClusterRoleBinding>::all(ctx.client.clone());
    let name = Names::of(reg).token_review_binding;
    let live = api.get_opt(&name).await?;
    // Only delete the binding if it is this Registry's (same labels).
    if let Some(crb) = live {
        let labels = crb.labels();
        if labels.get("app.kubernetes.io/instance") == Some(&reg.name_any())
            && labels.get("berth.dev/registry-namespace") == reg.namespace().as_ref()
        {
            delete_if_present(&api, &name).await?;
        }
    }
    tracing::info!(registry = %super::status::display(reg), "registry deleted; cluster-scoped binding removed");
    let _ = reg.object_ref(&());
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_figures_are_refreshed_every_30_s_or_each_shorter_sweep_interval() {
        let reg = |interval: &str| {
            Registry::new(
                "reg",
                serde_json::from_value(
                    serde_json::json!({"garbageCollection": {"sweepInterval": interval}}),
                )
                .unwrap(),
            )
        };
        assert_eq!(gc_refresh(&reg("1h")), Duration::from_secs(30));
        assert_eq!(gc_refresh(&reg("20s")), Duration::from_secs(20));
        assert_eq!(gc_refresh(&reg("1m30s")), Duration::from_secs(30));
        assert_eq!(gc_refresh(&reg("1s")), Duration::from_secs(5));
    }
}
