//! Who may do what: pure decisions over the access model, following the
//! GitLab Container Registry's permissions (see the visibility table in
//! `shared/reference/gitlab-registry-user-guide-2022.md`).

use super::model::{ProjectSpec, RegistryAccessLevel, Role, Scope, Visibility};

/// What an identity is with respect to one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No credentials.
    Anonymous,
    /// Authenticated, with this role in the project (`None`: not a member).
    /// `scopes` caps what a token may do (`None`: not a token-capped login).
    Authenticated {
        role: Option<Role>,
        scopes: Option<Scopes>,
    },
    /// A deploy token of this project: its scopes alone decide.
    DeployToken(Scopes),
    /// The instance administrator.
    Admin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
}

impl Scopes {
    pub fn of(scopes: &[Scope]) -> Scopes {
        Scopes {
            read: scopes.contains(&Scope::ReadRegistry),
            write: scopes.contains(&Scope::WriteRegistry),
        }
    }

    pub const ALL: Scopes = Scopes {
        read: true,
        write: true,
    };
}

/// The registry actions of the Docker token protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Actions {
    pub pull: bool,
    pub push: bool,
    pub delete: bool,
}

impl Actions {
    pub const NONE: Actions = Actions {
        pull: false,
        push: false,
        delete: false,
    };
    pub const ALL: Actions = Actions {
        pull: true,
        push: true,
        delete: true,
    };
}

/// What `standing` may do in `project`.
pub fn permitted(project: &ProjectSpec, standing: Standing) -> Actions {
    if project.registry_access_level == RegistryAccessLevel::Disabled {
        return Actions::NONE;
    }
    let (role, scopes) = match standing {
        Standing::Admin => return Actions::ALL,
        Standing::DeployToken(s) => {
            return Actions {
                pull: s.read,
                push: s.read && s.write,
                delete: s.read && s.write,
            };
        }
        Standing::Anonymous => (None, Scopes::default()),
        Standing::Authenticated { role, scopes } => (role, scopes.unwrap_or(Scopes::ALL)),
    };
    let anonymous = standing == Standing::Anonymous;
    let member_reads = role.is_some_and(|r| r >= Role::Reporter);
    let may_view = match (project.registry_access_level, project.visibility) {
        (RegistryAccessLevel::Enabled, Visibility::Public) => true,
        (RegistryAccessLevel::Enabled, Visibility::Internal) => !anonymous,
        _ => member_reads,
    };
    let developer = role.is_some_and(|r| r >= Role::Developer);
    let writes = developer && scopes.read && scopes.write;
    Actions {
        pull: may_view && (anonymous || scopes.read),
        push: writes,
        delete: writes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(visibility: Visibility, level: RegistryAccessLevel) -> ProjectSpec {
        ProjectSpec {
            path: "g/p".into(),
            visibility,
            registry_access_level: level,
            members: vec![],
            deploy_tokens: vec![],
            access_tokens: vec![],
            registry_ref: None,
            deletion_policy: Default::default(),
            protected_tags: vec![],
            immutable_tags: vec![],
        }
    }

    fn user(role: Option<Role>) -> Standing {
        Standing::Authenticated { role, scopes: None }
    }

    /// The "Container Registry visibility permissions" table, row by row,
    /// plus the authenticated non-member column the table leaves implicit
    /// (GitLab's "internal": any signed-in user).
    #[test]
    fn visibility_table() {
        use RegistryAccessLevel as L;
        use Visibility as V;
        // (visibility, level, anonymous, non-member, guest, reporter+)
        let rows = [
            (V::Public, L::Enabled, true, true, true, true),
            (V::Public, L::Private, false, false, false, true),
            (V::Internal, L::Enabled, false, true, true, true),
            (V::Internal, L::Private, false, false, false, true),
            (V::Private, L::Enabled, false, false, false, true),
            (V::Private, L::Private, false, false, false, true),
            (V::Public, L::Disabled, false, false, false, false),
            (V::Internal, L::Disabled, false, false, false, false),
            (V::Private, L::Disabled, false, false, false, false),
        ];
        for (vis, level, anon, non_member, guest, reporter_up) in rows {
            let p = project(vis, level);
            let row = format!("{vis:?}/{level:?}");
            assert_eq!(
                permitted(&p, Standing::Anonymous).pull,
                anon,
                "{row} anonymous"
            );
            assert_eq!(
                permitted(&p, user(None)).pull,
                non_member,
                "{row} non-member"
            );
            assert_eq!(
                permitted(&p, user(Some(Role::Guest))).pull,
                guest,
                "{row} guest"
            );
            for r in [
                Role::Reporter,
                Role::Developer,
                Role::Maintainer,
                Role::Owner,
            ] {
                assert_eq!(
                    permitted(&p, user(Some(r))).pull,
                    reporter_up,
                    "{row} {r:?}"
                );
            }
        }
    }

    #[test]
    fn push_and_delete_need_developer_and_write_scope() {
        let p = project(Visibility::Public, RegistryAccessLevel::Enabled);
        for (role, writes) in [
            (None, false),
            (Some(Role::Guest), false),
            (Some(Role::Reporter), false),
            (Some(Role::Developer), true),
            (Some(Role::Maintainer), true),
            (Some(Role::Owner), true),
        ] {
            let a = permitted(&p, user(role));
            assert_eq!((a.push, a.delete), (writes, writes), "{role:?}");
        }
        let read_only = Standing::Authenticated {
            role: Some(Role::Owner),
            scopes: Some(Scopes {
                read: true,
                write: false,
            }),
        };
        assert_eq!(
            permitted(&p, read_only),
            Actions {
                pull: true,
                push: false,
                delete: false
            }
        );
        let write_only = Standing::Authenticated {
            role: Some(Role::Owner),
            scopes: Some(Scopes {
                read: false,
                write: true,
            }),
        };
        assert_eq!(permitted(&p, write_only), Actions::NONE);
        assert_eq!(
            permitted(&p, Standing::Anonymous),
            Actions {
                pull: true,
                push: false,
                delete: false
            }
        );
    }

    #[test]
    fn deploy_tokens_and_admin() {
        let private = project(Visibility::Private, RegistryAccessLevel::Private);
        let read = Standing::DeployToken(Scopes {
            read: true,
            write: false,
        });
        assert_eq!(
            permitted(&private, read),
            Actions {
                pull: true,
                push: false,
                delete: false
            }
        );
        assert_eq!(
            permitted(&private, Standing::DeployToken(Scopes::ALL)),
            Actions::ALL
        );
        assert_eq!(permitted(&private, Standing::Admin), Actions::ALL);
        let disabled = project(Visibility::Public, RegistryAccessLevel::Disabled);
        assert_eq!(permitted(&disabled, Standing::Admin), Actions::NONE);
        assert_eq!(
            permitted(&disabled, Standing::DeployToken(Scopes::ALL)),
            Actions::NONE
        );
    }
}
