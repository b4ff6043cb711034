//! Deletes, each a confirmation page and a form: tags (one, or up to
//! [`MAX_BULK`] selected on the repository page) and whole repositories.
//! Refusals by tag rules are reported per tag; the list page's view (`return`)
//! is kept across the delete.

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::error::{UiError, UiResult};
use super::viewer::{Posted, Viewer};
use super::views::{
    ConfirmRepositoryPage, ConfirmTagsPage, ResultPage, crumbs, html, project_href, repository_href,
};
use crate::metadata::MetadataError;

/// Most tags one bulk delete takes (a page holds at most 100).
const MAX_BULK: usize = 100;

/// A list page's query (`return` of the delete forms), kept only if it is
/// just the list parameters.
fn safe_return(value: &str) -> String {
    const KEYS: [&str; 6] = ["q", "sort", "order", "kind", "per_page", "page"];
    let mut out = form_urlencoded::Serializer::new(String::new());
    for (k, v) in form_urlencoded::parse(value.as_bytes()) {
        if KEYS.contains(&k.as_ref()) {
            out.append_pair(&k, &v);
        }
    }
    out.finish()
}

fn with_query(href: &str, query: &str, extra: &str) -> String {
    let q: Vec<&str> = [query, extra]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    if q.is_empty() {
        href.to_string()
    } else {
        format!("{href}?{}", q.join("&"))
    }
}

pub(super) async fn confirm_tags_delete(
    Path((project, id)): Path<(String, String)>,
    v: Viewer,
) -> UiResult<Response> {
    let repo = v.deletable(&project, &id).await?;
    let query = v.query();
    let mut tags: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "tag")
        .map(|(_, t)| t.clone())
        .collect();
    tags.dedup();
    if tags.len() > MAX_BULK {
        return Err(UiError::bad_request(format!(
            "At most {MAX_BULK} tags can be deleted at once."
        )));
    }
    let return_query = safe_return(&v.param("return"));
    let href = repository_href(&project, repo.row.id);
    let heading = match tags.as_slice() {
        [] => "Delete tags".to_string(),
        [one] => format!("Delete tag {one}?"),
        many => format!("Delete {} tags?", many.len()),
    };
    let crumbs = crumbs(&project, Some(&repo.row), "Delete");
    Ok(v.page(&ConfirmTagsPage {
        layout: v.layout(heading.clone(), crumbs),
        heading,
        repository: repo.row.name.clone(),
        action: format!("{href}/tags/delete"),
        cancel_href: with_query(&href, &return_query, ""),
        return_query,
        tags,
    }))
}

pub(super) async fn delete_tags(
    Path((project, id)): Path<(String, String)>,
    Posted(v, form): Posted,
) -> UiResult<Response> {
    let repo = v.deletable(&project, &id).await?;
    let mut tags = form.all("tag");
    tags.dedup();
    if tags.is_empty() || tags.len() > MAX_BULK {
        return Err(UiError::bad_request(format!(
            "Select between 1 and {MAX_BULK} tags to delete."
        )));
    }
    let guard = v.principal.tag_guard(&repo.row.name);
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for t in tags {
        match v
            .reg
            .meta
            .delete_tag(&repo.row.name, &t, &|tag, op| guard.check(tag, op))
            .await
        {
            Ok(true) => deleted.push(t),
            Ok(false) => failed.push((t, "no such tag (deleted already?)".to_string())),
            Err(MetadataError::TagRefused(why)) => failed.push((t, why)),
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(
        repository = %repo.row.name,
        deleted = ?deleted,
        failed = failed.len(),
        by = ?v.name,
        "web UI: deleted tags"
    );
    let return_query = safe_return(form.get("return").unwrap_or_default());
    let href = repository_href(&project, repo.row.id);
    let back = with_query(&href, &return_query, "");
    if failed.is_empty() {
        let to = with_query(&href, &return_query, &format!("deleted={}", deleted.len()));
        return Ok(Redirect::to(&to).into_response());
    }
    let heading = format!(
        "{} of {} tags deleted",
        deleted.len(),
        deleted.len() + failed.len()
    );
    let crumbs = crumbs(&project, Some(&repo.row), "Delete");
    let status = if deleted.is_empty() {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::OK
    };
    Ok(html(
        status,
        &ResultPage {
            layout: v.layout(heading.clone(), crumbs),
            heading,
            deleted,
            failed,
            back_href: back,
        },
        v.cookies(),
    ))
}

pub(super) async fn confirm_repository_delete(
    Path((project, id)): Path<(String, String)>,
    v: Viewer,
) -> UiResult<Response> {
    let repo = v.deletable(&project, &id).await?;
    let (tags, _) = v.reg.meta.repository_usage(repo.row.id).await?;
    let href = repository_href(&project, repo.row.id);
    let crumbs = crumbs(&project, Some(&repo.row), "Delete");
    Ok(v.page(&ConfirmRepositoryPage {
        layout: v.layout(format!("Delete repository {}?", repo.row.name), crumbs),
        repository: repo.row.name.clone(),
        tags: if tags == 1 {
            "1 tag".into()
        } else {
            format!("{tags} tags")
        },
        action: format!("{href}/delete"),
        cancel_href: href,
    }))
}

pub(super) async fn delete_repository(
    Path((project, id)): Path<(String, String)>,
    Posted(v, _): Posted,
) -> UiResult<Response> {
    let repo = v.deletable(&project, &id).await?;
    let guard = v.principal.tag_guard(&repo.row.name);
    match v
        .reg
        .delete_repository(&repo.row.name, &|t, op| guard.check(t, op))
        .await
    {
        Ok(_) => {
            tracing::info!(repository = %repo.row.name, by = ?v.name, "web UI: deleted repository");
            Ok(
                Redirect::to(&format!("{}?deleted=repository", project_href(&project)))
                    .into_response(),
            )
        }
        Err(MetadataError::TagRefused(why)) => Err(UiError::forbidden(format!(
            "{} was not deleted: {why}",
            repo.row.name
        ))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_queries_keep_list_parameters_only() {
        assert_eq!(
            safe_return("q=rc&sort=size&evil=1&page=2"),
            "q=rc&sort=size&page=2"
        );
        assert_eq!(safe_return(""), "");
        assert_eq!(with_query("/x", "", "deleted=2"), "/x?deleted=2");
        assert_eq!(with_query("/x", "q=a", "deleted=2"), "/x?q=a&deleted=2");
    }
}
