//! `berth serve` configuration: built-in defaults, then a YAML file
//! (`--config`), then command-line flags. Unknown keys and bad values are
//! refused at start with a message naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct Config {
    /// Address the registry listens on.
    pub listen: SocketAddr,
    /// Where blobs, uploads and the embedded database are kept.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub auth: AuthConfig,
    pub gc: GcConfig,
    pub cleanup: CleanupConfig,
    pub ui: UiConfig,
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub database: DatabaseConfig,
    pub tls: TlsConfig,
    pub metrics: MetricsConfig,
    /// In-cluster mode: Projects and token Secrets come from the API server
    /// (the Registry's namespace), not from a manifest directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesConfig>,
}

/// HTTPS: a PEM certificate chain and its private key. Both files are
/// watched: a replaced pair (cert-manager renewing a Secret) is served to new
/// connections within seconds, without a restart. Absent: plain HTTP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct TlsConfig {
    /// The certificate chain, leaf first (`tls.crt` of a Kubernetes TLS Secret).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PKCS#8, PKCS#1 or SEC1 PEM; `tls.key`).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether HTTPS is configured.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// Both files or neither; on failure (key path, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(("tls.keyFile".into(), "is required with tls.certFile".into())),
            (None, Some(_)) => Err(("tls.certFile".into(), "is required with tls.keyFile".into())),
            _ => Ok(()),
        }
    }
}

/// Prometheus metrics (`/metrics`, text format) on a listener of their own,
/// so a scrape never competes with the registry's connection limit and the
/// registry's port need not expose them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct MetricsConfig {
    /// Address of the metrics listener (such as `0.0.0.0:9090`); absent: off.
    pub listen: Option<SocketAddr>,
}

/// Online garbage collection: durations such as `24h`, `30m`, `0s`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct GcConfig {
    /// Delay between an event (tag deleted, blob uploaded...) and the review
    /// of what it may have left dangling. `0s` for tests.
    pub review_delay: String,
    /// How often a sweep runs.
    pub sweep_interval: String,
    /// Upload sessions older than this are removed.
    pub upload_expiry: String,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            review_delay: "24h".into(),
            sweep_interval: "1h".into(),
            upload_expiry: "24h".into(),
        }
    }
}

/// [`GcConfig`] parsed: how often and how eagerly to collect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcSettings {
    pub review_delay: std::time::Duration,
    pub sweep_interval: std::time::Duration,
    pub upload_expiry: std::time::Duration,
}

impl GcConfig {
    /// The parsed durations; errors name the key.
    pub fn settings(&self) -> Result<GcSettings, (String, String)> {
        let parse = |key: &str, v: &str| {
            humantime::parse_duration(v)
                .map_err(|e| (format!("gc.{key}"), format!("{v:?} is not a duration: {e}")))
        };
        let settings = GcSettings {
            review_delay: parse("reviewDelay", &self.review_delay)?,
            sweep_interval: parse("sweepInterval", &self.sweep_interval)?,
            upload_expiry: parse("uploadExpiry", &self.upload_expiry)?,
        };
        if settings.sweep_interval.is_zero() {
            return Err(("gc.sweepInterval".into(), "must be more than 0".into()));
        }
        Ok(settings)
    }
}

/// Cleanup policies in standalone mode (read from `auth.manifestDir`; in a
/// cluster the operator runs them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct CleanupConfig {
    /// How often the policies are read and the due ones run (a run-now
    /// annotation takes effect within this time).
    pub check_interval: String,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        CleanupConfig {
            check_interval: "1m".into(),
        }
    }
}

impl CleanupConfig {
    pub fn check_interval(&self) -> Result<std::time::Duration, (String, String)> {
        match humantime::parse_duration(&self.check_interval) {
            Ok(d) if d.is_zero() => {
                Err(("cleanup.checkInterval".into(), "must be more than 0".into()))
            }
            Ok(d) => Ok(d),
            Err(e) => Err((
                "cleanup.checkInterval".into(),
                format!("{:?} is not a duration: {e}", self.check_interval),
            )),
        }
    }
}

/// The web UI (`/ui/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct UiConfig {
    /// How long a sign-in lasts (then the browser signs in again).
    pub session_timeout: String,
}

impl Default for UiConfig {
    fn default() -> Self {
        UiConfig {
            session_timeout: "8h".into(),
        }
    }
}

impl UiConfig {
    pub fn session_timeout(&self) -> Result<std::time::Duration, (String, String)> {
        match humantime::parse_duration(&self.session_timeout) {
            Ok(d) if d.as_secs() < 60 => {
                Err(("ui.sessionTimeout".into(), "must be at least 1m".into()))
            }
            Ok(d) => Ok(d),
            Err(e) => Err((
                "ui.sessionTimeout".into(),
                format!("{:?} is not a duration: {e}", self.session_timeout),
            )),
        }
    }
}

/// Connection handling: timeouts and limits that keep slow or idle clients
/// from holding the server's resources. Durations such as `30s`, `2m`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct ServerConfig {
    /// A request's line and headers must arrive within this time (HTTP/1.1;
    /// also how long a keep-alive connection may wait for its next request).
    pub header_read_timeout: String,
    /// A connection with no request in progress and no traffic for this long
    /// is closed.
    pub idle_timeout: String,
    /// A request body that sends nothing for this long is cut (the upload
    /// keeps what arrived and can be resumed).
    pub body_idle_timeout: String,
    /// A client that reads nothing of a response for this long is dropped.
    pub send_idle_timeout: String,
    /// Open connections at most; further clients wait to be accepted.
    pub max_connections: usize,
    /// Blob transfers (uploads and blob downloads) in progress at most;
    /// beyond it requests get 429 TOOMANYREQUESTS with Retry-After.
    pub max_concurrent_transfers: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_read_timeout: "30s".into(),
            idle_timeout: "90s".into(),
            body_idle_timeout: "60s".into(),
            send_idle_timeout: "60s".into(),
            max_connections: 4096,
            max_concurrent_transfers: 1024,
        }
    }
}

/// [`ServerConfig`] with its durations parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerSettings {
    pub header_read_timeout: std::time::Duration,
    pub idle_timeout: std::time::Duration,
    pub body_idle_timeout: std::time::Duration,
    pub send_idle_timeout: std::time::Duration,
    pub max_connections: usize,
    pub max_concurrent_transfers: usize,
}

impl ServerConfig {
    /// The parsed settings; errors name the key.
    pub fn settings(&self) -> Result<ServerSettings, (String, String)> {
        let parse = |key: &str, v: &str| match humantime::parse_duration(v) {
            Ok(d) if d.is_zero() => Err((format!("server.{key}"), "must be more than 0".into())),
            Ok(d) => Ok(d),
            Err(e) => Err((
                format!("server.{key}"),
                format!("{v:?} is not a duration: {e}"),
            )),
        };
        let settings = ServerSettings {
            header_read_timeout: parse("headerReadTimeout", &self.header_read_timeout)?,
            idle_timeout: parse("idleTimeout", &self.idle_timeout)?,
            body_idle_timeout: parse("bodyIdleTimeout", &self.body_idle_timeout)?,
            send_idle_timeout: parse("sendIdleTimeout", &self.send_idle_timeout)?,
            max_connections: self.max_connections,
            max_concurrent_transfers: self.max_concurrent_transfers,
        };
        if settings.max_connections == 0 {
            return Err(("server.maxConnections".into(), "must be more than 0".into()));
        }
        if settings.max_concurrent_transfers == 0 {
            return Err((
                "server.maxConcurrentTransfers".into(),
                "must be more than 0".into(),
            ));
        }
        Ok(settings)
    }
}

/// Where blobs live, and limits on what uploads may take. The Registry
/// resource's `storage` has the same shape (credentials from a Secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct StorageConfig {
    /// `filesystem` (the data directory, the default) or `s3`.
    pub kind: StorageKind,
    /// The bucket (kind s3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Config>,
    /// The largest blob an upload may reach, in bytes (413 beyond it).
    pub max_blob_size: u64,
    /// Uploads are refused (507) while the data directory's filesystem has
    /// less free space than this, in bytes; 0 turns the reserve off
    /// (filesystem only: object storage does not run out).
    pub min_free_bytes: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            kind: StorageKind::Filesystem,
            s3: None,
            max_blob_size: 100 << 30,
            min_free_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    #[default]
    Filesystem,
    S3,
}

/// An S3-compatible bucket (AWS S3, Ceph RGW, versitygw, ...).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct S3Config {
    /// `https://host[:port]`; absent for AWS's endpoint of `region`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Also `AWS_ACCESS_KEY_ID`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Also `AWS_SECRET_ACCESS_KEY`. Never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<String>,
    /// A key prefix for everything berth keeps in the bucket.
    pub prefix: String,
    /// Path-style requests (`endpoint/bucket/key`), which most servers
    /// other than AWS need; `false` for virtual-hosted style.
    pub path_style: bool,
    /// A PEM CA certificate to trust for the endpoint besides the system's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate: tests only.
    pub insecure_skip_verify: bool,
    /// How long a request may take, retries included, before clients get
    /// 503.
    pub request_timeout: String,
    /// Answer blob GETs with a redirect (307) to a presigned URL of the
    /// object, so the bytes do not pass through berth.
    pub redirect: bool,
    /// How long such a URL is valid.
    pub redirect_expiry: String,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            bucket: String::new(),
            region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            prefix: String::new(),
            path_style: true,
            ca_file: None,
            insecure_skip_verify: false,
            request_timeout: "30s".into(),
            redirect: false,
            redirect_expiry: "20m".into(),
        }
    }
}

/// The secret never shows.
impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "(set)"),
            )
            .field("prefix", &self.prefix)
            .field("path_style", &self.path_style)
            .field("ca_file", &self.ca_file)
            .field("insecure_skip_verify", &self.insecure_skip_verify)
            .field("request_timeout", &self.request_timeout)
            .field("redirect", &self.redirect)
            .field("redirect_expiry", &self.redirect_expiry)
            .finish()
    }
}

impl StorageConfig {
    /// Checks the keys; on failure (key path, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.max_blob_size == 0 {
            return Err(("storage.maxBlobSize".into(), "must be more than 0".into()));
        }
        match (self.kind, &self.s3) {
            (StorageKind::Filesystem, _) => Ok(()),
            (StorageKind::S3, None) => Err((
                "storage.s3".into(),
                "is required when storage.kind is s3 (at least its bucket)".into(),
            )),
            (StorageKind::S3, Some(s3)) => s3.validate().map(drop),
        }
    }
}

impl S3Config {
    /// How long presigned redirect URLs are valid, when redirects are on;
    /// on failure (key path, message).
    pub fn redirect_expiry(&self) -> Result<Option<std::time::Duration>, (String, String)> {
        if !self.redirect {
            return Ok(None);
        }
        match humantime::parse_duration(&self.redirect_expiry) {
            // SigV4 presigned URLs live at most 7 days.
            Ok(d)
                if d >= std::time::Duration::from_secs(1)
                    && d <= std::time::Duration::from_secs(7 * 86_400) =>
            {
                Ok(Some(d))
            }
            Ok(_) => Err((
                "storage.s3.redirectExpiry".into(),
                "must be between 1s and 7d (S3's limit)".into(),
            )),
            Err(e) => Err((
                "storage.s3.redirectExpiry".into(),
                format!("{:?}: {e}", self.redirect_expiry),
            )),
        }
    }

    /// Checks the keys and returns the request timeout; on failure (key
    /// path, message).
    pub fn validate(&self) -> Result<std::time::Duration, (String, String)> {
        self.redirect_expiry()?;
        let bad = |key: &str, why: String| Err((format!("storage.s3.{key}"), why));
        // S3's bucket naming rules, the part every server applies.
        let b = &self.bucket;
        if !(3..=63).contains(&b.len())
            || !b
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
            || !b.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            return bad(
                "bucket",
                format!("{b:?} is not a bucket name (3-63 of a-z, 0-9, '-', '.')"),
            );
        }
        if let Some(e) = &self.endpoint {
            match url::Url::parse(e) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => return bad("endpoint", format!("{e:?} is not an http(s) URL")),
            }
        }
        if self.region.is_empty() {
            return bad("region", "must not be empty".into());
        }
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(_), None) | (None, Some(_)) => {
                return bad(
                    if self.access_key_id.is_some() {
                        "secretAccessKey"
                    } else {
                        "accessKeyId"
                    },
                    "accessKeyId and secretAccessKey go together".into(),
                );
            }
            _ => {}
        }
        match humantime::parse_duration(&self.request_timeout) {
            Ok(d) if d >= std::time::Duration::from_secs(1) => Ok(d),
            Ok(_) => bad("requestTimeout", "must be at least 1s".into()),
            Err(e) => bad("requestTimeout", format!("{:?}: {e}", self.request_timeout)),
        }
    }
}

/// The Registry object this pod serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesConfig {
    pub namespace: String,
    pub registry: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct AuthConfig {
    /// Token authentication; when off, everyone may do everything.
    pub enabled: bool,
    /// Directory of Project and token Secret manifests (standalone mode),
    /// watched for changes.
    pub manifest_dir: Option<PathBuf>,
    /// PEM private key (EC P-256 for ES256, or RSA for RS256). Default: a
    /// P-256 key generated once under `<dataDir>/auth/`.
    pub signing_key_file: Option<PathBuf>,
    pub issuer: String,
    pub service: String,
    /// Lifetime of issued tokens, in seconds (30 to 86400).
    pub token_ttl_seconds: u64,
    /// Token endpoint URL sent to clients; default `<scheme>://<host>/jwt/auth`
    /// from the request (see `trustForwardedHeaders`).
    pub realm: Option<String>,
    /// Take the scheme and host clients used from `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` (set by a TLS-terminating proxy or ingress) for
    /// the default realm and the web UI's `Secure` cookies. Off by default:
    /// without a proxy that sets them, any client could name them.
    pub trust_forwarded_headers: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            enabled: true,
            manifest_dir: None,
            signing_key_file: None,
            issuer: "berth".into(),
            service: "berth".into(),
            token_ttl_seconds: 300,
            realm: None,
            trust_forwarded_headers: false,
        }
    }
}

/// Which metadata database: the embedded SQLite file in the data directory
/// (one process), or PostgreSQL (shared by replicas). The Registry
/// resource's `database` has the same shape (the URL from a Secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseKind {
    #[default]
    Sqlite,
    Postgres,
}

/// PostgreSQL's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct DatabaseConfig {
    pub kind: DatabaseKind,
    /// `postgres://user:password@host:5432/database` (kind postgres); also
    /// `--database-url` or `BERTH_DATABASE_URL`. Never logged as written: the
    /// password is shown as `***`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Connections per process (postgres).
    pub max_connections: u32,
    /// Longest a statement may run (postgres).
    pub statement_timeout: String,
    /// Longest to wait for a connection, at start and from the pool (postgres).
    pub connect_timeout: String,
    /// `sslmode` unless the URL has one (postgres); the driver's default is
    /// `prefer`.
    pub ssl_mode: Option<SslMode>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            kind: DatabaseKind::Sqlite,
            url: None,
            max_connections: 16,
            statement_timeout: "30s".into(),
            connect_timeout: "10s".into(),
            ssl_mode: None,
        }
    }
}

/// The URL's password never shows.
impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("kind", &self.kind)
            .field("url", &self.url.as_ref().map(|_| "(set)"))
            .field("max_connections", &self.max_connections)
            .field("statement_timeout", &self.statement_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("ssl_mode", &self.ssl_mode)
            .finish()
    }
}

/// [`DatabaseConfig`] checked: the durations parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseTimeouts {
    pub statement: std::time::Duration,
    pub connect: std::time::Duration,
}

impl DatabaseConfig {
    pub fn timeouts(&self) -> Result<DatabaseTimeouts, (String, String)> {
        let parse = |key: &str, v: &str| match humantime::parse_duration(v) {
            Ok(d) if d.is_zero() => Err((format!("database.{key}"), "must be more than 0".into())),
            Ok(d) => Ok(d),
            Err(e) => Err((
                format!("database.{key}"),
                format!("{v:?} is not a duration: {e}"),
            )),
        };
        Ok(DatabaseTimeouts {
            statement: parse("statementTimeout", &self.statement_timeout)?,
            connect: parse("connectTimeout", &self.connect_timeout)?,
        })
    }

    fn validate(&self) -> Result<(), (String, String)> {
        self.timeouts()?;
        if self.max_connections == 0 {
            return Err((
                "database.maxConnections".into(),
                "must be more than 0".into(),
            ));
        }
        // A postgres URL may come later, from the environment
        // (`server::database_config` requires it then).
        match (self.kind, &self.url) {
            (DatabaseKind::Sqlite, Some(_)) => Err((
                "database.url".into(),
                "set, but database.kind is sqlite: set kind: postgres, or remove the url".into(),
            )),
            (DatabaseKind::Postgres, Some(url))
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) =>
            {
                Err((
                    "database.url".into(),
                    "must start with postgres:// or postgresql://".into(),
                ))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `berth=debug,info`; `RUST_LOG` wins.
    pub level: String,
}

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    Deserialize,
    schemars::JsonSchema,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 5000)),
            data_dir: PathBuf::from("berth-data"),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            gc: GcConfig::default(),
            cleanup: CleanupConfig::default(),
            ui: UiConfig::default(),
            server: ServerConfig::default(),
            storage: StorageConfig::default(),
            database: DatabaseConfig::default(),
            tls: TlsConfig::default(),
            metrics: MetricsConfig::default(),
            kubernetes: None,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Text,
            level: "info".to_string(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: key `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// After the command-line flags and environment were applied.
    #[error("configuration key `{key}` (from the file, flags and environment): {message}")]
    Combined { key: String, message: String },
}

impl Config {
    /// Reads a YAML config file over the defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_yaml(&text).map_err(|(key, message)| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        })
    }

    /// Parses YAML text; on failure returns (key path, message).
    pub fn from_yaml(text: &str) -> Result<Config, (String, String)> {
        if text.trim().is_empty() {
            return Ok(Config::default());
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().to_string();
            (key, message)
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every key (also after flags were applied); on failure
    /// returns (key path, message).
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(("dataDir".into(), "must not be empty".into()));
        }
        if !(30..=86_400).contains(&self.auth.token_ttl_seconds) {
            return Err((
                "auth.tokenTtlSeconds".into(),
                format!("{} is outside 30..=86400", self.auth.token_ttl_seconds),
            ));
        }
        self.gc.settings()?;
        self.cleanup.check_interval()?;
        self.ui.session_timeout()?;
        self.server.settings()?;
        self.database.validate()?;
        self.storage.validate()?;
        self.tls.validate()?;
        if let Some(k) = &self.kubernetes
            && self.auth.manifest_dir.is_some()
        {
            return Err((
                "auth.manifestDir".into(),
                format!(
                    "cannot be used with `kubernetes` (projects come from namespace {})",
                    k.namespace
                ),
            ));
        }
        if let Some(realm) = &self.auth.realm
            && !(realm.starts_with("http://") || realm.starts_with("https://"))
        {
            return Err((
                "auth.realm".into(),
                format!("{realm:?} is not an http(s) URL"),
            ));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(("log.level".into(), format!("not a valid log filter: {e}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_defaults() {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/standalone/berth.yaml"),
        )
        .unwrap();
        assert_eq!(Config::from_yaml(&text).unwrap(), Config::default());
    }

    #[test]
    fn reads_the_s3_section() {
        let c = Config::from_yaml(
            "storage:\n  kind: s3\n  s3:\n    endpoint: https://s3.example.com:9000\n    bucket: my.bucket-1\n    region: eu-west-1\n    accessKeyId: AK\n    secretAccessKey: SK\n    prefix: reg/one\n    pathStyle: false\n    caFile: /etc/ca.pem\n    insecureSkipVerify: true\n    requestTimeout: 5s\n",
        )
        .unwrap();
        assert_eq!(c.storage.kind, StorageKind::S3);
        let s3 = c.storage.s3.unwrap();
        assert_eq!(s3.endpoint.as_deref(), Some("https://s3.example.com:9000"));
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_str()),
            ("my.bucket-1", "eu-west-1")
        );
        assert_eq!(s3.access_key_id.as_deref(), Some("AK"));
        assert_eq!(s3.secret_access_key.as_deref(), Some("SK"));
        assert_eq!((s3.prefix.as_str(), s3.path_style), ("reg/one", false));
        assert_eq!(s3.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert!(s3.insecure_skip_verify);
        assert_eq!(s3.validate().unwrap(), std::time::Duration::from_secs(5));
        // The secret never shows in a debug print.
        assert!(!format!("{s3:?}").contains("SK"));
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::from_yaml("").unwrap(), Config::default());
        assert_eq!(Config::default().listen.to_string(), "127.0.0.1:5000");
    }

    #[test]
    fn reads_every_key() {
        let c = Config::from_yaml(
            "listen: 0.0.0.0:6000\ndataDir: /var/lib/berth\nlog:\n  format: json\n  level: debug\n",
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:6000");
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/berth"));
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.log.level, "debug");
    }

    #[test]
    fn the_database_password_never_shows() {
        let yaml = "database:\n  kind: postgres\n  url: postgres://berth:s3cret@db/berth\n";
        let c = Config::from_yaml(yaml).unwrap();
        assert_eq!(c.database.kind, DatabaseKind::Postgres);
        assert!(!format!("{c:?}").contains("s3cret"), "{c:?}");
        let bad = "database:\n  kind: postgres\n  url: mysql://berth:s3cret@db/berth\n";
        let (_, message) = Config::from_yaml(bad).unwrap_err();
        assert!(!message.contains("s3cret"), "{message}");
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("listne: 1.2.3.4:5", "listne"),
            ("log:\n  colour: red\n", "log.colour"),
            ("listen: nowhere", "listen"),
            ("log:\n  format: xml\n", "log.format"),
            ("log:\n  level: \"=[\"\n", "log.level"),
            ("dataDir: \"\"", "dataDir"),
            ("database:\n  kind: mysql\n", "database.kind"),
            ("database:\n  url: postgres://db/berth\n", "database.url"),
            (
                "database:\n  kind: postgres\n  url: mysql://u:p@db/berth\n",
                "database.url",
            ),
            (
                "database:\n  kind: postgres\n  url: postgres://db/b\n  maxConnections: 0\n",
                "database.maxConnections",
            ),
            (
                "database:\n  kind: postgres\n  url: postgres://db/b\n  statementTimeout: 0s\n",
                "database.statementTimeout",
            ),
            (
                "database:\n  kind: postgres\n  url: postgres://db/b\n  sslMode: always\n",
                "database.sslMode",
            ),
            ("auth:\n  tokenTtlSeconds: 5\n", "auth.tokenTtlSeconds"),
            ("auth:\n  realm: ftp://x\n", "auth.realm"),
            ("auth:\n  enabled: maybe\n", "auth.enabled"),
            ("gc:\n  reviewDelay: soon\n", "gc.reviewDelay"),
            ("gc:\n  sweepInterval: 0s\n", "gc.sweepInterval"),
            ("cleanup:\n  checkInterval: 0s\n", "cleanup.checkInterval"),
            ("ui:\n  sessionTimeout: 10s\n", "ui.sessionTimeout"),
            ("ui:\n  sessionTimeout: forever\n", "ui.sessionTimeout"),
            (
                "server:\n  headerReadTimeout: 0s\n",
                "server.headerReadTimeout",
            ),
            ("server:\n  idleTimeout: soon\n", "server.idleTimeout"),
            ("server:\n  bodyIdleTimeout: 0s\n", "server.bodyIdleTimeout"),
            ("server:\n  sendIdleTimeout: x\n", "server.sendIdleTimeout"),
            ("server:\n  maxConnections: 0\n", "server.maxConnections"),
            ("server:\n  maxConnections: -1\n", "server.maxConnections"),
            (
                "server:\n  maxConcurrentTransfers: 0\n",
                "server.maxConcurrentTransfers",
            ),
            ("storage:\n  maxBlobSize: 0\n", "storage.maxBlobSize"),
            ("tls:\n  certFile: /c.pem\n", "tls.keyFile"),
            ("tls:\n  keyFile: /k.pem\n", "tls.certFile"),
            ("tls:\n  cert: /c.pem\n", "tls.cert"),
            ("metrics:\n  listen: everywhere\n", "metrics.listen"),
            ("storage:\n  minFreeBytes: lots\n", "storage.minFreeBytes"),
            ("storage:\n  kind: s3\n", "storage.s3"),
            ("storage:\n  kind: tape\n", "storage.kind"),
            (
                "storage:\n  kind: s3\n  s3: {bucket: B}\n",
                "storage.s3.bucket",
            ),
            (
                "storage:\n  kind: s3\n  s3: {bucket: b1b, endpoint: 'ftp://x'}\n",
                "storage.s3.endpoint",
            ),
            (
                "storage:\n  kind: s3\n  s3: {bucket: b1b, accessKeyId: k}\n",
                "storage.s3.secretAccessKey",
            ),
            (
                "storage:\n  kind: s3\n  s3: {bucket: b1b, requestTimeout: 0s}\n",
                "storage.s3.requestTimeout",
            ),
            (
                "storage:\n  kind: s3\n  s3: {bucket: b1b, redirect: true, redirectExpiry: 30d}\n",
                "storage.s3.redirectExpiry",
            ),
            (
                "storage:\n  kind: s3\n  s3: {bucket: b1b, pathstyle: true}\n",
                "storage.s3.pathstyle",
            ),
        ];
        for (yaml, key) in cases {
            let (got, message) = Config::from_yaml(yaml).unwrap_err();
            assert_eq!(got, key, "{yaml:?}: {message}");
        }
    }
}
