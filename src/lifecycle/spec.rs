//! A cleanup policy as declared: the spec of a `CleanupPolicy` (the custom
//! resource in `crate::kubernetes::crd` wraps [`CleanupPolicySpec`] with the
//! kube derives, printer columns and status) and of a standalone registry's
//! `kind: CleanupPolicy` manifests. Plain values with their JSON schema; the
//! rules they compile to are in [`super::policy`].

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::auth::model::LocalRef;

// How often a policy runs (GitLab's `cadence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum Cadence {
    #[default]
    #[serde(rename = "1d")]
    Daily,
    #[serde(rename = "7d")]
    Weekly,
    #[serde(rename = "14d")]
    Fortnightly,
    #[serde(rename = "1month")]
    Monthly,
    #[serde(rename = "3month")]
    Quarterly,
}

/// GitLab's `older_than` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OlderThan {
    #[serde(rename = "7d")]
    Days7,
    #[serde(rename = "14d")]
    Days14,
    #[serde(rename = "30d")]
    Days30,
    #[serde(rename = "90d")]
    Days90,
}

/// GitLab's cleanup policy over the tags of the selected Projects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CleanupPolicySpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_ref: Option<LocalRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub cadence: Cadence,
    /// Keep this many of the newest tags (1, 5, 10, 25, 50 or 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [1, 5, 10, 25, 50, 100]))]
    pub keep_n: Option<i32>,
    /// Only tags older than this may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub older_than: Option<OlderThan>,
    /// Tags matching this (anchored at both ends) may be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub name_regex: Option<String>,
    /// Tags matching this (anchored at both ends) are always kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 255))]
    pub name_regex_keep: Option<String>,
    /// Report what would be deleted in status instead of deleting.
    #[serde(default)]
    pub dry_run: bool,
    /// Never delete a tag whose image runs in the cluster now.
    #[serde(default = "yes")]
    pub keep_in_use: bool,
}

fn yes() -> bool {
    true
}

/// A label selector is a label query over a set of resources. The result of matchLabels and matchExpressions are ANDed. An empty label selector matches all objects. A null label selector matches no objects.
// The shape of Kubernetes' `LabelSelector` (meta/v1) and its schema, as plain
// values: a standalone registry matches its manifests' labels itself, the
// operator turns it into a list selector for the API server. (Optional fields
// are not `nullable`, as in Kubernetes' own schema.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// matchExpressions is a list of label selector requirements. The requirements are ANDed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<LabelSelectorRequirement>")]
    pub match_expressions: Option<Vec<LabelSelectorRequirement>>,
    /// matchLabels is a map of {key,value} pairs. A single {key,value} in the matchLabels map is equivalent to an element of matchExpressions, whose key field is "key", the operator is "In", and the values array contains only "value". The requirements are ANDed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BTreeMap<String, String>")]
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// A label selector requirement is a selector that contains values, a key, and an operator that relates the key and values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelectorRequirement {
    /// key is the label key that the selector applies to.
    pub key: String,
    /// operator represents a key's relationship to a set of values. Valid operators are In, NotIn, Exists and DoesNotExist.
    pub operator: String,
    /// values is an array of string values. If the operator is In or NotIn, the values array must be non-empty. If the operator is Exists or DoesNotExist, the values array must be empty. This array is replaced during a strategic merge patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub values: Option<Vec<String>>,
}
