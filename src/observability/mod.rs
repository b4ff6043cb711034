//! Observability: logging setup (human-readable text or JSON lines, filtered
//! by the configured level unless `RUST_LOG` is set), a [`LogControl`] that
//! changes the filter while the process runs (`berth serve` applies the config
//! file's `log.level` again on SIGHUP) and, in [`operator`], the operator's
//! Prometheus metrics.

pub mod operator;

/// The `Content-Type` of a Prometheus scrape answered in the OpenMetrics
/// text format (what prometheus-client writes).
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

use crate::config::{LogConfig, LogFormat};

/// Changes the log filter of the running process.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
}

impl LogControl {
    /// Replaces the filter (`info`, `berth=debug,warn`...). A filter that does
    /// not parse is refused and the current one stays.
    pub fn set(&self, level: &str) -> Result<(), String> {
        let filter =
            EnvFilter::try_new(level).map_err(|e| format!("not a valid log filter: {e}"))?;
        self.handle
            .reload(filter)
            .map_err(|e| format!("cannot change the log filter: {e}"))
    }

    /// The filter in force, as text.
    pub fn current(&self) -> String {
        self.handle
            .with_current(|f| f.to_string())
            .unwrap_or_default()
    }
}

/// Installs the process's logger: `RUST_LOG` when set, else `config.level`.
/// Returns `None` when a logger was already installed (tests: the first one
/// stays).
pub fn init_logging(config: &LogConfig) -> Option<LogControl> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let ansi = std::io::stderr().is_terminal();
    let installed = match config.format {
        LogFormat::Json => Registry::default()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => Registry::default()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    installed.ok().map(|()| LogControl { handle })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_refused_and_the_current_one_stays() {
        let (filter, handle) = reload::Layer::<EnvFilter, Registry>::new(EnvFilter::new("info"));
        let _subscriber = Registry::default().with(filter);
        let control = LogControl { handle };
        assert_eq!(control.current(), "info");
        control.set("berth=debug,warn").unwrap();
        assert_eq!(control.current(), "berth=debug,warn");
        let err = control.set("=[").unwrap_err();
        assert!(err.contains("not a valid log filter"), "{err}");
        assert_eq!(control.current(), "berth=debug,warn");
    }

    /// Every metric the shipped Grafana dashboard queries is one berth
    /// exposes (registry or operator): renaming a metric fails here.
    #[test]
    fn the_dashboard_queries_only_metrics_that_exist() {
        use crate::registry::metrics::{AuthFailure, Figures, Metrics};
        let m = Metrics::new();
        m.request("blob", "GET", 200, 0.01);
        m.auth_failure(AuthFailure::NoToken);
        m.cleanup_run(true, false, 1);
        let mut exposed = m.encode(Figures {
            gc: Some(crate::metadata::GcState {
                last_sweep_at_ms: Some(1),
                ..Default::default()
            }),
            pools: vec![crate::metadata::PoolFigures {
                name: "main",
                size: 1,
                idle: 1,
                max: 1,
            }],
            transfers_in_progress: 0,
            transfers_max: 1,
        });
        let op = operator::Metrics::new();
        op.observe("Registry", Ok(()), 0.1);
        prometheus_client::encoding::text::encode(&mut exposed, op.registry()).unwrap();
        let names: std::collections::HashSet<&str> = exposed
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .collect();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("config/grafana/berth-dashboard.json");
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let name = regex::Regex::new(r"berth_[a-z_]+").unwrap();
        let mut queried = 0;
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                for found in name.find_iter(target["expr"].as_str().unwrap()) {
                    queried += 1;
                    assert!(
                        names.contains(found.as_str()),
                        "panel {:?} queries {}, which berth does not expose:\n{exposed}",
                        panel["title"],
                        found.as_str()
                    );
                }
            }
        }
        assert!(queried >= 20, "{queried}");
    }
}
