//! The custom resources of group `berth.dev`, version `v1alpha1`: `Registry`,
//! `Project` and `CleanupPolicy`. The specs of the last two are core types
//! ([`crate::auth::model::ProjectSpec`], [`crate::lifecycle::spec::CleanupPolicySpec`],
//! the same shapes a standalone registry reads from its manifest directory):
//! this module wraps them with the kube derives, the CEL rules that only
//! admission needs, printer columns and status; the core never sees these
//! wrappers. `berth crds` prints their CRDs; `crds/` holds that output
//! and a test fails when it drifts. Validation lives in the schema (types,
//! enums, lengths, patterns) and in CEL rules, so the API server refuses bad
//! objects with a message that says what to change.

// kube's `printcolumn(...)` attributes repeat keys such as `type_` by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::core::CustomResourceExt;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::auth::model::{LocalRef, ProjectSpec};
pub use crate::config::{LogFormat, SslMode};
pub use crate::lifecycle::spec::{Cadence, CleanupPolicySpec, OlderThan};
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

pub const GROUP: &str = "berth.dev";
pub const VERSION: &str = "v1alpha1";

// ---------------------------------------------------------------- Registry

/// A berth registry: pods serving the OCI API, their storage and metadata.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Registry",
    namespaced,
    status = "RegistryStatus",
    shortname = "reg",
    category = "berth",
    doc = "A berth container registry: pods, storage, metadata database and service",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".status.readyReplicas"
    ),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.replicas <= 1 || self.database.kind == 'postgres'").message("database.kind sqlite supports one replica only: use postgres for replicas > 1"))]
#[x_kube(validation = Rule::new("self.replicas <= 1 || self.storage.kind == 's3' || self.storage.filesystem.accessMode == 'ReadWriteMany'").message("storage.kind filesystem with a ReadWriteOnce volume supports one replica only: set storage.filesystem.accessMode ReadWriteMany (a shared volume), or use s3, for replicas > 1"))]
pub struct RegistrySpec {
    #[serde(default = "one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Container image; default: the operator's own image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub database: Database,
    #[serde(default)]
    pub service: ServiceSettings,
    /// `host[:port]` clients use to reach the registry (written into the
    /// token Secrets). Default: the ingress host, else the Service's DNS name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub public_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSettings>,
    /// HTTPS in the registry pods (the pods, the Service and the ingress
    /// backend speak it; the token realm and the operator's calls use it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSettings>,
    #[serde(default)]
    pub token: TokenSettings,
    #[serde(default)]
    pub garbage_collection: GcSettings,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default = "json_logs")]
    pub log_format: LogFormat,
}

fn one() -> i32 {
    1
}

fn json_logs() -> LogFormat {
    LogFormat::Json
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    #[default]
    Filesystem,
    S3,
}

/// Where blobs live: a PersistentVolumeClaim, or S3-compatible object storage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind != 's3' || has(self.s3)").message("storage.s3 (endpoint, bucket, credentialsSecret) is required when storage.kind is s3"))]
pub struct Storage {
    #[serde(default)]
    pub kind: StorageKind,
    #[serde(default)]
    pub filesystem: FilesystemStorage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Storage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FilesystemStorage {
    /// Size of the PersistentVolumeClaim, e.g. `10Gi`.
    #[serde(default = "ten_gi")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$"))]
    pub size: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// How the claim is mounted: `ReadWriteOnce` (one node: one replica,
    /// pods replaced by `Recreate`) or `ReadWriteMany` (a shared volume,
    /// e.g. NFS or CephFS: several replicas, rolling updates).
    #[serde(default)]
    pub access_mode: AccessMode,
}

impl Default for FilesystemStorage {
    fn default() -> Self {
        FilesystemStorage {
            size: ten_gi(),
            storage_class_name: None,
            access_mode: AccessMode::default(),
        }
    }
}

/// A PersistentVolumeClaim's access mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum AccessMode {
    #[default]
    ReadWriteOnce,
    ReadWriteMany,
}

fn ten_gi() -> String {
    "10Gi".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct S3Storage {
    #[schemars(length(min = 1, max = 512))]
    pub endpoint: String,
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Default `us-east-1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// A Secret with keys `accessKeyId` and `secretAccessKey` (reaching the
    /// pods as `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`).
    pub credentials_secret: LocalRef,
    /// A key prefix for everything the registry keeps in the bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub prefix: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`, what most S3-compatible
    /// servers need); `false` for virtual-hosted style (AWS).
    #[serde(default = "yes")]
    pub path_style: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    #[default]
    Sqlite,
    Postgres,
}

/// The metadata database: embedded SQLite (one replica) or PostgreSQL; the
/// shape of `berth serve`'s `database` configuration, the URL from a Secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind != 'postgres' || has(self.connectionSecret)").message("database.connectionSecret (a Secret with key `url`) is required when database.kind is postgres"))]
pub struct Database {
    #[serde(default)]
    pub kind: DatabaseKind,
    /// A Secret whose key `url` holds the PostgreSQL connection URL
    /// (`postgres://user:password@host:5432/database`); it reaches the pods
    /// as the environment variable `BERTH_DATABASE_URL`, never through the
    /// ConfigMap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<LocalRef>,
    /// Connections per pod (postgres).
    #[serde(default = "sixteen")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_connections: u32,
    /// Longest a statement may run, e.g. `30s` (postgres).
    #[serde(default = "thirty_seconds")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub statement_timeout: String,
    /// Longest to wait for a connection, e.g. `10s` (postgres).
    #[serde(default = "ten_seconds")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub connect_timeout: String,
    /// `sslmode` unless the URL has one (postgres); default the driver's,
    /// `prefer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<SslMode>,
}

impl Default for Database {
    fn default() -> Self {
        Database {
            kind: DatabaseKind::default(),
            connection_secret: None,
            max_connections: sixteen(),
            statement_timeout: thirty_seconds(),
            connect_timeout: ten_seconds(),
            ssl_mode: None,
        }
    }
}

fn sixteen() -> u32 {
    16
}

fn thirty_seconds() -> String {
    "30s".into()
}

fn ten_seconds() -> String {
    "10s".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSettings {
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// The port the pods listen on and the Service exposes.
    #[serde(default = "registry_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        ServiceSettings {
            type_: ServiceType::default(),
            port: registry_port(),
        }
    }
}

fn registry_port() -> i32 {
    5000
}

/// Where the pods' certificate comes from: a `kubernetes.io/tls` Secret
/// (`tls.crt`, `tls.key`, and `ca.crt` when the operator's calls must trust
/// a private CA), or a cert-manager issuer the operator asks for a
/// `Certificate` (Secret `<name>-tls`). The files are watched: a renewed
/// Secret is served without a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.secretName) != has(self.issuerRef)").message("tls needs exactly one of secretName (a kubernetes.io/tls Secret) and issuerRef (a cert-manager issuer)"))]
pub struct TlsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// A cert-manager issuer (as in a `Certificate`'s `spec.issuerRef`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IssuerRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// `Issuer` (the Registry's namespace, the default) or `ClusterIssuer`.
    #[serde(default)]
    pub kind: IssuerKind,
    /// Default `cert-manager.io`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IngressSettings {
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// A `kubernetes.io/tls` Secret for `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSettings {
    /// The `iss` of issued tokens; default `berth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(default = "token_ttl")]
    #[schemars(range(min = 30, max = 86400))]
    pub ttl_seconds: i32,
}

impl Default for TokenSettings {
    fn default() -> Self {
        TokenSettings {
            issuer: None,
            ttl_seconds: token_ttl(),
        }
    }
}

fn token_ttl() -> i32 {
    300
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GcSettings {
    /// How long after an event a manifest or blob is reviewed (default 24h).
    #[serde(default = "review_delay")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d))+$"))]
    pub review_delay: String,
    /// How often the sweep runs (default 1h).
    #[serde(default = "sweep_interval")]
    #[schemars(regex(pattern = r"^([0-9]+(s|m|h|d))+$"))]
    pub sweep_interval: String,
}

impl Default for GcSettings {
    fn default() -> Self {
        GcSettings {
            review_delay: review_delay(),
            sweep_interval: sweep_interval(),
        }
    }
}

fn review_delay() -> String {
    "24h".into()
}

fn sweep_interval() -> String {
    "1h".into()
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `host[:port]` clients push to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The registry's base URL: `https://<endpoint>` when the pods (`tls`)
    /// or the ingress terminate TLS, else `http://<endpoint>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
    /// The Secret holding the token signing key (generated once, kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret: Option<String>,
    /// Garbage collection figures, read from the registry while it is Ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub garbage_collection: Option<GcFigures>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// A registry's garbage collection, as its metadata database counts it
/// (exact figures, not estimates). The operator refreshes them while the
/// Registry is Ready and runs a sweep as soon as reviews are due.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcFigures {
    /// Manifests and blobs queued for review, due or not.
    #[serde(default)]
    pub pending_reviews: i64,
    /// Reviews whose delay has passed: the next sweep takes them.
    #[serde(default)]
    pub due_reviews: i64,
    /// When the last sweep finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sweep: Option<Time>,
    /// Sweeps run since the registry's database was created.
    #[serde(default)]
    pub sweeps: i64,
    /// Totals since the registry's database was created.
    #[serde(default)]
    pub manifests_deleted: i64,
    #[serde(default)]
    pub blobs_deleted: i64,
    /// Bytes of manifests and blobs deleted.
    #[serde(default)]
    pub bytes_deleted: i64,
    /// Abandoned upload sessions removed.
    #[serde(default)]
    pub uploads_expired: i64,
}

// ----------------------------------------------------------------- Project

/// A `Project`: a path in the registry with visibility, members and tokens.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Project",
    namespaced,
    status = "ProjectStatus",
    shortname = "proj",
    category = "berth",
    doc = "A berth project: a repository path with visibility, members and tokens",
    printcolumn(name = "Path", type_ = "string", json_path = ".status.path"),
    printcolumn(name = "Visibility", type_ = "string", json_path = ".spec.visibility"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(transparent)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.registryRef)", "message": "registryRef names the Registry (in this namespace) that serves this Project"}, {"rule": "self.accessTokens.all(t, has(t.role))", "message": "every access token needs a role (deploy tokens have none)"}, {"rule": "self.path == '' || self.path.matches('^[a-z0-9]+(([._]|__|-)[a-z0-9]+)*(/[a-z0-9]+(([._]|__|-)[a-z0-9]+)*)*$')", "message": "path must be lower-case components of letters and digits separated by one '.', '_', '__' or '-' (no leading '_', no trailing or double '-': Docker clients break on those), joined by '/'"}]))]
pub struct ProjectCrdSpec(pub ProjectSpec);

impl std::ops::Deref for ProjectCrdSpec {
    type Target = ProjectSpec;
    fn deref(&self) -> &ProjectSpec {
        &self.0
    }
}

impl std::ops::DerefMut for ProjectCrdSpec {
    fn deref_mut(&mut self) -> &mut ProjectSpec {
        &mut self.0
    }
}

impl From<ProjectSpec> for ProjectCrdSpec {
    fn from(spec: ProjectSpec) -> Self {
        ProjectCrdSpec(spec)
    }
}

/// What the operator reports about a Project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The effective project path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The `kubernetes.io/dockerconfigjson` Secrets made for its tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_secrets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

// ----------------------------------------------------------- CleanupPolicy

/// GitLab's cleanup policy over the tags of the selected Projects.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "CleanupPolicy",
    namespaced,
    status = "CleanupPolicyStatus",
    shortname = "cp",
    category = "berth",
    doc = "Which tags of which Projects are deleted, and how often (GitLab's cleanup policy)",
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(name = "Cadence", type_ = "string", json_path = ".spec.cadence"),
    printcolumn(name = "Dry run", type_ = "boolean", json_path = ".spec.dryRun"),
    printcolumn(
        name = "Deleted",
        type_ = "integer",
        description = "Tags the last run deleted (or, in a dry run, would delete)",
        json_path = ".status.lastRunResult.tagsDeleted"
    ),
    printcolumn(name = "Last run", type_ = "date", json_path = ".status.lastRun"),
    printcolumn(name = "Next run", type_ = "string", json_path = ".status.nextRun"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(transparent)]
#[schemars(extend("x-kubernetes-validations" = [{"rule": "has(self.projectRef) != has(self.selector)", "message": "set exactly one of projectRef (one Project) or selector (Projects by label)"}, {"rule": "!has(self.nameRegex) || ''.matches(self.nameRegex) || !''.matches(self.nameRegex)", "message": "nameRegex is not a valid regular expression"}, {"rule": "!has(self.nameRegexKeep) || ''.matches(self.nameRegexKeep) || !''.matches(self.nameRegexKeep)", "message": "nameRegexKeep is not a valid regular expression"}]))]
pub struct CleanupPolicyCrdSpec(pub CleanupPolicySpec);

impl std::ops::Deref for CleanupPolicyCrdSpec {
    type Target = CleanupPolicySpec;
    fn deref(&self) -> &CleanupPolicySpec {
        &self.0
    }
}

impl std::ops::DerefMut for CleanupPolicyCrdSpec {
    fn deref_mut(&mut self) -> &mut CleanupPolicySpec {
        &mut self.0
    }
}

impl From<CleanupPolicySpec> for CleanupPolicyCrdSpec {
    fn from(spec: CleanupPolicySpec) -> Self {
        CleanupPolicyCrdSpec(spec)
    }
}

/// Conditions: `Accepted` (the spec is valid and its Project exists),
/// `Scheduled` (accepted and enabled: runs on cadence; its
/// `lastTransitionTime` starts the schedule) and `LastRunSucceeded`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the last run started, whatever its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<Time>,
    /// When the next run is due: one cadence after the last successful run
    /// (or after the policy became Scheduled); after a failed run, a retry
    /// with exponential backoff. Absent while the policy is not Scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<Time>,
    /// Runs that failed in a row; 0 (absent) after a success.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub consecutive_failures: i32,
    /// What the last run did, or with `dryRun` would have done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_result: Option<CleanupRunSummary>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// What started a cleanup run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunTrigger {
    /// The cadence came round (or a retry after a failed run).
    Schedule,
    /// The `berth.dev/run-now` annotation (removed once the run started).
    RunNow,
}

/// The last run of a CleanupPolicy over its Projects. In a dry run
/// (`dryRun: true`) nothing was deleted: `tagsDeleted` lists and counts the
/// tags that would have been.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CleanupRunSummary {
    pub trigger: RunTrigger,
    pub dry_run: bool,
    /// One line, e.g. `deleted 3 tags (1.2 MiB reclaimable) in 1 project` or
    /// `dry run: would delete 3 tags ...`.
    pub message: String,
    /// Tags deleted (would be, in a dry run) over every Project.
    pub tags_deleted: i64,
    /// Bytes the deletions left unreferenced; garbage collection frees them
    /// once the Registry's review delay has passed.
    pub bytes_reclaimable: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<ProjectRunSummary>,
}

/// One Project's part of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectRunSummary {
    /// The Project object's name.
    pub name: String,
    /// Its path in the registry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    /// Why this Project's run failed (the other Projects still ran).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub tags_deleted: i64,
    pub bytes_reclaimable: i64,
    /// Repositories, those with deletions or failures first, then by name;
    /// at most 100.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<RepositoryRunSummary>,
    /// Repositories left out of `repositories`.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub repositories_not_listed: i64,
}

/// One repository's part of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryRunSummary {
    pub name: String,
    /// Tags deleted (would be, in a dry run), in name order; at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_deleted: Vec<String>,
    /// Tags deleted beyond those listed in `tagsDeleted`.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub tags_deleted_not_listed: i64,
    pub tags_kept: i64,
    /// How many tags each rule kept (`latest`, `not_matched`, `matched_keep`,
    /// `newest`, `too_new`, `protected`, `immutable`, `in_use`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kept_by_reason: BTreeMap<String, i64>,
    pub bytes_reclaimable: i64,
    /// Tags the policy chose but that could not be deleted, with why; at
    /// most 50.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
}

/// The three CRDs as one YAML stream, in the order they are printed.
pub fn crds_yaml() -> String {
    let mut out = String::new();
    for crd in [Registry::crd(), Project::crd(), CleanupPolicy::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).expect("CRDs serialize"));
    }
    out
}

/// File name under `crds/` for each CRD, with its YAML.
pub fn crd_files() -> Vec<(String, String)> {
    [Registry::crd(), Project::crd(), CleanupPolicy::crd()]
        .into_iter()
        .map(|crd| {
            let name = format!(
                "{}.yaml",
                crd.metadata.name.as_deref().expect("CRDs are named")
            );
            let yaml = serde_yaml_ng::to_string(&crd).expect("CRDs serialize");
            (name, yaml)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_have_status_columns_and_short_names() {
        for crd in [Registry::crd(), Project::crd(), CleanupPolicy::crd()] {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(crd.spec.scope, "Namespaced");
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, VERSION);
            assert!(v.subresources.as_ref().unwrap().status.is_some());
            assert!(v.additional_printer_columns.as_ref().unwrap().len() >= 3);
            assert!(!crd.spec.names.short_names.clone().unwrap().is_empty());
        }
    }

    #[test]
    fn defaults_fill_an_empty_registry_spec() {
        let spec: RegistrySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(spec.replicas, 1);
        assert_eq!(spec.storage.kind, StorageKind::Filesystem);
        assert_eq!(spec.storage.filesystem.size, "10Gi");
        assert_eq!(spec.database.kind, DatabaseKind::Sqlite);
        assert_eq!(spec.service.port, 5000);
        assert_eq!(spec.token.ttl_seconds, 300);
        assert_eq!(spec.garbage_collection.review_delay, "24h");
    }

    /// `crds/` must be exactly what `berth crds` prints: regenerate with
    /// `cargo run -- crds --dir crds` after changing a type.
    #[test]
    fn crds_directory_matches_the_types() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        for dir in ["crds", "charts/berth/crds", "config/crd/bases"] {
            for (name, yaml) in crd_files() {
                let path = root.join(dir).join(&name);
                let on_disk = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert!(
                    on_disk == yaml,
                    "{} drifted from the Rust types: run `cargo run -- crds --dir {dir}`",
                    path.display()
                );
            }
        }
    }
}
