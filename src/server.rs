//! `berth serve`: opens storage and metadata under the data directory and
//! serves the registry until SIGINT/SIGTERM, letting in-flight requests finish.

use std::sync::Arc;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;

use crate::auth::{Auth, AuthError, AuthSettings};
use crate::config::Config;
use crate::metadata::{Metadata, MetadataError};
use crate::registry::{Registry, router};
use crate::storage::fs::FsStore;

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
    #[error("cannot reach the Kubernetes API server: {0}")]
    Kube(kube::Error),
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

/// Opens the registry's storage, metadata and authentication for `config`.
/// Returns the admin token too when this start created it (shown once).
pub async fn open_registry(config: &Config) -> Result<(Arc<Registry>, Option<String>), ServeError> {
    let data_err = |source| ServeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.data_dir).map_err(data_err)?;
    let store = FsStore::open(&config.data_dir).map_err(data_err)?;
    let meta = Metadata::open_sqlite(&config.data_dir.join("berth.db")).await?;
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
            first_run_admin: config.kubernetes.is_none(),
        })?;
        let auth = Arc::new(auth);
        match &config.kubernetes {
            Some(k) => {
                let client = kube::Client::try_default()
                    .await
                    .map_err(ServeError::Kube)?;
                crate::auth::cluster::watch(
                    client.clone(),
                    &k.namespace,
                    &k.registry,
                    auth.clone(),
                );
                auth.set_external(Arc::new(crate::auth::cluster::TokenReviewer::new(client)));
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
    let registry = Registry::new(meta, Arc::new(store), auth);
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
    crate::gc::spawn(&registry, gc);
    if config.kubernetes.is_none()
        && config.auth.enabled
        && let Some(dir) = &config.auth.manifest_dir
    {
        let every = config
            .cleanup
            .check_interval()
            .map_err(|(key, message)| ServeError::Config(format!("{key}: {message}")))?;
        crate::scheduler::Runner::new(registry.clone(), dir, &config.data_dir).spawn(every);
    }
    Ok((registry, admin_token))
}

pub async fn serve(config: Config) -> Result<(), ServeError> {
    let (registry, admin_token) = open_registry(&config).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Listen {
            addr: config.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr().map_err(ServeError::Serve)?;
    tracing::info!(
        "berth registry listening on http://{addr}/v2/ (data directory {})",
        config.data_dir.display()
    );
    tracing::info!("web UI: http://{addr}/ui/");
    match (&registry.auth, admin_token) {
        (None, _) => tracing::warn!("authentication is off: anyone can push, pull and delete"),
        (Some(_), Some(token)) => tracing::warn!(
            "created the admin token (shown only this once; only its hash is kept):\n\n    {token}\n\n\
             log in with:  podman login --tls-verify=false -u admin -p {token} {addr}\n\
             or:           skopeo copy --dest-creds admin:{token} --dest-tls-verify=false ...\n\
             web UI:       http://{addr}/ui/ (sign in as admin with this token)"
        ),
        (Some(auth), None) => tracing::info!(
            projects = auth.model().projects().len(),
            "token authentication on (realm /jwt/auth)"
        ),
    }
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(registry))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(ServeError::Serve)?;
    tracing::info!("berth stopped");
    Ok(())
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return ctrl_c.await.unwrap_or(()),
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: finishing in-flight requests");
}
