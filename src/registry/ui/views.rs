//! What the templates in `templates/ui/` show: one struct per page, plus
//! the layout every page shares, the links between pages and small
//! formatting helpers; and [`html`], which renders a page. Values are
//! prepared here; the templates only print (auto-escaped) and loop.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::metadata::RepositoryRow;

/// Renders a template (or, should that fail, a plain 500).
pub(super) fn html(
    status: StatusCode,
    page: &impl Template,
    cookies: Option<Vec<String>>,
) -> Response {
    match page.render() {
        Ok(body) => {
            let mut r = (
                status,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                body,
            )
                .into_response();
            for c in cookies.into_iter().flatten() {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    r.headers_mut().append(header::SET_COOKIE, v);
                }
            }
            r
        }
        Err(e) => {
            tracing::error!("web UI: rendering a page: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// URL-encodes one path segment or query value.
pub(super) fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(super) fn project_href(project: &str) -> String {
    format!("/ui/projects/{}", encode(project))
}

pub(super) fn repository_href(project: &str, id: i64) -> String {
    format!("{}/repositories/{id}", project_href(project))
}

/// A repository's name below its project (`.` for the project's own).
pub(super) fn relative<'a>(project: &str, repo: &'a str) -> &'a str {
    match repo.strip_prefix(project) {
        Some("") => ".",
        Some(rest) if rest.starts_with('/') => &rest[1..],
        _ => repo,
    }
}

/// Projects › the project › the repository (when given) › `here`, the
/// current page.
pub(super) fn crumbs(project: &str, repo: Option<&RepositoryRow>, here: &str) -> Vec<Crumb> {
    let mut crumbs = vec![
        Crumb::link("Projects", "/ui/"),
        Crumb::link(project, &project_href(project)),
    ];
    if let Some(r) = repo {
        crumbs.push(Crumb::link(
            relative(project, &r.name),
            &repository_href(project, r.id),
        ));
    }
    crumbs.push(Crumb::here(here));
    crumbs
}

/// `3 tags`, or with a filter `1 tag matches`, `3 tags match`.
pub(super) fn count_text(n: u64, one: &str, many: &str, filtered: bool) -> String {
    let noun = if n == 1 { one } else { many };
    match (filtered, n) {
        (true, 1) => format!("1 {noun} matches"),
        (true, _) => format!("{n} {noun} match"),
        (false, _) => format!("{n} {noun}"),
    }
}

/// What every page's frame shows.
pub(super) struct Layout {
    pub(super) title: String,
    /// The signed-in viewer's name.
    pub(super) user: Option<String>,
    /// The CSRF token of the page's forms (the sign-out form here).
    pub(super) csrf: String,
    pub(super) crumbs: Vec<Crumb>,
    pub(super) login_href: String,
    pub(super) auth_on: bool,
    /// A success message (`role="status"`).
    pub(super) notice: Option<String>,
}

pub(super) struct Crumb {
    pub(super) label: String,
    pub(super) href: Option<String>,
}

impl Crumb {
    pub(super) fn link(label: &str, href: &str) -> Crumb {
        Crumb {
            label: label.to_string(),
            href: Some(href.to_string()),
        }
    }

    pub(super) fn here(label: &str) -> Crumb {
        Crumb {
            label: label.to_string(),
            href: None,
        }
    }
}

/// A point in time: machine-readable and as shown (UTC).
pub(super) struct Stamp {
    pub(super) iso: String,
    pub(super) text: String,
}

impl Stamp {
    pub(super) fn of(ms: i64) -> Stamp {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        let iso = humantime::format_rfc3339_seconds(t).to_string();
        // 2026-11-30T08:50:12Z -> 2026-11-30 08:50 UTC
        let text = format!("{} {} UTC", &iso[..10], &iso[11..16]);
        Stamp { iso, text }
    }
}

/// One `<option>` of a `<select>`.
pub(super) struct Opt {
    pub(super) value: &'static str,
    pub(super) label: &'static str,
    pub(super) selected: bool,
}

/// Options `(value, label)`, the one equal to `current` selected (the
/// first when none is).
pub(super) fn options(choices: &[(&'static str, &'static str)], current: &str) -> Vec<Opt> {
    let any = choices.iter().any(|(v, _)| *v == current);
    choices
        .iter()
        .enumerate()
        .map(|(i, (value, label))| Opt {
            value,
            label,
            selected: if any { *value == current } else { i == 0 },
        })
        .collect()
}

pub(super) fn order_options(descending: bool) -> Vec<Opt> {
    options(
        &[("asc", "Ascending"), ("desc", "Descending")],
        if descending { "desc" } else { "asc" },
    )
}

/// A list page's state as URL parameters: `(name, value, default)`;
/// defaults are left out of the links.
pub(super) struct ListState {
    pub(super) base: String,
    pub(super) params: Vec<(&'static str, String, &'static str)>,
}

impl ListState {
    /// The query string for page `page` (`None`: without a page).
    pub(super) fn query(&self, page: Option<u64>) -> String {
        let mut q = form_urlencoded::Serializer::new(String::new());
        for (name, value, default) in &self.params {
            if !value.is_empty() && value != default {
                q.append_pair(name, value);
            }
        }
        if let Some(p) = page.filter(|p| *p > 1) {
            q.append_pair("page", &p.to_string());
        }
        q.finish()
    }

    fn href(&self, page: u64) -> String {
        let q = self.query(Some(page));
        if q.is_empty() {
            self.base.clone()
        } else {
            format!("{}?{q}", self.base)
        }
    }

    pub(super) fn pager(&self, page: u64, pages: u64) -> Pager {
        Pager {
            page,
            pages,
            prev: (page > 1).then(|| self.href(page - 1)),
            next: (page < pages).then(|| self.href(page + 1)),
        }
    }
}

pub(super) struct Pager {
    pub(super) page: u64,
    pub(super) pages: u64,
    pub(super) prev: Option<String>,
    pub(super) next: Option<String>,
}

/// `1.5 MiB`, `512 B`.
pub(super) fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// `sha256:0123456789ab` (algorithm and 12 hex digits).
pub(super) fn short_digest(digest: &str) -> String {
    match digest.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => digest.to_string(),
    }
}

#[derive(Template)]
#[template(path = "ui/error.html")]
pub(super) struct ErrorPage {
    pub(super) layout: Layout,
    pub(super) heading: &'static str,
    pub(super) message: String,
    pub(super) show_sign_in: bool,
}

#[derive(Template)]
#[template(path = "ui/login.html")]
pub(super) struct LoginPage {
    pub(super) layout: Layout,
    pub(super) error: Option<String>,
    pub(super) next: String,
    pub(super) user: String,
    pub(super) session_hours: u64,
}

pub(super) struct ProjectLine {
    pub(super) path: String,
    pub(super) href: String,
    pub(super) visibility: String,
    pub(super) repositories: usize,
}

#[derive(Template)]
#[template(path = "ui/projects.html")]
pub(super) struct ProjectsPage {
    pub(super) layout: Layout,
    pub(super) q: String,
    pub(super) projects: Vec<ProjectLine>,
}

pub(super) struct RepositoryLine {
    pub(super) path: String,
    pub(super) href: String,
    pub(super) delete_href: String,
    pub(super) can_delete: bool,
    pub(super) tags: u64,
    pub(super) size: String,
    pub(super) size_bytes: u64,
    pub(super) updated: Option<Stamp>,
}

#[derive(Template)]
#[template(path = "ui/project.html")]
pub(super) struct ProjectPage {
    pub(super) layout: Layout,
    pub(super) path: String,
    pub(super) base: String,
    pub(super) q: String,
    pub(super) sorts: Vec<Opt>,
    pub(super) orders: Vec<Opt>,
    pub(super) count_text: String,
    pub(super) any_delete: bool,
    pub(super) rows: Vec<RepositoryLine>,
    pub(super) pager: Pager,
}

pub(super) struct ShortDigest {
    pub(super) full: String,
    pub(super) short: String,
}

pub(super) struct TagLine {
    pub(super) name: String,
    pub(super) href: String,
    /// Its delete confirmation page (coming back to this view).
    pub(super) delete_href: String,
    pub(super) pull: String,
    pub(super) digest: String,
    pub(super) digest_short: String,
    pub(super) config: Option<ShortDigest>,
    pub(super) kind: String,
    pub(super) size: String,
    pub(super) size_bytes: u64,
    pub(super) published: Stamp,
}

#[derive(Template)]
#[template(path = "ui/repository.html")]
pub(super) struct RepositoryPage {
    pub(super) layout: Layout,
    pub(super) path: String,
    pub(super) base: String,
    pub(super) reference: String,
    pub(super) pull: String,
    pub(super) q: String,
    pub(super) sorts: Vec<Opt>,
    pub(super) orders: Vec<Opt>,
    pub(super) kinds: Vec<Opt>,
    pub(super) per_pages: Vec<Opt>,
    pub(super) count_text: String,
    pub(super) can_delete: bool,
    pub(super) return_query: String,
    pub(super) rows: Vec<TagLine>,
    pub(super) pager: Pager,
}

pub(super) struct Platform {
    pub(super) platform: String,
    pub(super) digest: String,
    pub(super) digest_short: String,
    pub(super) size: String,
    pub(super) size_bytes: u64,
}

pub(super) struct Layer {
    pub(super) media_type: String,
    pub(super) digest: String,
    pub(super) digest_short: String,
    pub(super) size: String,
    pub(super) size_bytes: u64,
}

pub(super) struct ReferrerLine {
    pub(super) artifact_type: String,
    pub(super) digest: String,
    pub(super) digest_short: String,
    pub(super) size: String,
    pub(super) size_bytes: u64,
}

#[derive(Template)]
#[template(path = "ui/tag.html")]
pub(super) struct TagPage {
    pub(super) layout: Layout,
    pub(super) heading: String,
    pub(super) digest: String,
    pub(super) media_type: String,
    pub(super) config_digest: Option<String>,
    pub(super) size: String,
    pub(super) size_bytes: u64,
    pub(super) published: Stamp,
    pub(super) created: Stamp,
    pub(super) reference: String,
    pub(super) pull: String,
    pub(super) by_digest: String,
    pub(super) is_index: bool,
    pub(super) platforms: Vec<Platform>,
    pub(super) layers: Vec<Layer>,
    pub(super) referrers: Vec<ReferrerLine>,
    pub(super) can_delete: bool,
    pub(super) delete_href: String,
}

#[derive(Template)]
#[template(path = "ui/confirm_tags.html")]
pub(super) struct ConfirmTagsPage {
    pub(super) layout: Layout,
    pub(super) heading: String,
    pub(super) repository: String,
    pub(super) tags: Vec<String>,
    pub(super) action: String,
    pub(super) cancel_href: String,
    pub(super) return_query: String,
}

#[derive(Template)]
#[template(path = "ui/confirm_repository.html")]
pub(super) struct ConfirmRepositoryPage {
    pub(super) layout: Layout,
    pub(super) repository: String,
    pub(super) tags: String,
    pub(super) action: String,
    pub(super) cancel_href: String,
}

#[derive(Template)]
#[template(path = "ui/result.html")]
pub(super) struct ResultPage {
    pub(super) layout: Layout,
    pub(super) heading: String,
    pub(super) deleted: Vec<String>,
    pub(super) failed: Vec<(String, String)>,
    pub(super) back_href: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_digests() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(150 * 1024 * 1024), "150 MiB");
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
        assert_eq!(short_digest("weird"), "weird");
        let s = Stamp::of(1_764_492_612_000);
        assert_eq!(s.iso, "2025-11-30T08:50:12Z");
        assert_eq!(s.text, "2025-11-30 08:50 UTC");
    }

    #[test]
    fn list_state_links_keep_the_view() {
        let state = ListState {
            base: "/ui/x".into(),
            params: vec![
                ("q", "rc 1".into(), ""),
                ("sort", "name".into(), "name"),
                ("order", "desc".into(), "asc"),
            ],
        };
        assert_eq!(state.query(None), "q=rc+1&order=desc");
        let p = state.pager(2, 3);
        assert_eq!(p.prev.as_deref(), Some("/ui/x?q=rc+1&order=desc"));
        assert_eq!(p.next.as_deref(), Some("/ui/x?q=rc+1&order=desc&page=3"));
        assert!(state.pager(1, 1).prev.is_none());
    }

    #[test]
    fn relative_names() {
        assert_eq!(relative("g/p", "g/p/app"), "app");
        assert_eq!(relative("g/p", "g/p"), ".");
        assert_eq!(relative("g/p", "other"), "other");
    }

    #[test]
    fn counts() {
        assert_eq!(count_text(1, "tag", "tags", false), "1 tag");
        assert_eq!(count_text(3, "tag", "tags", true), "3 tags match");
        assert_eq!(count_text(1, "tag", "tags", true), "1 tag matches");
    }

    #[test]
    fn select_options() {
        let o = options(&[("a", "A"), ("b", "B")], "b");
        assert!(!o[0].selected && o[1].selected);
        let o = options(&[("a", "A"), ("b", "B")], "zz");
        assert!(o[0].selected && !o[1].selected);
    }

    #[test]
    fn pages_escape_what_they_show() {
        let page = ErrorPage {
            layout: Layout {
                title: "<t>".into(),
                user: Some("<script>alert(1)</script>".into()),
                csrf: "c\"srf".into(),
                crumbs: vec![Crumb::link("a&b", "/ui/?q=\"x\"")],
                login_href: "/ui/login".into(),
                auth_on: true,
                notice: None,
            },
            heading: "Not found",
            message: "<img src=x onerror=alert(1)>".into(),
            show_sign_in: false,
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("<img src=x"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{html}"
        );
        assert!(!html.contains("value=\"c\"srf\""), "{html}");
        assert!(html.contains("<main id=\"main\""));
    }
}
