//! The registry in process: `open_registry` on a data directory (by default
//! in a fresh temporary directory), its router called with `oneshot`, and the
//! replies read whole. Pushes that must succeed assert 201 here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use berth::config::Config;
use berth::oci::Digest;
use berth::registry::{Registry, router};
use berth::server::open_registry;

use super::{OCI_MANIFEST, image_manifest};

/// The `Host` of requests that name one ([`App::request`]).
pub const HOST: &str = "registry.test";

/// A registry opened in process.
#[derive(Clone)]
pub struct App {
    pub router: Router,
    pub registry: Arc<Registry>,
    /// The data directory.
    pub data: PathBuf,
    /// The temporary directory holding `data/` and `manifests/`, when the
    /// harness made it (removed when the last clone is dropped).
    pub dir: Option<Arc<tempfile::TempDir>>,
    /// The registry's database, for tests that set up or inspect rows
    /// directly (one connection, opened on first use; statements in the SQL
    /// both backends accept).
    pub db: sqlx::AnyPool,
    /// Every call must be answered within this time.
    answer_within: Option<Duration>,
}

/// A change to the configuration before the registry is opened.
type Tune = Box<dyn FnOnce(&mut Config)>;

/// How an [`App`] is opened: see [`App::setup`].
pub struct Setup {
    data: Option<PathBuf>,
    auth: bool,
    manifests: Option<String>,
    admin_secret: Option<String>,
    answer_within: Option<Duration>,
    tune: Vec<Tune>,
}

impl Setup {
    /// Use this data directory (opened again if it exists) instead of
    /// `<temporary directory>/data`.
    pub fn data_dir(mut self, data: &Path) -> Self {
        self.data = Some(data.to_path_buf());
        self
    }

    /// Authentication on (it is off unless asked for).
    pub fn auth(mut self) -> Self {
        self.auth = true;
        self
    }

    /// Authentication on, with these Projects and Secrets (YAML) in
    /// `<temporary directory>/manifests/projects.yaml` as the manifest
    /// directory.
    pub fn manifests(mut self, yaml: impl Into<String>) -> Self {
        self.auth = true;
        self.manifests = Some(yaml.into());
        self
    }

    /// The admin's secret, kept as `berth serve` keeps it: only its hash, in
    /// `data/auth/admin-token.sha256`.
    pub fn admin_secret(mut self, secret: &str) -> Self {
        self.admin_secret = Some(secret.to_string());
        self
    }

    /// Changes the configuration before the registry is opened.
    pub fn config(mut self, tune: impl FnOnce(&mut Config) + 'static) -> Self {
        self.tune.push(Box::new(tune));
        self
    }

    /// Fails any call not answered within `limit`.
    pub fn answer_within(mut self, limit: Duration) -> Self {
        self.answer_within = Some(limit);
        self
    }

    pub async fn open(self) -> App {
        self.open_with_admin().await.0
    }

    /// Opens the registry; also returns the admin token `open_registry` made
    /// (only when authentication is on with no identities configured).
    pub async fn open_with_admin(self) -> (App, Option<String>) {
        let dir = match &self.data {
            Some(_) => None,
            None => Some(Arc::new(tempfile::tempdir().unwrap())),
        };
        let data = match (&self.data, &dir) {
            (Some(d), _) => d.clone(),
            (None, Some(dir)) => dir.path().join("data"),
            (None, None) => unreachable!(),
        };
        let mut config = Config {
            data_dir: data.clone(),
            ..Config::default()
        };
        config.auth.enabled = self.auth;
        if let Some(yaml) = &self.manifests {
            let root = dir
                .as_ref()
                .expect("manifests live in the temporary directory");
            let manifests = root.path().join("manifests");
            std::fs::create_dir_all(&manifests).unwrap();
            std::fs::write(manifests.join("projects.yaml"), yaml).unwrap();
            config.auth.manifest_dir = Some(manifests);
        }
        if let Some(secret) = &self.admin_secret {
            std::fs::create_dir_all(data.join("auth")).unwrap();
            let hash = berth::auth::directory::hash_secret(secret);
            std::fs::write(data.join("auth/admin-token.sha256"), hex::encode(hash)).unwrap();
        }
        for tune in self.tune {
            tune(&mut config);
        }
        let url = super::database(&mut config).await;
        let (registry, admin) = open_registry(&config).await.unwrap();
        sqlx::any::install_default_drivers();
        let db = sqlx::any::AnyPoolOptions::new()
            .max_connections(1)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    if conn.backend_name() == "SQLite" {
                        sqlx::raw_sql("PRAGMA busy_timeout = 10000")
                            .execute(conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_lazy(&url)
            .unwrap();
        let app = App {
            router: router(registry.clone()),
            registry,
            data,
            dir,
            db,
            answer_within: self.answer_within,
        };
        (app, admin)
    }
}

/// How a request authenticates.
#[derive(Clone, Copy)]
pub enum As<'a> {
    Anonymous,
    /// Basic credentials (user, secret).
    Basic((&'a str, &'a str)),
    /// A token from `/jwt/auth`.
    Bearer(&'a str),
    /// This `Authorization` header, as it is.
    Header(&'a str),
}

/// Optional Basic credentials: anonymous when `None`.
impl<'a> From<Option<(&'a str, &'a str)>> for As<'a> {
    fn from(creds: Option<(&'a str, &'a str)>) -> As<'a> {
        creds.map(As::Basic).unwrap_or(As::Anonymous)
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    /// The first value of header `name` ("" if none).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON (null if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The code of an OCI error body's first error ("" if none).
    pub fn error_code(&self) -> String {
        self.error().0
    }

    /// Code and message of an OCI error body's first error.
    pub fn error(&self) -> (String, String) {
        let v = self.json();
        (
            v["errors"][0]["code"].as_str().unwrap_or("").to_string(),
            v["errors"][0]["message"].as_str().unwrap_or("").to_string(),
        )
    }

    /// The `message` of a management API error body.
    pub fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or("").to_string()
    }
}

/// A pushed image: its manifest and the blobs it references.
#[derive(Debug, Clone)]
pub struct Image {
    pub digest: String,
    pub payload: Vec<u8>,
    /// The config's digest ("" for an index).
    pub config: String,
    /// Config and layers: digest -> size.
    pub blobs: BTreeMap<String, u64>,
}

impl Image {
    /// The manifest and every blob it references, in bytes.
    pub fn total_size(&self) -> u64 {
        self.payload.len() as u64 + self.blobs.values().sum::<u64>()
    }
}

impl App {
    /// A registry with authentication off in a fresh temporary directory.
    pub async fn open() -> App {
        App::setup().open().await
    }

    /// Authentication off, data in a fresh temporary directory, the default
    /// configuration: change what the test needs, then [`Setup::open`].
    pub fn setup() -> Setup {
        Setup {
            data: None,
            auth: false,
            manifests: None,
            admin_secret: None,
            answer_within: None,
            tune: Vec::new(),
        }
    }

    /// The temporary directory the harness made (`data/`, `manifests/`).
    pub fn root(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the harness made the directory")
            .path()
    }

    /// Sends `req` and reads the whole response.
    pub async fn send(&self, req: Request<Body>) -> Reply {
        let call = self.router.clone().oneshot(req);
        let resp = match self.answer_within {
            Some(limit) => tokio::time::timeout(limit, call)
                .await
                .unwrap_or_else(|_| panic!("the server answers within {limit:?}")),
            None => call.await,
        }
        .unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request with exactly these headers.
    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req.body(body.into()).unwrap()).await
    }

    /// A request to [`HOST`] as `who`, with an optional content type.
    pub async fn request(
        &self,
        method: Method,
        uri: &str,
        who: As<'_>,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", HOST);
        match who {
            As::Anonymous => {}
            As::Basic((u, s)) => req = req.header("authorization", super::basic(u, s)),
            As::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
            As::Header(h) => req = req.header("authorization", h),
        }
        if let Some(c) = content_type {
            req = req.header("content-type", c);
        }
        self.send(req.body(body.into()).unwrap()).await
    }

    /// A token from `/jwt/auth` for `who` and `scope`, or the refusal.
    pub async fn token<'a>(&self, who: impl Into<As<'a>>, scope: &str) -> Result<String, Reply> {
        let uri = format!("/jwt/auth?service=berth&scope={scope}");
        let r = self
            .request(Method::GET, &uri, who.into(), None, Body::empty())
            .await;
        if r.status != StatusCode::OK {
            return Err(r);
        }
        Ok(r.json()["token"].as_str().unwrap().to_string())
    }

    /// A monolithic blob upload (`POST ?digest=`) as `who`: the digest, or
    /// the reply when it was not 201.
    pub async fn try_push_blob(
        &self,
        who: As<'_>,
        repo: &str,
        data: &[u8],
    ) -> Result<Digest, Reply> {
        let digest = Digest::sha256_of(data);
        let r = self
            .request(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
                who,
                None,
                data.to_vec(),
            )
            .await;
        if r.status == StatusCode::CREATED {
            Ok(digest)
        } else {
            Err(r)
        }
    }

    /// A blob upload as `who` that must answer 201.
    pub async fn push_blob_as(&self, who: As<'_>, repo: &str, data: &[u8]) -> Digest {
        match self.try_push_blob(who, repo, data).await {
            Ok(d) => d,
            Err(r) => panic!(
                "push a blob to {repo}: expected 201, got {}: {}",
                r.status,
                r.text()
            ),
        }
    }

    /// A blob upload (no credentials) that must answer 201.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        self.push_blob_as(As::Anonymous, repo, data).await
    }

    /// Starts an upload session (no credentials); its `Location`.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/"),
                &[],
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.error());
        r.header("location").to_string()
    }

    /// PUTs a manifest payload to `reference` (tag or digest) as `who`.
    pub async fn put_manifest_as(
        &self,
        who: As<'_>,
        repo: &str,
        reference: &str,
        media_type: &str,
        payload: &[u8],
    ) -> Reply {
        self.request(
            Method::PUT,
            &format!("/v2/{repo}/manifests/{reference}"),
            who,
            Some(media_type),
            payload.to_vec(),
        )
        .await
    }

    /// Uploads `config` and `layers` as `who` (each must answer 201), then
    /// PUTs their [`image_manifest`] to `reference` (a tag, or the
    /// manifest's own digest when `None`): the image and that reply.
    pub async fn try_push_image(
        &self,
        who: As<'_>,
        repo: &str,
        reference: Option<&str>,
        config: &[u8],
        layers: &[&[u8]],
    ) -> (Image, Reply) {
        let config_digest = self.push_blob_as(who, repo, config).await.to_string();
        let mut blobs = BTreeMap::from([(config_digest.clone(), config.len() as u64)]);
        for layer in layers {
            let d = self.push_blob_as(who, repo, layer).await;
            blobs.insert(d.to_string(), layer.len() as u64);
        }
        let manifest = image_manifest(config, layers);
        let payload = serde_json::to_vec(&manifest).unwrap();
        let digest = Digest::sha256_of(&payload).to_string();
        let reference = reference.unwrap_or(&digest).to_string();
        let r = self
            .put_manifest_as(who, repo, &reference, OCI_MANIFEST, &payload)
            .await;
        let image = Image {
            digest,
            payload,
            config: config_digest,
            blobs,
        };
        (image, r)
    }

    /// [`App::try_push_image`] that must answer 201.
    pub async fn push_image_as(
        &self,
        who: As<'_>,
        repo: &str,
        tag: &str,
        config: &[u8],
        layers: &[&[u8]],
    ) -> Image {
        let (image, r) = self
            .try_push_image(who, repo, Some(tag), config, layers)
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "push {repo}:{tag}: {}",
            r.text()
        );
        image
    }
}
