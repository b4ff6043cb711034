//! Pure builders: a `Registry` in, the Kubernetes objects that run it out.
//! No API calls here, so every object can be checked in unit tests.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, EnvVarSource,
    HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Service,
    ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject};
use sha2::Digest as _;

use crate::config::{
    AuthConfig, Config, DatabaseConfig, DatabaseKind as ServeDatabaseKind, GcConfig,
    KubernetesConfig, LogConfig, MetricsConfig, S3Config, StorageConfig,
    StorageKind as ServeStorageKind, TlsConfig,
};
use crate::kubernetes::crd::{AccessMode, DatabaseKind, Registry, StorageKind};

pub const MANAGED_BY: &str = "berth-operator";
pub const CONFIG_DIR: &str = "/etc/berth/config";
pub const CONFIG_FILE: &str = "berth.yaml";
pub const SIGNING_DIR: &str = "/etc/berth/signing";
pub const SIGNING_KEY: &str = "key.pem";
pub const DATA_DIR: &str = "/var/lib/berth";
/// Where the TLS Secret is mounted (whole, so the kubelet's in-place update
/// of a renewed Secret reaches the files berth watches).
pub const TLS_DIR: &str = "/etc/berth/tls";
/// The pods' Prometheus `/metrics` port (container and Service port `metrics`).
pub const METRICS_PORT: i32 = 9090;
/// The environment variable that carries the PostgreSQL URL from the
/// connection Secret into the pods (never the ConfigMap).
pub const DATABASE_URL_ENV: &str = "BERTH_DATABASE_URL";
/// The key of the connection Secret that holds the URL.
pub const DATABASE_URL_KEY: &str = "url";
/// The S3 credentials reach the pods as the variables every S3 client reads,
/// from the keys of `storage.s3.credentialsSecret`.
pub const S3_ACCESS_KEY_ENV: &str = "AWS_ACCESS_KEY_ID";
pub const S3_SECRET_KEY_ENV: &str = "AWS_SECRET_ACCESS_KEY";
pub const S3_ACCESS_KEY_KEY: &str = "accessKeyId";
pub const S3_SECRET_KEY_KEY: &str = "secretAccessKey";
/// The uid/gid the registry runs as (distroless "nonroot").
pub const RUN_AS: i64 = 65532;

/// Names of a Registry's children.
pub struct Names {
    pub base: String,
    pub config: String,
    pub signing_key: String,
    pub data: String,
    /// The cert-manager `Certificate` and its Secret (`tls.issuerRef`).
    pub certificate: String,
    /// Cluster-scoped: lets the pods create TokenReviews.
    pub token_review_binding: String,
}

impl Names {
    pub fn of(reg: &Registry) -> Names {
        let base = reg.name_any();
        Names {
            config: format!("{base}-config"),
            signing_key: format!("{base}-signing-key"),
            data: format!("{base}-data"),
            certificate: format!("{base}-tls"),
            token_review_binding: format!(
                "berth:{}:{base}:tokenreview",
                reg.namespace().unwrap_or_default()
            ),
            base,
        }
    }
}

/// The pod selector labels.
pub fn selector(reg: &Registry) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "berth".into()),
        ("app.kubernetes.io/instance".into(), reg.name_any()),
        ("app.kubernetes.io/component".into(), "registry".into()),
    ])
}

pub fn labels(reg: &Registry) -> BTreeMap<String, String> {
    let mut l = selector(reg);
    l.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    l
}

fn owner(reg: &Registry) -> OwnerReference {
    reg.controller_owner_ref(&())
        .expect("a Registry read from the API server has a uid")
}

fn meta(reg: &Registry, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: reg.namespace(),
        labels: Some(labels(reg)),
        owner_references: Some(vec![owner(reg)]),
        ..Default::default()
    }
}

/// `host[:port]` clients use.
pub fn endpoint(reg: &Registry) -> String {
    if let Some(h) = &reg.spec.public_host {
        return h.clone();
    }
    if let Some(i) = &reg.spec.ingress {
        return i.host.clone();
    }
    service_host(reg)
}

/// The base URL clients use: https when the pods serve TLS or the ingress
/// terminates it.
pub fn url(reg: &Registry) -> String {
    let https = tls_secret(reg).is_some() || ingress_tls_secret(reg).is_some();
    format!(
        "{}://{}",
        if https { "https" } else { "http" },
        endpoint(reg)
    )
}

/// The Service's in-cluster address.
pub fn service_host(reg: &Registry) -> String {
    format!(
        "{}.{}.svc:{}",
        reg.name_any(),
        reg.namespace().unwrap_or_default(),
        reg.spec.service.port
    )
}

/// The Secret the pods' certificate comes from, when `spec.tls` is set:
/// `tls.secretName`, or the Secret of the `Certificate` the operator asks
/// cert-manager for.
pub fn tls_secret(reg: &Registry) -> Option<String> {
    let tls = reg.spec.tls.as_ref()?;
    Some(
        tls.secret_name
            .clone()
            .unwrap_or_else(|| Names::of(reg).certificate),
    )
}

/// The `berth serve` configuration the pods read.
pub fn serve_config(reg: &Registry) -> Config {
    Config {
        listen: SocketAddr::from(([0, 0, 0, 0], reg.spec.service.port as u16)),
        data_dir: PathBuf::from(DATA_DIR),
        log: LogConfig {
            format: reg.spec.log_format,
            ..LogConfig::default()
        },
        auth: AuthConfig {
            enabled: true,
            manifest_dir: None,
            signing_key_file: Some(PathBuf::from(SIGNING_DIR).join(SIGNING_KEY)),
            issuer: reg
                .spec
                .token
                .issuer
                .clone()
                .unwrap_or_else(|| "berth".into()),
            service: "berth".into(),
            token_ttl_seconds: reg.spec.token.ttl_seconds as u64,
            realm: realm(reg),
            // Behind the Registry's ingress, the ingress sets these.
            trust_forwarded_headers: reg.spec.ingress.is_some(),
        },
        gc: GcConfig {
            review_delay: reg.spec.garbage_collection.review_delay.clone(),
            sweep_interval: reg.spec.garbage_collection.sweep_interval.clone(),
            ..GcConfig::default()
        },
        cleanup: Default::default(),
        ui: Default::default(),
        server: Default::default(),
        storage: storage_config(reg),
        database: database_config(reg),
        tls: match tls_secret(reg) {
            Some(_) => TlsConfig {
                cert_file: Some(PathBuf::from(TLS_DIR).join("tls.crt")),
                key_file: Some(PathBuf::from(TLS_DIR).join("tls.key")),
            },
            None => TlsConfig::default(),
        },
        metrics: MetricsConfig {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], METRICS_PORT as u16))),
        },
        kubernetes: Some(KubernetesConfig {
            namespace: reg.namespace().unwrap_or_default(),
            registry: reg.name_any(),
        }),
    }
}

/// The pods' `storage` configuration: the CRD's settings, without the
/// credentials (they come from the Secret, as [`S3_ACCESS_KEY_ENV`] and
/// [`S3_SECRET_KEY_ENV`]).
fn storage_config(reg: &Registry) -> StorageConfig {
    let Some(s3) = reg.spec.storage.s3.as_ref() else {
        return StorageConfig::default();
    };
    if reg.spec.storage.kind != StorageKind::S3 {
        return StorageConfig::default();
    }
    StorageConfig {
        kind: ServeStorageKind::S3,
        s3: Some(S3Config {
            endpoint: Some(s3.endpoint.clone()),
            bucket: s3.bucket.clone(),
            region: s3.region.clone().unwrap_or_else(|| "us-east-1".into()),
            access_key_id: None,
            secret_access_key: None,
            prefix: s3.prefix.clone().unwrap_or_default(),
            path_style: s3.path_style,
            ..S3Config::default()
        }),
        ..StorageConfig::default()
    }
}

/// The pods' `database` configuration: the CRD's settings, without the URL
/// (it comes from the Secret, as [`DATABASE_URL_ENV`]).
fn database_config(reg: &Registry) -> DatabaseConfig {
    let d = &reg.spec.database;
    match d.kind {
        DatabaseKind::Sqlite => DatabaseConfig::default(),
        DatabaseKind::Postgres => DatabaseConfig {
            kind: ServeDatabaseKind::Postgres,
            url: None,
            max_connections: d.max_connections,
            statement_timeout: d.statement_timeout.clone(),
            connect_timeout: d.connect_timeout.clone(),
            ssl_mode: d.ssl_mode,
        },
    }
}

/// Whether the pods need a volume that outlives them: for blobs on the
/// filesystem, or for SQLite's file (blobs on S3, metadata embedded).
fn needs_claim(reg: &Registry) -> bool {
    reg.spec.storage.kind == StorageKind::Filesystem
        || reg.spec.database.kind == DatabaseKind::Sqlite
}

/// Whether the pods share one ReadWriteOnce volume: then old and new pods
/// cannot run at once, so they are replaced by `Recreate`.
fn on_one_node_volume(reg: &Registry) -> bool {
    needs_claim(reg) && reg.spec.storage.filesystem.access_mode == AccessMode::ReadWriteOnce
}

/// The token realm clients are sent to: with an ingress that terminates TLS
/// (`ingress.tlsSecretName`), `https://<ingress host>/jwt/auth`, as clients
/// reach the registry there; otherwise none, and the registry derives it from
/// each request.
fn realm(reg: &Registry) -> Option<String> {
    let ingress = reg.spec.ingress.as_ref()?;
    ingress_tls_secret(reg).map(|_| format!("https://{}/jwt/auth", ingress.host))
}

/// The Secret the ingress terminates TLS with: `ingress.tlsSecretName`, or
/// else the pods' certificate when cert-manager makes it (it names the
/// ingress host too).
fn ingress_tls_secret(reg: &Registry) -> Option<String> {
    let settings = reg.spec.ingress.as_ref()?;
    settings.tls_secret_name.clone().or_else(|| {
        reg.spec
            .tls
            .as_ref()
            .and_then(|t| t.issuer_ref.as_ref())
            .and_then(|_| tls_secret(reg))
    })
}

/// cert-manager's `Certificate` resource (`cert-manager.io/v1`).
pub fn certificate_resource() -> ApiResource {
    ApiResource {
        group: "cert-manager.io".into(),
        version: "v1".into(),
        api_version: "cert-manager.io/v1".into(),
        kind: "Certificate".into(),
        plural: "certificates".into(),
    }
}

/// With `tls.issuerRef`: the `Certificate` cert-manager turns into the
/// pods' Secret, for every name the registry is reached by (the Service's
/// DNS names, `publicHost`, the ingress host).
pub fn certificate(reg: &Registry) -> Option<DynamicObject> {
    let issuer = reg.spec.tls.as_ref()?.issuer_ref.as_ref()?;
    let n = Names::of(reg);
    let ns = reg.namespace().unwrap_or_default();
    let base = &n.base;
    let mut names = vec![
        base.clone(),
        format!("{base}.{ns}"),
        format!("{base}.{ns}.svc"),
        format!("{base}.{ns}.svc.cluster.local"),
    ];
    let host_of = |h: &str| h.rsplit_once(':').map_or(h, |(host, _)| host).to_string();
    names.extend(reg.spec.public_host.as_deref().map(host_of));
    names.extend(reg.spec.ingress.as_ref().map(|i| host_of(&i.host)));
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|h| seen.insert(h.clone()));
    let mut obj = DynamicObject::new(&n.certificate, &certificate_resource());
    obj.metadata = meta(reg, &n.certificate);
    obj.data = serde_json::json!({
        "spec": {
            "secretName": n.certificate,
            "dnsNames": names,
            "issuerRef": {
                "name": issuer.name,
                "kind": format!("{:?}", issuer.kind),
                "group": issuer.group.clone().unwrap_or_else(|| "cert-manager.io".into()),
            },
            "usages": ["server auth", "digital signature", "key encipherment"],
        }
    });
    Some(obj)
}

pub fn config_map(reg: &Registry) -> ConfigMap {
    let n = Names::of(reg);
    let yaml = serde_yaml_ng::to_string(&serve_config(reg)).expect("config serializes");
    ConfigMap {
        metadata: meta(reg, &n.config),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), yaml)])),
        ..Default::default()
    }
}

pub fn service_account(reg: &Registry) -> ServiceAccount {
    ServiceAccount {
        metadata: meta(reg, &Names::of(reg).base),
        ..Default::default()
    }
}

/// What the registry pods may read in their namespace: the Projects and
/// CleanupPolicies they serve and the token Secrets.
pub fn role(reg: &Registry) -> Role {
    let read = || vec!["get".to_string(), "list".into(), "watch".into()];
    Role {
        metadata: meta(reg, &Names::of(reg).base),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![crate::kubernetes::crd::GROUP.into()]),
                resources: Some(vec!["projects".into(), "cleanuppolicies".into()]),
                verbs: read(),
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["secrets".into()]),
                verbs: read(),
                ..Default::default()
            },
        ]),
    }
}

fn pod_subject(reg: &Registry) -> Subject {
    Subject {
        kind: "ServiceAccount".into(),
        name: reg.name_any(),
        namespace: reg.namespace(),
        ..Default::default()
    }
}

pub fn role_binding(reg: &Registry) -> RoleBinding {
    RoleBinding {
        metadata: meta(reg, &Names::of(reg).base),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: reg.name_any(),
        },
        subjects: Some(vec![pod_subject(reg)]),
    }
}

/// Binds the pods' ServiceAccount to `system:auth-delegator` so they can
/// check ServiceAccount tokens with TokenReview. Cluster-scoped, so it cannot
/// be owned by the Registry: the Registry's finalizer deletes it.
pub fn token_review_binding(reg: &Registry) -> ClusterRoleBinding {
    let mut labels = labels(reg);
    labels.insert(
        "berth.dev/registry-namespace".into(),
        reg.namespace().unwrap_or_default(),
    );
    ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(Names::of(reg).token_review_binding),
            labels: Some(labels),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: "system:auth-delegator".into(),
        },
        subjects: Some(vec![pod_subject(reg)]),
    }
}

/// The data directory's claim: blobs (filesystem storage) or SQLite's
/// file (blobs on S3); none with S3 and PostgreSQL, which keep nothing in
/// the pod that must outlive it.
pub fn data_claim(reg: &Registry) -> Option<PersistentVolumeClaim> {
    if !needs_claim(reg) {
        return None;
    }
    let fs = &reg.spec.storage.filesystem;
    Some(PersistentVolumeClaim {
        metadata: meta(reg, &Names::of(reg).data),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec![format!("{:?}", fs.access_mode)]),
            storage_class_name: fs.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(fs.size.clone()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub(super) fn hash_of(text: &str) -> String {
    hex::encode(&sha2::Sha256::digest(text.as_bytes())[..8])
}

/// The registry's Deployment. `database_hash`: a hash of the connection
/// Secret's URL, so that a changed URL rolls the pods (they read it at start).
pub fn deployment(reg: &Registry, default_image: &str, database_hash: Option<&str>) -> Deployment {
    let n = Names::of(reg);
    let config = config_map(reg);
    let config_hash = hash_of(
        config
            .data
            .as_ref()
            .and_then(|d| d.get(CONFIG_FILE))
            .map(String::as_str)
            .unwrap_or(""),
    );
    let filesystem = needs_claim(reg);
    let http = || IntOrString::String("http".into());
    let tls = tls_secret(reg);
    let probe = |path: &str, period| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: http(),
            // The kubelet does not verify the certificate of an HTTPS probe.
            scheme: tls.as_ref().map(|_| "HTTPS".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        ..Default::default()
    };
    let data_volume = if filesystem {
        Volume {
            name: "data".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: n.data.clone(),
                ..Default::default()
            }),
            ..Default::default()
        }
    } else {
        Volume {
            name: "data".into(),
            empty_dir: Some(Default::default()),
            ..Default::default()
        }
    };
    let container = Container {
        name: "registry".into(),
        image: Some(
            reg.spec
                .image
                .clone()
                .unwrap_or_else(|| default_image.into()),
        ),
        image_pull_policy: reg.spec.image_pull_policy.map(|p| format!("{p:?}")),
        command: Some(vec!["berth".into()]),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
        ]),
        ports: Some(vec![
            ContainerPort {
                name: Some("http".into()),
                container_port: reg.spec.service.port,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
            ContainerPort {
                name: Some("metrics".into()),
                container_port: METRICS_PORT,
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        ]),
        env: Some(pod_env(reg)).filter(|e| !e.is_empty()),
        // Fails while the database is unreachable: the Service stops sending
        // requests to a pod that cannot answer them.
        readiness_probe: Some(probe("/readyz", 5)),
        liveness_probe: Some(probe("/healthz", 10)),
        resources: reg.spec.resources.clone(),
        volume_mounts: Some(
            [VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }]
            .into_iter()
            .chain(tls.as_ref().map(|_| VolumeMount {
                name: "tls".into(),
                mount_path: TLS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }))
            .chain([
                VolumeMount {
                    name: "signing-key".into(),
                    mount_path: SIGNING_DIR.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: "data".into(),
                    mount_path: DATA_DIR.into(),
                    ..Default::default()
                },
            ])
            .collect(),
        ),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut pod_annotations = BTreeMap::new();
    pod_annotations.insert("berth.dev/config-hash".to_string(), config_hash);
    if let Some(hash) = database_hash {
        pod_annotations.insert("berth.dev/database-hash".to_string(), hash.to_string());
    }
    Deployment {
        metadata: meta(reg, &n.base),
        spec: Some(DeploymentSpec {
            replicas: Some(reg.spec.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(reg)),
                ..Default::default()
            },
            strategy: Some(strategy(reg)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(reg)),
                    annotations: Some(pod_annotations),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(n.base.clone()),
                    security_context: Some(PodSecurityContext {
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        fs_group: Some(RUN_AS),
                        run_as_non_root: Some(true),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    // Long enough for in-flight uploads to finish on SIGTERM.
                    termination_grace_period_seconds: Some(60),
                    containers: vec![container],
                    volumes: Some(
                        vec![
                            Volume {
                                name: "config".into(),
                                config_map: Some(ConfigMapVolumeSource {
                                    name: n.config.clone(),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                            Volume {
                                name: "signing-key".into(),
                                secret: Some(SecretVolumeSource {
                                    secret_name: Some(n.signing_key.clone()),
                                    default_mode: Some(0o440),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                            data_volume,
                        ]
                        .into_iter()
                        .chain(tls.as_ref().map(|secret| Volume {
                            name: "tls".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some(secret.clone()),
                                default_mode: Some(0o440),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }))
                        .collect(),
                    ),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// One ReadWriteOnce volume cannot be mounted by old and new pods at once:
/// `Recreate`. Otherwise a rolling update that starts a new pod before it
/// stops an old one (`maxUnavailable: 0`): no moment without a ready pod.
fn strategy(reg: &Registry) -> DeploymentStrategy {
    if on_one_node_volume(reg) {
        return DeploymentStrategy {
            type_: Some("Recreate".into()),
            ..Default::default()
        };
    }
    DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_unavailable: Some(IntOrString::Int(0)),
            max_surge: Some(IntOrString::Int(1)),
        }),
    }
}

/// What the pods read from Secrets, as environment variables (never
/// through the ConfigMap): the PostgreSQL URL (postgres) and the S3
/// credentials (s3).
fn pod_env(reg: &Registry) -> Vec<EnvVar> {
    let from_secret = |env: &str, secret: &str, key: &str| EnvVar {
        name: env.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut env = Vec::new();
    let d = &reg.spec.database;
    if d.kind == DatabaseKind::Postgres
        && let Some(secret) = &d.connection_secret
    {
        env.push(from_secret(
            DATABASE_URL_ENV,
            &secret.name,
            DATABASE_URL_KEY,
        ));
    }
    if reg.spec.storage.kind == StorageKind::S3
        && let Some(s3) = &reg.spec.storage.s3
    {
        let secret = &s3.credentials_secret.name;
        env.push(from_secret(S3_ACCESS_KEY_ENV, secret, S3_ACCESS_KEY_KEY));
        env.push(from_secret(S3_SECRET_KEY_ENV, secret, S3_SECRET_KEY_KEY));
    }
    env
}

pub fn service(reg: &Registry) -> Service {
    Service {
        metadata: meta(reg, &Names::of(reg).base),
        spec: Some(ServiceSpec {
            type_: Some(format!("{:?}", reg.spec.service.type_)),
            selector: Some(selector(reg)),
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: reg.spec.service.port,
                    target_port: Some(IntOrString::String("http".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
                ServicePort {
                    name: Some("metrics".into()),
                    port: METRICS_PORT,
                    target_port: Some(IntOrString::String("metrics".into())),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Only with more than one replica: keeps one pod up through node drains.
pub fn disruption_budget(reg: &Registry) -> Option<PodDisruptionBudget> {
    (reg.spec.replicas > 1).then(|| PodDisruptionBudget {
        metadata: meta(reg, &Names::of(reg).base),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(reg)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn ingress(reg: &Registry) -> Option<Ingress> {
    let settings = reg.spec.ingress.as_ref()?;
    let mut m = meta(reg, &Names::of(reg).base);
    // Image layers are large: no body size limit, long timeouts (ingress-nginx).
    let mut annotations = BTreeMap::from([
        (
            "nginx.ingress.kubernetes.io/proxy-body-size".to_string(),
            "0".to_string(),
        ),
        (
            "nginx.ingress.kubernetes.io/proxy-read-timeout".to_string(),
            "600".to_string(),
        ),
        (
            "nginx.ingress.kubernetes.io/proxy-send-timeout".to_string(),
            "600".to_string(),
        ),
    ]);
    let tls = tls_secret(reg);
    if tls.is_some() {
        // The pods speak HTTPS: so does the ingress to them.
        annotations.insert(
            "nginx.ingress.kubernetes.io/backend-protocol".into(),
            "HTTPS".into(),
        );
    }
    m.annotations = Some(annotations);
    let ingress_secret = ingress_tls_secret(reg);
    Some(Ingress {
        metadata: m,
        spec: Some(IngressSpec {
            ingress_class_name: settings.class_name.clone(),
            tls: ingress_secret.as_ref().map(|s| {
                vec![IngressTLS {
                    hosts: Some(vec![settings.host.clone()]),
                    secret_name: Some(s.clone()),
                }]
            }),
            rules: Some(vec![IngressRule {
                host: Some(settings.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend: IngressBackend {
                            service: Some(IngressServiceBackend {
                                name: reg.name_any(),
                                port: Some(ServiceBackendPort {
                                    name: Some("http".into()),
                                    ..Default::default()
                                }),
                            }),
                            ..Default::default()
                        },
                    }],
                }),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// The token signing key Secret: made once with a fresh P-256 key, then
/// never rewritten by the operator (rotating it would log everyone out).
pub fn signing_key_secret(reg: &Registry, pem: String) -> k8s_openapi::api::core::v1::Secret {
    let mut m = meta(reg, &Names::of(reg).signing_key);
    m.annotations = Some(BTreeMap::from([(
        "berth.dev/purpose".to_string(),
        "registry token signing key (generated once; delete to rotate)".to_string(),
    )]));
    k8s_openapi::api::core::v1::Secret {
        metadata: m,
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(SIGNING_KEY.to_string(), pem)])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubernetes::crd::RegistrySpec;

    pub(crate) fn registry(spec: serde_json::Value) -> Registry {
        let mut r = Registry::new("reg", serde_json::from_value(spec).unwrap());
        r.metadata.namespace = Some("team".into());
        r.metadata.uid = Some("u-1".into());
        r
    }

    /// Issue 12, 7(i): with a TLS ingress, clients reach the token endpoint
    /// over https at the ingress host; the rendered config says so.
    #[test]
    fn realm_follows_the_ingress_tls() {
        let cases = [
            (serde_json::json!({}), None, false),
            (
                serde_json::json!({"ingress": {"host": "reg.example.com"}}),
                None,
                true,
            ),
            (
                serde_json::json!({"ingress": {"host": "reg.example.com", "tlsSecretName": "reg-tls"}}),
                Some("https://reg.example.com/jwt/auth"),
                true,
            ),
        ];
        for (spec, realm, trust) in cases {
            let config = serve_config(&registry(spec.clone()));
            assert_eq!(config.auth.realm.as_deref(), realm, "{spec}");
            assert_eq!(config.auth.trust_forwarded_headers, trust, "{spec}");
            // The rendered realm passes the registry's own config validation.
            let yaml = serde_yaml_ng::to_string(&config).unwrap();
            assert!(
                realm.is_none_or(|r| yaml.contains(&format!("realm: {r}"))),
                "{yaml}"
            );
        }
    }

    /// spec.tls: the pods get the Secret mounted whole and the config
    /// pointing at it, HTTPS probes, and (issuerRef) a Certificate naming
    /// every host the registry is reached by; the ingress talks HTTPS to the
    /// pods and terminates with the same certificate. Metrics are on in every
    /// pod, with a port on the Service.
    #[test]
    fn tls_reaches_pods_probes_ingress_and_certificate() {
        let cases = [
            (serde_json::json!({}), None, false),
            (
                serde_json::json!({"tls": {"secretName": "mine"}}),
                Some("mine"),
                false,
            ),
            (
                serde_json::json!({"tls": {"issuerRef": {"name": "ca", "kind": "ClusterIssuer"}},
                                   "publicHost": "reg.example.com:443",
                                   "ingress": {"host": "reg.example.com"}}),
                Some("reg-tls"),
                true,
            ),
        ];
        for (spec, secret, issued) in cases {
            let r = registry(spec.clone());
            assert_eq!(tls_secret(&r).as_deref(), secret, "{spec}");
            let config = serve_config(&r);
            assert_eq!(config.tls.enabled(), secret.is_some(), "{spec}");
            assert_eq!(
                config.tls.cert_file.as_deref(),
                secret.map(|_| std::path::Path::new("/etc/berth/tls/tls.crt")),
                "{spec}"
            );
            assert_eq!(config.metrics.listen.map(|a| a.port()), Some(9090));
            let pod = deployment(&r, "img", None)
                .spec
                .unwrap()
                .template
                .spec
                .unwrap();
            let c = &pod.containers[0];
            let scheme = c
                .readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .scheme
                .clone();
            assert_eq!(scheme.as_deref(), secret.map(|_| "HTTPS"), "{spec}");
            let mounted = pod
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == "tls")
                .and_then(|v| v.secret.as_ref()?.secret_name.clone());
            assert_eq!(mounted.as_deref(), secret, "{spec}");
            let mounts = c.volume_mounts.as_ref().unwrap();
            assert_eq!(
                mounts
                    .iter()
                    .any(|m| m.name == "tls" && m.mount_path == TLS_DIR && m.sub_path.is_none()),
                secret.is_some()
            );
            let ports: Vec<_> = c
                .ports
                .as_ref()
                .unwrap()
                .iter()
                .map(|p| p.container_port)
                .collect();
            assert_eq!(ports, [5000, 9090]);
            let svc_ports: Vec<_> = service(&r)
                .spec
                .unwrap()
                .ports
                .unwrap()
                .iter()
                .map(|p| p.name.clone().unwrap())
                .collect();
            assert_eq!(svc_ports, ["http", "metrics"]);
            let cert = certificate(&r);
            assert_eq!(cert.is_some(), issued, "{spec}");
            if let Some(cert) = cert {
                let spec = &cert.data["spec"];
                assert_eq!(spec["secretName"], "reg-tls");
                assert_eq!(spec["issuerRef"]["kind"], "ClusterIssuer");
                assert_eq!(spec["issuerRef"]["group"], "cert-manager.io");
                assert_eq!(
                    spec["dnsNames"],
                    serde_json::json!([
                        "reg",
                        "reg.team",
                        "reg.team.svc",
                        "reg.team.svc.cluster.local",
                        "reg.example.com"
                    ])
                );
                let ing = ingress(&r).unwrap();
                let tls = ing.spec.unwrap().tls.unwrap();
                assert_eq!(tls[0].secret_name.as_deref(), Some("reg-tls"));
                assert_eq!(
                    ing.metadata.annotations.unwrap()["nginx.ingress.kubernetes.io/backend-protocol"],
                    "HTTPS"
                );
                assert_eq!(
                    config.auth.realm.as_deref(),
                    Some("https://reg.example.com/jwt/auth")
                );
            }
        }
    }

    #[test]
    fn the_url_says_https_when_tls_is_on() {
        for (spec, want) in [
            (serde_json::json!({}), "http://reg.team.svc:5000"),
            (
                serde_json::json!({"tls": {"secretName": "s"}}),
                "https://reg.team.svc:5000",
            ),
            (
                serde_json::json!({"tls": {"secretName": "s"}, "publicHost": "r.example:8443"}),
                "https://r.example:8443",
            ),
            (
                serde_json::json!({"ingress": {"host": "r.example"}}),
                "http://r.example",
            ),
            (
                serde_json::json!({"ingress": {"host": "r.example", "tlsSecretName": "t"}}),
                "https://r.example",
            ),
        ] {
            assert_eq!(url(&registry(spec.clone())), want, "{spec}");
        }
    }

    #[test]
    fn every_child_is_owned_and_labelled() {
        let r = registry(serde_json::json!({"replicas": 1}));
        let metas = [
            config_map(&r).metadata,
            service_account(&r).metadata,
            role(&r).metadata,
            role_binding(&r).metadata,
            data_claim(&r).unwrap().metadata,
            deployment(&r, "img", None).metadata,
            service(&r).metadata,
        ];
        for m in metas {
            let owner = &m.owner_references.as_ref().unwrap()[0];
            assert_eq!(
                (owner.kind.as_str(), owner.name.as_str()),
                ("Registry", "reg")
            );
            assert_eq!(owner.controller, Some(true));
            assert_eq!(m.namespace.as_deref(), Some("team"));
            assert_eq!(
                m.labels.unwrap()["app.kubernetes.io/managed-by"],
                MANAGED_BY
            );
        }
        // Cluster-scoped: no owner, found by label, deleted by the finalizer.
        let crb = token_review_binding(&r);
        assert!(crb.metadata.owner_references.is_none());
        assert_eq!(crb.role_ref.name, "system:auth-delegator");
    }

    #[test]
    fn one_replica_on_a_volume_has_no_budget_and_recreates() {
        let r = registry(serde_json::json!({}));
        assert!(disruption_budget(&r).is_none());
        assert!(ingress(&r).is_none());
        let d = deployment(&r, "berth:test", None);
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("berth:test"));
        assert_eq!(
            c.args.as_ref().unwrap().join(" "),
            "serve --config /etc/berth/config/berth.yaml"
        );
        let claim = pod.volumes.unwrap()[2]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, "reg-data");
        assert_eq!(
            data_claim(&r)
                .unwrap()
                .spec
                .unwrap()
                .resources
                .unwrap()
                .requests
                .unwrap()["storage"],
            Quantity("10Gi".into())
        );
    }

    #[test]
    fn several_replicas_on_s3_get_a_budget_and_no_claim() {
        let r = registry(serde_json::json!({
            "replicas": 3,
            "storage": {"kind": "s3", "s3": {"endpoint": "http://s3", "bucket": "b", "credentialsSecret": {"name": "s3"}}},
            "database": {"kind": "postgres", "connectionSecret": {"name": "pg"}},
            "ingress": {"host": "registry.example.com", "tlsSecretName": "tls"},
        }));
        assert!(data_claim(&r).is_none());
        let pdb = disruption_budget(&r).unwrap();
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
        let d = deployment(&r, "img", None).spec.unwrap();
        let rolling = d.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert!(
            d.template.spec.unwrap().volumes.unwrap()[2]
                .empty_dir
                .is_some()
        );
        let ing = ingress(&r).unwrap().spec.unwrap();
        assert_eq!(
            ing.rules.unwrap()[0].host.as_deref(),
            Some("registry.example.com")
        );
        assert_eq!(endpoint(&r), "registry.example.com");
    }

    /// Issue 15: the bucket's settings reach the pods through the ConfigMap,
    /// its credentials from the Secret as environment variables only; blobs
    /// on S3 with SQLite keep a claim for the database file.
    #[test]
    fn s3_settings_in_the_config_credentials_from_the_secret() {
        let r = registry(serde_json::json!({
            "replicas": 2,
            "storage": {"kind": "s3", "s3": {"endpoint": "https://s3.example.com", "bucket": "blobs",
                        "region": "eu-west-1", "prefix": "reg1", "credentialsSecret": {"name": "s3-creds"}}},
            "database": {"kind": "postgres", "connectionSecret": {"name": "pg"}},
        }));
        let config = serve_config(&r);
        assert_eq!(config.storage.kind, ServeStorageKind::S3);
        let s3 = config.storage.s3.as_ref().unwrap();
        assert_eq!(s3.endpoint.as_deref(), Some("https://s3.example.com"));
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_str()),
            ("blobs", "eu-west-1")
        );
        assert_eq!((s3.prefix.as_str(), s3.path_style), ("reg1", true));
        assert!(s3.access_key_id.is_none() && s3.secret_access_key.is_none());
        let yaml = &config_map(&r).data.unwrap()[CONFIG_FILE];
        assert_eq!(Config::from_yaml(yaml).unwrap(), config);
        let d = deployment(&r, "img", None).spec.unwrap();
        let env = d.template.spec.unwrap().containers[0].env.clone().unwrap();
        let from: Vec<(String, String, String)> = env
            .iter()
            .map(|e| {
                let k = e
                    .value_from
                    .as_ref()
                    .unwrap()
                    .secret_key_ref
                    .as_ref()
                    .unwrap();
                (e.name.clone(), k.name.clone(), k.key.clone())
            })
            .collect();
        let want = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            from,
            vec![
                want(DATABASE_URL_ENV, "pg", "url"),
                want("AWS_ACCESS_KEY_ID", "s3-creds", "accessKeyId"),
                want("AWS_SECRET_ACCESS_KEY", "s3-creds", "secretAccessKey"),
            ]
        );
        assert!(data_claim(&r).is_none());

        let embedded = registry(serde_json::json!({
            "storage": {"kind": "s3", "s3": {"endpoint": "http://s3", "bucket": "b", "credentialsSecret": {"name": "s"}}},
        }));
        assert!(
            data_claim(&embedded).is_some(),
            "SQLite's file needs a volume"
        );
        let d = deployment(&embedded, "img", None).spec.unwrap();
        assert_eq!(d.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        assert!(
            d.template.spec.unwrap().volumes.unwrap()[2]
                .persistent_volume_claim
                .is_some()
        );
    }

    /// Issue 14: replicas on PostgreSQL and a shared (ReadWriteMany) volume:
    /// the URL reaches the pods from the Secret as an environment variable,
    /// never through the ConfigMap; a rolling update keeps every pod until
    /// its replacement is ready; a budget keeps pods through drains; a
    /// changed URL rolls the pods.
    #[test]
    fn replicas_on_postgres_and_a_shared_volume() {
        let r = registry(serde_json::json!({
            "replicas": 3,
            "storage": {"filesystem": {"accessMode": "ReadWriteMany", "size": "50Gi"}},
            "database": {"kind": "postgres", "connectionSecret": {"name": "pg"},
                         "maxConnections": 8, "statementTimeout": "5s", "sslMode": "require"},
        }));
        let claim = data_claim(&r).unwrap().spec.unwrap();
        assert_eq!(claim.access_modes, Some(vec!["ReadWriteMany".to_string()]));
        let d = deployment(&r, "img", Some("h1")).spec.unwrap();
        assert_eq!(d.replicas, Some(3));
        let strategy = d.strategy.unwrap();
        assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
        let rolling = strategy.rolling_update.unwrap();
        assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(0)));
        assert_eq!(rolling.max_surge, Some(IntOrString::Int(1)));
        let pod = d.template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].name, DATABASE_URL_ENV);
        assert!(env[0].value.is_none());
        let from = env[0].value_from.clone().unwrap().secret_key_ref.unwrap();
        assert_eq!((from.name.as_str(), from.key.as_str()), ("pg", "url"));
        assert_eq!(
            d.template.metadata.unwrap().annotations.unwrap()["berth.dev/database-hash"],
            "h1"
        );
        assert!(disruption_budget(&r).is_some());

        let yaml = config_map(&r).data.unwrap()[CONFIG_FILE].clone();
        assert!(!yaml.contains("url"), "{yaml}");
        let mut c = Config::from_yaml(&yaml).unwrap();
        assert_eq!(c.database.kind, ServeDatabaseKind::Postgres);
        assert_eq!(c.database.max_connections, 8);
        assert_eq!(c.database.statement_timeout, "5s");
        // What the pod does with the variable the Secret fills.
        c.database.url = Some("postgres://berth:pw@db/berth".into());
        match crate::metadata::DatabaseConfig::from_settings(&c.database, &c.data_dir).unwrap() {
            crate::metadata::DatabaseConfig::Postgres(pg) => {
                assert_eq!(pg.max_connections, 8);
                assert_eq!(pg.statement_timeout, std::time::Duration::from_secs(5));
                assert_eq!(pg.ssl_mode.as_deref(), Some("require"));
            }
            other => panic!("{other:?}"),
        }

        // SQLite: no variable, one replica recreated.
        let sqlite = registry(serde_json::json!({}));
        let d = deployment(&sqlite, "img", None).spec.unwrap();
        assert!(d.template.spec.unwrap().containers[0].env.is_none());
        assert_eq!(d.strategy.unwrap().type_.as_deref(), Some("Recreate"));
        let yaml = config_map(&sqlite).data.unwrap()[CONFIG_FILE].clone();
        let c = Config::from_yaml(&yaml).unwrap();
        assert_eq!(c.database.kind, ServeDatabaseKind::Sqlite);
    }

    #[test]
    fn the_config_map_holds_a_config_berth_serve_accepts() {
        let r = registry(
            serde_json::json!({"token": {"issuer": "corp", "ttlSeconds": 600}, "service": {"port": 5050}}),
        );
        let yaml = config_map(&r).data.unwrap()[CONFIG_FILE].clone();
        let c = Config::from_yaml(&yaml).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:5050");
        assert_eq!(c.auth.issuer, "corp");
        assert_eq!(c.auth.token_ttl_seconds, 600);
        assert_eq!(
            c.kubernetes,
            Some(KubernetesConfig {
                namespace: "team".into(),
                registry: "reg".into()
            })
        );
        assert_eq!(endpoint(&r), "reg.team.svc:5050");
        // A config change rolls the pods.
        let before = deployment(&registry(serde_json::json!({})), "i", None);
        let after = deployment(&r, "i", None);
        let hash = |d: &Deployment| {
            d.spec
                .as_ref()
                .unwrap()
                .template
                .metadata
                .as_ref()
                .unwrap()
                .annotations
                .as_ref()
                .unwrap()["berth.dev/config-hash"]
                .clone()
        };
        assert_ne!(hash(&before), hash(&after));
        let _: RegistrySpec = r.spec.clone();
    }
}
