//! `berth operator`: reconciles `Registry`, `Project` and `CleanupPolicy`.
//!
//! - [`children`] and [`status`] are pure (spec in, objects or status out);
//! - [`apply`] is server-side apply under one field manager, skipped when
//!   nothing would change;
//! - [`registry`], [`project`], [`cleanup`] are the reconcilers;
//! - [`client`] calls a registry's management API with admin tokens it
//!   signs itself (garbage collection figures and sweeps, cleanup runs,
//!   repository deletion);
//! - a Pod reflector (every namespace, trimmed to images) gives cleanup
//!   policies the digests running in the cluster;
//! - [`leader`] elects one active replica with a Lease;
//! - `/metrics`, `/healthz` and `/readyz` are served on `--metrics-listen`.

pub mod apply;
pub mod children;
pub mod cleanup;
pub mod client;
pub mod leader;
pub mod project;
pub mod registry;
pub mod status;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};

use crate::kubernetes::crd::{CleanupPolicy, Project, Registry};

/// How the operator reaches registry pods for API calls (deleting a
/// Project's images).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Connect {
    /// `http://<service>.<namespace>.svc:<port>` (the operator runs in the cluster).
    Service,
    /// `http://<spec.publicHost>` (an operator outside the cluster).
    PublicHost,
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Image for Registries that do not name one.
    pub registry_image: String,
    pub connect: Connect,
    pub metrics_listen: SocketAddr,
    /// `None` turns leader election off (a single replica).
    pub lease_namespace: Option<String>,
    pub lease_name: String,
    /// The name this replica goes by in the Lease and in Events.
    pub identity: String,
}

pub use crate::observability::operator::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Reconcile(String),
    #[error("registry API: {0}")]
    Registry(String),
    #[error("finalizer: {0}")]
    Finalizer(Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// The `error` label of the reconcile metrics: the variant, in snake case
    /// (as kube-rs's controller-rs labels failures).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Reconcile(_) => "reconcile",
            Error::Registry(_) => "registry",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    recorder: Recorder,
    pub metrics: Metrics,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Every Pod in the cluster (trimmed to what image digests need), for
    /// cleanup policies that keep the images in use.
    pub pods: Store<Pod>,
}

impl Context {
    /// Publishes a Kubernetes Event about `obj`; failures are only logged.
    pub async fn event<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        match type_ {
            EventType::Warning => tracing::warn!(object = %status::display(obj), reason, "{note}"),
            EventType::Normal => tracing::info!(object = %status::display(obj), reason, "{note}"),
        }
        let mut note = note;
        clip(&mut note, 1000);
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!("cannot publish an Event: {e}");
        }
    }

    fn backoff(&self, key: String, failed: bool) -> Duration {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if !failed {
            f.remove(&key);
            return Duration::ZERO;
        }
        let n = f.entry(key).or_insert(0);
        *n = (*n + 1).min(8);
        backoff_delay(*n)
    }
}

/// Shortens `s` to at most `max` bytes, on a character boundary.
pub fn clip(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

/// The wait before retrying after `failures` failures in a row: 2 s, 4 s,
/// ... doubling up to 256 s (from the 8th failure on).
pub fn backoff_delay(failures: u32) -> Duration {
    Duration::from_secs(1 << failures.clamp(1, 8))
}

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn key<K: Resource>(kind: &str, obj: &K) -> String {
    format!("{kind}/{}", status::display(obj))
}

/// Runs the operator until SIGINT/SIGTERM or until leadership is lost.
pub async fn run(settings: Settings) -> Result<(), Error> {
    let client = Client::try_default().await?;
    let metrics_listen = settings.metrics_listen;
    let reporter = Reporter {
        controller: "berth-operator".into(),
        instance: Some(settings.identity.clone()),
    };
    let (pods, pods_writer) = reflector::store();
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        settings: settings.clone(),
        metrics: Metrics::new(),
        failures: Mutex::new(HashMap::new()),
        pods,
    });
    let leading = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(metrics_listen)
        .await
        .map_err(|e| Error::Reconcile(format!("cannot listen on {metrics_listen}: {e}")))?;
    tracing::info!("metrics and health on http://{metrics_listen}/metrics");
    tokio::spawn(serve_metrics(listener, ctx.clone(), leading.clone()));

    let elector = settings.lease_namespace.as_ref().map(|ns| {
        leader::Elector::new(
            client.clone(),
            ns,
            &settings.lease_name,
            settings.identity.clone(),
            Duration::from_secs(15),
        )
    });
    if let Some(e) = &elector {
        tokio::select! {
            _ = e.acquire() => {}
            _ = shutdown_signal() => return Ok(()),
        }
        tracing::info!(identity = %settings.identity, "became the leader");
    }
    ctx.metrics.set_leader(true);
    leading.store(true, Ordering::Relaxed);

    let controllers = run_controllers(client, ctx.clone(), pods_writer);
    let lost = async {
        match &elector {
            Some(e) => e.hold().await,
            None => std::future::pending().await,
        }
    };
    let result = tokio::select! {
        _ = controllers => Ok(()),
        _ = lost => Err(Error::Reconcile("lost leadership".into())),
    };
    if let Some(e) = &elector {
        e.release().await;
    }
    result
}

async fn run_controllers(client: Client, ctx: Arc<Context>, pods: reflector::store::Writer<Pod>) {
    // Pods of every namespace, for the image digests cleanup policies keep.
    // Only the leader watches them; only images and statuses are kept.
    let pods = reflector::reflector(
        pods,
        watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(cleanup::trim_pod),
    )
    .for_each(|event| async move {
        if let Err(e) = event {
            tracing::warn!("watching Pods: {e}");
        }
    });
    let managed = watcher::Config::default().labels("app.kubernetes.io/managed-by=berth-operator");
    let registries = Controller::new(
        Api::<Registry>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<Deployment>::all(client.clone()), managed.clone())
    .owns(Api::<Service>::all(client.clone()), managed.clone())
    .owns(Api::<ConfigMap>::all(client.clone()), managed.clone())
    .owns(Api::<ServiceAccount>::all(client.clone()), managed.clone())
    .owns(Api::<Role>::all(client.clone()), managed.clone())
    .owns(Api::<RoleBinding>::all(client.clone()), managed.clone())
    .owns(
        Api::<PodDisruptionBudget>::all(client.clone()),
        managed.clone(),
    )
    .owns(Api::<Ingress>::all(client.clone()), managed.clone())
    .graceful_shutdown_on(shutdown_signal())
    .run(
        |obj, ctx: Arc<Context>| timed("Registry", obj, ctx, registry::reconcile),
        |obj, err, ctx| error_policy("Registry", obj, err, ctx),
        ctx.clone(),
    )
    .for_each(|_| async {});
    // A Registry change (its endpoint) reaches the Projects that use it.
    let projects = Controller::new(
        Api::<Project>::all(client.clone()),
        watcher::Config::default(),
    );
    let known = projects.store();
    let projects = projects
        .owns(Api::<Secret>::all(client.clone()), managed)
        .watches(
            Api::<Registry>::all(client.clone()),
            watcher::Config::default(),
            move |reg| {
                known
                    .state()
                    .into_iter()
                    .filter(|p| {
                        p.namespace() == reg.namespace()
                            && p.spec.registry_ref.as_ref().map(|r| &r.name)
                                == Some(&reg.name_any())
                    })
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown_signal())
        .run(
            |obj, ctx: Arc<Context>| timed("Project", obj, ctx, project::reconcile),
            |obj, err, ctx| error_policy("Project", obj, err, ctx),
            ctx.clone(),
        )
        .for_each(|_| async {});
    let policies = Controller::new(
        Api::<CleanupPolicy>::all(client.clone()),
        watcher::Config::default(),
    )
    .graceful_shutdown_on(shutdown_signal())
    .run(
        |obj, ctx: Arc<Context>| timed("CleanupPolicy", obj, ctx, cleanup::reconcile),
        |obj, err, ctx| error_policy("CleanupPolicy", obj, err, ctx),
        ctx,
    )
    .for_each(|_| async {});
    // The Pod watch never ends by itself: the controllers' end (on a
    // shutdown signal) ends the operator.
    tokio::select! {
        _ = async { tokio::join!(registries, projects, policies) } => {}
        _ = pods => {}
    }
}

async fn timed<K, F, Fut>(
    kind: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    f: F,
) -> Result<Action, Error>
where
    K: Resource,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: Future<Output = Result<Action, Error>>,
{
    let start = std::time::Instant::now();
    let k = key(kind, &*obj);
    let result = f(obj, ctx.clone()).await;
    let outcome = result.as_ref().map(|_| ()).map_err(Error::metric_label);
    ctx.metrics
        .observe(kind, outcome, start.elapsed().as_secs_f64());
    if result.is_ok() {
        ctx.backoff(k, false);
    }
    result
}

fn error_policy<K: Resource>(kind: &str, obj: Arc<K>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff(key(kind, &*obj), true);
    tracing::warn!(
        object = %key(kind, &*obj),
        retry_in_s = delay.as_secs(),
        "reconcile failed: {err}"
    );
    Action::requeue(delay)
}

async fn serve_metrics(
    listener: tokio::net::TcpListener,
    ctx: Arc<Context>,
    leading: Arc<AtomicBool>,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(
                |State((ctx, _)): State<(Arc<Context>, Arc<AtomicBool>)>| async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(
                        &mut text,
                        ctx.metrics.registry(),
                    ) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                "content-type",
                                crate::observability::OPENMETRICS_CONTENT_TYPE,
                            )],
                            text,
                        )
                            .into_response(),
                        Err(e) => {
                            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
                        }
                    }
                },
            ),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(
                |State((_, leading)): State<(Arc<Context>, Arc<AtomicBool>)>| async move {
                    // Every replica is ready: a standby is what makes a fast
                    // takeover possible, and rollouts must not wait on it. The
                    // leader shows in the Lease and in berth_operator_leader.
                    if leading.load(Ordering::Relaxed) {
                        "leader"
                    } else {
                        "standby"
                    }
                },
            ),
        )
        .with_state((ctx, leading));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("metrics server: {e}");
    }
}

async fn shutdown_signal() {
    crate::signal::shutdown().await
}
