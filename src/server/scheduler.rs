//! Cleanup policies in a standalone registry: the manifest directory's
//! `kind: CleanupPolicy` documents, run on their cadence and on the
//! `berth.dev/run-now` annotation, by the same code the operator reaches over
//! HTTP ([`crate::registry::cleanup::run_project`]).
//!
//! - A policy selects Projects of the directory by `projectRef` (a Project's
//!   `metadata.name` in the same namespace) or by `selector` (labels).
//! - Its first run comes one cadence after the registry first saw it (as
//!   GitLab schedules a newly enabled policy), then every cadence.
//! - `berth.dev/run-now: <value>` runs it at the next tick; since the file
//!   is the user's, the annotation is not removed: each new value runs once.
//! - The last run time and the run-now value handled are kept in
//!   `<data dir>/cleanup-state.json`, written atomically, so a restart neither
//!   repeats nor skips a run. The last report of each policy is kept there too
//!   (the standalone counterpart of the CleanupPolicy status).
//! - Nothing runs in the cluster here, so no digest counts as in use.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::auth::directory::{ObjectMeta, manifest_files};
use crate::lifecycle::policy::{Rules, cadence_period};
use crate::lifecycle::report::{CleanupReport, CleanupRequest};
use crate::lifecycle::spec::{CleanupPolicySpec, LabelSelector};
use crate::metadata::Lock;
use crate::registry::Registry;

/// The annotation that asks for a run now.
pub const RUN_NOW: &str = "berth.dev/run-now";

#[derive(Deserialize)]
struct PolicyManifest {
    #[serde(default)]
    metadata: ObjectMeta,
    spec: CleanupPolicySpec,
}

#[derive(Deserialize)]
struct ProjectMeta {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: ProjectPath,
}

#[derive(Deserialize, Default)]
struct ProjectPath {
    #[serde(default)]
    path: String,
}

/// A policy as read from the directory, with the project paths it selects.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `namespace/name` (or `name`): the key of its state.
    pub key: String,
    pub spec: CleanupPolicySpec,
    pub run_now: Option<String>,
    pub projects: Vec<String>,
}

/// What is remembered of one policy across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyState {
    /// Unix ms when the registry first saw the policy enabled.
    pub since: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_now_handled: Option<String>,
    /// Per project path, the last run's report or error.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_reports: BTreeMap<String, Result<CleanupReport, String>>,
}

type State = BTreeMap<String, PolicyState>;

/// Reads the directory's CleanupPolicies and resolves their Projects. A
/// document that does not parse is skipped with a warning (the access model's
/// loader reports Project errors already); an invalid policy is reported and
/// skipped, never run.
pub fn load_policies(dir: &Path) -> Vec<Policy> {
    let Ok((files, _)) = manifest_files(dir) else {
        return Vec::new();
    };
    let mut projects = Vec::new();
    let mut policies = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let Ok(value) = serde_yaml_ng::Value::deserialize(doc) else {
                continue;
            };
            match value.get("kind").and_then(|k| k.as_str()) {
                Some("Project") => {
                    if let Ok(p) = serde_yaml_ng::from_value::<ProjectMeta>(value) {
                        projects.push(p);
                    }
                }
                Some("CleanupPolicy") => {
                    match serde_path_to_error::deserialize::<_, PolicyManifest>(value) {
                        Ok(p) => policies.push(p),
                        Err(e) => tracing::warn!(
                            file = %file.display(),
                            "CleanupPolicy skipped: key `{}`: {}",
                            e.path(),
                            e.inner()
                        ),
                    }
                }
                _ => {}
            }
        }
    }
    let path_of = |p: &ProjectMeta| -> String {
        if !p.spec.path.is_empty() {
            return p.spec.path.clone();
        }
        match &p.metadata.namespace {
            Some(ns) => format!("{ns}/{}", p.metadata.name),
            None => p.metadata.name.clone(),
        }
    };
    policies
        .into_iter()
        .filter_map(|m| {
            let key = match &m.metadata.namespace {
                Some(ns) => format!("{ns}/{}", m.metadata.name),
                None => m.metadata.name.clone(),
            };
            if let Err(e) = Rules::from_spec(&m.spec) {
                tracing::warn!(policy = %key, "CleanupPolicy skipped: {e}");
                return None;
            }
            let same_ns = |p: &&ProjectMeta| p.metadata.namespace == m.metadata.namespace;
            let selected: Vec<String> = match (&m.spec.project_ref, &m.spec.selector) {
                (Some(r), _) => projects
                    .iter()
                    .filter(same_ns)
                    .filter(|p| p.metadata.name == r.name)
                    .map(path_of)
                    .collect(),
                (None, Some(sel)) => projects
                    .iter()
                    .filter(same_ns)
                    .filter(|p| selector_matches(sel, &p.metadata.labels))
                    .map(path_of)
                    .collect(),
                (None, None) => Vec::new(),
            };
            Some(Policy {
                key,
                run_now: m.metadata.annotations.get(RUN_NOW).cloned(),
                spec: m.spec,
                projects: selected,
            })
        })
        .collect()
}

/// Does a label selector (Kubernetes' shape) match `labels`? (`matchLabels` and
/// `matchExpressions` with In, NotIn, Exists, DoesNotExist; an unknown
/// operator matches nothing.)
pub fn selector_matches(sel: &LabelSelector, labels: &HashMap<String, String>) -> bool {
    let by_label = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expression = sel.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_label && by_expression
}

/// Why a policy runs now, if it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    RunNow(String),
    Cadence,
}

/// Whether `policy` is due at `now` given its state.
pub fn due(policy: &Policy, state: &PolicyState, now: i64) -> Option<Due> {
    if let Some(v) = &policy.run_now
        && state.run_now_handled.as_ref() != Some(v)
    {
        return Some(Due::RunNow(v.clone()));
    }
    if !policy.spec.enabled {
        return None;
    }
    let period = i64::try_from(cadence_period(policy.spec.cadence).as_millis()).unwrap_or(i64::MAX);
    let next = state.last_run.unwrap_or(state.since).saturating_add(period);
    (now >= next).then_some(Due::Cadence)
}

/// Runs a manifest directory's policies against a registry.
pub struct Runner {
    reg: Arc<Registry>,
    dir: PathBuf,
    state_file: PathBuf,
}

impl Runner {
    pub fn new(reg: Arc<Registry>, manifest_dir: &Path, data_dir: &Path) -> Runner {
        Runner {
            reg,
            dir: manifest_dir.to_path_buf(),
            state_file: data_dir.join("cleanup-state.json"),
        }
    }

    fn read_state(&self) -> State {
        match std::fs::read(&self.state_file) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(file = %self.state_file.display(), "cleanup state unreadable, starting afresh: {e}");
                State::new()
            }),
            Err(_) => State::new(),
        }
    }

    fn write_state(&self, state: &State) -> std::io::Result<()> {
        let tmp = self.state_file.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(state)?)?;
        std::fs::rename(&tmp, &self.state_file)
    }

    /// The remembered state of every policy.
    pub fn state(&self) -> BTreeMap<String, PolicyState> {
        self.read_state()
    }

    /// Runs every policy due at `now`; returns the keys of those that ran.
    /// Replicas on one database take turns: while one ticks, another's tick
    /// does nothing, and the next one reads what the first wrote (so a
    /// policy runs once, not once per replica).
    pub async fn tick(&self, now: i64) -> Vec<String> {
        let turn = match self.reg.meta.try_lock(Lock::CleanupPolicies).await {
            Ok(Some(turn)) => turn,
            Ok(None) => {
                tracing::debug!("cleanup policies: another replica is running them");
                return Vec::new();
            }
            Err(e) => {
                tracing::warn!("cleanup policies not run: {e}");
                return Vec::new();
            }
        };
        let policies = load_policies(&self.dir);
        let mut state = self.read_state();
        state.retain(|k, _| policies.iter().any(|p| &p.key == k));
        let mut ran = Vec::new();
        for policy in &policies {
            let entry = state.entry(policy.key.clone()).or_insert(PolicyState {
                since: now,
                ..PolicyState::default()
            });
            let Some(why) = due(policy, entry, now) else {
                continue;
            };
            tracing::info!(policy = %policy.key, reason = ?why, projects = policy.projects.len(), "running cleanup policy");
            let request = CleanupRequest {
                policy: policy.spec.clone(),
                in_use_digests: Vec::new(),
            };
            let mut reports = BTreeMap::new();
            for project in &policy.projects {
                let result =
                    crate::registry::cleanup::run_project(&self.reg, project, &request, now)
                        .await
                        .map_err(|e| e.to_string());
                match &result {
                    Ok(r) => tracing::info!(
                        policy = %policy.key, %project, dry_run = r.dry_run,
                        tags_deleted = r.tags_deleted, bytes_reclaimable = r.bytes_reclaimable,
                        "cleanup policy ran"
                    ),
                    Err(e) => {
                        tracing::warn!(policy = %policy.key, %project, "cleanup policy failed: {e}")
                    }
                }
                reports.insert(project.clone(), result);
            }
            entry.last_run = Some(now);
            entry.last_reports = reports;
            if let Due::RunNow(v) = why {
                entry.run_now_handled = Some(v);
            }
            ran.push(policy.key.clone());
        }
        if let Err(e) = self.write_state(&state) {
            tracing::warn!(file = %self.state_file.display(), "cannot save cleanup state: {e}");
        }
        // Released before returning, so a tick right after this one (a
        // run-now change, another replica) is not turned away by a lock on
        // its way out.
        turn.release().await;
        ran
    }

    /// Ticks every `every` until the process ends.
    pub fn spawn(self, every: Duration) {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                self.tick(crate::metadata::now_ms()).await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_match_like_kubernetes() {
        let sel = |v: serde_json::Value| serde_json::from_value(v).unwrap();
        let team = labels(&[("team", "a"), ("tier", "web")]);
        let cases = [
            (serde_json::json!({}), true),
            (serde_json::json!({"matchLabels": {"team": "a"}}), true),
            (serde_json::json!({"matchLabels": {"team": "b"}}), false),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "team", "operator": "Exists"}]}),
                true,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]}),
                false,
            ),
            (
                serde_json::json!({"matchLabels": {"team": "a"}, "matchExpressions": [{"key": "env", "operator": "Exists"}]}),
                false,
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "team", "operator": "Near"}]}),
                false,
            ),
        ];
        for (s, want) in cases {
            assert_eq!(selector_matches(&sel(s.clone()), &team), want, "{s}");
        }
    }

    fn policy(enabled: bool, run_now: Option<&str>) -> Policy {
        Policy {
            key: "p".into(),
            spec: serde_json::from_value(serde_json::json!({"projectRef": {"name": "x"}, "enabled": enabled, "cadence": "7d"})).unwrap(),
            run_now: run_now.map(String::from),
            projects: vec![],
        }
    }

    #[test]
    fn due_on_cadence_and_on_each_new_run_now_value() {
        const DAY: i64 = 86_400_000;
        let fresh = PolicyState {
            since: 0,
            ..PolicyState::default()
        };
        // One cadence after it was first seen, not before.
        assert_eq!(due(&policy(true, None), &fresh, 7 * DAY - 1), None);
        assert_eq!(
            due(&policy(true, None), &fresh, 7 * DAY),
            Some(Due::Cadence)
        );
        // Then one cadence after the last run.
        let ran = PolicyState {
            last_run: Some(7 * DAY + 5),
            ..fresh.clone()
        };
        assert_eq!(due(&policy(true, None), &ran, 14 * DAY), None);
        assert_eq!(
            due(&policy(true, None), &ran, 14 * DAY + 5),
            Some(Due::Cadence)
        );
        // Disabled: never on cadence, but run-now still runs it (once per value).
        assert_eq!(due(&policy(false, None), &fresh, 100 * DAY), None);
        assert_eq!(
            due(&policy(false, Some("1")), &fresh, 0),
            Some(Due::RunNow("1".into()))
        );
        let handled = PolicyState {
            run_now_handled: Some("1".into()),
            ..fresh
        };
        assert_eq!(due(&policy(false, Some("1")), &handled, 0), None);
        assert_eq!(
            due(&policy(false, Some("2")), &handled, 0),
            Some(Due::RunNow("2".into()))
        );
    }
}
