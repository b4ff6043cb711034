//! Authorisation through the real HTTP token flow (in process): the GitLab
//! visibility table row by row for pull and `_catalog`, push and delete by
//! role and token scope, and every way a credential or token can be wrong.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use serde_json::{Value, json};

use berth::oci::Digest;

use crate::common::OCI_MANIFEST;
use crate::common::app::{App, As, Reply};

const USERS: [&str; 6] = [
    "outsider",
    "guest",
    "reporter",
    "developer",
    "maintainer",
    "owner",
];
const ROLES: [&str; 5] = ["Guest", "Reporter", "Developer", "Maintainer", "Owner"];

fn project(path: &str, visibility: &str, level: &str, extra: &str) -> String {
    let members: Vec<String> = USERS[1..]
        .iter()
        .zip(ROLES)
        .map(|(u, r)| format!("    - {{user: {u}, role: {r}}}"))
        .collect();
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Project\nmetadata: {{name: x}}\nspec:\n  path: {path}\n  visibility: {visibility}\n  registryAccessLevel: {level}\n  members:\n{}\n{extra}---\n",
        members.join("\n")
    )
}

fn pat(user: &str, token: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {user}-{token}\n  labels: {{berth.dev/user: {user}}}\n  annotations: {{{annotations}}}\nstringData: {{token: {token}}}\n---\n"
    )
}

fn project_token(project: &str, name: &str, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  annotations: {{berth.dev/project: {project}, berth.dev/token: {name}}}\nstringData: {{token: {token}}}\n---\n"
    )
}

const VISIBILITIES: [&str; 3] = ["public", "internal", "private"];
const LEVELS: [&str; 3] = ["enabled", "private", "disabled"];

/// Projects of every visibility and access level, users of every role, and
/// their tokens.
fn matrix_manifests() -> String {
    let mut yaml = String::new();
    for v in VISIBILITIES {
        for l in LEVELS {
            yaml.push_str(&project(&format!("m/{v}-{l}"), v, l, ""));
        }
    }
    yaml.push_str(&project(
        "tok/app",
        "private",
        "enabled",
        "  deployTokens:\n    - {name: dep-ro, scopes: [read_registry]}\n    - {name: dep-rw, scopes: [read_registry, write_registry]}\n    - {name: dep-old, scopes: [read_registry], expiresAt: \"2001-01-01T00:00:00Z\"}\n  accessTokens:\n    - {name: bot-rep, role: Reporter, scopes: [read_registry, write_registry]}\n    - {name: bot-dev-ro, role: Developer, scopes: [read_registry]}\n    - {name: bot-dev, role: Developer, scopes: [read_registry, write_registry]}\n",
    ));
    for u in USERS {
        yaml.push_str(&pat(u, &format!("{u}-secret"), ""));
    }
    yaml.push_str(&pat(
        "owner",
        "owner-read-only",
        "berth.dev/scopes: read_registry",
    ));
    yaml.push_str(&pat(
        "owner",
        "owner-write-only",
        "berth.dev/scopes: write_registry",
    ));
    yaml.push_str(&pat(
        "owner",
        "owner-expired",
        "berth.dev/expires-at: \"2001-01-01T00:00:00Z\"",
    ));
    for (name, token) in [
        ("dep-ro", "dep-ro-secret"),
        ("dep-rw", "dep-rw-secret"),
        ("dep-old", "dep-old-secret"),
        ("bot-rep", "bot-rep-secret"),
        ("bot-dev-ro", "bot-dev-ro-secret"),
        ("bot-dev", "bot-dev-secret"),
    ] {
        yaml.push_str(&project_token("tok/app", name, token));
    }
    yaml
}

async fn app() -> App {
    let (app, admin) = App::setup()
        .manifests(matrix_manifests())
        .open_with_admin()
        .await;
    assert_eq!(
        admin, None,
        "identities are configured, so no admin token is made"
    );
    app
}

/// The calls of this area.
trait Calls {
    async fn with_token(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply;
    async fn push(&self, creds: (&str, &str), repo: &str, tag: &str) -> Reply;
    async fn pull_status(&self, creds: Option<(&str, &str)>, repo: &str) -> StatusCode;
}

impl Calls for App {
    async fn with_token(
        &self,
        token: &str,
        method: Method,
        uri: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Reply {
        self.request(method, uri, As::Bearer(token), content_type, body)
            .await
    }

    /// Pushes a one-layer image as `creds`; returns the final response.
    async fn push(&self, creds: (&str, &str), repo: &str, tag: &str) -> Reply {
        let token = self
            .token(Some(creds), &format!("repository:{repo}:pull,push"))
            .await
            .unwrap();
        let config = b"{}".to_vec();
        let cd = Digest::sha256_of(&config);
        let r = self
            .with_token(
                &token,
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={cd}"),
                None,
                config,
            )
            .await;
        if r.status != StatusCode::CREATED {
            return r;
        }
        let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.to_string(), "size": 2},
            "layers": [], "annotations": {"tag": tag}});
        self.with_token(
            &token,
            Method::PUT,
            &format!("/v2/{repo}/manifests/{tag}"),
            Some(OCI_MANIFEST),
            serde_json::to_vec(&manifest).unwrap(),
        )
        .await
    }

    async fn pull_status(&self, creds: Option<(&str, &str)>, repo: &str) -> StatusCode {
        let token = self
            .token(creds, &format!("repository:{repo}:pull"))
            .await
            .unwrap();
        self.with_token(
            &token,
            Method::GET,
            &format!("/v2/{repo}/manifests/v1"),
            None,
            vec![],
        )
        .await
        .status
    }
}

fn creds(user: &str) -> Option<(&str, String)> {
    (user != "anonymous").then(|| (user, format!("{user}-secret")))
}

/// The "Container Registry visibility permissions" table of the reference
/// document, with the authenticated non-member column GitLab's "internal"
/// implies. Columns: anonymous, non-member, Guest, Reporter (and above).
const TABLE: [(&str, &str, [bool; 4]); 9] = [
    ("public", "enabled", [true, true, true, true]),
    ("public", "private", [false, false, false, true]),
    ("internal", "enabled", [false, true, true, true]),
    ("internal", "private", [false, false, false, true]),
    ("private", "enabled", [false, false, false, true]),
    ("private", "private", [false, false, false, true]),
    ("public", "disabled", [false, false, false, false]),
    ("internal", "disabled", [false, false, false, false]),
    ("private", "disabled", [false, false, false, false]),
];

#[tokio::test]
async fn visibility_table_for_pull_and_catalog() {
    let app = app().await;
    // Images in every project where the owner may push (not the disabled ones).
    for (v, l, _) in TABLE {
        let r = app
            .push(("owner", "owner-secret"), &format!("m/{v}-{l}/img"), "v1")
            .await;
        let want = if l == "disabled" {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::CREATED
        };
        assert_eq!(r.status, want, "owner push to {v}-{l}: {:?}", r.json());
    }
    // Column -> identities standing for it.
    let columns: [&[&str]; 4] = [
        &["anonymous"],
        &["outsider"],
        &["guest"],
        &["reporter", "developer", "maintainer", "owner"],
    ];
    for (v, l, row) in TABLE {
        let repo = format!("m/{v}-{l}/img");
        for (col, who) in columns.iter().enumerate() {
            for &user in *who {
                let c = creds(user);
                let status = app
                    .pull_status(c.as_ref().map(|(u, s)| (*u, s.as_str())), &repo)
                    .await;
                let want = if row[col] {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                };
                assert_eq!(status, want, "{v} project, registry {l}: pull by {user}");
            }
        }
    }
    // _catalog lists exactly the rows where the column says yes.
    for (col, who) in columns.iter().enumerate() {
        for &user in *who {
            let c = creds(user);
            let token = app
                .token(
                    c.as_ref().map(|(u, s)| (*u, s.as_str())),
                    "registry:catalog:*",
                )
                .await
                .unwrap();
            let r = app
                .with_token(&token, Method::GET, "/v2/_catalog", None, vec![])
                .await;
            assert_eq!(r.status, StatusCode::OK);
            let mut want: Vec<String> = TABLE
                .iter()
                .filter(|(_, l, row)| row[col] && *l != "disabled")
                .map(|(v, l, _)| format!("m/{v}-{l}/img"))
                .collect();
            want.sort();
            assert_eq!(r.json()["repositories"], json!(want), "catalog for {user}");
        }
    }
    // Without the catalog scope, no catalog.
    let token = app
        .token(
            Some(("owner", "owner-secret")),
            "repository:m/public-enabled/img:pull",
        )
        .await
        .unwrap();
    let r = app
        .with_token(&token, Method::GET, "/v2/_catalog", None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn push_and_delete_by_role() {
    let app = app().await;
    let repo = "m/public-enabled/roles";
    assert_eq!(
        app.push(("owner", "owner-secret"), repo, "v1").await.status,
        StatusCode::CREATED
    );
    for user in USERS {
        let secret = format!("{user}-secret");
        let may_write = ["developer", "maintainer", "owner"].contains(&user);
        let r = app.push((user, &secret), repo, user).await;
        let want = if may_write {
            StatusCode::CREATED
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(r.status, want, "push by {user}: {:?}", r.json());
        if !may_write {
            assert_eq!(r.error_code(), "UNAUTHORIZED");
            assert!(
                r.header("www-authenticate")
                    .contains("error=\"insufficient_scope\""),
                "{user}"
            );
            assert!(
                r.header("www-authenticate")
                    .contains(&format!("scope=\"repository:{repo}:pull,push\""))
            );
        }
        let token = app
            .token(
                Some((user, secret.as_str())),
                &format!("repository:{repo}:delete"),
            )
            .await
            .unwrap();
        let r = app
            .with_token(
                &token,
                Method::DELETE,
                &format!("/v2/{repo}/manifests/v1"),
                None,
                vec![],
            )
            .await;
        if may_write {
            assert_eq!(r.status, StatusCode::ACCEPTED, "delete by {user}");
            assert_eq!(
                app.push(("owner", "owner-secret"), repo, "v1").await.status,
                StatusCode::CREATED
            );
        } else {
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "delete by {user}");
        }
    }
}

#[tokio::test]
async fn token_scopes_cap_roles() {
    let app = app().await;
    let repo = "tok/app/img";
    let cases = [
        (("owner", "owner-secret"), true, true),
        (("owner", "owner-read-only"), true, false),
        (("owner", "owner-write-only"), false, false),
        (("dep-ro", "dep-ro-secret"), true, false),
        (("dep-rw", "dep-rw-secret"), true, true),
        (("bot-rep", "bot-rep-secret"), true, false),
        (("bot-dev-ro", "bot-dev-ro-secret"), true, false),
        (("bot-dev", "bot-dev-secret"), true, true),
    ];
    assert_eq!(
        app.push(("owner", "owner-secret"), repo, "v1").await.status,
        StatusCode::CREATED
    );
    for (c, pull, push) in cases {
        let status = app.pull_status(Some(c), repo).await;
        assert_eq!(status == StatusCode::OK, pull, "pull with {c:?}");
        let r = app.push(c, repo, "t").await;
        assert_eq!(
            r.status == StatusCode::CREATED,
            push,
            "push with {c:?}: {:?}",
            r.json()
        );
    }
    // A project's tokens count for nothing in another project.
    assert_eq!(
        app.pull_status(Some(("dep-rw", "dep-rw-secret")), "m/private-enabled/img")
            .await,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bad_credentials_get_no_token() {
    let app = app().await;
    let scope = "repository:m/public-enabled/img:pull";
    for (user, secret) in [
        ("owner", "wrong"),
        ("owner", ""),
        ("nobody", "owner-secret"),
        ("guest", "owner-secret"),
        ("owner", "owner-expired"),
        ("dep-old", "dep-old-secret"),
        ("dep-ro", "dep-rw-secret"),
    ] {
        let r = app.token(Some((user, secret)), scope).await.unwrap_err();
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{user}:{secret}");
        assert_eq!(r.error_code(), "UNAUTHORIZED");
        assert!(r.json().get("token").is_none());
    }
    // Malformed credentials are refused the same way, not read as anonymous.
    for header in ["Basic %%%", "Basic Zm9v", "Bearer abc", "Digest x"] {
        let r = app
            .request(
                Method::GET,
                &format!("/jwt/auth?scope={scope}"),
                As::Header(header),
                None,
                vec![],
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{header}");
        assert!(r.json().get("token").is_none());
    }
}

#[tokio::test]
async fn deleted_tokens_stop_working_after_reload() {
    let app = app().await;
    assert!(
        app.token(
            Some(("developer", "developer-secret")),
            "repository:m/public-enabled/img:push"
        )
        .await
        .is_ok()
    );
    let file = app.root().join("manifests/projects.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let without = text.replace(
        "stringData: {token: developer-secret}",
        "stringData: {token: rotated}",
    );
    assert_ne!(text, without);
    std::fs::write(&file, without).unwrap();
    app.registry.auth.as_ref().unwrap().reload().unwrap();
    let r = app
        .token(
            Some(("developer", "developer-secret")),
            "repository:m/public-enabled/img:push",
        )
        .await
        .unwrap_err();
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // A bad edit keeps the previous model.
    std::fs::write(&file, "kind: Project\nspec: {path: Bad}\n").unwrap();
    assert!(app.registry.auth.as_ref().unwrap().reload().is_err());
    assert!(
        app.token(
            Some(("developer", "rotated")),
            "repository:m/public-enabled/img:pull"
        )
        .await
        .is_ok()
    );
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

#[tokio::test]
async fn forged_and_misused_tokens_are_refused() {
    let app = app().await;
    let a = "m/private-enabled/a";
    let b = "m/private-enabled/b";
    let owner = ("owner", "owner-secret");
    assert_eq!(app.push(owner, a, "v1").await.status, StatusCode::CREATED);
    assert_eq!(app.push(owner, b, "v1").await.status, StatusCode::CREATED);
    let token = app
        .token(Some(owner), &format!("repository:{a}:pull"))
        .await
        .unwrap();
    let get = |t: String, repo: &'static str| {
        let app = &app;
        async move {
            app.with_token(
                &t,
                Method::GET,
                &format!("/v2/{repo}/manifests/v1"),
                None,
                vec![],
            )
            .await
        }
    };
    assert_eq!(
        get(token.clone(), "m/private-enabled/a").await.status,
        StatusCode::OK
    );

    // A token minted for repository A, used on B.
    let r = get(token.clone(), "m/private-enabled/b").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").contains("insufficient_scope"));

    let parts: Vec<&str> = token.split('.').collect();
    let payload: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(parts[1])
            .unwrap(),
    )
    .unwrap();

    // Changed payload, original signature.
    let mut widened = payload.clone();
    widened["access"][0]["name"] = json!(b);
    let forged = format!("{}.{}.{}", parts[0], b64(&widened), parts[2]);
    // alg: none.
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&widened)
    );
    // Signed by another key, otherwise perfect.
    let other_dir = tempfile::tempdir().unwrap();
    let other = berth::auth::token::TokenService::from_key_file(
        &other_dir.path().join("k.pem"),
        true,
        "berth",
        "berth",
        std::time::Duration::from_secs(300),
    )
    .unwrap();
    let (foreign, _) = other
        .issue(
            "user:rw:owner",
            serde_json::from_value(widened["access"].clone()).unwrap(),
        )
        .unwrap();
    // Right key, wrong claims.
    let key = std::fs::read(app.root().join("data/auth/signing-key.pem")).unwrap();
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(&key).unwrap();
    let sign = |claims: Value| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &enc,
        )
        .unwrap()
    };
    let mut expired = widened.clone();
    expired["exp"] = json!(now() - 10);
    expired["iat"] = json!(now() - 400);
    expired["nbf"] = json!(now() - 400);
    let mut wrong_aud = widened.clone();
    wrong_aud["aud"] = json!("another-registry");
    let mut wrong_iss = widened.clone();
    wrong_iss["iss"] = json!("someone-else");
    let mut not_yet = widened.clone();
    not_yet["nbf"] = json!(now() + 600);
    // Control: the same key and claims, untampered, do work (so the refusals
    // below are about the tampering).
    assert_eq!(
        get(sign(widened.clone()), "m/private-enabled/b")
            .await
            .status,
        StatusCode::OK
    );

    for (what, bad) in [
        ("changed payload", forged),
        ("alg none", none),
        ("another key", foreign),
        ("expired", sign(expired)),
        ("wrong audience", sign(wrong_aud)),
        ("wrong issuer", sign(wrong_iss)),
        ("not yet valid", sign(not_yet)),
        ("garbage", "not.a.jwt".to_string()),
    ] {
        let r = get(bad, "m/private-enabled/b").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(r.error_code(), "UNAUTHORIZED", "{what}");
        assert!(
            r.header("www-authenticate")
                .contains("error=\"invalid_token\""),
            "{what}: {}",
            r.header("www-authenticate")
        );
    }
}

#[tokio::test]
async fn challenges_and_names() {
    let app = app().await;
    let r = app
        .request(Method::GET, "/v2/", As::Anonymous, None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("www-authenticate"),
        "Bearer realm=\"http://registry.test/jwt/auth\",service=\"berth\""
    );
    let r = app
        .request(
            Method::GET,
            "/v2/m/public-enabled/img/tags/list",
            As::Anonymous,
            None,
            vec![],
        )
        .await;
    assert_eq!(
        r.header("www-authenticate"),
        "Bearer realm=\"http://registry.test/jwt/auth\",service=\"berth\",scope=\"repository:m/public-enabled/img:pull\""
    );
    // An anonymous token opens /v2/ (it proves nothing but is valid).
    let token = app.token(None, "").await.unwrap();
    assert_eq!(
        app.with_token(&token, Method::GET, "/v2/", None, vec![])
            .await
            .status,
        StatusCode::OK
    );
    // More than two levels below the project.
    let r = app
        .request(
            Method::GET,
            "/v2/m/public-enabled/a/b/c/tags/list",
            As::Anonymous,
            None,
            vec![],
        )
        .await;
    assert_eq!(r.error_code(), "NAME_INVALID");
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 2")
    );
    // Issue 12, 8a: a HEAD (every push starts with one) is 404, so the
    // client's next request, which has a body, shows the reason.
    let r = app
        .request(
            Method::HEAD,
            "/v2/m/public-enabled/a/b/c/manifests/v1",
            As::Anonymous,
            None,
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Outside every project: nobody but the admin (none configured here).
    let r = app
        .push(("owner", "owner-secret"), "elsewhere/img", "v1")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn mount_asks_for_the_source_and_falls_back_when_refused() {
    let app = app().await;
    let owner = ("owner", "owner-secret");
    assert_eq!(
        app.push(owner, "m/private-enabled/src", "v1").await.status,
        StatusCode::CREATED
    );
    let blob = Digest::sha256_of(b"{}");
    let uri =
        format!("/v2/m/public-enabled/dst/blobs/uploads/?mount={blob}&from=m/private-enabled/src");
    // A token for the target only: challenged for the source too.
    let target_only = app
        .token(Some(owner), "repository:m/public-enabled/dst:pull,push")
        .await
        .unwrap();
    let r = app
        .with_token(&target_only, Method::POST, &uri, None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.header("www-authenticate").contains(
            "scope=\"repository:m/public-enabled/dst:pull,push repository:m/private-enabled/src:pull\""
        ),
        "{}",
        r.header("www-authenticate")
    );
    // Asking for both: mounted.
    let both = app
        .token(
            Some(owner),
            "repository:m/public-enabled/dst:pull,push%20repository:m/private-enabled/src:pull",
        )
        .await
        .unwrap();
    let r = app
        .with_token(&both, Method::POST, &uri, None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // A developer of dst who may not read src asks and is refused pull on it:
    // no mount, an ordinary upload session instead (the blob is not exposed).
    let uri = format!(
        "/v2/m/public-enabled/dst2/blobs/uploads/?mount={blob}&from=m/private-disabled/src"
    );
    let dev = ("developer", "developer-secret");
    let t = app
        .token(
            Some(dev),
            "repository:m/public-enabled/dst2:pull,push%20repository:m/private-disabled/src:pull",
        )
        .await
        .unwrap();
    let r = app.with_token(&t, Method::POST, &uri, None, vec![]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(
        r.header("location")
            .starts_with("/v2/m/public-enabled/dst2/blobs/uploads/")
    );
}

/// Finding 5a of issue 12: a token request with thousands of scopes made a
/// token of ~0.8 MiB that the verified-token cache kept whole. Now: at most
/// 100 scopes per request (more is a 400 that says so), scopes that grant
/// nothing leave no entry, and the cache accounts every token's bytes.
#[tokio::test]
async fn token_scopes_are_capped_and_cached_tokens_stay_small() {
    let app = app().await;
    let owner = ("owner", "owner-secret");
    let many = |count: usize| {
        (0..count)
            .map(|i| format!("repository:m/private-disabled/app-{i:05}:pull,push"))
            .collect::<Vec<_>>()
            .join("%20")
    };
    // A thousand: refused, with the limit in the message.
    let r = app.token(Some(owner), &many(1000)).await.unwrap_err();
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let message = r.json()["errors"][0]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(message.contains("at most 100 scopes"), "{message}");
    // The most allowed, all on a disabled project (nothing granted) plus one
    // that grants: the token carries one entry.
    let scopes = format!("{}%20repository:m/public-enabled/img:pull", many(99));
    let token = app.token(Some(owner), &scopes).await.unwrap();
    let tokens = &app.registry.auth.as_ref().unwrap().tokens;
    let claims = tokens.verify(&token).unwrap();
    assert_eq!(claims.access.len(), 1, "{:?}", claims.access);
    let (entries, bytes) = tokens.cached();
    eprintln!(
        "a token asking for 100 scopes: {} bytes of JWT, {bytes} bytes accounted in the verified-token cache ({entries} entries)",
        token.len()
    );
    assert_eq!(entries, 1);
    assert!(bytes < 4096, "{bytes} bytes for one cached token");
}

/// Finding 7(i) of issue 12: the realm was always `http://<Host>/jwt/auth`,
/// even behind a TLS ingress. Forwarded scheme and host are honoured when
/// `auth.trustForwardedHeaders` is set, and ignored otherwise.
#[tokio::test]
async fn realm_follows_forwarded_headers_only_when_trusted() {
    for trust in [false, true] {
        let app = App::setup()
            .auth()
            .config(move |c| c.auth.trust_forwarded_headers = trust)
            .open()
            .await;
        let req = Request::builder()
            .uri("/v2/")
            .header("host", "berth.svc:5000")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "registry.example.com")
            .body(Default::default())
            .unwrap();
        let resp = app.send(req).await;
        let challenge = resp.headers["www-authenticate"].to_str().unwrap();
        let want = if trust {
            "Bearer realm=\"https://registry.example.com/jwt/auth\""
        } else {
            "Bearer realm=\"http://berth.svc:5000/jwt/auth\""
        };
        assert!(challenge.starts_with(want), "trust={trust}: {challenge}");
    }
}
