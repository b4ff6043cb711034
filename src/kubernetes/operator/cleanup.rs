//! The CleanupPolicy reconciler: checks the policy (`Accepted`), keeps its
//! schedule (`Scheduled`, `nextRun`) and runs it: for each selected Project,
//! `POST /api/v1/projects/<path>/cleanup` to the Project's Registry with the
//! policy and the digests of the images the cluster runs; the answers go to
//! status (`lastRunResult`), Events and metrics.
//!
//! When it runs:
//! - on cadence. The first run comes one cadence after the policy became
//!   `Scheduled` (accepted and enabled; that condition's
//!   `lastTransitionTime` starts the schedule), as GitLab's first run comes
//!   one cadence after the policy is enabled, not at once; then one cadence
//!   after each successful run. `1month` is 30 days, `3month` 90 days.
//! - at once when the object carries the `berth.dev/run-now` annotation (any
//!   value) and is Scheduled. The annotation is removed (with the object's
//!   resourceVersion as precondition, so a newer one is never lost) before
//!   the run starts, so it fires once; the run counts like any other run
//!   (the cadence restarts from it). On a policy that is not Scheduled the
//!   annotation is removed with a Warning Event and nothing runs.
//! - after a failed run (any Project failed; the others still ran), again
//!   after 2 s, 4 s, ... up to 256 s (`consecutiveFailures` in status), the
//!   operator's usual backoff, until a run succeeds.
//!
//! The controller reconciles on every change of the object (no generation
//! predicate), so annotation changes arrive; the reconcile is written so that
//! its own status writes, which come back as changes too, run nothing.
//!
//! Pure parts, tested below: [`next_run_ms`], [`run_now`], [`image_digest`]
//! and [`pod_digests`], [`summarize`], [`selector_string`].

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{self as meta, Time};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::apply::patch_status;
use super::client::RegistryClient;
use super::project::path_of;
use super::status::{Cond, conditions, same};
use super::{Context, Error, backoff_delay, now};
use crate::kubernetes::crd::{
    Cadence, CleanupPolicy, CleanupPolicySpec, CleanupPolicyStatus, CleanupRunSummary, Condition,
    Project, ProjectRunSummary, Registry, RepositoryRunSummary, RunTrigger,
};
use crate::lifecycle::report::{CleanupReport, CleanupRequest};
use crate::lifecycle::spec::LabelSelector;

/// The annotation that runs a policy at once (any value).
pub const RUN_NOW: &str = "berth.dev/run-now";
/// Tag names listed per repository in status (the rest are counted).
pub const TAGS_LISTED: usize = 50;
/// Repositories listed per Project in status (the rest are counted).
pub const REPOSITORIES_LISTED: usize = 100;
/// How long a run waits for the Pod cache to be filled after a start.
const PODS_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks what the schema cannot: the policy compiles as berth runs it
/// (regexes anchored at both ends, keepN among GitLab's values), and its
/// label selector can be sent to the API server.
pub fn check(spec: &CleanupPolicySpec) -> Result<(), (&'static str, String)> {
    match crate::lifecycle::policy::Rules::from_spec(spec) {
        Ok(_) => {}
        Err(e @ crate::lifecycle::policy::RuleError::Regex { .. }) => {
            return Err(("InvalidRegex", e.to_string()));
        }
        Err(e) => return Err(("Invalid", e.to_string())),
    }
    if let Some(selector) = &spec.selector {
        selector_string(selector).map_err(|m| ("InvalidSelector", m))?;
    }
    Ok(())
}

/// A `LabelSelector` as the `labelSelector` string of a list call
/// (`a=b,tier in (x,y),!legacy`). An empty selector selects every Project of
/// the namespace, as everywhere in Kubernetes.
pub fn selector_string(selector: &LabelSelector) -> Result<String, String> {
    for r in selector.match_expressions.iter().flatten() {
        let values = r.values.as_ref().map_or(0, Vec::len);
        match r.operator.as_str() {
            "In" | "NotIn" if values == 0 => {
                return Err(format!(
                    "selector: operator {} on {:?} needs at least one value",
                    r.operator, r.key
                ));
            }
            "Exists" | "DoesNotExist" if values > 0 => {
                return Err(format!(
                    "selector: operator {} on {:?} takes no values",
                    r.operator, r.key
                ));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => {
                return Err(format!(
                    "selector: unknown operator {other:?} (In, NotIn, Exists, DoesNotExist)"
                ));
            }
        }
    }
    let selector = meta::LabelSelector {
        match_labels: selector.match_labels.clone(),
        match_expressions: selector.match_expressions.as_ref().map(|all| {
            all.iter()
                .map(|r| meta::LabelSelectorRequirement {
                    key: r.key.clone(),
                    operator: r.operator.clone(),
                    values: r.values.clone(),
                })
                .collect()
        }),
    };
    kube::core::Selector::try_from(selector)
        .map(|s| s.to_string())
        .map_err(|e| format!("selector: {}", e.0))
}

/// The length of a cadence.
pub fn cadence_ms(c: Cadence) -> i64 {
    i64::try_from(crate::lifecycle::policy::cadence_period(c).as_millis()).unwrap_or(i64::MAX)
}

/// When the next run is due (Unix milliseconds), for a policy Scheduled
/// since `scheduled_since` whose last run started at `last_run` and was the
/// `failures`th failure in a row (0: it succeeded).
pub fn next_run_ms(
    cadence: Cadence,
    scheduled_since: i64,
    last_run: Option<i64>,
    failures: u32,
) -> i64 {
    match last_run {
        // A retry, unless the run failed before the policy was (re)scheduled.
        Some(last) if failures > 0 && last >= scheduled_since => {
            last + backoff_delay(failures).as_millis() as i64
        }
        Some(last) => last.max(scheduled_since) + cadence_ms(cadence),
        None => scheduled_since + cadence_ms(cadence),
    }
}

/// The value of the run-now annotation, if the object carries it.
pub fn run_now(policy: &CleanupPolicy) -> Option<&str> {
    policy.annotations().get(RUN_NOW).map(String::as_str)
}

/// The manifest digest in an image reference or a container status'
/// `imageID`: `host/repo@sha256:…`, `docker-pullable://host/repo@sha256:…`,
/// `docker://sha256:…` or a bare `sha256:…`. A reference by tag has none.
pub fn image_digest(reference: &str) -> Option<String> {
    let digest = match reference.rsplit_once('@') {
        Some((_, d)) => d,
        None => reference.rsplit_once("://").map_or(reference, |(_, r)| r),
    };
    digest
        .parse::<crate::oci::Digest>()
        .ok()
        .map(|d| d.to_string())
}

/// The image digests a Pod runs or is about to run: its containers' (init
/// and ephemeral ones too) `imageID`s, and their images when pinned by
/// digest. A Pod that has ended (`Succeeded`, `Failed`) runs nothing.
pub fn pod_digests(pod: &Pod) -> Vec<String> {
    let status = pod.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return Vec::new();
    }
    let spec_images = pod.spec.iter().flat_map(|s| {
        let ephemeral = s
            .ephemeral_containers
            .iter()
            .flatten()
            .filter_map(|c| c.image.as_deref());
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .filter_map(|c| c.image.as_deref())
            .chain(ephemeral)
    });
    let image_ids = status.into_iter().flat_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
            .chain(s.ephemeral_container_statuses.iter().flatten())
            .map(|c| c.image_id.as_str())
    });
    spec_images
        .chain(image_ids)
        .filter_map(image_digest)
        .collect()
}

/// Every digest the given Pods run, sorted, once each.
pub fn in_use_digests<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Vec<String> {
    pods.into_iter()
        .flat_map(pod_digests)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// What the Pod cache keeps of a Pod: its phase and the images of its
/// containers and their statuses (everything [`pod_digests`] reads).
pub fn trim_pod(pod: &mut Pod) {
    fn container(c: &Container) -> Container {
        Container {
            name: c.name.clone(),
            image: c.image.clone(),
            ..Default::default()
        }
    }
    fn statuses(s: &Option<Vec<ContainerStatus>>) -> Option<Vec<ContainerStatus>> {
        s.as_ref().map(|v| {
            v.iter()
                .map(|c| ContainerStatus {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    image_id: c.image_id.clone(),
                    ..Default::default()
                })
                .collect()
        })
    }
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.labels = None;
    pod.spec = pod.spec.as_ref().map(|s| PodSpec {
        containers: s.containers.iter().map(container).collect(),
        init_containers: s
            .init_containers
            .as_ref()
            .map(|v| v.iter().map(container).collect()),
        ephemeral_containers: s.ephemeral_containers.as_ref().map(|v| {
            v.iter()
                .map(|c| k8s_openapi::api::core::v1::EphemeralContainer {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    ..Default::default()
                })
                .collect()
        }),
        ..Default::default()
    });
    pod.status = pod.status.as_ref().map(|s| PodStatus {
        phase: s.phase.clone(),
        container_statuses: statuses(&s.container_statuses),
        init_container_statuses: statuses(&s.init_container_statuses),
        ephemeral_container_statuses: statuses(&s.ephemeral_container_statuses),
        ..Default::default()
    });
}

/// One Project's part of a run, as the registry answered it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectOutcome {
    pub name: String,
    pub path: String,
    pub result: Result<CleanupReport, String>,
}

/// A run: the Projects' outcomes, or why it could not start at all.
pub type RunOutcome = Result<Vec<ProjectOutcome>, String>;

/// `bytes` in MiB for messages, e.g. `1.5 MiB`.
pub fn mib(bytes: impl TryInto<i64>) -> String {
    let bytes = bytes.try_into().unwrap_or(i64::MAX);
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn plural(n: impl Into<i64>, one: &str) -> String {
    let n = n.into();
    if n == 1 {
        format!("{n} {one}")
    } else {
        format!("{n} {one}s")
    }
}

/// What one Project's run did, for its Event.
pub fn project_message(outcome: &ProjectOutcome, dry_run: bool) -> String {
    match &outcome.result {
        Ok(r) => format!(
            "{} {} ({} reclaimable) in project {}",
            if dry_run {
                "dry run: would delete"
            } else {
                "deleted"
            },
            plural(int(r.tags_deleted), "tag"),
            mib(r.bytes_reclaimable),
            outcome.path
        ),
        Err(e) => format!("project {}: {e}", outcome.name),
    }
}

/// The status summary of a run: totals, and per Project and repository the
/// tags deleted (would be, in a dry run), capped at [`TAGS_LISTED`] names
/// per repository and [`REPOSITORIES_LISTED`] repositories per Project, with
/// counts of what was left out.
pub fn summarize(trigger: RunTrigger, dry_run: bool, run: &RunOutcome) -> CleanupRunSummary {
    let outcomes = match run {
        Ok(o) => o.as_slice(),
        Err(e) => {
            return CleanupRunSummary {
                trigger,
                dry_run,
                message: format!("the run could not start: {e}"),
                tags_deleted: 0,
                bytes_reclaimable: 0,
                projects: Vec::new(),
            };
        }
    };
    let projects: Vec<ProjectRunSummary> = outcomes.iter().map(project_summary).collect();
    let tags: i64 = projects.iter().map(|p| p.tags_deleted).sum();
    let bytes: i64 = projects.iter().map(|p| p.bytes_reclaimable).sum();
    let failed = projects.iter().filter(|p| p.error.is_some()).count() as i64;
    let mut message = if projects.is_empty() {
        "no Project selected: nothing to do".to_string()
    } else if failed == projects.len() as i64 {
        format!(
            "{}nothing done: {} failed",
            if dry_run { "dry run: " } else { "" },
            plural(failed, "project")
        )
    } else {
        format!(
            "{} {} ({} reclaimable) in {}",
            if dry_run {
                "dry run: would delete"
            } else {
                "deleted"
            },
            plural(tags, "tag"),
            mib(bytes),
            plural(projects.len() as i64 - failed, "project"),
        )
    };
    if failed > 0 && failed < projects.len() as i64 {
        message.push_str(&format!("; {} failed", plural(failed, "project")));
    }
    CleanupRunSummary {
        trigger,
        dry_run,
        message,
        tags_deleted: tags,
        bytes_reclaimable: bytes,
        projects,
    }
}

fn project_summary(o: &ProjectOutcome) -> ProjectRunSummary {
    let report = match &o.result {
        Ok(r) => r,
        Err(e) => {
            return ProjectRunSummary {
                name: o.name.clone(),
                path: o.path.clone(),
                error: Some(e.clone()),
                ..Default::default()
            };
        }
    };
    let mut repos: Vec<&crate::lifecycle::report::RepositoryReport> =
        report.repositories.iter().collect();
    // Those with something to say first, then by name.
    repos.sort_by_key(|r| (r.tags_deleted.is_empty() && r.failed.is_empty(), &r.name));
    let listed = repos.len().min(REPOSITORIES_LISTED);
    ProjectRunSummary {
        name: o.name.clone(),
        path: o.path.clone(),
        error: None,
        tags_deleted: int(report.tags_deleted),
        bytes_reclaimable: int(report.bytes_reclaimable),
        repositories: repos[..listed]
            .iter()
            .map(|r| {
                let mut tags = r.tags_deleted.clone();
                tags.sort();
                let not_listed = tags.len().saturating_sub(TAGS_LISTED);
                tags.truncate(TAGS_LISTED);
                RepositoryRunSummary {
                    name: r.name.clone(),
                    tags_deleted: tags,
                    tags_deleted_not_listed: not_listed as i64,
                    tags_kept: int(r.tags_kept),
                    kept_by_reason: r
                        .kept_by_reason
                        .iter()
                        .map(|(k, v)| (k.clone(), int(*v)))
                        .collect(),
                    bytes_reclaimable: int(r.bytes_reclaimable),
                    failed: r
                        .failed
                        .iter()
                        .take(TAGS_LISTED)
                        .map(|(k, v)| {
                            let mut v = v.clone();
                            super::clip(&mut v, 200);
                            (k.clone(), v)
                        })
                        .collect(),
                }
            })
            .collect(),
        repositories_not_listed: (repos.len() - listed) as i64,
    }
}

fn ms(t: &Time) -> i64 {
    t.0.as_millisecond()
}

fn time(ms: i64) -> Time {
    Time(k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap_or_else(|_| now().0))
}

fn cadence_name(c: Cadence) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(String::from))
        .unwrap_or_default()
}

pub async fn reconcile(cached: Arc<CleanupPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = cached.namespace().unwrap_or_default();
    let api = Api::<CleanupPolicy>::namespaced(ctx.client.clone(), &ns);
    // The cached copy can predate this reconciler's own last status write
    // (which comes back through the watch a little later): whether a run is
    // due, and the status written after it, are decided on the object as
    // the API server holds it now, so a stale copy never undoes a run's
    // record or runs a policy twice.
    let Some(policy) = api.get_opt(&cached.name_any()).await? else {
        return Ok(Action::await_change());
    };
    let mut verdict = check(&policy.spec);
    if verdict.is_ok()
        && let Some(r) = &policy.spec.project_ref
        && Api::<Project>::namespaced(ctx.client.clone(), &ns)
            .get_opt(&r.name)
            .await?
            .is_none()
    {
        verdict = Err((
            "ProjectNotFound",
            format!("Project {:?} not found in namespace {ns}", r.name),
        ));
    }
    let scheduled = verdict.is_ok() && policy.spec.enabled;
    let run_now = run_now(&policy).map(String::from);
    if let Some(value) = &run_now {
        // Removed before the run, with the version we read as precondition:
        // it fires once, and an annotation set again meanwhile is not lost.
        let patch = serde_json::json!({"metadata": {
            "resourceVersion": policy.resource_version(),
            "annotations": {RUN_NOW: null},
        }});
        match api
            .patch(
                &policy.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map(|_: CleanupPolicy| ())
        {
            Ok(_) => {}
            // Changed since we read it: the newer version comes through the watch.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            Err(e) => return Err(e.into()),
        }
        if !scheduled {
            let why = match &verdict {
                Err((_, m)) => format!("the policy is not accepted: {m}"),
                Ok(()) => "spec.enabled is false".to_string(),
            };
            ctx.event(
                &policy,
                EventType::Warning,
                "RunNowIgnored",
                format!("{RUN_NOW}={value} ignored: {why}"),
            )
            .await;
        }
    }

    let old = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let started = now();
    let now_ms = ms(&started);
    let since = scheduled.then(|| {
        old.conditions
            .iter()
            .find(|c| c.type_ == "Scheduled" && c.status == "True")
            .map_or(now_ms, |c| ms(&c.last_transition_time))
    });
    let mut last_run = old.last_run.clone();
    let mut failures = u32::try_from(old.consecutive_failures).unwrap_or(0);
    let mut last_result = old.last_run_result.clone();
    let mut ran: Option<(bool, String)> = None;
    if let Some(since) = since {
        let due = next_run_ms(
            policy.spec.cadence,
            since,
            last_run.as_ref().map(ms),
            failures,
        );
        if run_now.is_some() || now_ms >= due {
            let trigger = if run_now.is_some() {
                RunTrigger::RunNow
            } else {
                RunTrigger::Schedule
            };
            let outcome = run(&policy, &ctx, &ns).await;
            let (ok, message) = report(&policy, &ctx, trigger, &outcome).await;
            last_result = Some(summarize(trigger, policy.spec.dry_run, &outcome));
            last_run = Some(started.clone());
            failures = if ok { 0 } else { failures.saturating_add(1) };
            ran = Some((ok, message));
        }
    }
    let next = since.map(|since| {
        next_run_ms(
            policy.spec.cadence,
            since,
            last_run.as_ref().map(ms),
            failures,
        )
    });

    let mut conds = vec![
        match &verdict {
            Ok(()) => Cond {
                type_: "Accepted",
                ok: true,
                reason: "Valid",
                message: "the policy is valid".into(),
            },
            Err((reason, message)) => Cond {
                type_: "Accepted",
                ok: false,
                reason,
                message: message.clone(),
            },
        },
        match (&verdict, policy.spec.enabled) {
            (Ok(()), true) => Cond {
                type_: "Scheduled",
                ok: true,
                reason: "Enabled",
                message: format!("runs every {}", cadence_name(policy.spec.cadence)),
            },
            (Ok(()), false) => Cond {
                type_: "Scheduled",
                ok: false,
                reason: "Disabled",
                message: "spec.enabled is false".into(),
            },
            (Err(_), _) => Cond {
                type_: "Scheduled",
                ok: false,
                reason: "NotAccepted",
                message: "the policy is not accepted".into(),
            },
        },
    ];
    let previous: Option<&Condition> = old
        .conditions
        .iter()
        .find(|c| c.type_ == "LastRunSucceeded");
    match (&ran, previous) {
        (Some((ok, message)), _) => conds.push(Cond {
            type_: "LastRunSucceeded",
            ok: *ok,
            reason: if *ok { "Succeeded" } else { "Failed" },
            message: message.clone(),
        }),
        (None, Some(c)) => conds.push(Cond {
            type_: "LastRunSucceeded",
            ok: c.status == "True",
            reason: &c.reason,
            message: c.message.clone(),
        }),
        (None, None) => {}
    }
    let status = CleanupPolicyStatus {
        observed_generation: generation,
        last_run,
        next_run: next.map(time),
        consecutive_failures: i32::try_from(failures).unwrap_or(i32::MAX),
        last_run_result: last_result,
        conditions: conditions(&old.conditions, conds, generation, &started),
    };
    if !same(&old, &status) {
        if let Err((reason, message)) = &verdict
            && !old
                .conditions
                .iter()
                .any(|c| c.type_ == "Accepted" && c.status == "False" && c.reason == *reason)
        {
            ctx.event(&policy, EventType::Warning, reason, message.clone())
                .await;
        }
        patch_status(&api, &policy, &status).await?;
    }
    Ok(match (next, &verdict) {
        (Some(next), _) => {
            let wait = (next - ms(&now())).max(1000);
            Action::requeue(Duration::from_millis(wait as u64))
        }
        (None, Err(("ProjectNotFound", _))) => Action::requeue(Duration::from_secs(60)),
        // Not scheduled: a spec change (through the watch) starts it.
        (None, _) => Action::requeue(Duration::from_secs(3600)),
    })
}

/// Runs the policy over its Projects, each on its own: one failing does not
/// stop the others.
async fn run(policy: &CleanupPolicy, ctx: &Context, ns: &str) -> RunOutcome {
    let projects = selected_projects(policy, ctx, ns).await?;
    let in_use_digests = if policy.spec.keep_in_use {
        tokio::time::timeout(PODS_SYNC_TIMEOUT, ctx.pods.wait_until_ready())
            .await
            .map_err(|_| {
                "the Pod cache is not filled yet: the images in use are unknown".to_string()
            })?
            .map_err(|e| format!("the Pod cache is gone: {e}"))?;
        in_use_digests(ctx.pods.state().iter().map(|p| &**p))
    } else {
        Vec::new()
    };
    let request = CleanupRequest {
        policy: policy.spec.0.clone(),
        in_use_digests,
    };
    let registries = Api::<Registry>::namespaced(ctx.client.clone(), ns);
    let mut clients: HashMap<String, Result<RegistryClient, String>> = HashMap::new();
    let mut outcomes = Vec::new();
    for p in projects {
        let path = path_of(&p);
        let result: Result<CleanupReport, String> = async {
            let reg_name = &p
                .spec
                .registry_ref
                .as_ref()
                .ok_or("spec.registryRef is not set")?
                .name;
            if !clients.contains_key(reg_name) {
                let client = match registries.get_opt(reg_name).await {
                    Ok(Some(reg)) => RegistryClient::new(&reg, ctx)
                        .await
                        .map_err(|e| e.to_string()),
                    Ok(None) => Err(format!("Registry {reg_name:?} not found in namespace {ns}")),
                    Err(e) => Err(e.to_string()),
                };
                clients.insert(reg_name.clone(), client);
            }
            match &clients[reg_name] {
                Ok(client) => client
                    .cleanup(&path, &request)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            }
        }
        .await;
        outcomes.push(ProjectOutcome {
            name: p.name_any(),
            path,
            result,
        });
    }
    Ok(outcomes)
}

/// The Projects a policy applies to, by name; those being deleted are left
/// out (their images go with them).
async fn selected_projects(
    policy: &CleanupPolicy,
    ctx: &Context,
    ns: &str,
) -> Result<Vec<Project>, String> {
    let api = Api::<Project>::namespaced(ctx.client.clone(), ns);
    let mut projects = match (&policy.spec.project_ref, &policy.spec.selector) {
        (Some(r), _) => match api.get_opt(&r.name).await {
            Ok(Some(p)) => vec![p],
            Ok(None) => return Err(format!("Project {:?} not found in namespace {ns}", r.name)),
            Err(e) => return Err(e.to_string()),
        },
        (None, Some(selector)) => {
            let labels = selector_string(selector)?;
            api.list(&ListParams::default().labels(&labels))
                .await
                .map_err(|e| format!("listing Projects: {e}"))?
                .items
        }
        (None, None) => return Err("set projectRef or selector".into()),
    };
    projects.retain(|p| p.metadata.deletion_timestamp.is_none());
    projects.sort_by_key(|p| p.name_any());
    Ok(projects)
}

/// Events and metrics for a run; returns whether it succeeded and the
/// message of the `LastRunSucceeded` condition.
async fn report(
    policy: &CleanupPolicy,
    ctx: &Context,
    trigger: RunTrigger,
    outcome: &RunOutcome,
) -> (bool, String) {
    let dry_run = policy.spec.dry_run;
    let by = match trigger {
        RunTrigger::RunNow => format!(" (run now: {RUN_NOW})"),
        RunTrigger::Schedule => String::new(),
    };
    let (ok, message) = match outcome {
        Err(e) => {
            let message = format!("the run could not start: {e}");
            ctx.event(
                policy,
                EventType::Warning,
                "CleanupRunFailed",
                format!("{message}{by}"),
            )
            .await;
            (false, message)
        }
        Ok(projects) if projects.is_empty() => {
            let message = "no Project selected: nothing to do".to_string();
            ctx.event(
                policy,
                EventType::Normal,
                "CleanupRun",
                format!("{message}{by}"),
            )
            .await;
            (true, message)
        }
        Ok(projects) => {
            let mut errors = Vec::new();
            for p in projects {
                let note = format!("{}{by}", project_message(p, dry_run));
                if p.result.is_ok() {
                    // kube's recorder folds Events with the same reason into
                    // one series (keeping the first note), so a dry run
                    // after or before a real run needs its own reason.
                    let reason = if dry_run {
                        "CleanupDryRun"
                    } else {
                        "CleanupRun"
                    };
                    ctx.event(policy, EventType::Normal, reason, note).await;
                } else {
                    ctx.event(policy, EventType::Warning, "CleanupRunFailed", note)
                        .await;
                    errors.push(project_message(p, dry_run));
                }
            }
            let summary = summarize(trigger, dry_run, outcome);
            if errors.is_empty() {
                (true, summary.message)
            } else {
                let mut message = errors.join("; ");
                super::clip(&mut message, 1000);
                (false, message)
            }
        }
    };
    let deleted = outcome
        .iter()
        .flatten()
        .filter_map(|p| p.result.as_ref().ok())
        .map(|r| r.tags_deleted)
        .sum();
    ctx.metrics.cleanup_run(ok, dry_run, deleted);
    (ok, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::report::RepositoryReport;
    use crate::lifecycle::spec::LabelSelectorRequirement;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn regexes_are_checked_as_berth_compiles_them() {
        let spec = |v: serde_json::Value| serde_json::from_value(v).unwrap();
        assert!(check(&spec(json!({"projectRef": {"name": "p"}, "nameRegex": "v.*", "nameRegexKeep": "main|release-.+"}))).is_ok());
        let (reason, message) = check(&spec(
            json!({"projectRef": {"name": "p"}, "nameRegex": "v(.*"}),
        ))
        .unwrap_err();
        assert_eq!(reason, "InvalidRegex");
        assert!(message.starts_with("nameRegex "), "{message}");
        let (_, message) =
            check(&spec(json!({"selector": {}, "nameRegexKeep": "[z-a]"}))).unwrap_err();
        assert!(message.starts_with("nameRegexKeep "), "{message}");
        let (reason, message) = check(&spec(json!({"selector": {"matchExpressions": [
            {"key": "tier", "operator": "In", "values": []}]}})))
        .unwrap_err();
        assert_eq!(reason, "InvalidSelector");
        assert!(message.contains("needs at least one value"), "{message}");
    }

    fn requirement(key: &str, op: &str, values: Option<&[&str]>) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: values.map(|v| v.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn label_selectors_become_list_selectors() {
        let sel = LabelSelector {
            match_labels: Some(BTreeMap::from([
                ("team".to_string(), "a".to_string()),
                ("app".to_string(), "web".to_string()),
            ])),
            match_expressions: Some(vec![
                requirement("tier", "In", Some(&["prod", "edge"])),
                requirement("env", "NotIn", Some(&["dev"])),
                requirement("cleanup", "Exists", None),
                requirement("legacy", "DoesNotExist", Some(&[])),
            ]),
        };
        assert_eq!(
            selector_string(&sel).unwrap(),
            "app=web,team=a,tier in (edge,prod),env notin (dev),cleanup,!legacy"
        );
        assert_eq!(selector_string(&LabelSelector::default()).unwrap(), "");
        let only_labels = LabelSelector {
            match_labels: Some(BTreeMap::from([("a".to_string(), "b".to_string())])),
            match_expressions: None,
        };
        assert_eq!(selector_string(&only_labels).unwrap(), "a=b");
        for (bad, why) in [
            (requirement("t", "In", None), "needs at least one value"),
            (
                requirement("t", "NotIn", Some(&[])),
                "needs at least one value",
            ),
            (requirement("t", "Exists", Some(&["x"])), "takes no values"),
            (requirement("t", "Gt", Some(&["1"])), "unknown operator"),
        ] {
            let sel = LabelSelector {
                match_labels: None,
                match_expressions: Some(vec![bad]),
            };
            let e = selector_string(&sel).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    const H: i64 = 3600 * 1000;

    #[test]
    fn runs_come_one_cadence_apart_and_failures_retry_with_backoff() {
        let since = 1_000 * H;
        let cases = [
            (Cadence::Daily, 24),
            (Cadence::Weekly, 7 * 24),
            (Cadence::Fortnightly, 14 * 24),
            (Cadence::Monthly, 30 * 24),
            (Cadence::Quarterly, 90 * 24),
        ];
        for (cadence, hours) in cases {
            // The first run: one cadence after the policy became Scheduled.
            assert_eq!(next_run_ms(cadence, since, None, 0), since + hours * H);
            // Then one cadence after the last (successful) run, early or late.
            let last = since + 5 * H;
            assert_eq!(next_run_ms(cadence, since, Some(last), 0), last + hours * H);
        }
        let last = since + 3 * H;
        // Failed runs: 2 s, 4 s, ..., then 256 s from the 8th on.
        assert_eq!(
            next_run_ms(Cadence::Weekly, since, Some(last), 1),
            last + 2_000
        );
        assert_eq!(
            next_run_ms(Cadence::Weekly, since, Some(last), 3),
            last + 8_000
        );
        assert_eq!(
            next_run_ms(Cadence::Weekly, since, Some(last), 20),
            last + 256_000
        );
        // Disabled and enabled again later: the cadence starts over from the
        // enabling, and a failure from before is not retried at once.
        let enabled_again = since + 500 * H;
        assert_eq!(
            next_run_ms(Cadence::Daily, enabled_again, Some(last), 0),
            enabled_again + 24 * H
        );
        assert_eq!(
            next_run_ms(Cadence::Daily, enabled_again, Some(last), 2),
            enabled_again + 24 * H
        );
    }

    fn policy(annotations: &[(&str, &str)]) -> CleanupPolicy {
        let mut p = CleanupPolicy::new(
            "weekly",
            serde_json::from_value(json!({"projectRef": {"name": "app"}})).unwrap(),
        );
        p.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        p
    }

    #[test]
    fn the_run_now_annotation_is_seen_whatever_its_value() {
        assert_eq!(run_now(&policy(&[])), None);
        assert_eq!(run_now(&policy(&[("berth.dev/run-now", "1")])), Some("1"));
        assert_eq!(run_now(&policy(&[("berth.dev/run-now", "")])), Some(""));
        assert_eq!(
            run_now(&policy(&[
                ("berth.dev/run-now-please", "1"),
                ("other", "x")
            ])),
            None
        );
        let mut no_annotations = policy(&[]);
        no_annotations.metadata.annotations = None;
        assert_eq!(run_now(&no_annotations), None);
    }

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
    const D3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    const D4: &str = "sha256:4444444444444444444444444444444444444444444444444444444444444444";
    const D5: &str = "sha256:5555555555555555555555555555555555555555555555555555555555555555";

    #[test]
    fn digests_come_out_of_every_reference_form() {
        for (reference, want) in [
            (format!("docker-pullable://reg:5000/a/b@{D1}"), Some(D1)),
            (format!("reg:5000/a/b@{D1}"), Some(D1)),
            (format!("reg:5000/a/b:v1@{D1}"), Some(D1)),
            (format!("docker://{D1}"), Some(D1)),
            (D1.to_string(), Some(D1)),
            ("reg:5000/a/b:v1".to_string(), None),
            ("nginx".to_string(), None),
            ("nginx:1.27".to_string(), None),
            (String::new(), None),
            ("reg/a@sha256:short".to_string(), None),
            (
                "reg/a@md5:0123456789abcdef0123456789abcdef".to_string(),
                None,
            ),
        ] {
            assert_eq!(image_digest(&reference).as_deref(), want, "{reference}");
        }
    }

    fn pod(phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "n", "annotations": {"a": "b"},
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {
                "containers": [
                    {"name": "pinned", "image": format!("reg/a/b@{D1}"), "env": [{"name": "X", "value": "1"}]},
                    {"name": "tagged", "image": "reg/a/b:v2"}
                ],
                "initContainers": [{"name": "init", "image": "reg/a/init:v1"}],
                "ephemeralContainers": [{"name": "debug", "image": format!("reg/tools@{D5}")}],
                "volumes": [{"name": "v", "emptyDir": {}}]
            },
            "status": {
                "phase": phase,
                "containerStatuses": [
                    {"name": "pinned", "image": "reg/a/b", "imageID": format!("docker-pullable://reg/a/b@{D1}"), "ready": true, "restartCount": 0},
                    {"name": "tagged", "image": "reg/a/b:v2", "imageID": format!("reg/a/b@{D2}"), "ready": true, "restartCount": 0}
                ],
                "initContainerStatuses": [
                    {"name": "init", "image": "reg/a/init:v1", "imageID": format!("reg/a/init@{D3}"), "ready": false, "restartCount": 0}
                ],
                "ephemeralContainerStatuses": [
                    {"name": "debug", "image": "reg/tools", "imageID": "", "ready": false, "restartCount": 0}
                ]
            }
        }))
        .unwrap()
    }

    #[test]
    fn pods_run_the_digests_of_their_statuses_and_pinned_images() {
        let running = pod("Running");
        let mut digests = pod_digests(&running);
        digests.sort();
        digests.dedup();
        assert_eq!(digests, vec![D1, D2, D3, D5]);
        // A Pending Pod is about to run its images; ended Pods run nothing.
        assert_eq!(in_use_digests([&pod("Pending")]), vec![D1, D2, D3, D5]);
        assert!(pod_digests(&pod("Succeeded")).is_empty());
        assert!(pod_digests(&pod("Failed")).is_empty());
        // A Pod with no status yet: its pinned images only.
        let mut fresh = pod("Pending");
        fresh.status = None;
        assert_eq!(in_use_digests([&fresh]), vec![D1, D5]);
        // Several Pods: sorted, once each.
        let mut other = pod("Running");
        other.spec.as_mut().unwrap().containers[1].image = Some(format!("x@{D4}"));
        assert_eq!(
            in_use_digests([&running, &other, &running]),
            vec![D1, D2, D3, D4, D5]
        );
    }

    #[test]
    fn the_pod_cache_keeps_what_the_digests_need_only() {
        let full = pod("Running");
        let mut trimmed = full.clone();
        trim_pod(&mut trimmed);
        assert_eq!(pod_digests(&trimmed), pod_digests(&full));
        assert!(trimmed.metadata.managed_fields.is_none());
        assert!(trimmed.metadata.annotations.is_none());
        let spec = trimmed.spec.as_ref().unwrap();
        assert!(spec.volumes.is_none() && spec.containers[0].env.is_none());
        assert_eq!(trimmed.metadata.name.as_deref(), Some("p"));
        assert_eq!(trimmed.metadata.namespace.as_deref(), Some("n"));
        let mut ended = pod("Failed");
        trim_pod(&mut ended);
        assert!(pod_digests(&ended).is_empty());
    }

    fn repo(name: &str, deleted: usize, bytes: u64) -> RepositoryReport {
        RepositoryReport {
            name: name.into(),
            // Out of order, to see them sorted.
            tags_deleted: (0..deleted).rev().map(|i| format!("v{i:03}")).collect(),
            tags_kept: 2,
            kept_by_reason: BTreeMap::from([("latest".into(), 1), ("in_use".into(), 1)]),
            bytes_reclaimable: bytes,
            failed: BTreeMap::new(),
        }
    }

    #[test]
    fn the_summary_caps_tag_and_repository_lists_and_counts_the_rest() {
        let mut repositories = vec![
            repo("g/app/big", 60, 3 << 20),
            repo("g/app/small", 2, 1 << 20),
        ];
        repositories.extend((0..120).map(|i| repo(&format!("g/app/quiet{i:03}"), 0, 0)));
        let mut failing = repo("g/app/zzz", 1, 0);
        failing.tags_deleted.clear();
        failing.failed = (0..70)
            .map(|i| (format!("t{i:02}"), "é".repeat(250)))
            .collect();
        repositories.push(failing);
        let run: RunOutcome = Ok(vec![
            ProjectOutcome {
                name: "app".into(),
                path: "g/app".into(),
                result: Ok(CleanupReport {
                    dry_run: false,
                    repositories,
                    tags_deleted: 62,
                    bytes_reclaimable: 4 << 20,
                }),
            },
            ProjectOutcome {
                name: "gone".into(),
                path: "g/gone".into(),
                result: Err("registry API: connection refused".into()),
            },
        ]);
        let s = summarize(RunTrigger::Schedule, false, &run);
        assert_eq!(s.tags_deleted, 62);
        assert_eq!(s.bytes_reclaimable, 4 << 20);
        assert_eq!(
            s.message,
            "deleted 62 tags (4.0 MiB reclaimable) in 1 project; 1 project failed"
        );
        let app = &s.projects[0];
        assert_eq!(app.repositories.len(), REPOSITORIES_LISTED);
        assert_eq!(app.repositories_not_listed, 123 - 100);
        // Repositories with deletions or failures come first, by name.
        let first: Vec<&str> = app.repositories[..4]
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(
            first,
            ["g/app/big", "g/app/small", "g/app/zzz", "g/app/quiet000"]
        );
        let big = &app.repositories[0];
        assert_eq!(big.tags_deleted.len(), TAGS_LISTED);
        assert_eq!(big.tags_deleted[0], "v000");
        assert_eq!(big.tags_deleted[49], "v049");
        assert_eq!(big.tags_deleted_not_listed, 10);
        assert_eq!(big.kept_by_reason["in_use"], 1);
        let small = &app.repositories[1];
        assert_eq!(small.tags_deleted, ["v000", "v001"]);
        assert_eq!(small.tags_deleted_not_listed, 0);
        let zzz = &app.repositories[2];
        assert_eq!(zzz.failed.len(), TAGS_LISTED);
        // Clipped to 200 bytes on a character boundary (é is 2 bytes).
        assert!(
            zzz.failed
                .values()
                .all(|v| v.len() == 200 && v.chars().count() == 100)
        );
        assert_eq!(
            s.projects[1].error.as_deref(),
            Some("registry API: connection refused")
        );
        assert_eq!(s.projects[1].path, "g/gone");
        // The JSON leaves out what is empty.
        let j = serde_json::to_value(&s.projects[0].repositories[1]).unwrap();
        assert!(j.get("tagsDeletedNotListed").is_none() && j.get("failed").is_none());
    }

    #[test]
    fn messages_are_clipped_on_character_boundaries() {
        let mut s = "aéé".to_string();
        crate::kubernetes::operator::clip(&mut s, 2);
        assert_eq!(s, "a");
        let mut s = "aéé".to_string();
        crate::kubernetes::operator::clip(&mut s, 3);
        assert_eq!(s, "aé");
        let mut s = "short".to_string();
        crate::kubernetes::operator::clip(&mut s, 100);
        assert_eq!(s, "short");
    }

    #[test]
    fn a_dry_run_summary_says_would_delete() {
        let run: RunOutcome = Ok(vec![ProjectOutcome {
            name: "app".into(),
            path: "demo/app".into(),
            result: Ok(CleanupReport {
                dry_run: true,
                repositories: vec![repo("demo/app/x", 3, 1536 * 1024)],
                tags_deleted: 3,
                bytes_reclaimable: 1536 * 1024,
            }),
        }]);
        let s = summarize(RunTrigger::RunNow, true, &run);
        assert!(s.dry_run);
        assert_eq!(s.trigger, RunTrigger::RunNow);
        assert_eq!(
            s.message,
            "dry run: would delete 3 tags (1.5 MiB reclaimable) in 1 project"
        );
        assert_eq!(
            s.projects[0].repositories[0].tags_deleted,
            ["v000", "v001", "v002"]
        );
        let Ok(projects) = &run else { unreachable!() };
        assert_eq!(
            project_message(&projects[0], true),
            "dry run: would delete 3 tags (1.5 MiB reclaimable) in project demo/app"
        );
        assert_eq!(
            summarize(RunTrigger::Schedule, false, &Ok(Vec::new())).message,
            "no Project selected: nothing to do"
        );
        let all_failed: RunOutcome = Ok(vec![ProjectOutcome {
            name: "app".into(),
            path: "demo/app".into(),
            result: Err("registry API: 404".into()),
        }]);
        assert_eq!(
            summarize(RunTrigger::Schedule, true, &all_failed).message,
            "dry run: nothing done: 1 project failed"
        );
        let failed = summarize(RunTrigger::Schedule, false, &Err("no Pod cache".into()));
        assert_eq!(failed.message, "the run could not start: no Pod cache");
        assert!(failed.projects.is_empty());
    }
}
