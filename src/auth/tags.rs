//! Protected and immutable tags (GitLab's container tag protection rules),
//! compiled from a project's spec and decided as pure functions.
//!
//! - A **protected** rule names the least level ([`ProtectionLevel`]) that may
//!   push (create or move) and that may delete a matching tag. Members below
//!   Maintainer, deploy tokens and anonymous callers never qualify; the admin
//!   always does.
//! - An **immutable** rule forbids moving or deleting a matching tag once it
//!   exists, to everyone. Creating it is allowed (by whoever may push), and so
//!   is pushing the manifest it already points at again.
//!
//! Patterns are searched in the tag name as GitLab does (unanchored RE2); a
//! pattern that does not compile matches every tag, so a broken rule fails
//! closed.

use regex::Regex;

use super::model::{ProjectSpec, ProtectionLevel, Role};
use super::policy::Standing;
use crate::metadata::TagOp;

/// How far a caller reaches on the protection scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Anonymous, deploy tokens, and members below Maintainer.
    Below,
    At(ProtectionLevel),
}

impl Level {
    pub fn of(standing: Standing) -> Level {
        match standing {
            Standing::Admin => Level::At(ProtectionLevel::Admin),
            Standing::Authenticated {
                role: Some(Role::Owner),
                ..
            } => Level::At(ProtectionLevel::Owner),
            Standing::Authenticated {
                role: Some(Role::Maintainer),
                ..
            } => Level::At(ProtectionLevel::Maintainer),
            _ => Level::Below,
        }
    }
}

struct Protected {
    pattern: String,
    re: Option<Regex>,
    push: ProtectionLevel,
    delete: ProtectionLevel,
}

struct Immutable {
    pattern: String,
    re: Option<Regex>,
}

/// A project's tag rules, compiled once.
#[derive(Default)]
pub struct TagRules {
    protected: Vec<Protected>,
    immutable: Vec<Immutable>,
}

fn search(re: &Option<Regex>, tag: &str) -> bool {
    re.as_ref().is_none_or(|re| re.is_match(tag))
}

impl TagRules {
    pub fn of(project: &ProjectSpec) -> TagRules {
        TagRules {
            protected: project
                .protected_tags
                .iter()
                .map(|r| Protected {
                    pattern: r.pattern.clone(),
                    re: Regex::new(&r.pattern).ok(),
                    push: r.minimum_access_level_for_push,
                    delete: r.minimum_access_level_for_delete,
                })
                .collect(),
            immutable: project
                .immutable_tags
                .iter()
                .map(|r| Immutable {
                    pattern: r.pattern.clone(),
                    re: Regex::new(&r.pattern).ok(),
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.protected.is_empty() && self.immutable.is_empty()
    }

    /// Does any protected rule match `tag`? (Cleanup policies keep these.)
    pub fn protected(&self, tag: &str) -> bool {
        self.protected.iter().any(|r| search(&r.re, tag))
    }

    /// Does any immutable rule match `tag`?
    pub fn immutable(&self, tag: &str) -> bool {
        self.immutable.iter().any(|r| search(&r.re, tag))
    }

    /// May a caller at `level` do `op` to `tag`? `Err` says which rule forbids it.
    pub fn check(&self, tag: &str, op: TagOp, level: Level) -> Result<(), String> {
        if matches!(op, TagOp::Move | TagOp::Delete)
            && let Some(r) = self.immutable.iter().find(|r| search(&r.re, tag))
        {
            let verb = if op == TagOp::Move {
                "overwritten"
            } else {
                "deleted"
            };
            return Err(format!(
                "tag {tag} is immutable (rule {:?}) and cannot be {verb}",
                r.pattern
            ));
        }
        match self.protected_refusal(tag, op, level) {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// Why a protected rule forbids a caller at `level` to do `op` to `tag`,
    /// if one does (immutable rules aside). A bulk delete keeps such tags.
    pub fn protected_refusal(&self, tag: &str, op: TagOp, level: Level) -> Option<String> {
        self.protected.iter().find_map(|r| {
            let (need, verb) = match op {
                TagOp::Create | TagOp::Move => (r.push, "push"),
                TagOp::Delete => (r.delete, "delete"),
            };
            (search(&r.re, tag) && level < Level::At(need)).then(|| {
                format!(
                    "tag {tag} is protected (rule {:?}): only {need:?} or above may {verb} it",
                    r.pattern
                )
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::model::{ImmutableTagRule, ProtectedTagRule};

    fn project() -> ProjectSpec {
        serde_json::from_value(serde_json::json!({
            "path": "g/p",
            "protectedTags": [
                {"pattern": "^v\\d+", "minimumAccessLevelForPush": "Maintainer", "minimumAccessLevelForDelete": "Owner"},
                {"pattern": "prod", "minimumAccessLevelForPush": "Admin", "minimumAccessLevelForDelete": "Admin"}
            ],
            "immutableTags": [{"pattern": "^release-"}]
        }))
        .unwrap()
    }

    const MAINTAINER: Level = Level::At(ProtectionLevel::Maintainer);
    const OWNER: Level = Level::At(ProtectionLevel::Owner);
    const ADMIN: Level = Level::At(ProtectionLevel::Admin);

    #[test]
    fn levels_follow_roles() {
        let member = |role| Standing::Authenticated {
            role: Some(role),
            scopes: None,
        };
        assert_eq!(Level::of(Standing::Admin), ADMIN);
        assert_eq!(Level::of(member(Role::Owner)), OWNER);
        assert_eq!(Level::of(member(Role::Maintainer)), MAINTAINER);
        assert_eq!(Level::of(member(Role::Developer)), Level::Below);
        assert_eq!(Level::of(Standing::Anonymous), Level::Below);
        assert_eq!(
            Level::of(Standing::DeployToken(crate::auth::policy::Scopes::ALL)),
            Level::Below
        );
    }

    /// Every (tag, op, level) that matters, with the expected decision.
    #[test]
    fn protected_and_immutable_decisions() {
        let rules = TagRules::of(&project());
        let cases = [
            // Unprotected tags: anyone who reached here may do anything.
            ("latest", TagOp::Move, Level::Below, true),
            ("latest", TagOp::Delete, Level::Below, true),
            // `^v\d+`: push needs Maintainer, delete needs Owner.
            ("v1", TagOp::Create, Level::Below, false),
            ("v1", TagOp::Create, MAINTAINER, true),
            ("v1", TagOp::Move, MAINTAINER, true),
            ("v1", TagOp::Delete, MAINTAINER, false),
            ("v1", TagOp::Delete, OWNER, true),
            // Searched, not anchored at the end: v1-rc matches; dev1 does not
            // (the rule anchors its start).
            ("v1-rc", TagOp::Delete, MAINTAINER, false),
            ("dev1", TagOp::Delete, Level::Below, true),
            // `prod` is searched anywhere in the name, and needs Admin.
            ("preprod-2", TagOp::Create, OWNER, false),
            ("preprod-2", TagOp::Create, ADMIN, true),
            // Immutable: created by anyone who may push, never moved or
            // deleted, not even by the admin.
            ("release-1", TagOp::Create, Level::Below, true),
            ("release-1", TagOp::Move, ADMIN, false),
            ("release-1", TagOp::Delete, ADMIN, false),
        ];
        for (tag, op, level, ok) in cases {
            assert_eq!(
                rules.check(tag, op, level).is_ok(),
                ok,
                "{tag} {op:?} {level:?}: {:?}",
                rules.check(tag, op, level)
            );
        }
        let msg = rules.check("v2", TagOp::Delete, MAINTAINER).unwrap_err();
        assert!(msg.contains("protected") && msg.contains("Owner"), "{msg}");
        let msg = rules.check("release-9", TagOp::Move, ADMIN).unwrap_err();
        assert!(
            msg.contains("immutable") && msg.contains("overwritten"),
            "{msg}"
        );
        // Protected rules alone (what a bulk delete keeps for this caller).
        assert!(
            rules
                .protected_refusal("v1", TagOp::Delete, MAINTAINER)
                .is_some()
        );
        assert!(
            rules
                .protected_refusal("v1", TagOp::Delete, OWNER)
                .is_none()
        );
        assert!(
            rules
                .protected_refusal("release-1", TagOp::Delete, Level::Below)
                .is_none()
        );
        assert!(rules.protected("v3") && !rules.protected("x"));
        assert!(rules.immutable("release-x") && !rules.immutable("v3"));
    }

    #[test]
    fn a_broken_pattern_fails_closed() {
        let mut p = project();
        p.protected_tags = vec![ProtectedTagRule {
            pattern: "(".into(),
            minimum_access_level_for_push: ProtectionLevel::Owner,
            minimum_access_level_for_delete: ProtectionLevel::Owner,
        }];
        p.immutable_tags = vec![ImmutableTagRule {
            pattern: "[".into(),
        }];
        let rules = TagRules::of(&p);
        assert!(rules.check("anything", TagOp::Create, MAINTAINER).is_err());
        assert!(rules.check("anything", TagOp::Delete, ADMIN).is_err());
        assert!(
            TagRules::of(&ProjectSpec {
                protected_tags: vec![],
                immutable_tags: vec![],
                ..p
            })
            .is_empty()
        );
    }
}
