//! In-cluster mode: the access model comes from the API server. The pod
//! watches the Projects of its Registry and the token Secrets labelled for
//! it (kube-runtime reflectors), and rebuilds the model on every change, so
//! a Project's new visibility or members apply within seconds. ServiceAccount
//! tokens (audience `berth`) are checked with TokenReview.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};

use crate::auth::directory::{
    self, Declared, ObjectMeta, ProjectManifest, SecretHash, SecretManifest,
};
use crate::auth::{Auth, ExternalIdentities, Identity};
use crate::kubernetes::crd::Project;

/// The audience a ServiceAccount token must carry to be accepted.
pub const AUDIENCE: &str = "berth";
/// Label that ties token Secrets to a Registry.
pub const REGISTRY_LABEL: &str = "berth.dev/registry";

/// Builds the model from the cluster's objects. Projects of other
/// Registries are skipped; of two Projects with one path, the older wins
/// (the operator reports the other as conflicting). Bad objects are logged
/// and skipped: one broken Project must not lock everyone out.
pub fn declared_from(
    registry: &str,
    projects: &[Arc<Project>],
    secrets: &[Arc<Secret>],
) -> Declared {
    let mut declared = Declared::default();
    let mut ours: Vec<&Arc<Project>> = projects
        .iter()
        .filter(|p| {
            p.spec
                .registry_ref
                .as_ref()
                .is_some_and(|r| r.name == registry)
        })
        .collect();
    ours.sort_by_key(|p| (p.creation_timestamp().map(|t| t.0), p.name_any()));
    let mut paths = HashSet::new();
    for p in ours {
        let manifest = ProjectManifest {
            metadata: ObjectMeta {
                name: p.name_any(),
                namespace: p.namespace(),
                ..Default::default()
            },
            spec: p.spec.0.clone(),
        };
        match directory::project(manifest) {
            Ok(spec) if paths.insert(spec.path.clone()) => declared.projects.push(spec),
            Ok(spec) => {
                tracing::warn!(project = %p.name_any(), path = %spec.path, "path already served by an older Project; skipped")
            }
            Err(e) => tracing::warn!("skipped: {e}"),
        }
    }
    for s in secrets {
        let b64 = base64::engine::general_purpose::STANDARD;
        let manifest = SecretManifest {
            metadata: ObjectMeta {
                name: s.name_any(),
                namespace: s.namespace(),
                labels: s.labels().clone().into_iter().collect(),
                annotations: s.annotations().clone().into_iter().collect(),
            },
            data: s
                .data
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), b64.encode(&v.0)))
                .collect(),
            string_data: s
                .string_data
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
        };
        if let Err(e) = directory::secret(manifest, &mut declared) {
            tracing::warn!("skipped: {e}");
        }
    }
    declared
}

/// Starts the reflectors; the model is replaced on every change.
pub fn watch(client: Client, namespace: &str, registry: &str, auth: Arc<Auth>) {
    auth.expect_sync();
    let projects_api: Api<Project> = Api::namespaced(client.clone(), namespace);
    let secrets_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let (projects, projects_writer) = reflector::store();
    let (secrets, secrets_writer) = reflector::store();
    let (changed, mut notified) = tokio::sync::watch::channel(());
    let project_changes = changed.clone();
    tokio::spawn(
        watcher(projects_api, watcher::Config::default())
            .default_backoff()
            .reflect(projects_writer)
            .applied_objects()
            .for_each(move |r| {
                if let Err(e) = r {
                    tracing::warn!("watching Projects: {e}");
                }
                let _ = project_changes.send(());
                async {}
            }),
    );
    let selector = format!("{REGISTRY_LABEL}={registry}");
    tokio::spawn(
        watcher(secrets_api, watcher::Config::default().labels(&selector))
            .default_backoff()
            .reflect(secrets_writer)
            .touched_objects()
            .for_each(move |r| {
                if let Err(e) = r {
                    tracing::warn!("watching Secrets: {e}");
                }
                let _ = changed.send(());
                async {}
            }),
    );
    let registry = registry.to_string();
    tokio::spawn(async move {
        // The first model is built once both stores hold a complete list.
        let (p, s) = tokio::join!(projects.wait_until_ready(), secrets.wait_until_ready());
        if p.is_err() || s.is_err() {
            return;
        }
        loop {
            let declared = declared_from(&registry, &projects.state(), &secrets.state());
            tracing::info!(
                projects = declared.projects.len(),
                personal_tokens = declared.personal_tokens.len(),
                project_tokens = declared.project_token_values.len(),
                "access model loaded from the API server"
            );
            auth.set_declared(declared);
            if notified.changed().await.is_err() {
                return;
            }
            // Coalesce bursts (a list of many objects) into one rebuild.
            tokio::time::sleep(Duration::from_millis(200)).await;
            notified.borrow_and_update();
        }
    });
}

/// Checks ServiceAccount tokens with TokenReview, caching answers briefly.
pub struct TokenReviewer {
    client: Client,
    cache: Mutex<HashMap<SecretHash, (Option<Identity>, Instant)>>,
}

impl TokenReviewer {
    const TTL: Duration = Duration::from_secs(30);

    pub fn new(client: Client) -> TokenReviewer {
        TokenReviewer {
            client,
            cache: Mutex::new(HashMap::new()),
        }
    }

    async fn review(&self, token: &str) -> Option<Identity> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![AUDIENCE.into()]),
            },
            ..Default::default()
        };
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let status = match api.create(&PostParams::default(), &review).await {
            Ok(r) => r.status?,
            Err(e) => {
                tracing::warn!("TokenReview failed: {e}");
                return None;
            }
        };
        if status.authenticated != Some(true)
            || !status.audiences.iter().flatten().any(|a| a == AUDIENCE)
        {
            return None;
        }
        let user = status.user?.username?;
        service_account(&user)
    }
}

/// `system:serviceaccount:<namespace>:<name>` as an identity.
pub fn service_account(username: &str) -> Option<Identity> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, name) = rest.split_once(':')?;
    Some(Identity::ServiceAccount {
        namespace: namespace.into(),
        name: name.into(),
    })
}

/// Whether a secret has the shape of a JWT (three base64url parts).
fn looks_like_jwt(secret: &str) -> bool {
    secret.split('.').count() == 3 && secret.starts_with("eyJ")
}

#[async_trait::async_trait]
impl ExternalIdentities for TokenReviewer {
    async fn authenticate(&self, secret: &str) -> Option<Identity> {
        if !looks_like_jwt(secret) {
            return None;
        }
        let key = directory::hash_secret(secret);
        if let Some((id, at)) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            && at.elapsed() < Self::TTL
        {
            return id.clone();
        }
        let id = self.review(secret).await;
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, (_, at)| at.elapsed() < Self::TTL);
        }
        cache.insert(key, (id.clone(), Instant::now()));
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::directory::hash_secret;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn project(name: &str, registry: &str, path: &str, created: i64) -> Arc<Project> {
        let mut p = Project::new(
            name,
            serde_json::from_value(serde_json::json!({"registryRef": {"name": registry}, "path": path, "visibility": "public"}))
                .unwrap(),
        );
        p.metadata.namespace = Some("team".into());
        p.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        Arc::new(p)
    }

    #[test]
    fn builds_the_model_from_projects_and_pull_secrets() {
        let projects = vec![
            project("app", "reg", "", 10),
            project("other-registry", "elsewhere", "x/y", 10),
            project("late", "reg", "team/app", 20),
            project("early", "reg", "g/lib", 5),
        ];
        let pull: serde_json::Value =
            serde_json::json!({"auths": {"r:5000": {"username": "ci", "password": "pw"}}});
        let mut s = Secret::default();
        s.metadata.name = Some("app-ci".into());
        s.metadata.annotations = Some(
            [
                ("berth.dev/project".to_string(), "team/app".to_string()),
                ("berth.dev/token".to_string(), "ci".to_string()),
            ]
            .into(),
        );
        s.data = Some(
            [(
                ".dockerconfigjson".to_string(),
                ByteString(pull.to_string().into_bytes()),
            )]
            .into(),
        );
        let d = declared_from("reg", &projects, &[Arc::new(s)]);
        let paths: Vec<&str> = d.projects.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["g/lib", "team/app"],
            "other registries' and conflicting Projects are skipped"
        );
        assert_eq!(
            d.project_token_values[&("team/app".to_string(), "ci".to_string())],
            hash_secret("pw")
        );
    }

    #[test]
    fn service_account_user_names() {
        assert_eq!(
            service_account("system:serviceaccount:ci:builder"),
            Some(Identity::ServiceAccount {
                namespace: "ci".into(),
                name: "builder".into()
            })
        );
        assert_eq!(service_account("alice"), None);
        assert!(looks_like_jwt("eyJhbGciOi.eyJzdWIi.c2ln"));
        assert!(!looks_like_jwt("berth_0123"));
    }
}
