//! Repository names and tags.
//!
//! Names follow the distribution grammar (`component(/component)*`, each
//! component lower-case alphanumerics joined by `.`, `_`, `__` or `-`), with
//! GitLab's stricter reading of it: a double hyphen is refused because some
//! Docker clients mishandle it. Every refusal says which rule was broken.
//! Where a name sits inside a project (`<project path>/<at most two more
//! levels>`) is decided by the project model, not here.

pub const MAX_NAME_LEN: usize = 255;
pub const MAX_TAG_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    #[error("repository name is empty")]
    Empty,
    #[error("repository name is {0} characters long; at most 255 are allowed")]
    TooLong(usize),
    #[error(
        "repository name {name:?} has an empty path component (leading, trailing or double '/')"
    )]
    EmptyComponent { name: String },
    #[error("repository name {name:?} must be lower case")]
    UpperCase { name: String },
    #[error(
        "path component {component:?} must start with a letter or digit (a leading '{first}' breaks Docker clients)"
    )]
    BadStart { component: String, first: char },
    #[error(
        "path component {component:?} must end with a letter or digit (a trailing '{last}' breaks Docker clients)"
    )]
    BadEnd { component: String, last: char },
    #[error("path component {component:?} contains a double hyphen, which breaks Docker clients")]
    DoubleHyphen { component: String },
    #[error(
        "path component {component:?} has the separator {separator:?}; only '.', '_', '__' or '-' may join letters and digits"
    )]
    BadSeparator {
        component: String,
        separator: String,
    },
    #[error(
        "path component {component:?} contains {ch:?}; only a-z, 0-9, '.', '_' and '-' are allowed"
    )]
    BadCharacter { component: String, ch: char },
    #[error("tag {0:?} is invalid: it must match [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}}")]
    BadTag(String),
}

/// Checks a repository name against the grammar; see the module docs.
pub fn validate_repository(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::TooLong(name.len()));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(NameError::UpperCase {
            name: name.to_string(),
        });
    }
    for component in name.split('/') {
        validate_component(name, component)?;
    }
    Ok(())
}

fn validate_component(name: &str, component: &str) -> Result<(), NameError> {
    let err_component = || component.to_string();
    let Some(first) = component.chars().next() else {
        return Err(NameError::EmptyComponent {
            name: name.to_string(),
        });
    };
    if let Some(ch) = component
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadCharacter {
            component: err_component(),
            ch,
        });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(NameError::BadStart {
            component: err_component(),
            first,
        });
    }
    let last = component.chars().last().unwrap_or(first);
    if !last.is_ascii_alphanumeric() {
        return Err(NameError::BadEnd {
            component: err_component(),
            last,
        });
    }
    // Runs of separator characters between alphanumerics.
    for separator in component
        .split(|c: char| c.is_ascii_alphanumeric())
        .filter(|s| !s.is_empty())
    {
        match separator {
            "." | "_" | "__" | "-" => {}
            s if s.chars().all(|c| c == '-') => {
                return Err(NameError::DoubleHyphen {
                    component: err_component(),
                });
            }
            s => {
                return Err(NameError::BadSeparator {
                    component: err_component(),
                    separator: s.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Checks a tag against the distribution grammar.
pub fn validate_tag(tag: &str) -> Result<(), NameError> {
    let mut chars = tag.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok_first && ok_rest && tag.len() <= MAX_TAG_LEN {
        Ok(())
    } else {
        Err(NameError::BadTag(tag.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for name in [
            "a",
            "group/project",
            "group/sub-group/project/image",
            "a.b/c_d/e__f/g-h",
            "0/1/2",
            "conformance/repo1",
        ] {
            assert_eq!(validate_repository(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn names_the_broken_rule() {
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Group/project", "lower case"),
            ("group/_project", "leading '_'"),
            ("group/project-", "trailing '-'"),
            ("group/pro--ject", "double hyphen"),
            ("group//project", "empty path component"),
            ("/group", "empty path component"),
            ("group/", "empty path component"),
            ("group/..", "leading '.'"),
            ("group/a..b", "separator \"..\""),
            ("group/a._b", "separator \"._\""),
            ("group/a___b", "separator \"___\""),
            ("group/a b", "contains ' '"),
            ("group/a%2fb", "contains '%'"),
        ];
        for (name, want) in cases {
            let msg = validate_repository(name).unwrap_err().to_string();
            assert!(msg.contains(want), "{name}: {msg:?} lacks {want:?}");
        }
        let long = "a".repeat(256);
        assert_eq!(validate_repository(&long), Err(NameError::TooLong(256)));
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.0.0", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert_eq!(validate_tag(ok), Ok(()), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(validate_tag(bad).is_err(), "{bad}");
        }
    }
}
