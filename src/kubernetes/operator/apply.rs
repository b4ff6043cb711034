//! Server-side apply under one field manager, skipped when the live object
//! already holds everything we would send: a reconcile of an unchanged
//! object reads but writes nothing.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::Digest as _;

pub const FIELD_MANAGER: &str = "berth-operator";
/// Hash of what was last applied: a field we stop setting changes it, so
/// the next apply removes that field (server-side apply drops fields its
/// manager no longer sends).
pub const APPLIED_HASH: &str = "berth.dev/applied-hash";

/// Whether `have` contains every field of `want` with the same value.
pub fn contains(have: &serde_json::Value, want: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w
            .iter()
            .all(|(k, wv)| h.get(k).is_some_and(|hv| contains(hv, wv))),
        (Value::Array(h), Value::Array(w)) => {
            h.len() == w.len() && h.iter().zip(w).all(|(hv, wv)| contains(hv, wv))
        }
        (Value::Number(h), Value::Number(w)) => h.as_f64() == w.as_f64(),
        _ => have == want,
    }
}

/// Stamps `obj` with the hash of its content.
pub fn stamp<K: Resource + Serialize>(obj: &mut K) {
    let annotations = &mut obj.meta_mut().annotations;
    if let Some(a) = annotations.as_mut() {
        a.remove(APPLIED_HASH);
        if a.is_empty() {
            *annotations = None;
        }
    }
    let json = serde_json::to_vec(&*obj).expect("objects serialize");
    let hash = hex::encode(&sha2::Sha256::digest(&json)[..8]);
    obj.annotations_mut().insert(APPLIED_HASH.into(), hash);
}

/// Applies `obj` unless the live object already matches; returns whether
/// anything was written.
pub async fn apply<K>(api: &Api<K>, mut obj: K) -> kube::Result<bool>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    stamp(&mut obj);
    let name = obj.name_any();
    if let Some(live) = api.get_opt(&name).await? {
        let have = serde_json::to_value(&live).expect("objects serialize");
        let want = serde_json::to_value(&obj).expect("objects serialize");
        if contains(&have, &want) {
            return Ok(false);
        }
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(true)
}

/// Server-side applies `status` to the status subresource of `obj`.
pub async fn patch_status<K>(api: &Api<K>, obj: &K, status: &impl Serialize) -> kube::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Deletes `name` if it exists; returns whether anything was deleted.
pub async fn delete_if_present<K>(api: &Api<K>, name: &str) -> kube::Result<bool>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    if api.get_opt(name).await?.is_none() {
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn live_objects_with_server_defaults_contain_what_we_send() {
        let want = json!({"spec": {"replicas": 1, "ports": [{"port": 5000, "name": "http"}]}});
        let have = json!({"spec": {"replicas": 1, "revisionHistoryLimit": 10,
            "ports": [{"port": 5000, "name": "http", "protocol": "TCP"}]}, "status": {}});
        assert!(contains(&have, &want));
        let changed = json!({"spec": {"replicas": 2, "ports": [{"port": 5000, "name": "http"}]}});
        assert!(!contains(&have, &changed));
        let extra_port = json!({"spec": {"replicas": 1, "ports": [{"port": 5000}, {"port": 1}]}});
        assert!(!contains(&have, &extra_port));
        assert!(contains(&json!({"a": 1.0}), &json!({"a": 1})));
    }

    #[test]
    fn the_stamp_changes_with_the_content_only() {
        let mut a = k8s_openapi::api::core::v1::ConfigMap::default();
        a.metadata.name = Some("x".into());
        let mut b = a.clone();
        stamp(&mut a);
        stamp(&mut b);
        assert_eq!(a.annotations()[APPLIED_HASH], b.annotations()[APPLIED_HASH]);
        stamp(&mut a);
        assert_eq!(a.annotations()[APPLIED_HASH], b.annotations()[APPLIED_HASH]);
        b.data = Some([("k".to_string(), "v".to_string())].into());
        stamp(&mut b);
        assert_ne!(a.annotations()[APPLIED_HASH], b.annotations()[APPLIED_HASH]);
    }
}
