//! The CleanupPolicy reconciler. Runs come with the lifecycle work; for now
//! it checks the policy and reports `Accepted` (or why not) in status.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;

use super::apply::patch_status;
use super::status::{Cond, conditions, same};
use super::{Context, Error, now};
use crate::crd::{CleanupPolicy, CleanupPolicyStatus, Project};

/// Checks what the schema cannot: the policy compiles as berth runs it
/// (regexes anchored at both ends, keepN among GitLab's values).
pub fn check(spec: &crate::crd::CleanupPolicySpec) -> Result<(), (&'static str, String)> {
    match crate::lifecycle::policy::Rules::from_spec(spec) {
        Ok(_) => Ok(()),
        Err(e @ crate::lifecycle::policy::RuleError::Regex { .. }) => {
            Err(("InvalidRegex", e.to_string()))
        }
        Err(e) => Err(("Invalid", e.to_string())),
    }
}

pub async fn reconcile(policy: Arc<CleanupPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = policy.namespace().unwrap_or_default();
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
    let old = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let cond = match &verdict {
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
    };
    let status = CleanupPolicyStatus {
        observed_generation: generation,
        conditions: conditions(&old.conditions, vec![cond], generation, &now()),
        ..old.clone()
    };
    if !same(&old, &status) {
        if let Err((reason, message)) = &verdict {
            ctx.event(&*policy, EventType::Warning, reason, message.clone())
                .await;
        }
        patch_status(
            &Api::<CleanupPolicy>::namespaced(ctx.client.clone(), &ns),
            &*policy,
            &status,
        )
        .await?;
    }
    Ok(match verdict {
        Err(("ProjectNotFound", _)) => Action::requeue(Duration::from_secs(60)),
        _ => Action::requeue(Duration::from_secs(3600)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexes_are_checked_as_berth_compiles_them() {
        let spec = |v: serde_json::Value| serde_json::from_value(v).unwrap();
        assert!(check(&spec(serde_json::json!({"projectRef": {"name": "p"}, "nameRegex": "v.*", "nameRegexKeep": "main|release-.+"}))).is_ok());
        let (reason, message) = check(&spec(
            serde_json::json!({"projectRef": {"name": "p"}, "nameRegex": "v(.*"}),
        ))
        .unwrap_err();
        assert_eq!(reason, "InvalidRegex");
        assert!(message.starts_with("nameRegex "), "{message}");
        let (_, message) = check(&spec(
            serde_json::json!({"selector": {}, "nameRegexKeep": "[z-a]"}),
        ))
        .unwrap_err();
        assert!(message.starts_with("nameRegexKeep "), "{message}");
    }
}
