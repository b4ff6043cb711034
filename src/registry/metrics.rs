//! The registry's Prometheus metrics (`berth serve --metrics-listen`): HTTP
//! requests and their durations by route kind, method and status; bytes
//! received and sent; uploads in progress; authentication failures by
//! reason; cleanup runs. Figures kept elsewhere (the GC queue and sweeps in
//! the database, the connection pools, blob transfers) are read at each
//! scrape ([`Registry::encode_metrics`]).
//!
//! Names follow Prometheus conventions: `berth_` prefix, `_total` counters,
//! `_seconds` and `_bytes` units. Route kinds are a fixed set
//! ([`route_kind`]), never a repository name, so the series stay bounded.

use std::sync::Mutex;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as PromRegistry;

use crate::metadata::GcState;
use crate::metadata::PoolFigures;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CleanupLabels {
    result: &'static str,
    mode: &'static str,
}

/// Why a request or a token request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// No bearer token where one is needed (the anonymous first try of every
    /// client, answered with a challenge).
    NoToken,
    /// A token that is malformed, expired or not signed by this registry.
    InvalidToken,
    /// A valid token that does not grant the action.
    InsufficientScope,
    /// A token request with an unknown user or a wrong secret.
    BadCredentials,
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            AuthFailure::NoToken => "no_token",
            AuthFailure::InvalidToken => "invalid_token",
            AuthFailure::InsufficientScope => "insufficient_scope",
            AuthFailure::BadCredentials => "bad_credentials",
        }
    }
}

/// The kind of route a request path is, for metric labels: one of a fixed
/// set, whatever the path.
pub fn route_kind(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/v2") else {
        return match path {
            "/jwt/auth" => "token",
            "/healthz" | "/readyz" => "health",
            p if p.starts_with("/api/") => "api",
            p if p == "/ui" || p.starts_with("/ui/") || p == "/" => "ui",
            _ => "other",
        };
    };
    match rest {
        "" | "/" => "base",
        "/_catalog" => "catalog",
        r if !r.starts_with('/') => "other",
        r if r.ends_with("/tags/list") => "tags",
        r if r.contains("/blobs/uploads") => "blob_upload",
        r if r.contains("/blobs/") => "blob",
        r if r.contains("/manifests/") => "manifest",
        r if r.contains("/referrers/") => "referrers",
        _ => "other",
    }
}

/// The method label: the methods the registry serves, anything else `other`.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        "POST" => "POST",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// What the registry counts itself.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    durations: Family<RequestLabels, Histogram>,
    /// Bytes read from and written to clients' connections (HTTP, after TLS).
    pub received_bytes: Counter,
    pub sent_bytes: Counter,
    uploads: Gauge,
    auth_failures: Family<ReasonLabels, Counter>,
    cleanup_runs: Family<CleanupLabels, Counter>,
    cleanup_tags_deleted: Counter,
    deduplicated_uploads: Counter,
    deduplicated_bytes: Counter,
    /// Figures read at the last scrape.
    scraped: std::sync::Arc<Scraped>,
    registry: PromRegistry,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = PromRegistry::with_prefix("berth");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route kind, method and status",
            requests.clone(),
        );
        let durations = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ])
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's headers to its response's headers, by route kind, method and status",
            durations.clone(),
        );
        let received_bytes = Counter::default();
        registry.register(
            "http_received_bytes",
            "Bytes read from client connections (request lines, headers and bodies)",
            received_bytes.clone(),
        );
        let sent_bytes = Counter::default();
        registry.register(
            "http_sent_bytes",
            "Bytes written to client connections (status lines, headers and bodies)",
            sent_bytes.clone(),
        );
        let uploads = Gauge::default();
        registry.register(
            "uploads_in_progress",
            "Upload requests (POST, PATCH, PUT of blob data) being received",
            uploads.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused requests and token requests by reason (no_token, invalid_token, insufficient_scope, bad_credentials)",
            auth_failures.clone(),
        );
        let cleanup_runs = Family::<CleanupLabels, Counter>::default();
        registry.register(
            "cleanup_runs",
            "Cleanup policy runs in this process by result and mode",
            cleanup_runs.clone(),
        );
        let cleanup_tags_deleted = Counter::default();
        registry.register(
            "cleanup_tags_deleted",
            "Tags deleted by cleanup policy runs in this process (dry runs not counted)",
            cleanup_tags_deleted.clone(),
        );
        let deduplicated_uploads = Counter::default();
        registry.register(
            "uploads_deduplicated",
            "Blob uploads of a blob already in storage: hashed and linked, not written again",
            deduplicated_uploads.clone(),
        );
        let deduplicated_bytes = Counter::default();
        registry.register(
            "upload_deduplicated_bytes",
            "Bytes of deduplicated uploads (received and hashed, not written)",
            deduplicated_bytes.clone(),
        );
        let scraped = std::sync::Arc::new(Scraped::default());
        registry.register_collector(Box::new(scraped.clone()));
        Metrics {
            requests,
            durations,
            received_bytes,
            sent_bytes,
            uploads,
            auth_failures,
            cleanup_runs,
            cleanup_tags_deleted,
            deduplicated_uploads,
            deduplicated_bytes,
            scraped,
            registry,
        }
    }

    /// Counts one request and its duration (no allocation: every label is
    /// one of a fixed set).
    pub fn request(&self, route: &'static str, method: &str, status: u16, seconds: f64) {
        let labels = RequestLabels {
            route,
            method: method_label(method),
            status,
        };
        self.requests.get_or_create(&labels).inc();
        self.durations.get_or_create(&labels).observe(seconds);
    }

    /// One upload request in progress until the guard is dropped.
    pub fn upload(&self) -> UploadGuard {
        self.uploads.inc();
        UploadGuard(self.uploads.clone())
    }

    /// An upload of a blob the store already held, `bytes` long.
    pub fn upload_deduplicated(&self, bytes: u64) {
        self.deduplicated_uploads.inc();
        self.deduplicated_bytes.inc_by(bytes);
    }

    pub fn auth_failure(&self, reason: AuthFailure) {
        self.auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.label(),
            })
            .inc();
    }

    pub fn cleanup_run(&self, ok: bool, dry_run: bool, tags_deleted: u64) {
        self.cleanup_runs
            .get_or_create(&CleanupLabels {
                result: if ok { "success" } else { "failure" },
                mode: if dry_run { "dry_run" } else { "delete" },
            })
            .inc();
        if !dry_run {
            self.cleanup_tags_deleted.inc_by(tags_deleted);
        }
    }

    /// The text exposition of everything, with `figures` read just before.
    pub fn encode(&self, figures: Figures) -> String {
        *self.scraped.0.lock().expect("metrics lock") = Some(figures);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encoding to a String cannot fail");
        text
    }
}

/// An upload request being received.
pub struct UploadGuard(Gauge);

impl Drop for UploadGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Figures read at scrape time.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    /// `None` when the database could not be read (the scrape still answers).
    pub gc: Option<GcState>,
    pub pools: Vec<PoolFigures>,
    pub transfers_in_progress: u64,
    pub transfers_max: u64,
}

#[derive(Debug, Default)]
struct Scraped(Mutex<Option<Figures>>);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(f) = self.0.lock().expect("metrics lock").clone() else {
            return Ok(());
        };
        let mut gauge = |name: &str, help: &str, value: i64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "blob_transfers_in_progress",
            "Blob uploads and downloads holding a transfer slot",
            f.transfers_in_progress as i64,
        )?;
        gauge(
            "blob_transfers_max",
            "Transfer slots (server.maxConcurrentTransfers)",
            f.transfers_max as i64,
        )?;
        if let Some(gc) = &f.gc {
            let mut reviews = |name: &str, help: &str, m: i64, b: i64| {
                let kinds = [("manifest", m), ("blob", b)];
                gauge_family(
                    &mut encoder,
                    name,
                    help,
                    kinds.map(|(kind, v)| (KindLabels { kind }, v)),
                )
            };
            reviews(
                "gc_pending_reviews",
                "GC reviews queued (not yet done), by kind",
                gc.pending_manifest_reviews,
                gc.pending_blob_reviews,
            )?;
            reviews(
                "gc_due_reviews",
                "GC reviews past their delay, waiting for the next sweep, by kind",
                gc.due_manifest_reviews,
                gc.due_blob_reviews,
            )?;
            let mut counter = |name: &str, help: &str, value: i64| {
                let c = ConstCounter::new(value.max(0) as u64);
                c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
            };
            counter("gc_sweeps", "GC sweeps done (all replicas)", gc.sweeps)?;
            counter(
                "gc_deleted_manifests",
                "Manifests deleted by GC sweeps",
                gc.manifests_deleted,
            )?;
            counter(
                "gc_deleted_blobs",
                "Blobs deleted by GC sweeps",
                gc.blobs_deleted,
            )?;
            counter(
                "gc_deleted_bytes",
                "Bytes of blobs deleted by GC sweeps",
                gc.bytes_deleted,
            )?;
            counter(
                "gc_expired_uploads",
                "Abandoned upload sessions removed by GC sweeps",
                gc.uploads_expired,
            )?;
            if let Some(at) = gc.last_sweep_at_ms {
                let g = ConstGauge::new(at as f64 / 1000.0);
                g.encode(encoder.encode_descriptor(
                    "gc_last_sweep_timestamp_seconds",
                    "When the last GC sweep ended (Unix time)",
                    None,
                    g.metric_type(),
                )?)?;
            }
        }
        for (name, help, value) in [
            (
                "db_pool_connections",
                "Open connections of each metadata pool",
                (|p: &PoolFigures| p.size) as fn(&PoolFigures) -> u32,
            ),
            (
                "db_pool_idle_connections",
                "Idle connections of each metadata pool",
                |p: &PoolFigures| p.idle,
            ),
            (
                "db_pool_max_connections",
                "Most connections each metadata pool may open",
                |p: &PoolFigures| p.max,
            ),
        ] {
            let pools = f
                .pools
                .iter()
                .map(|p| (PoolLabels { pool: p.name }, i64::from(value(p))));
            gauge_family(&mut encoder, name, help, pools)?;
        }
        Ok(())
    }
}

/// One gauge family: a value for each label set.
fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, v) in values {
        ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_kinds() {
        for (path, kind) in [
            ("/v2", "base"),
            ("/v2/", "base"),
            ("/v2/_catalog", "catalog"),
            ("/v2/a/b/tags/list", "tags"),
            ("/v2/a/manifests/latest", "manifest"),
            ("/v2/a/manifests/sha256:00", "manifest"),
            ("/v2/a/blobs/sha256:00", "blob"),
            ("/v2/a/blobs/uploads/", "blob_upload"),
            ("/v2/a/blobs/uploads/0a-1b", "blob_upload"),
            ("/v2/blobs/blobs/sha256:00", "blob"),
            ("/v2/a/referrers/sha256:00", "referrers"),
            ("/v2/a/b", "other"),
            ("/v2x", "other"),
            ("/jwt/auth", "token"),
            ("/api/v1/gc", "api"),
            ("/api/v1/repositories/a/b", "api"),
            ("/ui/", "ui"),
            ("/ui/projects/a", "ui"),
            ("/", "ui"),
            ("/healthz", "health"),
            ("/readyz", "health"),
            ("/favicon.ico", "other"),
        ] {
            assert_eq!(route_kind(path), kind, "{path}");
        }
    }

    /// The text names what the counters hold; scrape-time figures appear
    /// with their types.
    #[test]
    fn encoding_names_the_figures() {
        let m = Metrics::new();
        m.request("blob", "GET", 200, 0.003);
        m.request("blob", "GET", 200, 0.2);
        m.request("manifest", "PUT", 201, 0.01);
        m.request("other", "BREW", 405, 0.01);
        m.auth_failure(AuthFailure::NoToken);
        m.received_bytes.inc_by(42);
        let held = m.upload();
        m.cleanup_run(true, false, 3);
        let text = m.encode(Figures {
            gc: Some(GcState {
                pending_blob_reviews: 4,
                sweeps: 2,
                ..GcState::default()
            }),
            pools: vec![PoolFigures {
                name: "read",
                size: 3,
                idle: 2,
                max: 8,
            }],
            transfers_in_progress: 1,
            transfers_max: 1024,
        });
        drop(held);
        for line in [
            r#"berth_http_requests_total{route="blob",method="GET",status="200"} 2"#,
            r#"berth_http_requests_total{route="manifest",method="PUT",status="201"} 1"#,
            r#"berth_http_requests_total{route="other",method="other",status="405"} 1"#,
            r#"berth_http_request_duration_seconds_count{route="blob",method="GET",status="200"} 2"#,
            r#"berth_auth_failures_total{reason="no_token"} 1"#,
            "berth_http_received_bytes_total 42",
            "berth_uploads_in_progress 1",
            r#"berth_cleanup_runs_total{result="success",mode="delete"} 1"#,
            "berth_cleanup_tags_deleted_total 3",
            r#"berth_gc_pending_reviews{kind="blob"} 4"#,
            "berth_gc_sweeps_total 2",
            r#"berth_db_pool_max_connections{pool="read"} 8"#,
            "berth_blob_transfers_in_progress 1",
            "# TYPE berth_gc_sweeps counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert_eq!(
            m.encode(Figures::default())
                .lines()
                .find(|l| l.starts_with("berth_uploads_in_progress")),
            Some("berth_uploads_in_progress 0")
        );
    }
}
