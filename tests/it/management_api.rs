//! The management API (`/api/v1/projects/<project>/...`), in process, with
//! token authentication and a manifest directory of projects, members and
//! tokens: repository and tag listings with sizes and times, pagination,
//! single and bulk tag deletion, protected and immutable tags, anonymous
//! access, and cleanup runs whose `bytes_reclaimable` is checked against what
//! garbage collection then frees.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use berth::oci::Digest;

use crate::common::app::{App as Harness, As, Image, Reply};
use crate::common::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

const DAY_MS: i64 = 86_400_000;

const ADMIN: (&str, &str) = ("admin", "admin-secret");
const OWNER: (&str, &str) = ("owner", "owner-secret");
const MAINTAINER: (&str, &str) = ("maintainer", "maintainer-secret");
const DEVELOPER: (&str, &str) = ("developer", "developer-secret");
const REPORTER: (&str, &str) = ("reporter", "reporter-secret");
const OUTSIDER: (&str, &str) = ("outsider", "outsider-secret");

const MANIFESTS: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: app}
spec:
  path: g/app
  visibility: private
  members:
    - {user: reporter, role: Reporter}
    - {user: developer, role: Developer}
    - {user: maintainer, role: Maintainer}
    - {user: owner, role: Owner}
  protectedTags:
    - {pattern: '^v\d+', minimumAccessLevelForPush: Maintainer, minimumAccessLevelForDelete: Owner}
  immutableTags:
    - {pattern: '^release-'}
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: sub}
spec:
  path: g/app/sub
  visibility: private
  members: [{user: owner, role: Owner}]
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: site}
spec:
  path: pub/site
  visibility: public
  members: [{user: owner, role: Owner}, {user: developer, role: Developer}]
"#;

async fn app() -> App {
    let mut yaml = MANIFESTS.to_string();
    for user in ["owner", "maintainer", "developer", "reporter", "outsider"] {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {user}-pat\n  labels: {{berth.dev/user: {user}}}\nstringData: {{token: {user}-secret}}\n"
        ));
    }
    App(Harness::setup()
        .manifests(yaml)
        .admin_secret(ADMIN.1)
        .config(|c| c.gc.review_delay = "0s".into())
        .open()
        .await)
}

/// The harness's registry with the calls of this area: requests to the
/// registry's host, tokens for Basic credentials, pushes as a user.
struct App(Harness);

impl std::ops::Deref for App {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn rfc3339_ms(v: &Value) -> i64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    humantime::parse_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s}: {e}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

/// `g/app` -> `/api/v1/projects/g%2Fapp`.
fn project_url(path: &str) -> String {
    format!("/api/v1/projects/{}", path.replace('/', "%2F"))
}

impl App {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        who: As<'_>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        self.0.request(method, uri, who, content_type, body).await
    }

    /// A management API call with Basic credentials (or none).
    async fn api(&self, method: Method, uri: &str, creds: Option<(&str, &str)>) -> Reply {
        self.call(method, uri, creds.into(), None, vec![]).await
    }

    async fn get_ok(&self, uri: &str, creds: (&str, &str)) -> Reply {
        let r = self.api(Method::GET, uri, Some(creds)).await;
        assert_eq!(r.status, StatusCode::OK, "GET {uri}: {}", r.text());
        r
    }

    /// A JWT from /jwt/auth.
    async fn token(&self, creds: Option<(&str, &str)>, scope: &str) -> String {
        self.0
            .token(creds, scope)
            .await
            .unwrap_or_else(|r| panic!("token: {}: {}", r.status, r.text()))
    }

    async fn push_blob(&self, token: &str, repo: &str, data: &[u8]) -> String {
        self.0
            .push_blob_as(As::Bearer(token), repo, data)
            .await
            .to_string()
    }

    /// PUTs a manifest payload to `reference` (tag or digest).
    async fn put_manifest(
        &self,
        creds: (&str, &str),
        repo: &str,
        reference: &str,
        media_type: &str,
        payload: &[u8],
    ) -> Reply {
        let token = self
            .token(Some(creds), &format!("repository:{repo}:pull,push"))
            .await;
        self.call(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            As::Bearer(&token),
            Some(media_type),
            payload.to_vec(),
        )
        .await
    }

    /// Uploads a config unique to `name` and the layers, then PUTs the
    /// manifest to `reference` (a tag, or its own digest when `None`).
    async fn try_push_image(
        &self,
        creds: (&str, &str),
        repo: &str,
        name: &str,
        reference: Option<&str>,
        layers: &[&[u8]],
    ) -> (Image, Reply) {
        let token = self
            .token(Some(creds), &format!("repository:{repo}:pull,push"))
            .await;
        let config = serde_json::to_vec(&json!({ "image": name })).unwrap();
        self.0
            .try_push_image(As::Bearer(&token), repo, reference, &config, layers)
            .await
    }

    async fn push_image(
        &self,
        creds: (&str, &str),
        repo: &str,
        tag: &str,
        layers: &[&[u8]],
    ) -> Image {
        let (image, r) = self
            .try_push_image(creds, repo, &format!("{repo}:{tag}"), Some(tag), layers)
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "push {repo}:{tag}: {}",
            r.text()
        );
        image
    }

    /// Pushes an index listing `children` (already in the repository).
    async fn push_index(
        &self,
        creds: (&str, &str),
        repo: &str,
        tag: &str,
        children: &[&Image],
    ) -> Image {
        let manifests: Vec<Value> = children
            .iter()
            .enumerate()
            .map(|(i, c)| {
                json!({"mediaType": OCI_MANIFEST, "digest": c.digest, "size": c.payload.len(),
                       "platform": {"architecture": format!("arch{i}"), "os": "linux"}})
            })
            .collect();
        let payload = serde_json::to_vec(
            &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
        )
        .unwrap();
        let r = self
            .put_manifest(creds, repo, tag, OCI_INDEX, &payload)
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
        Image {
            digest: Digest::sha256_of(&payload).to_string(),
            payload,
            config: String::new(),
            blobs: BTreeMap::new(),
        }
    }

    /// Tag names from the data plane's `/v2/<repo>/tags/list`.
    async fn tags_list(&self, repo: &str) -> Vec<String> {
        let token = self
            .token(Some(ADMIN), &format!("repository:{repo}:pull"))
            .await;
        let r = self
            .call(
                Method::GET,
                &format!("/v2/{repo}/tags/list"),
                As::Bearer(&token),
                None,
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        strings(&r.json()["tags"])
    }

    /// The management API id of `repo` (listed in `project` by the admin).
    async fn repo_id(&self, project: &str, repo: &str) -> i64 {
        let r = self
            .get_ok(
                &format!(
                    "{}/registry/repositories?per_page=100",
                    project_url(project)
                ),
                ADMIN,
            )
            .await;
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["path"] == repo)
            .unwrap_or_else(|| panic!("{repo} not listed in {project}: {}", r.text()))["id"]
            .as_i64()
            .unwrap()
    }

    async fn tags_url(&self, project: &str, repo: &str) -> String {
        format!(
            "{}/registry/repositories/{}/tags",
            project_url(project),
            self.repo_id(project, repo).await
        )
    }

    /// Sets when tags were last pushed (what `published_at`, `older_than`
    /// and `keep_n` go by), straight in the database.
    async fn set_published(&self, repo: &str, tag: &str, at_ms: i64) {
        let done = sqlx::query(
            "UPDATE tags SET updated_at = $1
              WHERE name = $2 AND repository_id = (SELECT id FROM repositories WHERE name = $3)",
        )
        .bind(at_ms)
        .bind(tag)
        .bind(repo)
        .execute(&self.db)
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1, "{repo}:{tag}");
    }

    /// Sweeps (review delay 0) until nothing more is freed; the bytes freed
    /// in all. A sweep takes what is due when it starts, so what it queues
    /// (an index's children) waits for the next one.
    async fn sweep_all(&self) -> i64 {
        let mut total = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let r = self
                .call(
                    Method::POST,
                    "/api/v1/gc/sweep",
                    As::Basic(ADMIN),
                    None,
                    vec![],
                )
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            let c = r.json();
            let freed = c["bytes_deleted"].as_i64().unwrap();
            total += freed;
            if c["manifests_deleted"] == 0 && c["blobs_deleted"] == 0 {
                return total;
            }
        }
    }

    /// A bulk delete with `query` (`k=v&...`, values encoded here).
    async fn bulk(&self, url: &str, query: &str, creds: (&str, &str)) -> Reply {
        self.api(
            Method::DELETE,
            &format!("{url}?{}", encode(query)),
            Some(creds),
        )
        .await
    }

    async fn post_cleanup(&self, project: &str, who: As<'_>, body: Vec<u8>) -> Reply {
        let url = format!("{}/cleanup", project_url(project));
        self.call(Method::POST, &url, who, Some("application/json"), body)
            .await
    }
}

/// Encodes the values of `k=v&k=v` (which contain no `&` or `=`).
fn encode(query: &str) -> String {
    query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => format!(
                "{k}={}",
                form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()
            ),
            None => pair.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn layer(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

#[tokio::test]
async fn lists_a_projects_repositories_with_tag_counts_and_sizes() {
    let app = app().await;
    let (l1, l2, l3, l4) = (layer(1, 1000), layer(2, 500), layer(3, 300), layer(4, 70));
    let a = app.push_image(OWNER, "g/app", "a", &[&l1, &l2]).await;
    let b = app.push_image(OWNER, "g/app", "b", &[&l1, &l3]).await;
    let web = app.push_image(OWNER, "g/app/web", "x", &[&l4]).await;
    app.push_image(OWNER, "g/app/sub/img", "y", &[&l4]).await;
    app.push_image(ADMIN, "g/apple", "z", &[&l4]).await;

    let before = now_ms();
    let r = app
        .get_ok(
            &format!("{}/registry/repositories", project_url("g/app")),
            REPORTER,
        )
        .await;
    let list = r.json();
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .map(|x| x["path"].clone())
            .collect::<Vec<_>>(),
        [json!("g/app"), json!("g/app/web")],
        "the project's own repository and those below it, not the subproject's nor g/apple"
    );
    let mut app_blobs = a.blobs.clone();
    app_blobs.extend(b.blobs.clone());
    let app_size: u64 = app_blobs.values().sum();
    assert_eq!(
        app_size,
        1000 + 500 + 300 + a.blobs[&a.config] + b.blobs[&b.config]
    );
    let own = &list[0];
    assert_eq!(own["name"], "");
    assert_eq!(own["location"], "registry.test/g/app");
    assert_eq!(own["tags_count"], 2);
    assert_eq!(own["size"], app_size);
    assert!(rfc3339_ms(&own["created_at"]) <= before);
    assert!(own["id"].as_i64().unwrap() > 0);
    assert!(own.get("tags").is_none());
    let w = &list[1];
    assert_eq!(w["name"], "web");
    assert_eq!(w["location"], "registry.test/g/app/web");
    assert_eq!(w["tags_count"], 1);
    assert_eq!(w["size"], web.blobs.values().sum::<u64>());
    assert_eq!(r.header("x-total"), "2");

    // ?tags=true, and one repository by id.
    let r = app
        .get_ok(
            &format!("{}/registry/repositories?tags=true", project_url("g/app")),
            REPORTER,
        )
        .await;
    assert_eq!(
        r.json()[0]["tags"],
        json!([
            {"name": "a", "path": "g/app:a", "location": "registry.test/g/app:a"},
            {"name": "b", "path": "g/app:b", "location": "registry.test/g/app:b"},
        ])
    );
    let id = w["id"].as_i64().unwrap();
    let one = app
        .get_ok(
            &format!("{}/registry/repositories/{id}", project_url("g/app")),
            REPORTER,
        )
        .await
        .json();
    assert_eq!(&one, w);

    // Pages of one.
    let r = app
        .get_ok(
            &format!(
                "{}/registry/repositories?per_page=1&page=2",
                project_url("g/app")
            ),
            REPORTER,
        )
        .await;
    assert_eq!(names(&r.json()), ["web"]);
    assert_eq!(
        (
            r.header("x-total"),
            r.header("x-total-pages"),
            r.header("x-prev-page"),
            r.header("x-next-page")
        ),
        ("2", "2", "1", "")
    );

    // The subproject is its own project; a repository of another project is
    // not found through this one; unknown projects and ids are 404s.
    let r = app
        .get_ok(
            &format!("{}/registry/repositories", project_url("g/app/sub")),
            OWNER,
        )
        .await;
    assert_eq!(names(&r.json()), ["img"]);
    let sub_id = r.json()[0]["id"].as_i64().unwrap();
    for uri in [
        format!("{}/registry/repositories/{sub_id}", project_url("g/app")),
        format!("{}/registry/repositories/99999", project_url("g/app")),
        format!("{}/registry/repositories/x", project_url("g/app")),
        format!("{}/registry/repositories", project_url("no/such")),
    ] {
        let r = app.api(Method::GET, &uri, Some(OWNER)).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(!r.message().is_empty(), "{uri}: {}", r.text());
    }
}

#[tokio::test]
async fn tag_details_sizes_and_times() {
    let app = app().await;
    let repo = "g/app/img";
    let (l1, l2, l3) = (layer(10, 4000), layer(11, 2500), layer(12, 900));
    let m1 = app.push_image(OWNER, repo, "alpha", &[&l1, &l2]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let m2 = app.push_image(OWNER, repo, "beta", &[&l1, &l3]).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    // gamma: the first manifest again, published later than it was pushed.
    let r = app
        .put_manifest(OWNER, repo, "gamma", OCI_MANIFEST, &m1.payload)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let index = app.push_index(OWNER, repo, "multi", &[&m1, &m2]).await;

    let url = app.tags_url("g/app", repo).await;
    let r = app.get_ok(&url, DEVELOPER).await;
    let list = r.json();
    assert_eq!(names(&list), ["alpha", "beta", "gamma", "multi"]);
    let by: BTreeMap<String, Value> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
        .collect();
    let alpha = &by["alpha"];
    assert_eq!(alpha["path"], "g/app/img:alpha");
    assert_eq!(alpha["location"], "registry.test/g/app/img:alpha");
    assert_eq!(alpha["digest"], m1.digest);
    assert_eq!(alpha["config_digest"], m1.config);
    assert_eq!(alpha["media_type"], OCI_MANIFEST);
    assert_eq!(alpha["total_size"], m1.total_size());
    assert_eq!(
        m1.total_size(),
        m1.payload.len() as u64 + 4000 + 2500 + m1.blobs[&m1.config]
    );
    assert_eq!(by["beta"]["total_size"], m2.total_size());
    assert_eq!(by["beta"]["config_digest"], m2.config);
    // The index: its payload, its children's, and their blobs counted once
    // (l1 is in both).
    let mut blobs = m1.blobs.clone();
    blobs.extend(m2.blobs.clone());
    let multi = &by["multi"];
    assert_eq!(multi["digest"], index.digest);
    assert_eq!(multi["media_type"], OCI_INDEX);
    assert_eq!(multi["config_digest"], Value::Null);
    assert_eq!(
        multi["total_size"],
        (index.payload.len() + m1.payload.len() + m2.payload.len()) as u64
            + blobs.values().sum::<u64>()
    );
    // Times: created = manifest pushed, published = tag last pushed.
    let t = |name: &str, field: &str| rfc3339_ms(&by[name][field]);
    assert!(t("alpha", "created_at") < t("beta", "created_at"));
    assert_eq!(t("gamma", "created_at"), t("alpha", "created_at"));
    assert!(t("gamma", "published_at") > t("gamma", "created_at"));
    assert!(t("beta", "published_at") < t("gamma", "published_at"));
    assert_eq!(t("alpha", "published_at"), t("alpha", "created_at"));

    // One tag, the same as listed; moving it changes both times.
    let one = app.get_ok(&format!("{url}/alpha"), DEVELOPER).await.json();
    assert_eq!(&one, alpha);
    tokio::time::sleep(Duration::from_millis(5)).await;
    let r = app
        .put_manifest(OWNER, repo, "alpha", OCI_MANIFEST, &m2.payload)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let moved = app.get_ok(&format!("{url}/alpha"), DEVELOPER).await.json();
    assert_eq!(moved["digest"], m2.digest);
    assert_eq!(moved["created_at"], by["beta"]["created_at"]);
    assert!(rfc3339_ms(&moved["published_at"]) > t("gamma", "published_at"));
    let r = app
        .api(Method::GET, &format!("{url}/nope"), Some(DEVELOPER))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.message(), "tag nope not found");
}

#[tokio::test]
async fn tag_listing_filters_sorts_and_pages() {
    let app = app().await;
    let repo = "g/app/many";
    let image = app.push_image(OWNER, repo, "t000", &[&layer(1, 10)]).await;
    let n = 120;
    let all: Vec<String> = (0..n).map(|i| format!("t{i:03}")).collect();
    for name in &all[1..] {
        let r = app
            .put_manifest(OWNER, repo, name, OCI_MANIFEST, &image.payload)
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    // Published times in an order unlike the names': t(i) at (i * 37) % n.
    let base = now_ms() - DAY_MS;
    for (i, name) in all.iter().enumerate() {
        app.set_published(repo, name, base + ((i * 37) % n) as i64 * 1000)
            .await;
    }
    let mut by_time = all.clone();
    by_time.sort_by_key(|name| {
        let i: usize = name[1..].parse().unwrap();
        (i * 37) % n
    });
    let url = app.tags_url("g/app", repo).await;

    // Default: by name, 20 a page, GitLab's headers and Link.
    let r = app.get_ok(&url, REPORTER).await;
    assert_eq!(names(&r.json()), &all[..20]);
    let headers = |r: &Reply| {
        [
            "x-total",
            "x-total-pages",
            "x-page",
            "x-per-page",
            "x-next-page",
            "x-prev-page",
        ]
        .map(|h| r.header(h).to_string())
    };
    assert_eq!(headers(&r), ["120", "6", "1", "20", "2", ""]);
    let link = r.header("link");
    assert!(link.contains("page=2&per_page=20>; rel=\"next\""), "{link}");
    assert!(
        link.contains("page=1&per_page=20>; rel=\"first\""),
        "{link}"
    );
    assert!(link.contains("page=6&per_page=20>; rel=\"last\""), "{link}");
    assert!(!link.contains("rel=\"prev\""), "{link}");

    // Following Link rel=next through every page, in both orders and sorts.
    async fn walk(app: &App, first: String) -> (Vec<String>, Vec<[String; 2]>) {
        let mut got = Vec::new();
        let mut pages = Vec::new();
        let mut next = Some(first);
        while let Some(uri) = next {
            let r = app.get_ok(&uri, REPORTER).await;
            got.extend(names(&r.json()));
            pages.push([
                r.header("x-page").to_string(),
                r.header("x-prev-page").to_string(),
            ]);
            next = r.header("link").split(", ").find_map(|l| {
                l.strip_suffix(">; rel=\"next\"")
                    .map(|u| u.trim_start_matches('<').to_string())
            });
        }
        (got, pages)
    }
    let (got, pages) = walk(&app, format!("{url}?per_page=7")).await;
    assert_eq!(got, all);
    assert_eq!(pages.len(), 18);
    assert_eq!(pages[1], ["2".to_string(), "1".to_string()]);
    let reversed: Vec<String> = all.iter().rev().cloned().collect();
    assert_eq!(
        walk(&app, format!("{url}?per_page=50&sort=desc")).await.0,
        reversed
    );
    assert_eq!(
        walk(&app, format!("{url}?order_by=published_at&per_page=30"))
            .await
            .0,
        by_time
    );
    let newest_first: Vec<String> = by_time.iter().rev().cloned().collect();
    assert_eq!(
        walk(
            &app,
            format!("{url}?order_by=published_at&sort=desc&per_page=9")
        )
        .await
        .0,
        newest_first
    );

    // A name filter (case-sensitive), kept in the links.
    let r = app
        .get_ok(&format!("{url}?name=t01&per_page=4"), REPORTER)
        .await;
    assert_eq!(names(&r.json()), ["t010", "t011", "t012", "t013"]);
    assert_eq!(r.header("x-total"), "10");
    assert!(
        r.header("link").contains("name=t01&page=2"),
        "{}",
        r.header("link")
    );
    let r = app.get_ok(&format!("{url}?name=T01"), REPORTER).await;
    assert_eq!(r.json(), json!([]));
    assert_eq!(r.header("x-total"), "0");
    assert_eq!(r.header("x-total-pages"), "1");

    // per_page is capped at 100.
    let r = app.get_ok(&format!("{url}?per_page=1000"), REPORTER).await;
    assert_eq!(r.json().as_array().unwrap().len(), 100);
    assert_eq!(r.header("x-per-page"), "100");
    assert_eq!(r.header("x-total-pages"), "2");
    // Past the end: an empty page.
    let r = app.get_ok(&format!("{url}?page=9"), REPORTER).await;
    assert_eq!(r.json(), json!([]));
    assert_eq!(r.header("x-next-page"), "");

    for (query, param) in [
        ("order_by=size", "order_by"),
        ("sort=up", "sort"),
        ("page=0", "page"),
        ("per_page=-1", "per_page"),
    ] {
        let r = app
            .api(Method::GET, &format!("{url}?{query}"), Some(REPORTER))
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert!(r.message().starts_with(param), "{query}: {}", r.message());
    }
}

#[tokio::test]
async fn tag_pages_over_many_tags_are_right() {
    let app = app().await;
    let repo = "g/app/huge";
    app.push_image(OWNER, repo, "seed", &[&layer(7, 100)]).await;
    let n: i64 = 20_000;
    let base = now_ms() - DAY_MS;
    // 20,000 tags on the seed's manifest, published one second apart.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < $1 - 1)
         INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at, total_size)
         SELECT t.repository_id, 'bulk-' || {}, t.manifest_id, $2, $3 + i * 1000, t.total_size
           FROM k, tags t WHERE t.name = 'seed'",
        crate::common::zero_padded("i", 5)
    )))
    .bind(n)
    .bind(base)
    .bind(base)
    .execute(&app.db)
    .await
    .unwrap();
    let url = app.tags_url("g/app", repo).await;
    let started = std::time::Instant::now();
    let r = app
        .get_ok(
            &format!("{url}?order_by=published_at&sort=desc&per_page=100&page=150"),
            REPORTER,
        )
        .await;
    let first = app
        .get_ok(&format!("{url}?name=bulk-1999&per_page=100"), REPORTER)
        .await;
    let took = started.elapsed();
    // Newest first (the seed, then bulk-19999 down): page 150 holds ranks
    // 14,900..14,999, i.e. bulk-05100 down to bulk-05001.
    let want: Vec<String> = (0..100).map(|k| format!("bulk-{:05}", 5100 - k)).collect();
    assert_eq!(names(&r.json()), want);
    assert_eq!(r.header("x-total"), "20001");
    assert_eq!(r.header("x-total-pages"), "201");
    assert_eq!(first.header("x-total"), "10");
    // A figure for the log, not a pass/fail criterion (speed is shown by
    // benchmarks, not timed tests).
    eprintln!("two pages over 20,001 tags took {took:?}");
}

#[tokio::test]
async fn deleting_one_tag() {
    let app = app().await;
    let repo = "g/app/one";
    let image = app.push_image(OWNER, repo, "a", &[&layer(1, 10)]).await;
    let r = app
        .put_manifest(OWNER, repo, "b", OCI_MANIFEST, &image.payload)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let url = app.tags_url("g/app", repo).await;

    // Who may not: anonymous (asked to log in), an outsider (cannot see the
    // private project), a reporter (can see, cannot delete).
    let r = app.api(Method::DELETE, &format!("{url}/a"), None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header("www-authenticate").starts_with("Bearer realm="),
        "{:?}",
        r.headers
    );
    assert!(r.json()["message"].is_string());
    let r = app
        .api(Method::DELETE, &format!("{url}/a"), Some(OUTSIDER))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .api(Method::DELETE, &format!("{url}/a"), Some(REPORTER))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.message().contains("delete"), "{}", r.message());
    assert_eq!(app.tags_list(repo).await, ["a", "b"]);

    // A developer may; the tag is gone from the data plane too, the other
    // tag on the same manifest stays.
    let r = app
        .api(Method::DELETE, &format!("{url}/a"), Some(DEVELOPER))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(app.tags_list(repo).await, ["b"]);
    let r = app
        .api(Method::GET, &format!("{url}/a"), Some(DEVELOPER))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app
        .api(Method::DELETE, &format!("{url}/a"), Some(DEVELOPER))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // A bearer token from /jwt/auth works as well, within its scope.
    let token = app
        .token(Some(DEVELOPER), &format!("repository:{repo}:pull,delete"))
        .await;
    let r = app
        .call(
            Method::DELETE,
            &format!("{url}/b"),
            As::Bearer(&token),
            None,
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(app.tags_list(repo).await.is_empty());
    // Wrong credentials are refused, not taken as anonymous.
    let r = app
        .api(Method::GET, &url, Some(("developer", "wrong")))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = app
        .call(Method::GET, &url, As::Bearer("not.a.jwt"), None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn deleting_a_repository() {
    let app = app().await;
    app.push_image(DEVELOPER, "g/app/gone", "a", &[&layer(1, 10)])
        .await;
    let id = app.repo_id("g/app", "g/app/gone").await;
    let url = format!("{}/registry/repositories/{id}", project_url("g/app"));
    let r = app.api(Method::DELETE, &url, Some(REPORTER)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app.api(Method::DELETE, &url, Some(DEVELOPER)).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(
        app.api(Method::GET, &url, Some(DEVELOPER)).await.status,
        StatusCode::NOT_FOUND
    );
    let token = app.token(Some(ADMIN), "repository:g/app/gone:pull").await;
    let r = app
        .call(
            Method::GET,
            "/v2/g/app/gone/tags/list",
            As::Bearer(&token),
            None,
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

/// Tags build-1..6 (1 to 6 days old), stable-1 (10), main (20), latest (30).
async fn bulk_fixture(app: &App, repo: &str) -> String {
    let image = app
        .push_image(DEVELOPER, repo, "latest", &[&layer(9, 50)])
        .await;
    let now = now_ms();
    let ages = [
        ("build-1", 1),
        ("build-2", 2),
        ("build-3", 3),
        ("build-4", 4),
        ("build-5", 5),
        ("build-6", 6),
        ("stable-1", 10),
        ("main", 20),
        ("latest", 30),
    ];
    for (tag, days) in ages {
        if tag != "latest" {
            let r = app
                .put_manifest(DEVELOPER, repo, tag, OCI_MANIFEST, &image.payload)
                .await;
            assert_eq!(r.status, StatusCode::CREATED);
        }
        app.set_published(repo, tag, now - days * DAY_MS - 60_000)
            .await;
    }
    app.tags_url("g/app", repo).await
}

fn deleted(r: &Reply) -> Vec<String> {
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    strings(&r.json()["tagsDeleted"])
}

#[tokio::test]
async fn bulk_delete_parameters_and_their_interplay() {
    let app = app().await;
    let repo = "g/app/bulk";
    let url = bulk_fixture(&app, repo).await;
    let everything: Vec<String> = app.tags_list(repo).await;
    assert_eq!(everything.len(), 9);

    // Refused parameters, each named.
    for (query, param) in [
        ("keep_n=2", "name_regex_delete"),
        ("name_regex_delete=(", "name_regex_delete"),
        ("name_regex_delete=.*&name_regex_keep=[", "name_regex_keep"),
        ("name_regex_delete=.*&keep_n=two", "keep_n"),
        ("name_regex_delete=.*&older_than=soon", "older_than"),
        ("name_regex_delete=.*&older_than=30", "older_than"),
        ("name_regex_delete=.*&dry_run=maybe", "dry_run"),
    ] {
        let r = app.bulk(&url, query, DEVELOPER).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}: {}", r.text());
        assert!(r.message().contains(param), "{query}: {}", r.message());
    }

    // Each parameter, dry: nothing is deleted.
    let dry = |q: &str| format!("dry_run=true&{q}");
    let cases: [(&str, &[&str]); 7] = [
        // Everything but latest.
        (
            "name_regex_delete=.*",
            &[
                "build-1", "build-2", "build-3", "build-4", "build-5", "build-6", "main",
                "stable-1",
            ],
        ),
        // The deprecated name, anchored at both ends.
        ("name_regex=build-[1-3]", &["build-1", "build-2", "build-3"]),
        ("name_regex_delete=build", &[]),
        // keep_n keeps the newest candidates.
        (
            "name_regex_delete=.*&keep_n=2",
            &[
                "build-3", "build-4", "build-5", "build-6", "main", "stable-1",
            ],
        ),
        // The keep regex wins, and does not use up keep_n.
        (
            "name_regex_delete=.*&name_regex_keep=main|stable-.*&keep_n=2",
            &["build-3", "build-4", "build-5", "build-6"],
        ),
        // older_than: only tags strictly older.
        ("name_regex_delete=.*&older_than=7d", &["main", "stable-1"]),
        // All four.
        (
            "name_regex_delete=build-.*|main&name_regex_keep=build-6&keep_n=2&older_than=4days",
            &["build-4", "build-5", "main"],
        ),
    ];
    for (query, want) in cases {
        let r = app.bulk(&url, &dry(query), DEVELOPER).await;
        assert_eq!(deleted(&r), want, "{query}");
        let report = r.json();
        assert_eq!(report["name"], repo);
        assert_eq!(
            report["tagsKept"].as_u64().unwrap() + want.len() as u64,
            9,
            "{query}: {report}"
        );
        assert_eq!(report["keptByReason"]["latest"], 1, "{query}: {report}");
    }
    assert_eq!(
        app.tags_list(repo).await,
        everything,
        "dry runs delete nothing"
    );

    // A dry run and the real run report the same; then the tags are gone.
    let q = "name_regex_delete=build-.*|main&name_regex_keep=build-6&keep_n=2&older_than=4 days";
    let would = app.bulk(&url, &dry(q), DEVELOPER).await.json();
    let did = app.bulk(&url, q, DEVELOPER).await.json();
    assert_eq!(would, did);
    assert_eq!(
        app.tags_list(repo).await,
        [
            "build-1", "build-2", "build-3", "build-6", "latest", "stable-1"
        ]
    );

    // Parameters in a JSON body, then in a form body.
    let r = app
        .call(
            Method::DELETE,
            &url,
            As::Basic(DEVELOPER),
            Some("application/json"),
            serde_json::to_vec(
                &json!({"name_regex_delete": "build-.*", "keep_n": 1, "older_than": "3d"}),
            )
            .unwrap(),
        )
        .await;
    assert_eq!(deleted(&r), ["build-3", "build-6"]);
    let r = app
        .call(
            Method::DELETE,
            &url,
            As::Basic(DEVELOPER),
            Some("application/x-www-form-urlencoded"),
            b"name_regex_delete=stable-.%2A".to_vec(),
        )
        .await;
    assert_eq!(deleted(&r), ["stable-1"]);

    // latest survives everything.
    let r = app
        .bulk(&url, "name_regex_delete=.*&keep_n=0", DEVELOPER)
        .await;
    assert_eq!(deleted(&r), ["build-1", "build-2"]);
    assert_eq!(app.tags_list(repo).await, ["latest"]);
    let r = app.bulk(&url, "name_regex_delete=latest", DEVELOPER).await;
    assert_eq!(deleted(&r), Vec::<String>::new());
    assert_eq!(app.tags_list(repo).await, ["latest"]);

    // Who may not.
    let r = app.bulk(&url, "name_regex_delete=.*", REPORTER).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = app
        .api(Method::DELETE, &format!("{url}?name_regex_delete=.*"), None)
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn protected_tags() {
    let app = app().await;
    let repo = "g/app/prot";
    // `^v\d+`: push needs Maintainer, delete needs Owner.
    let (_, r) = app
        .try_push_image(DEVELOPER, repo, "dev-v1", Some("v1"), &[&layer(1, 10)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], "DENIED");
    app.push_image(MAINTAINER, repo, "v1", &[&layer(1, 10)])
        .await;
    app.push_image(MAINTAINER, repo, "dev", &[&layer(2, 10)])
        .await;
    let url = app.tags_url("g/app", repo).await;

    // Deleting it: not by a maintainer, through either API.
    let token = app
        .token(Some(MAINTAINER), &format!("repository:{repo}:delete"))
        .await;
    let r = app
        .call(
            Method::DELETE,
            &format!("/v2/{repo}/manifests/v1"),
            As::Bearer(&token),
            None,
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    for who in [DEVELOPER, MAINTAINER] {
        let r = app
            .api(Method::DELETE, &format!("{url}/v1"), Some(who))
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        assert!(r.message().contains("protected"), "{}", r.message());
    }
    // A maintainer's bulk delete keeps it (and says why); the owner's does not.
    let r = app
        .bulk(&url, "name_regex_delete=.*&dry_run=true", MAINTAINER)
        .await;
    assert_eq!(deleted(&r), ["dev"]);
    assert_eq!(r.json()["keptByReason"], json!({"protected": 1}));
    let r = app
        .bulk(&url, "name_regex_delete=.*&dry_run=true", OWNER)
        .await;
    assert_eq!(deleted(&r), ["dev", "v1"]);
    // The owner may delete it by tag.
    let r = app
        .api(Method::DELETE, &format!("{url}/v1"), Some(OWNER))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(app.tags_list(repo).await, ["dev"]);
}

#[tokio::test]
async fn immutable_tags() {
    let app = app().await;
    let repo = "g/app/imm";
    let m1 = app
        .push_image(DEVELOPER, repo, "release-1", &[&layer(1, 10)])
        .await;
    let m2 = app
        .push_image(DEVELOPER, repo, "other", &[&layer(2, 10)])
        .await;
    // Pushing the same manifest again is fine; another one is refused.
    let r = app
        .put_manifest(DEVELOPER, repo, "release-1", OCI_MANIFEST, &m1.payload)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    for who in [DEVELOPER, ADMIN] {
        let r = app
            .put_manifest(who, repo, "release-1", OCI_MANIFEST, &m2.payload)
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "DENIED");
    }
    // Not deleted by tag nor by digest on the data plane, not even by the admin.
    let token = app
        .token(Some(ADMIN), &format!("repository:{repo}:pull,delete"))
        .await;
    for reference in ["release-1", m1.digest.as_str()] {
        let r = app
            .call(
                Method::DELETE,
                &format!("/v2/{repo}/manifests/{reference}"),
                As::Bearer(&token),
                None,
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{reference}");
        assert_eq!(r.json()["errors"][0]["code"], "DENIED");
    }
    // Nor through the management API: by tag, in bulk, with its repository.
    let url = app.tags_url("g/app", repo).await;
    let r = app
        .api(Method::DELETE, &format!("{url}/release-1"), Some(ADMIN))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.message().contains("immutable"), "{}", r.message());
    let r = app.bulk(&url, "name_regex_delete=.*", ADMIN).await;
    assert_eq!(deleted(&r), ["other"]);
    assert_eq!(r.json()["keptByReason"], json!({"immutable": 1}));
    let id = app.repo_id("g/app", repo).await;
    let r = app
        .api(
            Method::DELETE,
            &format!("{}/registry/repositories/{id}", project_url("g/app")),
            Some(ADMIN),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.message().contains("immutable"), "{}", r.message());
    assert_eq!(app.tags_list(repo).await, ["release-1"]);
}

#[tokio::test]
async fn anonymous_callers_see_public_projects_only() {
    let app = app().await;
    app.push_image(OWNER, "pub/site", "v1", &[&layer(1, 10)])
        .await;
    app.push_image(OWNER, "g/app/web", "a", &[&layer(2, 10)])
        .await;
    let r = app
        .api(
            Method::GET,
            &format!("{}/registry/repositories", project_url("pub/site")),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()[0]["path"], "pub/site");
    let id = r.json()[0]["id"].as_i64().unwrap();
    let tags = format!(
        "{}/registry/repositories/{id}/tags",
        project_url("pub/site")
    );
    let r = app.api(Method::GET, &tags, None).await;
    assert_eq!(names(&r.json()), ["v1"]);
    // No deleting.
    for uri in [format!("{tags}/v1"), format!("{tags}?name_regex_delete=.*")] {
        let r = app.api(Method::DELETE, &uri, None).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{uri}");
        assert!(!r.header("www-authenticate").is_empty());
    }
    assert_eq!(app.tags_list("pub/site").await, ["v1"]);
    // A private project: log in first. An authenticated outsider sees nothing.
    let private = format!("{}/registry/repositories", project_url("g/app"));
    let r = app.api(Method::GET, &private, None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").contains("Bearer realm="));
    // Issue 12, 7(ii): a project the caller may not see answers as one that
    // does not exist (it was 200 `[]`, telling that it exists).
    let r = app.api(Method::GET, &private, Some(OUTSIDER)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    assert_eq!(r.message(), "project g/app not found");
    let missing = app
        .api(
            Method::GET,
            &format!("{}/registry/repositories", project_url("g/nope")),
            Some(OUTSIDER),
        )
        .await;
    assert_eq!(
        (missing.status, missing.message()),
        (
            StatusCode::NOT_FOUND,
            "project g/nope not found".to_string()
        )
    );
    // A JWT lists what its claims grant, no more.
    let token = app.token(Some(OWNER), "repository:g/app/web:pull").await;
    app.push_image(OWNER, "g/app", "x", &[&layer(3, 10)]).await;
    let r = app
        .call(Method::GET, &private, As::Bearer(&token), None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(names(&r.json()), ["web"]);
}

#[tokio::test]
async fn cleanup_runs_and_what_they_make_reclaimable() {
    let app = app().await;
    let (shared, web_only) = (layer(50, 5000), layer(51, 700));
    // g/app: old tags to clean up, and others kept by rules or because they
    // run; all share one big layer.
    let old = [
        ("old-1", 3000usize),
        ("old-2", 2000),
        ("old-3", 1000),
        ("running", 800),
        ("v1", 600),
        ("release-1", 400),
        ("keep-me", 300),
    ];
    let mut images = BTreeMap::new();
    for (i, (tag, size)) in old.iter().enumerate() {
        let own = layer(i as u8, *size);
        let creds = if *tag == "v1" { MAINTAINER } else { OWNER };
        images.insert(
            *tag,
            app.push_image(creds, "g/app", tag, &[&shared, &own]).await,
        );
    }
    // An index whose child (pushed by digest only) runs.
    let (child, r) = app
        .try_push_image(OWNER, "g/app", "child", None, &[&layer(60, 900)])
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let multi = app.push_index(OWNER, "g/app", "multi", &[&child]).await;
    // g/app/web: an old tag, and a new one sharing a layer with it.
    let web_old = app
        .push_image(OWNER, "g/app/web", "old-web", &[&web_only, &layer(70, 222)])
        .await;
    app.push_image(OWNER, "g/app/web", "new-web", &[&web_only])
        .await;
    let now = now_ms();
    for tag in old.iter().map(|(t, _)| *t).chain(["multi"]) {
        app.set_published("g/app", tag, now - 40 * DAY_MS).await;
    }
    app.set_published("g/app/web", "old-web", now - 40 * DAY_MS)
        .await;
    assert_eq!(app.sweep_all().await, 0, "nothing is garbage yet");

    let request = |policy: Value| {
        serde_json::to_vec(&json!({
            "policy": policy,
            "inUseDigests": [images["running"].digest, child.digest],
        }))
        .unwrap()
    };
    let policy = |dry_run: bool| {
        request(
            json!({"nameRegex": ".*", "nameRegexKeep": "keep-.*", "olderThan": "30d", "dryRun": dry_run}),
        )
    };
    // The admin only (the operator signs admin tokens).
    for (who, status) in [
        (As::Anonymous, StatusCode::UNAUTHORIZED),
        (As::Basic(OWNER), StatusCode::FORBIDDEN),
    ] {
        let r = app.post_cleanup("g/app", who, policy(true)).await;
        assert_eq!(r.status, status, "{}", r.text());
        assert!(!r.message().is_empty());
    }
    let admin_jwt = app.token(Some(ADMIN), "").await;
    let admin = As::Bearer(&admin_jwt);
    let r = app
        .post_cleanup(
            "g/app",
            admin,
            request(json!({"nameRegex": ".*", "keepN": 3})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.message().contains("keepN"), "{}", r.message());
    let r = app.post_cleanup("g/app", admin, b"{}".to_vec()).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = app.post_cleanup("no/such", admin, policy(true)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // What dies: old-1..3 and old-web with what only they use; the shared
    // layer stays (kept tags use it), web_only too (new-web uses it).
    let mut expected = web_old.payload.len() as u64 + 222 + web_old.blobs[&web_old.config];
    for tag in ["old-1", "old-2", "old-3"] {
        let i = &images[tag];
        expected += i.payload.len() as u64 + i.blobs.values().sum::<u64>() - 5000;
    }

    let dry = app.post_cleanup("g/app", admin, policy(true)).await;
    assert_eq!(dry.status, StatusCode::OK, "{}", dry.text());
    let report = dry.json();
    assert_eq!(report["dryRun"], true);
    let repos = report["repositories"].as_array().unwrap();
    assert_eq!(repos.len(), 2);
    assert_eq!(repos[0]["name"], "g/app");
    assert_eq!(
        strings(&repos[0]["tagsDeleted"]),
        ["old-1", "old-2", "old-3"]
    );
    assert_eq!(
        repos[0]["keptByReason"],
        json!({"in_use": 2, "matched_keep": 1, "protected": 1, "immutable": 1})
    );
    assert_eq!(repos[1]["name"], "g/app/web");
    assert_eq!(strings(&repos[1]["tagsDeleted"]), ["old-web"]);
    assert_eq!(repos[1]["keptByReason"], json!({"too_new": 1}));
    assert_eq!(report["tagsDeleted"], 4);
    assert_eq!(report["bytesReclaimable"], expected);
    assert_eq!(
        repos[0]["bytesReclaimable"].as_u64().unwrap()
            + repos[1]["bytesReclaimable"].as_u64().unwrap(),
        expected
    );
    assert_eq!(
        app.tags_list("g/app").await.len(),
        8,
        "a dry run deletes nothing"
    );
    assert_eq!(app.sweep_all().await, 0);

    // The real run reports the same, and garbage collection then frees
    // exactly bytesReclaimable.
    let real = app.post_cleanup("g/app", admin, policy(false)).await.json();
    let mut as_dry = real.clone();
    as_dry["dryRun"] = json!(true);
    assert_eq!(as_dry, report);
    assert_eq!(
        app.tags_list("g/app").await,
        ["keep-me", "multi", "release-1", "running", "v1"]
    );
    assert_eq!(app.tags_list("g/app/web").await, ["new-web"]);
    assert_eq!(app.sweep_all().await as u64, expected);

    // keepInUse off: what runs is no longer kept, and the index takes its
    // child with it.
    let r = app
        .post_cleanup(
            "g/app",
            admin,
            request(json!({"nameRegex": "running|multi", "keepInUse": false})),
        )
        .await
        .json();
    assert_eq!(
        strings(&r["repositories"][0]["tagsDeleted"]),
        ["multi", "running"]
    );
    let running = &images["running"];
    let freed = (running.payload.len() + multi.payload.len() + child.payload.len()) as u64
        + (running.blobs.values().sum::<u64>() - 5000)
        + child.blobs.values().sum::<u64>();
    assert_eq!(r["bytesReclaimable"], freed);
    assert_eq!(app.sweep_all().await as u64, freed);
    assert_eq!(app.tags_list("g/app").await, ["keep-me", "release-1", "v1"]);
}

#[tokio::test]
async fn without_authentication_a_project_is_a_name_prefix() {
    let app = App(Harness::open().await);
    // Three repositories with the same image (one config blob, no layers).
    let config_blob = layer(1, 20);
    let payload = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": Digest::sha256_of(&config_blob).to_string(), "size": 20},
        "layers": []}))
    .unwrap();
    for (repo, tag) in [("team/a", "x"), ("team/b/c", "y"), ("teams/d", "z")] {
        app.push_blob("unused", repo, &config_blob).await;
        let r = app
            .call(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{tag}"),
                As::Anonymous,
                Some(OCI_MANIFEST),
                payload.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
    }
    let r = app
        .call(
            Method::GET,
            &format!("{}/registry/repositories", project_url("team")),
            As::Anonymous,
            None,
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(names(&r.json()), ["a", "b/c"]);
    // In process, as the standalone runner calls it.
    let request: berth::lifecycle::report::CleanupRequest =
        serde_json::from_value(json!({"policy": {"nameRegex": ".*"}})).unwrap();
    let report = berth::registry::cleanup::run_project(&app.registry, "team", &request, now_ms())
        .await
        .unwrap();
    let deleted: BTreeSet<(String, Vec<String>)> = report
        .repositories
        .iter()
        .map(|r| (r.name.clone(), r.tags_deleted.clone()))
        .collect();
    assert_eq!(
        deleted,
        BTreeSet::from([
            ("team/a".to_string(), vec!["x".to_string()]),
            ("team/b/c".to_string(), vec!["y".to_string()]),
        ])
    );
    assert!(!report.dry_run);
    assert_eq!(report.tags_deleted, 2);
    // Two manifests die; their config blob lives on in teams/d.
    assert_eq!(report.bytes_reclaimable, 2 * payload.len() as u64);
    let r = app
        .call(
            Method::GET,
            "/v2/teams/d/tags/list",
            As::Anonymous,
            None,
            vec![],
        )
        .await;
    assert_eq!(strings(&r.json()["tags"]), ["z"]);
}

/// A Developer cannot delete an immutable tag, nor empty it from beneath:
/// the child manifest of the index it names and the layers that child
/// references are refused by digest (409 DENIED, naming the tag), for the
/// admin too. Issue 12, finding 4.
#[tokio::test]
async fn what_an_immutable_tag_holds_is_not_deleted_from_beneath() {
    let app = app().await;
    let repo = "g/app/held";
    let (child, r) = app
        .try_push_image(DEVELOPER, repo, "held-child", None, &[&layer(7, 10)])
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text());
    let index = app
        .push_index(DEVELOPER, repo, "release-1", &[&child])
        .await;
    let layer_digest = child
        .blobs
        .keys()
        .find(|d| **d != child.config)
        .unwrap()
        .clone();
    for who in [DEVELOPER, ADMIN] {
        let token = app
            .token(Some(who), &format!("repository:{repo}:pull,delete"))
            .await;
        let delete = |what: String| {
            let (app, token) = (&app, &token);
            async move {
                app.call(
                    Method::DELETE,
                    &format!("/v2/{repo}/{what}"),
                    As::Bearer(token),
                    None,
                    vec![],
                )
                .await
            }
        };
        // The tag itself (and its index by digest): the immutable rule.
        for reference in ["release-1", index.digest.as_str()] {
            let r = delete(format!("manifests/{reference}")).await;
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{reference}: {}", r.text());
        }
        // What it holds: the references.
        let r = delete(format!("manifests/{}", child.digest)).await;
        assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
        assert_eq!(r.json()["errors"][0]["code"], "DENIED");
        assert_eq!(
            r.json()["errors"][0]["message"],
            format!(
                "manifest {} is referenced by index {} (tag release-1); delete the index first",
                child.digest, index.digest
            )
        );
        for blob in [&layer_digest, &child.config] {
            let r = delete(format!("blobs/{blob}")).await;
            assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
            assert_eq!(
                r.json()["errors"][0]["message"],
                format!(
                    "blob {blob} is referenced by manifest {} (tag release-1); delete the manifest first",
                    child.digest
                )
            );
        }
    }
    // All of it still pulls.
    let token = app
        .token(Some(DEVELOPER), &format!("repository:{repo}:pull"))
        .await;
    for what in [
        "manifests/release-1".to_string(),
        format!("manifests/{}", child.digest),
        format!("blobs/{layer_digest}"),
    ] {
        let r = app
            .call(
                Method::GET,
                &format!("/v2/{repo}/{what}"),
                As::Bearer(&token),
                None,
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{what}");
    }
}

/// A repository pushed before its project was declared, deeper below it
/// than a project allows (issue 12, finding 8b): the depth rule stops new
/// pushes, but the admin still finds it in the catalog and the management
/// API, reads and deletes it, and fsck warns about it (without failing).
#[tokio::test]
async fn a_repository_deeper_than_its_later_project_allows_stays_the_admins() {
    let app = app().await;
    let repo = "late/a/b/c/img";
    // In no project yet: the admin's to push.
    app.push_image(ADMIN, repo, "v1", &[&layer(5, 10)]).await;
    let manifests = app.root().join("manifests");
    let mut yaml = std::fs::read_to_string(manifests.join("projects.yaml")).unwrap();
    yaml.push_str(
        "\n---\napiVersion: berth.dev/v1alpha1\nkind: Project\nmetadata: {name: late}\nspec:\n  path: late\n  visibility: private\n  members: [{user: owner, role: Owner}]\n",
    );
    std::fs::write(manifests.join("projects.yaml"), yaml).unwrap();
    app.registry.auth.as_ref().unwrap().reload().unwrap();

    // New pushes: refused by the depth rule, the admin's too.
    let token = app
        .token(Some(ADMIN), &format!("repository:{repo}:pull,push"))
        .await;
    let r = app
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            As::Bearer(&token),
            None,
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(r.json()["errors"][0]["code"], "NAME_INVALID");
    // The project's members gain nothing on it.
    let token = app
        .token(Some(OWNER), &format!("repository:{repo}:pull"))
        .await;
    let r = app
        .call(
            Method::GET,
            &format!("/v2/{repo}/tags/list"),
            As::Bearer(&token),
            None,
            vec![],
        )
        .await;
    assert_eq!(
        r.json()["errors"][0]["code"],
        "NAME_INVALID",
        "{}",
        r.text()
    );

    // The admin: catalog, tags, the management API.
    async fn catalog(app: &App) -> Vec<String> {
        let token = app.token(Some(ADMIN), "registry:catalog:*").await;
        let r = app
            .call(
                Method::GET,
                "/v2/_catalog",
                As::Bearer(&token),
                None,
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        strings(&r.json()["repositories"])
    }
    assert!(catalog(&app).await.contains(&repo.to_string()));
    assert_eq!(app.tags_list(repo).await, ["v1"]);
    let url = app.tags_url("late", repo).await;
    let r = app.get_ok(&url, ADMIN).await;
    assert_eq!(names(&r.json()), ["v1"]);

    // fsck: a warning naming the rule, no problem.
    let data = app.root().join("data");
    let projects =
        berth::auth::AccessModel::new(berth::auth::directory::load_dir(&manifests).unwrap(), None);
    let report = berth::fsck::check_with(
        &data,
        &crate::common::database_config(&data).await,
        false,
        Some(&projects),
        &|_| {},
    )
    .await
    .unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        report.warnings,
        [berth::fsck::Warning::NameBreaksRules {
            repository: repo.into(),
            rule: "4 levels below project late; at most 2 are allowed".into(),
        }]
    );

    // And deletes it.
    let id = app.repo_id("late", repo).await;
    let r = app
        .api(
            Method::DELETE,
            &format!("{}/registry/repositories/{id}", project_url("late")),
            Some(ADMIN),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert!(!catalog(&app).await.contains(&repo.to_string()));
    let report = berth::fsck::check_with(
        &data,
        &crate::common::database_config(&data).await,
        false,
        Some(&projects),
        &|_| {},
    )
    .await
    .unwrap();
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
}
