//! The web UI (`/ui/`), in process, over the HTML it serves: who sees which
//! projects and controls, sign-in sessions and their cookies, CSRF refusals,
//! deletes with confirmation checked against the registry API, tag lists
//! (search, sort, kind, pages) and tag details. Browser behaviour (clicks,
//! copy buttons, narrow screens) is tested with Playwright in `e2e/ui.sh`.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};

use berth::oci::Digest;

use crate::common::app::{App as Harness, As, HOST, Reply};
use crate::common::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

const MANIFESTS: &str = r#"
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: public}
spec:
  path: demo/public
  visibility: public
  members:
    - {user: alice, role: Developer}
  protectedTags:
    - {pattern: '^stable$', minimumAccessLevelForPush: Maintainer, minimumAccessLevelForDelete: Owner}
---
apiVersion: berth.dev/v1alpha1
kind: Project
metadata: {name: private}
spec:
  path: demo/private
  visibility: private
  members:
    - {user: alice, role: Developer}
    - {user: bob, role: Reporter}
"#;

/// The harness's registry with the calls of this area: pages as
/// [`Page`]s, registry API calls as the admin.
struct App(Harness);

impl std::ops::Deref for App {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.0
    }
}

/// A reply read as an HTML page: every header in order, the body as text.
struct Page {
    status: StatusCode,
    headers: Vec<(String, String)>,
    body: String,
}

impl From<Reply> for Page {
    fn from(r: Reply) -> Page {
        Page {
            status: r.status,
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                .collect(),
            body: r.text(),
        }
    }
}

impl Page {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn location(&self) -> &str {
        self.header("location").first().copied().unwrap_or("")
    }

    /// The page's CSRF token (every page has one, in the sign-out or
    /// sign-in form or a delete form).
    fn csrf(&self) -> String {
        let re = regex::Regex::new(r#"name="csrf" value="([^"]*)""#).unwrap();
        re.captures(&self.body)
            .map(|c| c[1].to_string())
            .unwrap_or_default()
    }

    /// The `data-tag` of each row of a tag table, in order.
    fn tag_rows(&self) -> Vec<String> {
        let re = regex::Regex::new(r#"<tr data-tag="([^"]*)""#).unwrap();
        re.captures_iter(&self.body)
            .map(|c| c[1].to_string())
            .collect()
    }
}

/// A browser: its cookies, and the pages it asks for.
#[derive(Default, Clone)]
struct Browser {
    cookies: Vec<(String, String)>,
    origin: Option<String>,
}

impl Browser {
    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn absorb(&mut self, reply: &Page) {
        for set in reply.header("set-cookie") {
            let pair = set.split(';').next().unwrap_or_default();
            let (k, v) = pair.split_once('=').unwrap();
            self.cookies.retain(|(name, _)| name != k);
            if !set.contains("Max-Age=0") {
                self.cookies.push((k.to_string(), v.to_string()));
            }
        }
    }

    async fn send(&mut self, app: &App, method: Method, uri: &str, form: Option<&str>) -> Page {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", HOST);
        if !self.cookies.is_empty() {
            req = req.header("cookie", self.cookie_header());
        }
        if let Some(o) = &self.origin {
            req = req.header("origin", o);
        }
        let body = match form {
            Some(f) => {
                req = req.header("content-type", "application/x-www-form-urlencoded");
                Body::from(f.to_string())
            }
            None => Body::empty(),
        };
        let reply = app.send(req.body(body).unwrap()).await;
        self.absorb(&reply);
        reply
    }

    async fn get(&mut self, app: &App, uri: &str) -> Page {
        self.send(app, Method::GET, uri, None).await
    }

    async fn get_ok(&mut self, app: &App, uri: &str) -> Page {
        let r = self.get(app, uri).await;
        assert_eq!(r.status, StatusCode::OK, "GET {uri}: {}", r.body);
        r
    }

    async fn post(&mut self, app: &App, uri: &str, form: &[(&str, &str)]) -> Page {
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in form {
            s.append_pair(k, v);
        }
        self.send(app, Method::POST, uri, Some(&s.finish())).await
    }

    async fn sign_in(&mut self, app: &App, user: &str, token: &str) -> Page {
        let page = self.get_ok(app, "/ui/login?next=/ui/").await;
        self.post(
            app,
            "/ui/login",
            &[
                ("csrf", &page.csrf()),
                ("user", user),
                ("token", token),
                ("next", "/ui/"),
            ],
        )
        .await
    }
}

async fn app() -> App {
    let mut yaml = MANIFESTS.to_string();
    for user in ["alice", "bob"] {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {user}-pat\n  labels: {{berth.dev/user: {user}}}\nstringData: {{token: {user}-secret}}\n"
        ));
    }
    App(Harness::setup()
        .manifests(yaml)
        .admin_secret("admin-secret")
        .open()
        .await)
}

impl App {
    /// A registry API call as the admin (Basic credentials for a token).
    async fn admin(&self, method: Method, uri: &str, ct: Option<&str>, body: Vec<u8>) -> Page {
        let repo = uri
            .strip_prefix("/v2/")
            .and_then(|r| {
                ["/blobs/", "/manifests/", "/tags/", "/referrers/"]
                    .iter()
                    .find_map(|m| r.split_once(m).map(|(n, _)| n))
            })
            .unwrap_or_default();
        let token = self
            .0
            .token(
                As::Basic(("admin", "admin-secret")),
                &format!("repository:{repo}:pull,push,delete"),
            )
            .await
            .unwrap();
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", HOST)
            .header("authorization", format!("Bearer {token}"));
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    async fn send(&self, req: Request<Body>) -> Page {
        self.0.send(req).await.into()
    }

    async fn blob(&self, repo: &str, data: &[u8]) -> Value {
        let digest = Digest::sha256_of(data).to_string();
        let r = self
            .admin(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                None,
                data.to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        json!({"digest": digest, "size": data.len()})
    }

    async fn manifest(&self, repo: &str, reference: &str, media_type: &str, m: &Value) -> String {
        let payload = serde_json::to_vec(m).unwrap();
        let r = self
            .admin(
                Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
                Some(media_type),
                payload.clone(),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        Digest::sha256_of(&payload).to_string()
    }

    /// An image with a config naming `name` and one layer of `size` bytes.
    async fn image(&self, repo: &str, tag: &str, name: &str, size: usize) -> String {
        let mut config = self
            .blob(
                repo,
                &serde_json::to_vec(&json!({"architecture": "amd64", "os": "linux", "name": name}))
                    .unwrap(),
            )
            .await;
        config["mediaType"] = json!(OCI_CONFIG);
        let mut layer = self.blob(repo, &vec![name.len() as u8; size]).await;
        layer["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar");
        let m = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": [layer]});
        self.manifest(repo, tag, OCI_MANIFEST, &m).await
    }

    async fn tags(&self, repo: &str) -> Vec<String> {
        let r = self
            .admin(Method::GET, &format!("/v2/{repo}/tags/list"), None, vec![])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        v["tags"]
            .as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    async fn repo_id(&self, repo: &str) -> i64 {
        sqlx::query_scalar("SELECT id FROM repositories WHERE name = $1")
            .bind(repo)
            .fetch_one(&self.db)
            .await
            .unwrap()
    }
}

fn repo_url(project: &str, id: i64) -> String {
    format!(
        "/ui/projects/{}/repositories/{id}",
        project.replace('/', "%2F")
    )
}

#[tokio::test]
async fn anonymous_visitors_see_public_projects_without_delete_controls() {
    let app = app().await;
    app.image("demo/public/web", "v1", "web", 100).await;
    app.image("demo/private/api", "v1", "api", 100).await;
    let mut anon = Browser::default();
    let root = anon.get(&app, "/").await;
    assert_eq!(
        (root.status, root.location()),
        (StatusCode::SEE_OTHER, "/ui/")
    );
    let home = anon.get_ok(&app, "/ui/").await;
    assert!(home.body.contains(">demo/public</a>"), "{}", home.body);
    assert!(!home.body.contains("demo/private"), "{}", home.body);
    assert!(home.body.contains(">Sign in</a>"));
    // Security headers on every page.
    let csp = home.header("content-security-policy").join("");
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
    assert_eq!(home.header("cache-control"), ["no-store"]);

    let web = repo_url("demo/public", app.repo_id("demo/public/web").await);
    let page = anon.get_ok(&app, &web).await;
    assert_eq!(page.tag_rows(), ["v1"]);
    for control in [
        "name=\"tag\"",
        "Delete selected",
        "Delete repository",
        "aria-label=\"Delete tag",
    ] {
        assert!(!page.body.contains(control), "{control} shown to anonymous");
    }
    assert!(
        page.body
            .contains(&format!("docker pull {HOST}/demo/public/web:v1"))
    );

    let private = anon.get(&app, "/ui/projects/demo%2Fprivate").await;
    assert_eq!(private.status, StatusCode::NOT_FOUND);
    assert!(private.body.contains("Sign in"), "{}", private.body);
    let api = repo_url("demo/private", app.repo_id("demo/private/api").await);
    assert_eq!(anon.get(&app, &api).await.status, StatusCode::NOT_FOUND);
    // The private repository's id under the public project: no.
    let smuggled = repo_url("demo/public", app.repo_id("demo/private/api").await);
    assert_eq!(
        anon.get(&app, &smuggled).await.status,
        StatusCode::NOT_FOUND
    );
    // Asking the delete confirmation directly is refused too.
    let confirm = anon.get(&app, &format!("{web}/tags/delete?tag=v1")).await;
    assert_eq!(confirm.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn sign_in_sessions_and_their_cookies() {
    let app = app().await;
    let mut b = Browser::default();
    let login = b.get_ok(&app, "/ui/login").await;
    let anchor = login.header("set-cookie").join(" ");
    assert!(
        anchor.contains("berth_csrf=")
            && anchor.contains("HttpOnly")
            && anchor.contains("SameSite=Strict"),
        "{anchor}"
    );

    // Wrong token: 401 and an alert; no session.
    let r = b
        .post(
            &app,
            "/ui/login",
            &[
                ("csrf", &login.csrf()),
                ("user", "alice"),
                ("token", "nope"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.body.contains("role=\"alert\"") && r.body.contains("Invalid user name or token"));
    assert!(
        r.header("set-cookie")
            .iter()
            .all(|c| !c.starts_with("berth_session"))
    );

    // Without the CSRF token: refused, even with the right token.
    let r = b
        .post(
            &app,
            "/ui/login",
            &[("user", "alice"), ("token", "alice-secret")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("CSRF"));

    let r = b.sign_in(&app, "alice", "alice-secret").await;
    assert_eq!((r.status, r.location()), (StatusCode::SEE_OTHER, "/ui/"));
    let cookie = r.header("set-cookie").join(" ");
    for attribute in [
        "berth_session=",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/ui",
        "Max-Age=28800",
    ] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    let home = b.get_ok(&app, "/ui/").await;
    assert!(home.body.contains("Signed in as <strong>alice</strong>"));
    assert!(home.body.contains(">demo/private</a>"), "{}", home.body);

    // A foreign `next` is not followed.
    let mut c = Browser::default();
    let page = c.get_ok(&app, "/ui/login").await;
    let r = c
        .post(
            &app,
            "/ui/login",
            &[
                ("csrf", &page.csrf()),
                ("user", "bob"),
                ("token", "bob-secret"),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(r.location(), "/ui/");

    // Sign out: the session is gone server-side, not only the cookie.
    let stolen = b.clone();
    let r = b.post(&app, "/ui/logout", &[("csrf", &home.csrf())]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert!(r.header("set-cookie").join(" ").contains("Max-Age=0"));
    let mut replay = stolen;
    let home = replay.get_ok(&app, "/ui/").await;
    assert!(
        !home.body.contains("Signed in as"),
        "the old cookie still works"
    );
    assert!(!home.body.contains("demo/private"));
}

#[tokio::test]
async fn deletes_need_confirmation_rights_and_the_csrf_token() {
    let app = app().await;
    for t in ["v1", "v2", "v3", "stable"] {
        app.image("demo/public/web", t, t, 50).await;
    }
    app.image("demo/private/api", "v1", "api", 50).await;
    let web = repo_url("demo/public", app.repo_id("demo/public/web").await);
    let mut alice = Browser::default();
    alice.sign_in(&app, "alice", "alice-secret").await;
    let list = alice
        .get_ok(&app, &format!("{web}?sort=name&order=desc"))
        .await;
    assert!(list.body.contains("aria-label=\"Select v2\""));
    // A delete link on each row, to the confirmation page, coming back to this view.
    assert!(
        list.body.contains("aria-label=\"Delete tag v2\""),
        "{}",
        list.body
    );
    let row_delete = regex::Regex::new(r#"href="([^"]*)" aria-label="Delete tag v3""#).unwrap();
    let href = row_delete.captures(&list.body).unwrap()[1].replace("&#38;", "&");
    let one = alice.get_ok(&app, &href).await;
    assert!(one.body.contains("<h1>Delete tag v3?</h1>"), "{}", one.body);
    assert!(
        one.body.contains("name=\"return\" value=\"order=desc\""),
        "{}",
        one.body
    );
    assert!(list.body.contains("Delete selected"));

    // The confirmation page lists the tags and deletes nothing.
    let confirm = alice
        .get_ok(
            &app,
            &format!("{web}/tags/delete?tag=v2&tag=v3&return=order%3Ddesc"),
        )
        .await;
    assert!(
        confirm.body.contains("<h1>Delete 2 tags?</h1>"),
        "{}",
        confirm.body
    );
    assert_eq!(
        app.tags("demo/public/web").await,
        ["stable", "v1", "v2", "v3"]
    );
    let csrf = confirm.csrf();
    let action = format!("{web}/tags/delete");

    // Forged: no token, a wrong token, another site's Origin.
    let r = alice.post(&app, &action, &[("tag", "v2")]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("CSRF"));
    let r = alice
        .post(&app, &action, &[("tag", "v2"), ("csrf", "forged")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let mut evil = alice.clone();
    evil.origin = Some("http://evil.example".into());
    let r = evil
        .post(&app, &action, &[("tag", "v2"), ("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Another browser's token does not fit this session.
    let mut other = Browser::default();
    let other_csrf = other.get_ok(&app, "/ui/login").await.csrf();
    let r = alice
        .post(&app, &action, &[("tag", "v2"), ("csrf", &other_csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        app.tags("demo/public/web").await,
        ["stable", "v1", "v2", "v3"]
    );

    // The real thing: back to the list as it was, with a notice.
    alice.origin = Some(format!("http://{HOST}"));
    let r = alice
        .post(
            &app,
            &action,
            &[
                ("tag", "v2"),
                ("tag", "v3"),
                ("csrf", &csrf),
                ("return", "order=desc"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(r.location(), format!("{web}?order=desc&deleted=2"));
    assert_eq!(app.tags("demo/public/web").await, ["stable", "v1"]);
    let after = alice.get_ok(&app, r.location()).await;
    assert!(
        after
            .body
            .contains("role=\"status\" class=\"notice\">Deleted 2 tags.")
    );
    assert_eq!(after.tag_rows(), ["v1", "stable"]);

    // A protected tag (delete needs Owner): refused with the rule's reason.
    let r = alice
        .post(&app, &action, &[("tag", "stable"), ("csrf", &csrf)])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.body.contains("protected"), "{}", r.body);
    assert_eq!(app.tags("demo/public/web").await, ["stable", "v1"]);

    // bob sees the private repository but may not delete: no controls,
    // and his valid token does not help.
    let api = repo_url("demo/private", app.repo_id("demo/private/api").await);
    let mut bob = Browser::default();
    bob.sign_in(&app, "bob", "bob-secret").await;
    let page = bob.get_ok(&app, &api).await;
    assert_eq!(page.tag_rows(), ["v1"]);
    assert!(!page.body.contains("Delete selected") && !page.body.contains("Delete repository"));
    let r = bob
        .post(
            &app,
            &format!("{api}/tags/delete"),
            &[("tag", "v1"), ("csrf", &page.csrf())],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = bob
        .post(&app, &format!("{api}/delete"), &[("csrf", &page.csrf())])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(app.tags("demo/private/api").await, ["v1"]);

    // Repository delete, confirmed.
    let confirm = alice.get_ok(&app, &format!("{api}/delete")).await;
    assert!(confirm.body.contains("Delete repository demo/private/api?"));
    let r = alice
        .post(&app, &format!("{api}/delete"), &[("csrf", &confirm.csrf())])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.body);
    assert_eq!(
        r.location(),
        "/ui/projects/demo%2Fprivate?deleted=repository"
    );
    let r = app
        .admin(Method::GET, "/v2/demo/private/api/tags/list", None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn tag_lists_search_sort_filter_and_page() {
    let app = app().await;
    let repo = "demo/public/web";
    app.image(repo, "small", "s", 10).await;
    let big = app.image(repo, "big", "b", 5000).await;
    app.image(repo, "medium", "m", 1000).await;
    for i in 1..=25 {
        app.image(repo, &format!("rc-{i:02}"), "s", 10).await;
    }
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": big, "size": 1, "platform": {"os": "linux", "architecture": "arm64"}}]});
    app.manifest(repo, "multi", OCI_INDEX, &index).await;
    let url = repo_url("demo/public", app.repo_id(repo).await);
    let mut b = Browser::default();

    let page = b.get_ok(&app, &format!("{url}?q=rc-1")).await;
    // A substring, case-sensitive: rc-01 does not contain "rc-1".
    let want: Vec<String> = (10..=19).map(|i| format!("rc-{i}")).collect();
    assert_eq!(page.tag_rows(), want);
    assert!(page.body.contains("10 tags match"));

    let page = b
        .get_ok(&app, &format!("{url}?sort=size&order=desc&per_page=50"))
        .await;
    // The index counts its payload on top of big's image.
    assert_eq!(page.tag_rows()[..3], ["multi", "big", "medium"]);
    let page = b.get_ok(&app, &format!("{url}?sort=name&order=desc")).await;
    assert_eq!(page.tag_rows()[0], "small");
    let page = b.get_ok(&app, &format!("{url}?kind=index")).await;
    assert_eq!(page.tag_rows(), ["multi"]);
    let page = b.get_ok(&app, &format!("{url}?kind=image&q=med")).await;
    assert_eq!(page.tag_rows(), ["medium"]);

    // 29 tags, 20 a page: two pages; links keep the view.
    let first = b.get_ok(&app, &format!("{url}?order=desc")).await;
    assert!(first.body.contains("Page 1 of 2"));
    assert_eq!(first.tag_rows().len(), 20);
    assert!(
        first
            .body
            .contains("href=\"/ui/projects/demo%2Fpublic/repositories/"),
        "{}",
        first.body
    );
    let next = regex::Regex::new(r#"href="([^"]*)" rel="next""#).unwrap();
    let href = next.captures(&first.body).unwrap()[1]
        .replace("&#38;", "&")
        .replace("&amp;", "&");
    assert!(href.ends_with("?order=desc&page=2"), "{href}");
    let second = b.get_ok(&app, &href).await;
    assert_eq!(second.tag_rows().len(), 9);
    assert!(
        second
            .tag_rows()
            .iter()
            .all(|t| !first.tag_rows().contains(t))
    );

    // Bad parameters are explained, not ignored.
    let bad = b.get(&app, &format!("{url}?sort=colour")).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.body.contains("sort must be"));

    // 10,000 more tags, inserted directly: counts and the last page are right.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < 9999)
         INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at, total_size)
         SELECT t.repository_id, 't' || {}, t.manifest_id, t.created_at, t.updated_at + i, t.total_size
           FROM k, tags t WHERE t.name = 'small'",
        crate::common::zero_padded("i", 5)
    )))
    .execute(&app.db)
    .await
    .unwrap();
    let started = std::time::Instant::now();
    let page = b.get_ok(&app, &format!("{url}?q=t0&page=500")).await;
    let last = b
        .get_ok(&app, &format!("{url}?sort=size&order=desc&page=200"))
        .await;
    eprintln!(
        "two tag pages over 10,029 tags took {:?}",
        started.elapsed()
    );
    assert!(page.body.contains("10000 tags match") && page.body.contains("Page 500 of 500"));
    let want: Vec<String> = (9980..10000).map(|i| format!("t{i:05}")).collect();
    assert_eq!(page.tag_rows(), want);
    assert_eq!(last.tag_rows().len(), 20);
}

#[tokio::test]
async fn tag_details_show_layers_platforms_and_referrers() {
    let app = app().await;
    let repo = "demo/public/web";
    let v1 = app.image(repo, "v1", "one", 300).await;
    let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": v1, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}}]});
    app.manifest(repo, "multi", OCI_INDEX, &index).await;
    let mut empty = app.blob(repo, b"{}").await;
    empty["mediaType"] = json!("application/vnd.oci.empty.v1+json");
    let signature = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature.v1", "config": empty, "layers": [empty],
        "subject": {"mediaType": OCI_MANIFEST, "digest": v1, "size": 1}});
    let sig = app.manifest(repo, "sig", OCI_MANIFEST, &signature).await;
    let url = repo_url("demo/public", app.repo_id(repo).await);
    let mut b = Browser::default();

    let page = b.get_ok(&app, &format!("{url}/tags/v1")).await;
    assert!(page.body.contains(&format!("<h1>{repo}:v1</h1>")));
    assert!(page.body.contains(&format!("<dd><code>{v1}</code></dd>")));
    assert!(page.body.contains("application/vnd.oci.image.layer.v1.tar"));
    assert!(page.body.contains("application/vnd.example.signature.v1"));
    assert!(page.body.contains(&sig[..19]), "the referrer's digest");
    assert!(
        page.body
            .contains(&format!("docker pull {HOST}/{repo}@{v1}"))
    );
    assert!(!page.body.contains("Delete tag"), "anonymous");

    let page = b.get_ok(&app, &format!("{url}/tags/multi")).await;
    assert!(page.body.contains("<h2 id=\"platforms\">Platforms</h2>"));
    assert!(page.body.contains("<td>linux/amd64</td>"));

    let page = b.get_ok(&app, &format!("{url}?kind=artifact")).await;
    assert_eq!(page.tag_rows(), ["sig"]);
    let missing = b.get(&app, &format!("{url}/tags/nope")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

/// Sorting by size over many tags on distinct manifests. 10,000 distinct
/// manifests are inserted directly (copies of one pushed image with other
/// digests, stored as a PUT stores them: with their total sizes); the page
/// must hold the biggest ones, and the time is printed (a figure for the
/// log, not a pass/fail criterion).
#[tokio::test]
async fn size_order_over_ten_thousand_distinct_manifests() {
    let app = app().await;
    let repo = "demo/public/web";
    app.image(repo, "seed", "seed", 100).await;
    app.image(repo, "huge", "huge", 50_000).await;
    let copies = |n: i64| {
        format!(
            "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < {n} - 1)
             INSERT INTO manifests (repository_id, digest, media_type, artifact_type, size,
                                    config_digest, subject_digest, annotations, payload, created_at,
                                    total_size)
             SELECT m.repository_id, 'sha256:' || {}, m.media_type, m.artifact_type,
                    m.size + i, m.config_digest, NULL, NULL, m.payload, m.created_at,
                    m.total_size + i
               FROM k, manifests m JOIN tags t ON t.manifest_id = m.id WHERE t.name = 'seed'",
            crate::common::zero_padded("i", 64)
        )
    };
    sqlx::query(sqlx::AssertSqlSafe(copies(10_000)))
        .execute(&app.db)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO manifest_blobs (manifest_id, digest)
         SELECT m.id, mb.digest FROM manifests m, manifest_blobs mb
          JOIN tags t ON t.manifest_id = mb.manifest_id
          WHERE t.name = 'seed' AND m.digest LIKE 'sha256:0000000000%'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tags (repository_id, name, manifest_id, created_at, updated_at, total_size)
         SELECT repository_id, 'c' || substr(digest, length(digest) - 4, 5), id, created_at,
                created_at, total_size
           FROM manifests WHERE digest LIKE 'sha256:0000000000%'",
    )
    .execute(&app.db)
    .await
    .unwrap();
    let url = repo_url("demo/public", app.repo_id(repo).await);
    let mut b = Browser::default();
    let started = std::time::Instant::now();
    let page = b
        .get_ok(&app, &format!("{url}?sort=size&order=desc&per_page=100"))
        .await;
    let took = started.elapsed();
    eprintln!("size-sorted page over 10,002 tags on distinct manifests took {took:?}");
    assert!(page.body.contains("10002 tags"), "count");
    let rows = page.tag_rows();
    assert_eq!(rows.len(), 100);
    // huge first; then the copies, each a byte bigger than the last.
    assert_eq!(rows[..3], ["huge", "c09999", "c09998"]);
}
