//! The process's signals: shutdown (SIGINT or SIGTERM), for `berth serve`
//! and `berth operator` alike, and SIGHUP (`berth serve` applies its config
//! file's log level again).

/// Resolves on SIGINT or SIGTERM (Ctrl-C alone where there is no SIGTERM).
pub async fn shutdown() {
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

/// Calls `on_hangup` on each SIGHUP for as long as the process runs (never
/// returns; does nothing where there is no SIGHUP).
pub async fn hangups(mut on_hangup: impl FnMut() + Send) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                while hup.recv().await.is_some() {
                    on_hangup();
                }
            }
            Err(e) => tracing::warn!("cannot listen for SIGHUP: {e}"),
        }
    }
    std::future::pending::<()>().await;
}
