//! A repository's page (`/ui/projects/<project>/repositories/<id>`): its
//! tags, filtered (`q`, `kind`), sorted (`sort`, `order`) and paged
//! (`per_page`, `page`) in the database, with pull commands and, for who may
//! delete, the boxes of a bulk delete.

use std::time::Instant;

use axum::extract::Path;
use axum::response::Response;

use super::error::UiResult;
use super::viewer::{Viewer, bad_param};
use super::views::{
    ListState, RepositoryPage, ShortDigest, Stamp, TagLine, count_text, crumbs, encode, human_size,
    options, order_options, relative, repository_href, short_digest,
};
use crate::metadata::{TagKind, TagOrder, TagQuery};

const PER_PAGE_CHOICES: [u32; 3] = [20, 50, 100];

pub(super) async fn repository(
    Path((project, id)): Path<(String, String)>,
    v: Viewer,
) -> UiResult<Response> {
    let started = Instant::now();
    let scope = v.scope(&project)?;
    let repo = v.repository(&scope, &id).await?;
    let q = v.param("q");
    let (order, sort_value) = match v.param("sort").as_str() {
        "" | "name" => (TagOrder::Name, "name"),
        "published" => (TagOrder::PublishedAt, "published"),
        "created" => (TagOrder::CreatedAt, "created"),
        "size" => (TagOrder::Size, "size"),
        other => {
            return Err(bad_param("sort", other, "name, published, created or size"));
        }
    };
    let descending = v.descending()?;
    let kind = match v.param("kind").as_str() {
        "" => None,
        "image" => Some(TagKind::Image),
        "index" => Some(TagKind::Index),
        "artifact" => Some(TagKind::Artifact),
        other => return Err(bad_param("kind", other, "image, index or artifact")),
    };
    let per_page = match v.param("per_page").as_str() {
        "" => PER_PAGE_CHOICES[0],
        p => p
            .parse::<u32>()
            .ok()
            .filter(|n| PER_PAGE_CHOICES.contains(n))
            .ok_or_else(|| bad_param("per_page", p, "20, 50 or 100"))?,
    };
    let page = v.page_number()?;
    let name_contains = (!q.is_empty()).then_some(q.as_str());
    let meta = &v.reg.meta;
    let total = meta.count_tags(repo.row.id, name_contains, kind).await?;
    let pages = total.div_ceil(u64::from(per_page)).max(1);
    let page = page.min(pages);
    let tags = meta
        .tag_page(
            repo.row.id,
            &TagQuery {
                name_contains,
                kind,
                order,
                descending,
                limit: per_page,
                offset: (page - 1) * u64::from(per_page),
            },
        )
        .await?;
    let host = v.host();
    let href = repository_href(&project, repo.row.id);
    let state = ListState {
        base: href.clone(),
        params: vec![
            ("q", q.clone(), ""),
            ("sort", v.param("sort"), "name"),
            ("order", v.param("order"), "asc"),
            ("kind", v.param("kind"), ""),
            ("per_page", v.param("per_page"), "20"),
        ],
    };
    let return_query = state.query(Some(page));
    let rows = tags
        .into_iter()
        .map(|t| TagLine {
            href: format!("{href}/tags/{}", encode(&t.name)),
            delete_href: format!(
                "{href}/tags/delete?tag={}&return={}",
                encode(&t.name),
                encode(&return_query)
            ),
            pull: format!("docker pull {host}/{}:{}", repo.row.name, t.name),
            digest_short: short_digest(&t.digest),
            config: t.config_digest.as_deref().map(|c| ShortDigest {
                full: c.to_string(),
                short: short_digest(c),
            }),
            kind: kind_label(&t.media_type),
            size: human_size(t.total_size),
            size_bytes: t.total_size,
            published: Stamp::of(t.published_at),
            digest: t.digest,
            name: t.name,
        })
        .collect();
    let mut layout = v.layout(
        repo.row.name.clone(),
        crumbs(&project, None, relative(&project, &repo.row.name)),
    );
    if let Ok(n) = v.param("deleted").parse::<u64>() {
        layout.notice = Some(if n == 1 {
            "Deleted 1 tag.".into()
        } else {
            format!("Deleted {n} tags.")
        });
    }
    let filtered = !q.is_empty() || kind.is_some();
    let page_view = RepositoryPage {
        layout,
        path: repo.row.name.clone(),
        base: href,
        reference: format!("{host}/{}", repo.row.name),
        pull: format!("docker pull {host}/{}", repo.row.name),
        q,
        sorts: options(
            &[
                ("name", "Name"),
                ("published", "Published"),
                ("created", "Created"),
                ("size", "Size"),
            ],
            sort_value,
        ),
        orders: order_options(descending),
        kinds: options(
            &[
                ("", "All"),
                ("image", "Images"),
                ("index", "Multi-platform"),
                ("artifact", "Artifacts"),
            ],
            &v.param("kind"),
        ),
        per_pages: options(
            &[("20", "20"), ("50", "50"), ("100", "100")],
            &per_page.to_string(),
        ),
        count_text: count_text(total, "tag", "tags", filtered),
        can_delete: repo.can_delete,
        return_query,
        rows,
        pager: state.pager(page, pages),
    };
    let response = v.page(&page_view);
    tracing::debug!(
        repository = %repo.row.name,
        tags = total,
        ms = crate::registry::millis(started.elapsed()),
        "web UI: tag page"
    );
    Ok(response)
}

/// The badge of a multi-platform index ("" for the rest), from the
/// manifest's media type.
fn kind_label(media_type: &str) -> String {
    if media_type.contains("index") || media_type.contains("manifest.list") {
        "multi-platform".into()
    } else {
        String::new()
    }
}
