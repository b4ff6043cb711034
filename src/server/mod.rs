//! `berth serve`: opens storage and metadata under the data directory and
//! serves the registry until SIGINT/SIGTERM, letting in-flight requests finish.
//! Owns the accept loop and the per-connection limits (timeouts, connection
//! cap); what a request may do is the registry's business.

pub mod scheduler;
pub mod tls;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::auth::{Auth, AuthError, AuthSettings};
use crate::config::{Config, S3Config, ServerSettings, StorageKind};
use crate::metadata::{self, DatabaseConfig, MetadataError};
use crate::registry::{Registry, TransferLimits, router};
use crate::storage::BlobStore;
use crate::storage::fs::FsStore;
use crate::storage::s3::{S3Settings, S3Store};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("authentication: {0}")]
    Auth(#[from] AuthError),
    #[error("cannot open the metadata database: {0}")]
    Metadata(#[from] MetadataError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("configuration: {0}")]
    Config(String),
    #[error("cannot use the blob storage: {0}")]
    Storage(String),
    #[error("cannot reach the Kubernetes API server: {0}")]
    Kube(kube::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// The metadata backend `config.database` names: the embedded SQLite file
/// in the data directory, or PostgreSQL.
pub fn database_config(config: &Config) -> Result<DatabaseConfig, String> {
    DatabaseConfig::from_settings(&config.database, &config.data_dir)
}

/// The blob store `config.storage` names: the data directory, or an S3
/// bucket, checked by listing it (a missing bucket, an unreachable endpoint
/// or refused credentials stop the start, naming the key to fix).
pub async fn open_store(config: &Config) -> Result<Arc<dyn BlobStore>, ServeError> {
    if config.storage.kind == StorageKind::Filesystem {
        let store = FsStore::open(&config.data_dir).map_err(|source| ServeError::DataDir {
            path: config.data_dir.display().to_string(),
            source,
        })?;
        return Ok(Arc::new(store));
    }
    // Never the data directory in place of a bucket that is not configured.
    let s3 = config.storage.s3.as_ref().ok_or_else(|| {
        ServeError::Config("storage.s3: is required when storage.kind is s3".into())
    })?;
    let settings = s3_settings(s3).map_err(ServeError::Config)?;
    let store =
        S3Store::open(&settings).map_err(|e| ServeError::Storage(format!("storage.s3: {e}")))?;
    store.check().await.map_err(|e| {
        let check = if e.to_lowercase().contains("certificate") {
            "check storage.s3.caFile (the CA that signed the endpoint's certificate) or \
             storage.s3.insecureSkipVerify"
        } else {
            "check storage.s3.endpoint, storage.s3.bucket and the credentials \
             (storage.s3.accessKeyId / AWS_ACCESS_KEY_ID)"
        };
        ServeError::Storage(format!(
            "storage.s3 ({}): the bucket cannot be listed: {e}; {check}",
            store.description()
        ))
    })?;
    tracing::info!("blobs in {}", store.description());
    Ok(Arc::new(store))
}

/// `storage.s3` with the credentials the environment supplies when the
/// configuration has none.
pub fn s3_settings(s3: &S3Config) -> Result<S3Settings, String> {
    let request_timeout = s3
        .validate()
        .map_err(|(key, message)| format!("{key}: {message}"))?;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let (access_key_id, secret_access_key) = match (&s3.access_key_id, &s3.secret_access_key) {
        (Some(k), Some(s)) => (Some(k.clone()), Some(s.clone())),
        _ => (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")),
    };
    if s3.insecure_skip_verify {
        tracing::warn!("storage.s3.insecureSkipVerify: the endpoint's certificate is not checked");
    }
    Ok(S3Settings {
        endpoint: s3.endpoint.clone(),
        bucket: s3.bucket.clone(),
        region: s3.region.clone(),
        access_key_id,
        secret_access_key,
        prefix: s3.prefix.clone(),
        path_style: s3.path_style,
        ca_file: s3.ca_file.clone(),
        insecure_skip_verify: s3.insecure_skip_verify,
        request_timeout,
        redirect: s3
            .redirect_expiry()
            .map_err(|(key, message)| format!("{key}: {message}"))?,
    })
}

/// Opens the registry's storage, metadata and authentication for `config`.
/// Returns the admin token too when this start created it (shown once).
pub async fn open_registry(config: &Config) -> Result<(Arc<Registry>, Option<String>), ServeError> {
    let data_err = |source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    };
    crate::storage::durable::create_dir_all_synced(&config.data_dir).map_err(data_err)?;
    let store = open_store(config).await?;
    let database = database_config(config).map_err(ServeError::Config)?;
    if let DatabaseConfig::Postgres(pg) = &database {
        tracing::info!(
            "metadata on PostgreSQL at {} ({} connections)",
            metadata::redact_url(&pg.url),
            pg.max_connections
        );
    }
    let meta = metadata::open(&database).await?;
    let (auth, admin_token) = if config.auth.enabled {
        let a = &config.auth;
        let (auth, token) = Auth::open(&AuthSettings {
            data_dir: config.data_dir.clone(),
            manifest_dir: a.manifest_dir.clone(),
            signing_key_file: a.signing_key_file.clone(),
            issuer: a.issuer.clone(),
            service: a.service.clone(),
            token_ttl: std::time::Duration::from_secs(a.token_ttl_seconds),
            realm: a.realm.clone(),
            trust_forwarded: a.trust_forwarded_headers,
            https: config.tls.enabled(),
            first_run_admin: config.kubernetes.is_none(),
        })?;
        let auth = Arc::new(auth);
        match &config.kubernetes {
            Some(k) => {
                let client = kube::Client::try_default()
                    .await
                    .map_err(ServeError::Kube)?;
                crate::kubernetes::projects::watch(
                    client.clone(),
                    &k.namespace,
                    &k.registry,
                    auth.clone(),
                );
                auth.set_external(Arc::new(crate::kubernetes::projects::TokenReviewer::new(
                    client,
                )));
                tracing::info!(
                    namespace = %k.namespace,
                    registry = %k.registry,
                    "in-cluster mode: Projects and token Secrets come from the API server"
                );
            }
            None => auth.watch(std::time::Duration::from_secs(1)),
        }
        (Some(auth), token)
    } else {
        (None, None)
    };
    let gc = config
        .gc
        .settings()
        .map_err(|(key, message)| ServeError::Config(format!("{key}: {message}")))?;
    meta.gc_set_review_delay(gc.review_delay).await?;
    let server = config
        .server
        .settings()
        .map_err(|(key, message)| ServeError::Config(format!("{key}: {message}")))?;
    let limits = TransferLimits {
        max_blob_size: config.storage.max_blob_size,
        min_free_bytes: config.storage.min_free_bytes,
        body_idle_timeout: server.body_idle_timeout,
        max_concurrent_transfers: server.max_concurrent_transfers,
    };
    let registry = Registry::new(meta, store, auth, limits);
    registry.upload_expiry_ms.store(
        gc.upload_expiry.as_millis() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    registry.ui_sessions.set_ttl(
        config
            .ui
            .session_timeout()
            .map_err(|(key, message)| ServeError::Config(format!("{key}: {message}")))?,
    );
    crate::registry::gc::spawn(&registry, gc);
    if config.kubernetes.is_none()
        && config.auth.enabled
        && let Some(dir) = &config.auth.manifest_dir
    {
        let every = config
            .cleanup
            .check_interval()
            .map_err(|(key, message)| ServeError::Config(format!("{key}: {message}")))?;
        crate::server::scheduler::Runner::new(registry.clone(), dir, &config.data_dir).spawn(every);
    }
    Ok((registry, admin_token))
}

pub async fn serve(config: Config) -> Result<(), ServeError> {
    let settings = config
        .server
        .settings()
        .map_err(|(key, message)| ServeError::Config(format!("{key}: {message}")))?;
    let tls = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => {
            let certs = tls::Certificates::open(cert, key).map_err(ServeError::Config)?;
            let acceptor = certs.acceptor().map_err(ServeError::Config)?;
            tracing::info!(
                cert = %cert.display(),
                sha256 = %tls::fingerprint(&certs.current()),
                "tls: serving HTTPS (h2, http/1.1); the files are watched"
            );
            certs.watch(tls::RELOAD_EVERY);
            Some(acceptor)
        }
        _ => None,
    };
    let (registry, admin_token) = open_registry(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "berth registry listening on {scheme}://{addr}/v2/ (data directory {})",
        config.data_dir.display()
    );
    tracing::info!("web UI: {scheme}://{addr}/ui/");
    match (&registry.auth, admin_token) {
        (None, _) => tracing::warn!("authentication is off: anyone can push, pull and delete"),
        (Some(_), Some(token)) => {
            // Plain HTTP outside localhost needs the clients' insecure flag.
            let (podman, skopeo) = match scheme {
                "https" => ("", ""),
                _ => (" --tls-verify=false", " --dest-tls-verify=false"),
            };
            tracing::warn!(
                "created the admin token (shown only this once; only its hash is kept):\n\n    {token}\n\n\
                 log in with:  podman login{podman} -u admin -p {token} {addr}\n\
                 or:           skopeo copy --dest-creds admin:{token}{skopeo} ...\n\
                 web UI:       {scheme}://{addr}/ui/ (sign in as admin with this token)"
            )
        }
        (Some(auth), None) => tracing::info!(
            projects = auth.model().projects().len(),
            "token authentication on (realm /jwt/auth)"
        ),
    }
    if let Some(metrics_addr) = config.metrics.listen {
        let listener =
            TcpListener::bind(metrics_addr)
                .await
                .map_err(|source| ServeError::Listen {
                    addr: metrics_addr.to_string(),
                    source,
                })?;
        let metrics_addr = listener.local_addr().map_err(ServeError::Serve)?;
        tracing::info!("metrics on http://{metrics_addr}/metrics");
        tokio::spawn(serve_metrics(listener, registry.clone()));
    }
    let wire = Wire {
        received: registry.metrics.received_bytes.clone(),
        sent: registry.metrics.sent_bytes.clone(),
    };
    serve_on(
        listener,
        tls,
        wire,
        router(registry),
        settings,
        crate::signal::shutdown(),
    )
    .await?;
    tracing::info!("berth stopped");
    Ok(())
}

/// `/metrics` (and `/healthz`) on the metrics listener, plain HTTP: a
/// scrape takes none of the registry's connection slots.
async fn serve_metrics(listener: TcpListener, registry: Arc<Registry>) {
    use axum::extract::State;
    use axum::routing::get;
    let app = Router::new()
        .route(
            "/metrics",
            get(|State(reg): State<Arc<Registry>>| async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        crate::observability::OPENMETRICS_CONTENT_TYPE,
                    )],
                    reg.encode_metrics().await,
                )
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .with_state(registry);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the metrics listener failed: {e}");
    }
}

/// Counters of the bytes read from and written to client connections.
#[derive(Clone, Default)]
pub struct Wire {
    pub received: prometheus_client::metrics::counter::Counter,
    pub sent: prometheus_client::metrics::counter::Counter,
}

/// How long in-flight requests may take to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(25);
/// Pause after a failed accept (such as running out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` completes, then stops
/// accepting and lets in-flight requests finish (for up to
/// [`SHUTDOWN_GRACE`]).
///
/// Each accepted connection takes one of `max_connections` slots (further
/// clients wait in the listen backlog) and is served by hyper's HTTP/1.1 +
/// h2c builder with a timer: request headers must arrive within
/// `header_read_timeout`; a connection with no request in progress and no
/// traffic for `idle_timeout` is closed; a write the client does not take
/// for `send_idle_timeout` fails the connection (see [`ConnIo`]). With
/// `tls`, each connection's handshake runs on its own task (it must finish
/// within `header_read_timeout`) before [`serve_connection`], which takes
/// any byte stream.
pub async fn serve_on(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    wire: Wire,
    app: Router,
    settings: ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) => {
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let Some(acceptor) = &tls else {
            serve_connection(
                tcp,
                wire.clone(),
                app.clone(),
                &builder,
                graceful.watcher(),
                &settings,
                slot,
            );
            continue;
        };
        let (acceptor, wire, app, builder, watcher) = (
            acceptor.clone(),
            wire.clone(),
            app.clone(),
            builder.clone(),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            match tokio::time::timeout(settings.header_read_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    serve_connection(stream, wire, app, &builder, watcher, &settings, slot)
                }
                Ok(Err(e)) => tracing::debug!("TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("TLS handshake not done within the header read timeout"),
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still running after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
    Ok(())
}

/// Serves one connection on its own task, holding `slot` until it closes.
fn serve_connection<I>(
    io: I,
    wire: Wire,
    app: Router,
    builder: &auto::Builder<TokioExecutor>,
    graceful: Watcher,
    settings: &ServerSettings,
    slot: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(ConnIo::new(
        io,
        activity.clone(),
        wire,
        settings.send_idle_timeout,
    ));
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let busy = Busy::begin(&activity);
            host_from_authority(&mut req);
            let app = app.clone();
            async move {
                let response = app.oneshot(req.map(Body::new)).await?;
                Ok::<_, std::convert::Infallible>(
                    response.map(|body| Body::new(TrackedBody { body, _busy: busy })),
                )
            }
        })
    };
    let conn = graceful.watch(builder.serve_connection(io, service).into_owned());
    let idle_timeout = settings.idle_timeout;
    tokio::spawn(async move {
        let _slot = slot;
        tokio::select! {
            done = conn => {
                if let Err(e) = done {
                    tracing::debug!("connection ended: {e}");
                }
            }
            () = activity.idle(idle_timeout) => {
                tracing::debug!("closing a connection idle for {idle_timeout:?}");
            }
        }
    });
}

/// HTTP/2 carries the host in the `:authority` pseudo-header, which hyper
/// puts in the URI, not in a `Host` header: copied there, so everything that
/// reads the host (the default token realm, the web UI) reads it the same
/// way over HTTP/1.1 and HTTP/2.
fn host_from_authority<B>(req: &mut hyper::Request<B>) {
    if req.headers().contains_key(hyper::header::HOST) {
        return;
    }
    let host = req
        .uri()
        .authority()
        .and_then(|a| hyper::header::HeaderValue::from_str(a.as_str()).ok());
    if let Some(host) = host {
        req.headers_mut().insert(hyper::header::HOST, host);
    }
}

/// What a connection is doing: requests in progress, and when bytes last
/// went either way.
struct Activity {
    start: Instant,
    last_io_ms: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        self.last_io_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// How long the connection has been idle, or `None` while a request is
    /// in progress.
    fn idle_for(&self) -> Option<Duration> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_io_ms.load(Ordering::Relaxed));
        Some(self.start.elapsed().saturating_sub(last))
    }

    /// Completes once the connection has been idle for `limit`.
    async fn idle(&self, limit: Duration) {
        loop {
            let wait = match self.idle_for() {
                Some(idle) if idle >= limit => return,
                Some(idle) => limit - idle,
                None => limit,
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One request in progress, from its headers until its response body is
/// done or dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress.
struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// A connection's byte stream, recording activity, and failing a write the
/// peer has not taken for `send_idle` (a client that stopped reading): the
/// connection then closes and its response body, with whatever it holds, is
/// dropped.
struct ConnIo<T> {
    inner: T,
    activity: Arc<Activity>,
    wire: Wire,
    send_idle: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> ConnIo<T> {
    fn new(inner: T, activity: Arc<Activity>, wire: Wire, send_idle: Duration) -> ConnIo<T> {
        ConnIo {
            inner,
            activity,
            wire,
            send_idle,
            stalled: None,
        }
    }

    /// Passes a write's outcome on, starting the stall timer when it is
    /// pending and failing once the timer has run out.
    fn watch_write<R: Written>(
        &mut self,
        cx: &mut Context<'_>,
        r: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match r {
            Poll::Pending => {
                let limit = self.send_idle;
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("the client read nothing for {limit:?}"),
                    )));
                }
                Poll::Pending
            }
            Poll::Ready(r) => {
                self.stalled = None;
                if let Ok(written) = &r {
                    self.activity.touch();
                    self.wire.sent.inc_by(written.bytes());
                }
                Poll::Ready(r)
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
            this.wire
                .received
                .inc_by((buf.filled().len() - before) as u64);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch_write(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.watch_write(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch_write(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// What a completed write, flush or shutdown put on the wire.
trait Written {
    fn bytes(&self) -> u64;
}

impl Written for usize {
    fn bytes(&self) -> u64 {
        *self as u64
    }
}

impl Written for () {
    fn bytes(&self) -> u64 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_authority_becomes_the_host() {
        let cases = [
            (
                "https://reg.example:5000/v2/",
                None,
                Some("reg.example:5000"),
            ),
            ("https://reg.example/v2/", Some("other:1"), Some("other:1")),
            ("/v2/", None, None),
            ("/v2/", Some("h1.example"), Some("h1.example")),
        ];
        for (uri, host, want) in cases {
            let mut b = hyper::Request::builder().uri(uri);
            if let Some(h) = host {
                b = b.header(hyper::header::HOST, h);
            }
            let mut req = b.body(()).unwrap();
            host_from_authority(&mut req);
            let got = req
                .headers()
                .get(hyper::header::HOST)
                .map(|v| v.to_str().unwrap());
            assert_eq!(got, want, "{uri} {host:?}");
        }
    }
}
