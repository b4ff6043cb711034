//! A project's page (`/ui/projects/<project>`): its repositories the viewer
//! may pull from, filtered (`q`), sorted (`sort`, `order`) and paged
//! (`page`, 50 a page).

use std::cmp::Ordering;

use axum::extract::Path;
use axum::response::Response;

use super::error::UiResult;
use super::viewer::{Viewer, bad_param};
use super::views::{
    Crumb, ListState, ProjectPage, RepositoryLine, Stamp, count_text, human_size, options,
    order_options, project_href, repository_href,
};
use crate::registry::access::Action;

const PER_PAGE: u32 = 50;

#[derive(Clone, Copy, PartialEq, Eq)]
enum RepoSort {
    Name,
    Updated,
    Size,
    Tags,
}

pub(super) async fn project(Path(project): Path<String>, v: Viewer) -> UiResult<Response> {
    let scope = v.scope(&project)?;
    let q = v.param("q");
    let sort = match v.param("sort").as_str() {
        "" | "name" => RepoSort::Name,
        "updated" => RepoSort::Updated,
        "size" => RepoSort::Size,
        "tags" => RepoSort::Tags,
        other => return Err(bad_param("sort", other, "name, updated, size or tags")),
    };
    let descending = v.descending()?;
    let page = v.page_number()?;
    let mut rows: Vec<_> = v
        .reg
        .meta
        .repository_summaries(&project)
        .await?
        .into_iter()
        .filter(|r| scope.contains(&r.row.name) && v.principal.may(&r.row.name, Action::Pull))
        .filter(|r| q.is_empty() || r.row.name.to_lowercase().contains(&q.to_lowercase()))
        .collect();
    rows.sort_by(|a, b| {
        let by = match sort {
            RepoSort::Name => Ordering::Equal,
            RepoSort::Updated => a.last_update.cmp(&b.last_update),
            RepoSort::Size => a.size.cmp(&b.size),
            RepoSort::Tags => a.tags.cmp(&b.tags),
        };
        by.then_with(|| a.row.name.cmp(&b.row.name))
    });
    if descending {
        rows.reverse();
    }
    let total = rows.len() as u64;
    let pages = total.div_ceil(u64::from(PER_PAGE)).max(1);
    let page = page.min(pages);
    let base = project_href(&project);
    let state = ListState {
        base: base.clone(),
        params: vec![
            ("q", q.clone(), ""),
            ("sort", v.param("sort"), "name"),
            ("order", v.param("order"), "asc"),
        ],
    };
    let shown: Vec<RepositoryLine> = rows
        .into_iter()
        .skip(((page - 1) * u64::from(PER_PAGE)) as usize)
        .take(PER_PAGE as usize)
        .map(|r| {
            let href = repository_href(&project, r.row.id);
            RepositoryLine {
                delete_href: format!("{href}/delete"),
                href,
                can_delete: v.principal.may(&r.row.name, Action::Delete),
                path: r.row.name,
                tags: r.tags,
                size: human_size(r.size),
                size_bytes: r.size,
                updated: r.last_update.map(Stamp::of),
            }
        })
        .collect();
    let mut layout = v.layout(
        project.clone(),
        vec![Crumb::link("Projects", "/ui/"), Crumb::here(&project)],
    );
    if v.param("deleted") == "repository" {
        layout.notice = Some("The repository was deleted.".into());
    }
    let count_text = count_text(total, "repository", "repositories", !q.is_empty());
    Ok(v.page(&ProjectPage {
        layout,
        path: project.clone(),
        base,
        q,
        sorts: options(
            &[
                ("name", "Name"),
                ("updated", "Last updated"),
                ("size", "Size"),
                ("tags", "Tag count"),
            ],
            &v.param("sort"),
        ),
        orders: order_options(descending),
        count_text,
        any_delete: shown.iter().any(|r| r.can_delete),
        rows: shown,
        pager: state.pager(page, pages),
    }))
}
