//! The access model, shaped like the `Project` custom resource's spec (the
//! same YAML is read from a manifest directory in standalone mode): projects
//! with visibility, registry access level, members and tokens; roles; scopes.

use std::time::SystemTime;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
pub enum Role {
    Guest,
    Reporter,
    Developer,
    Maintainer,
    Owner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Internal,
    #[default]
    Private,
}

/// GitLab's "Container Registry" setting: `enabled` is "Everyone With
/// Access", `private` is "Only Project Members".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RegistryAccessLevel {
    #[default]
    Enabled,
    Private,
    Disabled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    ReadRegistry,
    WriteRegistry,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceAccountRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Member {
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub service_account: Option<ServiceAccountRef>,
    pub role: Role,
}

/// A deploy token (no role: its scopes alone decide) or a project access
/// token (a role, capped by its scopes). Its secret value lives elsewhere.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSpec {
    pub name: String,
    pub scopes: Vec<Scope>,
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default, with = "rfc3339_opt")]
    pub expires_at: Option<SystemTime>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProjectSpec {
    /// `group/subgroup/project`; default `<namespace>/<name>`.
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub visibility: Visibility,
    #[serde(default)]
    pub registry_access_level: RegistryAccessLevel,
    #[serde(default)]
    pub members: Vec<Member>,
    #[serde(default)]
    pub deploy_tokens: Vec<TokenSpec>,
    #[serde(default)]
    pub access_tokens: Vec<TokenSpec>,
}

impl ProjectSpec {
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

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        humantime::parse_rfc3339_weak(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 time: {e}")))
    }
}
