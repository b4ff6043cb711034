//! What a cleanup run is asked and what it answers: the JSON the operator
//! sends to a registry's `POST /api/v1/projects/<project>/cleanup` and gets
//! back, and what the standalone runner logs. Plain values.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::lifecycle::spec::CleanupPolicySpec;

/// One run of a policy over one project's repositories.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupRequest {
    /// The policy as declared; `projectRef`, `selector`, `enabled` and
    /// `cadence` are the caller's business and ignored here.
    pub policy: CleanupPolicySpec,
    /// Manifest digests (`sha256:...`) of images running in the cluster now,
    /// kept when `policy.keepInUse` is on. A tag is in use when the manifest
    /// it points at, or an index listing it, is among them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_use_digests: Vec<String>,
}

/// What a run did (or, with `dryRun`, would do) to one repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryReport {
    pub name: String,
    /// Tags deleted (or that would be), in name order.
    pub tags_deleted: Vec<String>,
    pub tags_kept: u64,
    /// How many tags each keep reason saved (`Kept::as_str` labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kept_by_reason: BTreeMap<String, u64>,
    /// Bytes of blobs that no tagged manifest references any more after the
    /// deletions: what garbage collection will free once the review delay
    /// has passed (exact at the time of the run, across all repositories).
    pub bytes_reclaimable: u64,
    /// Tags the policy chose but that could not be deleted (a concurrent
    /// change, or a tag rule), with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed: BTreeMap<String, String>,
}

/// What a run did to a project.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CleanupReport {
    pub dry_run: bool,
    pub repositories: Vec<RepositoryReport>,
    pub tags_deleted: u64,
    pub bytes_reclaimable: u64,
}
