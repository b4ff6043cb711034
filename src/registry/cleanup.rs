//! Cleanup runs: the registry side of [`crate::lifecycle`]. Lists a
//! repository's tags, asks [`evaluate`] (pure) which go, and deletes them in
//! one measured transaction of the metadata layer, re-checking tag rules
//! there. Serves `POST /api/v1/projects/<project>/cleanup` (a CleanupPolicy
//! run over a project) and the bulk tag delete of the management API; the
//! standalone runner calls [`run_project`] in process.

use std::collections::{BTreeMap, HashSet};

use super::Registry;
use super::management::ProjectScope;
use crate::lifecycle::policy::{Guards, RuleError, Rules, TagInfo, Verdict, evaluate};
use crate::lifecycle::report::{CleanupReport, CleanupRequest, RepositoryReport};
use crate::metadata::{
    DeletionOutcome, MetadataError, PlannedDeletion, PolicyTag, RepositoryDeletions, TagOp,
};

#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("invalid cleanup policy: {0}")]
    Policy(#[from] RuleError),
    #[error("project {0} does not exist")]
    UnknownProject(String),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
}

/// One repository's tags, evaluated: what to delete, and the report so far.
pub(super) struct Evaluated {
    pub(super) report: RepositoryReport,
    pub(super) plan: Vec<PlannedDeletion>,
}

/// Evaluates `tags` (in name order) of repository `name`.
pub(super) fn evaluate_repository(
    name: &str,
    tags: &[PolicyTag],
    rules: &Rules,
    guards: &Guards<'_>,
    now_ms: i64,
) -> Evaluated {
    let infos: Vec<TagInfo<'_>> = tags
        .iter()
        .map(|t| TagInfo {
            name: &t.name,
            created_at: t.updated_at,
            digest: &t.digest,
        })
        .collect();
    let verdicts = evaluate(&infos, rules, guards, now_ms);
    let mut report = RepositoryReport {
        name: name.to_string(),
        ..RepositoryReport::default()
    };
    let mut plan = Vec::new();
    for (tag, verdict) in tags.iter().zip(verdicts) {
        match verdict {
            Verdict::Delete => plan.push(PlannedDeletion {
                name: tag.name.clone(),
                manifest_id: tag.manifest_id,
                updated_at: tag.updated_at,
            }),
            Verdict::Keep(why) => {
                report.tags_kept += 1;
                *report
                    .kept_by_reason
                    .entry(why.as_str().to_string())
                    .or_default() += 1;
            }
        }
    }
    Evaluated { report, plan }
}

/// The report once the deletions are done (or rolled back, for a dry run).
pub(super) fn finish(evaluated: Evaluated, outcome: DeletionOutcome) -> RepositoryReport {
    let mut report = evaluated.report;
    report.tags_deleted = outcome.deleted;
    report.tags_deleted.sort();
    report.failed = outcome.failed.into_iter().collect::<BTreeMap<_, _>>();
    report.bytes_reclaimable = outcome.bytes_reclaimable;
    report
}

/// Runs a cleanup policy over every repository of project `project_path`
/// (with authentication off: every repository named `project_path` or below
/// it), deleting unless `request.policy.dry_run`. Times are Unix
/// milliseconds. Protected and immutable tags are always kept (GitLab's rule
/// for policies, whoever runs them); with `keepInUse`, so are tags whose
/// manifest, or a manifest their index lists, is in
/// `request.in_use_digests`. All deletions and the `bytes_reclaimable`
/// measurement happen in one transaction, rolled back for a dry run, so a
/// dry run reports exactly what a real run would do at that moment.
pub async fn run_project(
    reg: &Registry,
    project_path: &str,
    request: &CleanupRequest,
    now_ms: i64,
) -> Result<CleanupReport, CleanupError> {
    let outcome = run_project_once(reg, project_path, request, now_ms).await;
    let deleted = outcome.as_ref().map_or(0, |r| r.tags_deleted);
    reg.metrics
        .cleanup_run(outcome.is_ok(), request.policy.dry_run, deleted);
    outcome
}

/// [`run_project`] without counting it.
async fn run_project_once(
    reg: &Registry,
    project_path: &str,
    request: &CleanupRequest,
    now_ms: i64,
) -> Result<CleanupReport, CleanupError> {
    let rules = Rules::from_spec(&request.policy)?;
    let model = reg.auth.as_ref().map(|a| a.model());
    let scope = ProjectScope::resolve(model, project_path, false)
        .ok_or_else(|| CleanupError::UnknownProject(project_path.to_string()))?;
    let tag_rules = scope.tag_rules();
    let repositories = scope.repositories(&reg.meta).await?;
    let dry_run = request.policy.dry_run;
    let check_in_use = rules.keep_in_use && !request.in_use_digests.is_empty();

    let mut evaluated = Vec::with_capacity(repositories.len());
    for repo in &repositories {
        let tags = reg.meta.policy_tags(repo.id).await?;
        let in_use = if check_in_use {
            reg.meta
                .manifests_in_use(repo.id, &request.in_use_digests)
                .await?
        } else {
            HashSet::new()
        };
        let guards = Guards {
            protected: &|t| tag_rules.protected(t),
            immutable: &|t| tag_rules.immutable(t),
            in_use: &|d| in_use.contains(d),
        };
        evaluated.push(evaluate_repository(
            &repo.name, &tags, &rules, &guards, now_ms,
        ));
    }

    // Re-checked in the deleting transaction: the rules may have changed
    // since the tags were evaluated.
    let check = |tag: &str, _: TagOp| {
        if tag_rules.protected(tag) {
            Err(format!(
                "tag {tag} is protected: cleanup policies never delete protected tags"
            ))
        } else if tag_rules.immutable(tag) {
            Err(format!("tag {tag} is immutable"))
        } else {
            Ok(())
        }
    };
    let plans: Vec<RepositoryDeletions<'_>> = repositories
        .iter()
        .zip(&evaluated)
        .map(|(repo, e)| RepositoryDeletions {
            repository_id: repo.id,
            tags: e.plan.clone(),
            check: &check,
        })
        .collect();
    let outcomes = reg.meta.delete_tags_measured(&plans, !dry_run).await?;

    let mut report = CleanupReport {
        dry_run,
        ..CleanupReport::default()
    };
    for (e, outcome) in evaluated.into_iter().zip(outcomes) {
        let r = finish(e, outcome);
        report.tags_deleted += r.tags_deleted.len() as u64;
        report.bytes_reclaimable += r.bytes_reclaimable;
        report.repositories.push(r);
    }
    let failed: usize = report.repositories.iter().map(|r| r.failed.len()).sum();
    tracing::info!(
        project = %project_path,
        repositories = report.repositories.len(),
        tags_deleted = report.tags_deleted,
        tags_failed = failed,
        bytes_reclaimable = report.bytes_reclaimable,
        dry_run,
        "cleanup run"
    );
    Ok(report)
}
