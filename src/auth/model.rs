//! The access model: projects with visibility, registry access level,
//! members and tokens; roles; scopes. Plain types, no Kubernetes: the
//! `Project` custom resource (`crate::kubernetes::crd`) wraps [`ProjectSpec`]
//! with the kube derives, printer columns and status, and a standalone
//! registry reads the same YAML from its manifest directory. The JSON schema
//! (with the CEL rules of nested types as `x-kubernetes-validations`) is
//! derived here so both read one definition.

use std::time::SystemTime;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A reference to an object in the same namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LocalRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
pub enum Role {
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Internal,
    #[default]
    Private,
}

/// GitLab's "Container Registry" setting: `enabled` is "Everyone With
/// Access", `private` is "Only Project Members".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistryAccessLevel {
    #[default]
    Enabled,
    Private,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    ReadRegistry,
    WriteRegistry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceAccountRef {
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A user (by the name their personal access tokens carry) or a Kubernetes
/// ServiceAccount, with a role.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"message": "each member needs exactly one of `user` or `serviceAccount`", "rule": "has(self.user) != has(self.serviceAccount)"}]))]
pub struct Member {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountRef>,
    pub role: Role,
}

/// A deploy token (no role: its scopes alone decide) or a project access
/// token (a role, capped by its scopes). Its secret value lives elsewhere.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSpec {
    /// The user name the token logs in with; also names its Secret.
    #[schemars(
        length(min = 1, max = 40),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    #[schemars(length(min = 1, max = 2))]
    pub scopes: Vec<Scope>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// RFC 3339; the token is refused from then on.
    #[serde(default, with = "rfc3339_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>", extend("format" = "date-time"))]
    pub expires_at: Option<SystemTime>,
}

/// The least a caller must be to push or delete a protected tag (GitLab's
/// `minimum_access_level_for_push` / `_for_delete`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum ProtectionLevel {
    Maintainer,
    Owner,
    Admin,
}

/// GitLab's protected container tag rule: tags matching `pattern` may be
/// pushed and deleted only by callers of at least these levels. Deploy
/// tokens have no role and never qualify. Cleanup policies keep them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"message": "pattern is not a valid regular expression", "rule": "''.matches(self.pattern) || !''.matches(self.pattern)"}]))]
pub struct ProtectedTagRule {
    /// A regular expression (RE2 syntax) searched in the tag name, as GitLab
    /// does: `v.+` matches `v1` and `dev1`; anchor with `^...$` to match whole
    /// names.
    #[schemars(length(min = 1, max = 100))]
    pub pattern: String,
    pub minimum_access_level_for_push: ProtectionLevel,
    pub minimum_access_level_for_delete: ProtectionLevel,
}

/// GitLab's immutable container tag rule: once a tag matching `pattern`
/// exists, nobody (not even the admin, nor a cleanup policy) can move it to
/// another manifest or delete it, nor delete its manifest by digest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{"message": "pattern is not a valid regular expression", "rule": "''.matches(self.pattern) || !''.matches(self.pattern)"}]))]
pub struct ImmutableTagRule {
    /// A regular expression (RE2 syntax) searched in the tag name.
    #[schemars(length(min = 1, max = 100))]
    pub pattern: String,
}

/// What happens to a project's images when the Project is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

/// A repository path component as GitLab allows it: lower case letters and
/// digits, separated by one `.`, `_`, `__` or `-` (so no leading `_`, no
/// trailing or double `-`, which break Docker clients).
pub const PATH_PATTERN: &str =
    r"^[a-z0-9]+(?:(?:\.|_|__|-)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-)[a-z0-9]+)*)*$";

/// A project: a path in the registry with visibility, members and tokens
/// (the spec of a `Project`, in a cluster or a manifest directory).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProjectSpec {
    /// The Registry (in the Project's namespace) that serves this project.
    /// Required in a cluster; ignored by a standalone registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_ref: Option<LocalRef>,
    /// `group/subgroup/project`; default `<namespace>/<name>`.
    #[serde(default)]
    #[schemars(length(max = 200))]
    pub path: String,
    #[serde(default)]
    pub visibility: Visibility,
    #[serde(default)]
    pub registry_access_level: RegistryAccessLevel,
    #[serde(default)]
    #[schemars(length(max = 500))]
    pub members: Vec<Member>,
    #[serde(default)]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub deploy_tokens: Vec<TokenSpec>,
    #[serde(default)]
    #[schemars(length(max = 50), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub access_tokens: Vec<TokenSpec>,
    /// `Delete` (default): deleting the Project deletes its images.
    /// `Retain`: they stay (reachable by the admin only).
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Tags only some roles may push or delete (at most 5, as in GitLab).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub protected_tags: Vec<ProtectedTagRule>,
    /// Tags nobody may move or delete once they exist (at most 5, as in GitLab).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub immutable_tags: Vec<ImmutableTagRule>,
}

impl ProjectSpec {
    /// The role of ServiceAccount `namespace/name` in this project, if a member.
    pub fn service_account_role(&self, namespace: &str, name: &str) -> Option<Role> {
        self.members
            .iter()
            .filter(|m| {
                m.service_account
                    .as_ref()
                    .is_some_and(|sa| sa.namespace == namespace && sa.name == name)
            })
            .map(|m| m.role)
            .max()
    }

    /// The role of user `name` in this project, if a member.
    pub fn user_role(&self, name: &str) -> Option<Role> {
        self.members
            .iter()
            .filter(|m| m.user.as_deref() == Some(name))
            .map(|m| m.role)
            .max()
    }
}

pub(crate) mod rfc3339_opt {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&humantime::format_rfc3339_seconds(*t).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_rfc3339_weak(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CRD's path pattern refuses exactly what the registry's name check
    /// refuses, so bad paths are caught at admission.
    #[test]
    fn path_pattern_agrees_with_the_name_grammar() {
        let re = regex::Regex::new(PATH_PATTERN).unwrap();
        for path in [
            "group/app",
            "a",
            "a.b/c_d/e__f/g-h",
            "_lead",
            "trail-",
            "dou--ble",
            "Upper/case",
            "a//b",
            "a/",
            "a..b",
            "a___b",
            "a-_b",
        ] {
            assert_eq!(
                re.is_match(path),
                crate::oci::validate_repository(path).is_ok(),
                "{path}"
            );
        }
    }
}
