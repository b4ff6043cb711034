//! Status computation: pure functions from what was observed to the status
//! written back, with standard conditions (`Ready`, `Progressing`,
//! `Degraded`; `Accepted` for CleanupPolicy) carrying `observedGeneration`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::kubernetes::crd::{Condition, GcFigures, Registry, RegistryStatus};
use crate::registry::api::GcStatus;

/// A condition to set: (type, status, reason, message).
pub struct Cond<'a> {
    pub type_: &'a str,
    pub ok: bool,
    pub reason: &'a str,
    pub message: String,
}

/// Builds the conditions list, keeping each condition's
/// `lastTransitionTime` from `old` when its status did not change.
pub fn conditions(
    old: &[Condition],
    new: Vec<Cond<'_>>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    new.into_iter()
        .map(|c| {
            let status = if c.ok { "True" } else { "False" }.to_string();
            let since = old
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == status)
                .map(|o| o.last_transition_time.clone())
                .unwrap_or_else(|| now.clone());
            Condition {
                type_: c.type_.to_string(),
                status,
                reason: c.reason.to_string(),
                message: c.message,
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// What the registry reconcile saw.
pub struct RegistryObserved<'a> {
    pub deployment: Option<&'a Deployment>,
    /// A reconcile error, or a spec the data plane cannot honour yet.
    pub problem: Option<(&'a str, String)>,
    pub signing_key_secret: Option<String>,
    /// What the operator found of the metadata database.
    pub database: DatabaseSeen,
    /// What the operator found of the pods' certificate (`spec.tls`).
    pub tls: Option<TlsSeen>,
}

/// What the operator found of a Registry's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSeen {
    /// The Secret is there with `tls.crt` and `tls.key`.
    Present { secret: String },
    /// `tls.secretName` names a Secret that is missing or lacks a key.
    SecretInvalid { secret: String, why: String },
    /// `tls.issuerRef`: the Certificate is applied, its Secret not issued yet.
    Issuing { secret: String },
    /// `tls.issuerRef`, but the API server has no `Certificate` resource.
    CertManagerMissing,
}

/// The `TLSReady` condition: (ok, reason, message).
pub fn tls_condition(seen: &TlsSeen) -> (bool, &'static str, String) {
    match seen {
        TlsSeen::Present { secret } => (
            true,
            "SecretPresent",
            format!(
                "the pods serve HTTPS with the certificate of Secret {secret} (reloaded when it changes)"
            ),
        ),
        TlsSeen::SecretInvalid { secret, why } => (
            false,
            "SecretInvalid",
            format!(
                "Secret {secret}: {why}; the pods cannot start until it holds tls.crt and tls.key"
            ),
        ),
        TlsSeen::Issuing { secret } => (
            false,
            "Issuing",
            format!("waiting for cert-manager to issue Certificate {secret} into Secret {secret}"),
        ),
        TlsSeen::CertManagerMissing => (
            false,
            "CertManagerMissing",
            "tls.issuerRef needs cert-manager: the API server has no certificates.cert-manager.io \
             resource (install cert-manager, or use tls.secretName)"
                .into(),
        ),
    }
}

/// What the operator found when it checked a Registry's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseSeen {
    /// SQLite in the data volume: nothing to reach.
    Embedded,
    /// The connection Secret is missing or has no usable `url`.
    NoSecret(String),
    /// The database did not answer, or refused the connection.
    Unreachable(String),
    /// Connected; the newest migration applied (`None`: not migrated yet)
    /// and the newest this berth knows.
    Connected { schema: Option<i64>, known: i64 },
}

/// The `DatabaseReady` condition: (ok, reason, message).
pub fn database_condition(seen: &DatabaseSeen) -> (bool, &'static str, String) {
    match seen {
        DatabaseSeen::Embedded => (true, "Embedded", "SQLite in the data volume".into()),
        DatabaseSeen::NoSecret(why) => (false, "SecretInvalid", why.clone()),
        DatabaseSeen::Unreachable(why) => (false, "Unreachable", why.clone()),
        DatabaseSeen::Connected {
            schema: Some(found),
            known,
        } if found > known => (
            false,
            "SchemaTooNew",
            format!(
                "the database schema is at version {found}, newer than this berth knows \
                 (up to {known}): its pods refuse to start; use a berth image at least as new"
            ),
        ),
        DatabaseSeen::Connected {
            schema: Some(found),
            ..
        } => (
            true,
            "Connected",
            format!("PostgreSQL answers; schema version {found}"),
        ),
        DatabaseSeen::Connected { schema: None, .. } => (
            true,
            "Connected",
            "PostgreSQL answers; not migrated yet (the first pod migrates it)".into(),
        ),
    }
}

pub fn registry_status(reg: &Registry, seen: &RegistryObserved<'_>, now: &Time) -> RegistryStatus {
    let old = reg.status.clone().unwrap_or_default();
    let want = reg.spec.replicas;
    let dep_status = seen
        .deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let ready = dep_status.ready_replicas.unwrap_or(0);
    let updated = dep_status.updated_replicas.unwrap_or(0);
    let rolled_out = seen.deployment.is_some_and(|d| {
        d.status.as_ref().and_then(|s| s.observed_generation) == d.metadata.generation
    }) && updated >= want
        && dep_status.replicas.unwrap_or(0) == want;
    let mut conds = Vec::new();
    match &seen.problem {
        Some((reason, message)) => conds.push(Cond {
            type_: "Degraded",
            ok: true,
            reason,
            message: message.clone(),
        }),
        None => conds.push(Cond {
            type_: "Degraded",
            ok: false,
            reason: "AsExpected",
            message: "every child object is applied".into(),
        }),
    }
    let progressing = !(rolled_out && ready >= want);
    conds.push(Cond {
        type_: "Progressing",
        ok: progressing && seen.problem.is_none(),
        reason: if progressing {
            "RollingOut"
        } else {
            "Complete"
        },
        message: format!("{ready} of {want} pods ready, {updated} up to date"),
    });
    let (ok, reason, message) = if let Some((reason, message)) = &seen.problem {
        (false, *reason, message.clone())
    } else if want == 0 {
        (false, "ScaledToZero", "spec.replicas is 0".to_string())
    } else if ready >= want && rolled_out {
        (true, "Available", format!("{ready} of {want} pods ready"))
    } else {
        (
            false,
            "PodsNotReady",
            format!("{ready} of {want} pods ready"),
        )
    };
    conds.push(Cond {
        type_: "Ready",
        ok,
        reason,
        message,
    });
    let (ok, reason, message) = database_condition(&seen.database);
    conds.push(Cond {
        type_: "DatabaseReady",
        ok,
        reason,
        message,
    });
    if let Some(tls) = &seen.tls {
        let (ok, reason, message) = tls_condition(tls);
        conds.push(Cond {
            type_: "TLSReady",
            ok,
            reason,
            message,
        });
    }
    RegistryStatus {
        observed_generation: reg.metadata.generation,
        endpoint: Some(super::children::endpoint(reg)),
        url: Some(super::children::url(reg)),
        replicas: want,
        ready_replicas: ready,
        signing_key_secret: seen.signing_key_secret.clone(),
        // Refreshed by the caller while the registry is Ready; kept otherwise.
        garbage_collection: old.garbage_collection,
        conditions: conditions(&old.conditions, conds, reg.metadata.generation, now),
    }
}

/// The status figures from a registry's `GET /api/v1/gc` answer.
pub fn gc_figures(gc: &GcStatus) -> GcFigures {
    GcFigures {
        pending_reviews: gc.pending_manifest_reviews + gc.pending_blob_reviews,
        due_reviews: gc.due_manifest_reviews + gc.due_blob_reviews,
        last_sweep: gc
            .last_sweep_at_ms
            .and_then(|ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).ok())
            .map(Time),
        sweeps: gc.sweeps,
        manifests_deleted: gc.manifests_deleted,
        blobs_deleted: gc.blobs_deleted,
        bytes_deleted: gc.bytes_deleted,
        uploads_expired: gc.uploads_expired,
    }
}

/// Whether two statuses differ in anything but transition times (which
/// `conditions` keeps anyway): an unchanged status is not written.
pub fn same<T: serde::Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// The name of the object for messages.
pub fn display<K: kube::Resource>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;

    fn reg(replicas: i32) -> Registry {
        let mut r = Registry::new(
            "reg",
            serde_json::from_value(serde_json::json!({"replicas": replicas})).unwrap(),
        );
        r.metadata.namespace = Some("ns".into());
        r.metadata.generation = Some(3);
        r
    }

    fn deployment(ready: i32, replicas: i32, observed: i64) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.generation = Some(5);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(observed),
            ready_replicas: Some(ready),
            updated_replicas: Some(replicas),
            replicas: Some(replicas),
            ..Default::default()
        });
        d
    }

    fn cond<'a>(s: &'a RegistryStatus, t: &str) -> (&'a str, &'a str) {
        let c = s.conditions.iter().find(|c| c.type_ == t).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_000_000).unwrap())
    }

    #[test]
    fn database_ready_says_what_was_found() {
        let cases = [
            (DatabaseSeen::Embedded, true, "Embedded", "SQLite"),
            (
                DatabaseSeen::NoSecret("Secret pg not found".into()),
                false,
                "SecretInvalid",
                "Secret pg not found",
            ),
            (
                DatabaseSeen::Unreachable("cannot connect".into()),
                false,
                "Unreachable",
                "cannot connect",
            ),
            (
                DatabaseSeen::Connected {
                    schema: None,
                    known: 6,
                },
                true,
                "Connected",
                "not migrated yet",
            ),
            (
                DatabaseSeen::Connected {
                    schema: Some(6),
                    known: 6,
                },
                true,
                "Connected",
                "schema version 6",
            ),
            (
                DatabaseSeen::Connected {
                    schema: Some(7),
                    known: 6,
                },
                false,
                "SchemaTooNew",
                "version 7, newer than this berth knows (up to 6)",
            ),
        ];
        for (seen, ok, reason, says) in cases {
            let (got_ok, got_reason, message) = database_condition(&seen);
            assert_eq!((got_ok, got_reason), (ok, reason), "{seen:?}");
            assert!(message.contains(says), "{seen:?}: {message}");
        }
        // It reaches the status as its own condition, beside Ready.
        let s = registry_status(
            &reg(1),
            &RegistryObserved {
                deployment: None,
                problem: None,
                signing_key_secret: None,
                database: DatabaseSeen::Unreachable("no route".into()),
                tls: None,
            },
            &now(),
        );
        assert_eq!(cond(&s, "DatabaseReady"), ("False", "Unreachable"));
    }

    #[test]
    fn ready_only_when_every_pod_is_ready_and_rolled_out() {
        let r = reg(2);
        fn seen(d: Option<&Deployment>) -> RegistryObserved<'_> {
            RegistryObserved {
                deployment: d,
                problem: None,
                signing_key_secret: Some("reg-signing-key".into()),
                database: DatabaseSeen::Embedded,
                tls: None,
            }
        }
        let s = registry_status(&r, &seen(None), &now());
        assert_eq!(cond(&s, "Ready"), ("False", "PodsNotReady"));
        assert_eq!(cond(&s, "Progressing"), ("True", "RollingOut"));
        let half = deployment(1, 2, 5);
        let s = registry_status(&r, &seen(Some(&half)), &now());
        assert_eq!(cond(&s, "Ready"), ("False", "PodsNotReady"));
        assert_eq!(s.ready_replicas, 1);
        let stale = deployment(2, 2, 4);
        assert_eq!(
            cond(&registry_status(&r, &seen(Some(&stale)), &now()), "Ready").0,
            "False"
        );
        let full = deployment(2, 2, 5);
        let s = registry_status(&r, &seen(Some(&full)), &now());
        assert_eq!(cond(&s, "Ready"), ("True", "Available"));
        assert_eq!(cond(&s, "Progressing"), ("False", "Complete"));
        assert_eq!(cond(&s, "Degraded"), ("False", "AsExpected"));
        assert!(
            s.conditions
                .iter()
                .all(|c| c.observed_generation == Some(3))
        );
        assert_eq!(s.endpoint.as_deref(), Some("reg.ns.svc:5000"));
    }

    #[test]
    fn problems_degrade_and_scaled_to_zero_is_not_ready() {
        let s = registry_status(
            &reg(1),
            &RegistryObserved {
                deployment: None,
                problem: Some((
                    "ReconcileFailed",
                    "the Deployment could not be applied".into(),
                )),
                signing_key_secret: None,
                database: DatabaseSeen::Embedded,
                tls: None,
            },
            &now(),
        );
        assert_eq!(cond(&s, "Degraded"), ("True", "ReconcileFailed"));
        assert_eq!(cond(&s, "Ready"), ("False", "ReconcileFailed"));
        let s = registry_status(
            &reg(0),
            &RegistryObserved {
                deployment: None,
                problem: None,
                signing_key_secret: None,
                database: DatabaseSeen::Embedded,
                tls: None,
            },
            &now(),
        );
        assert_eq!(cond(&s, "Ready"), ("False", "ScaledToZero"));
    }

    #[test]
    fn gc_figures_add_manifest_and_blob_reviews_and_keep_the_totals() {
        let json = serde_json::json!({
            "pending_manifest_reviews": 2, "pending_blob_reviews": 5,
            "due_manifest_reviews": 1, "due_blob_reviews": 3, "review_delay_ms": 0,
            "last_sweep_at_ms": 1_700_000_000_123_i64, "sweeps": 4, "manifests_deleted": 6,
            "blobs_deleted": 7, "bytes_deleted": 8192, "uploads_expired": 1
        });
        let gc: GcStatus = serde_json::from_value(json).unwrap();
        let f = gc_figures(&gc);
        assert_eq!(
            f,
            GcFigures {
                pending_reviews: 7,
                due_reviews: 4,
                last_sweep: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_millisecond(1_700_000_000_123).unwrap()
                )),
                sweeps: 4,
                manifests_deleted: 6,
                blobs_deleted: 7,
                bytes_deleted: 8192,
                uploads_expired: 1,
            }
        );
        let never = GcStatus::default();
        assert_eq!(gc_figures(&never).last_sweep, None);
        // The status keeps the figures while the registry is not Ready.
        let mut r = reg(1);
        r.status = Some(RegistryStatus {
            garbage_collection: Some(f.clone()),
            ..Default::default()
        });
        let s = registry_status(
            &r,
            &RegistryObserved {
                deployment: None,
                problem: None,
                signing_key_secret: None,
                database: DatabaseSeen::Embedded,
                tls: None,
            },
            &now(),
        );
        assert_eq!(s.garbage_collection, Some(f));
    }

    #[test]
    fn transition_times_survive_an_unchanged_status() {
        let mut r = reg(1);
        let full = deployment(1, 1, 5);
        let seen = RegistryObserved {
            deployment: Some(&full),
            problem: None,
            signing_key_secret: None,
            database: DatabaseSeen::Embedded,
            tls: None,
        };
        let first = registry_status(&r, &seen, &now());
        r.status = Some(first.clone());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(2_000_000).unwrap());
        let second = registry_status(&r, &seen, &later);
        assert!(same(&first, &second), "an unchanged status is written once");
    }

    #[test]
    fn tls_condition_says_what_is_missing() {
        let s = || "reg-tls".to_string();
        for (seen, ok, reason, says) in [
            (
                TlsSeen::Present { secret: s() },
                true,
                "SecretPresent",
                "reg-tls",
            ),
            (
                TlsSeen::SecretInvalid {
                    secret: s(),
                    why: "not found".into(),
                },
                false,
                "SecretInvalid",
                "not found",
            ),
            (
                TlsSeen::Issuing { secret: s() },
                false,
                "Issuing",
                "cert-manager",
            ),
            (
                TlsSeen::CertManagerMissing,
                false,
                "CertManagerMissing",
                "install cert-manager",
            ),
        ] {
            let (got_ok, got_reason, message) = tls_condition(&seen);
            assert_eq!((got_ok, got_reason), (ok, reason), "{seen:?}");
            assert!(message.contains(says), "{message}");
        }
    }
}
