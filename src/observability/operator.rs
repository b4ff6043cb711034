//! The operator's Prometheus metrics (prefix `berth_operator_`): reconciles
//! by kind, result and error variant, their durations, leadership, cleanup
//! runs and GC sweeps. The registry's own metrics join them here.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

/// Reconcile counters and timings for `/metrics`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    kind: String,
    /// `success` or `error`.
    result: String,
    /// The error variant (`kube`, `reconcile`, `registry`, `finalizer`); empty
    /// on success.
    error: String,
}

/// Cleanup runs by result (`success`, `failure`) and mode (`delete`, `dry_run`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CleanupRunLabels {
    result: String,
    mode: String,
}

pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    duration: Family<ReconcileLabels, Histogram>,
    leader: Gauge,
    cleanup_runs: Family<CleanupRunLabels, Counter>,
    cleanup_tags_deleted: Counter,
    gc_sweeps: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = prometheus_client::registry::Registry::with_prefix("berth_operator");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        let duration = Family::<ReconcileLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ])
        });
        let leader = Gauge::default();
        registry.register(
            "reconciles",
            "Reconciles by kind and result",
            reconciles.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by kind and result",
            duration.clone(),
        );
        registry.register("leader", "1 while this replica leads", leader.clone());
        let cleanup_runs = Family::<CleanupRunLabels, Counter>::default();
        registry.register(
            "cleanup_runs",
            "CleanupPolicy runs by result and mode",
            cleanup_runs.clone(),
        );
        let cleanup_tags_deleted = Counter::default();
        registry.register(
            "cleanup_tags_deleted",
            "Tags deleted by CleanupPolicy runs (dry runs not counted)",
            cleanup_tags_deleted.clone(),
        );
        let gc_sweeps = Counter::default();
        registry.register(
            "gc_sweeps",
            "Garbage collection sweeps the operator asked registries for",
            gc_sweeps.clone(),
        );
        Metrics {
            registry,
            reconciles,
            duration,
            leader,
            cleanup_runs,
            cleanup_tags_deleted,
            gc_sweeps,
        }
    }

    /// Counts one cleanup run and the tags it deleted.
    pub fn cleanup_run(&self, ok: bool, dry_run: bool, tags_deleted: u64) {
        self.cleanup_runs
            .get_or_create(&CleanupRunLabels {
                result: if ok { "success" } else { "failure" }.into(),
                mode: if dry_run { "dry_run" } else { "delete" }.into(),
            })
            .inc();
        if !dry_run {
            self.cleanup_tags_deleted.inc_by(tags_deleted);
        }
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The registry to encode for `/metrics`.
    pub fn registry(&self) -> &prometheus_client::registry::Registry {
        &self.registry
    }

    pub fn gc_sweep(&self) {
        self.gc_sweeps.inc();
    }

    /// Counts and times one reconcile of `kind`; a failure by its error
    /// variant's label.
    pub fn observe(&self, kind: &str, outcome: Result<(), &str>, seconds: f64) {
        let labels = ReconcileLabels {
            kind: kind.into(),
            result: if outcome.is_ok() { "success" } else { "error" }.into(),
            error: outcome.err().unwrap_or_default().into(),
        };
        self.reconciles.get_or_create(&labels).inc();
        self.duration.get_or_create(&labels).observe(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Failures are counted by error variant, successes with an empty label.
    #[test]
    fn reconcile_failures_are_labelled_by_error_variant() {
        let m = Metrics::new();
        m.observe("Registry", Ok(()), 0.01);
        m.observe("Registry", Err("kube"), 0.02);
        m.observe("Registry", Err("kube"), 0.02);
        m.observe("Project", Err("registry"), 0.03);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, m.registry()).unwrap();
        for line in [
            r#"berth_operator_reconciles_total{kind="Registry",result="success",error=""} 1"#,
            r#"berth_operator_reconciles_total{kind="Registry",result="error",error="kube"} 2"#,
            r#"berth_operator_reconciles_total{kind="Project",result="error",error="registry"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
        }
    }
}
