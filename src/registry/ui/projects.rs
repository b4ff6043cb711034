//! The projects page (`/ui/`): the projects the viewer may see, with their
//! repository counts; for the admin also the repositories in no project,
//! grouped by their first path component.

use std::collections::HashSet;

use axum::response::Response;

use super::error::UiResult;
use super::viewer::Viewer;
use super::views::{Crumb, ProjectLine, ProjectsPage, project_href};
use crate::auth::Location;
use crate::auth::model::Visibility;
use crate::registry::access::Action;
use crate::registry::management::ProjectScope;

pub(super) async fn projects(v: Viewer) -> UiResult<Response> {
    let q = v.param("q");
    let needle = q.trim().to_lowercase();
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    if let Some(model) = v.principal.model() {
        for p in model.projects() {
            if !v.principal.may_see_project(&p.path) {
                continue;
            }
            seen.insert(p.path.clone());
            rows.push((
                p.path.clone(),
                match p.visibility {
                    Visibility::Public => "Public",
                    Visibility::Internal => "Internal",
                    Visibility::Private => "Private",
                }
                .to_string(),
            ));
        }
    }
    // Without projects (authentication off), or for the admin's repositories
    // outside any project: group by the first path component.
    if v.principal.is_admin() {
        let names = v.reg.meta.repository_names().await?;
        let model = v.principal.model().cloned();
        for name in names {
            let outside = model
                .as_ref()
                .is_none_or(|m| matches!(m.locate(&name), Location::Outside));
            let top = name.split('/').next().unwrap_or(&name).to_string();
            if outside && seen.insert(top.clone()) {
                let label = if model.is_some() { "No project" } else { "—" };
                rows.push((top, label.to_string()));
            }
        }
    }
    rows.retain(|(path, _)| needle.is_empty() || path.to_lowercase().contains(&needle));
    rows.sort();
    let mut projects = Vec::with_capacity(rows.len());
    for (path, visibility) in rows {
        let count = match ProjectScope::resolve(
            v.principal.model().cloned(),
            &path,
            v.principal.is_admin(),
        ) {
            Some(scope) => scope
                .repositories(&v.reg.meta)
                .await?
                .iter()
                .filter(|r| v.principal.may(&r.name, Action::Pull))
                .count(),
            None => 0,
        };
        projects.push(ProjectLine {
            href: project_href(&path),
            path,
            visibility,
            repositories: count,
        });
    }
    let mut layout = v.layout("Projects", vec![Crumb::here("Projects")]);
    if v.param("signed_out") == "1" {
        layout.notice = Some("You are signed out.".into());
    }
    Ok(v.page(&ProjectsPage {
        layout,
        q,
        projects,
    }))
}
